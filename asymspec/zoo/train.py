"""Training the members of one variant: batched (``torch.func``) or one by one (loop).

Both paths give the same result for the same seeds (up to float rounding; tested): each member
has its own initialisation (``init_seed``), data order and augmentation (its own generator,
:mod:`asymspec.zoo.augment`), lr / weight decay / label smoothing, and trains for exactly its own
number of epochs with the triangle schedule (:mod:`asymspec.zoo.schedule`) under AdamW.

* ``batched``: members of a chunk are rows of one flat tensor; the forward pass is
  ``vmap(functional_call)`` over the rows, the loss is summed over members (their graphs are
  independent, so each row gets its own gradient), and :class:`~asymspec.zoo.optim.StackedAdamW`
  updates all rows.  At each epoch boundary, members that reached their epochs (or diverged)
  leave the chunk, so nobody trains longer than sampled and no compute is spent on them.
* ``loop``: one ``nn.Module`` per member with ``torch.optim.AdamW`` and
  ``torch.optim.lr_scheduler.LambdaLR`` — the reference implementation the batched path is
  checked against.

``auto`` picks ``batched`` on CUDA and ``loop`` on CPU, where vmap's grouped convolutions are
slower than a loop of plain ones (``benchmarks/bench_zoo.py`` measures both).  The choice is a
rule, not a timing, so a run's numbers never depend on machine load.

A member whose loss becomes NaN/inf is marked diverged at that (0-based) epoch and global step;
its parameters stay as they were before that step and it is excluded downstream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from asymspec.errors import UserError
from asymspec.zoo.augment import AugmentConfig, EpochDraws, apply, draw_epoch
from asymspec.zoo.data import ZooData
from asymspec.zoo.layout import ParamLayout
from asymspec.zoo.optim import StackedAdamW
from asymspec.zoo.plan import MemberPlan
from asymspec.zoo.schedule import lambda_for, triangle_factor

PATHS = ("auto", "batched", "loop")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainSettings:
    """The recipe shared by all members (defaults: the reference, A.3)."""

    batch_size: int = 512
    peak_epoch: float = 5.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    precision: str = "fp32"
    path: str = "auto"
    chunk_members: int | None = None  # None: from the memory budget
    memory_mb: int | None = None  # None: 60% of free CUDA memory, or 2 GiB on CPU
    eval_batch_size: int = 1024
    channels_last: bool = True  # loop path: NHWC convolutions (about 25% faster on CPU)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrainSettings:
        d = dict(d or {})
        aug = AugmentConfig.from_dict(d.pop("augment", None))
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known)
        if bad:
            raise UserError(f"train: unknown field(s) {', '.join(bad)}; known: "
                            f"{', '.join(sorted(known))}")
        s = cls(augment=aug, **d)
        if s.path not in PATHS:
            raise UserError(f"train.path: {s.path!r} is not one of {', '.join(PATHS)}")
        if s.precision not in PRECISIONS:
            raise UserError(f"train.precision: {s.precision!r} is not one of "
                            f"{', '.join(PRECISIONS)}")
        return s


@dataclass
class TrainResult:
    """Final parameters ``(M, D)`` (CPU) and per-member records, in the order of the plans."""

    layout: ParamLayout
    final: torch.Tensor
    records: list[dict[str, Any]]
    path: str


def choose_path(path: str, device: str | torch.device) -> str:
    if path != "auto":
        return path
    return "batched" if torch.device(device).type == "cuda" else "loop"


def state_sha256(flat_row: torch.Tensor) -> str:
    """Hash of one member's parameter row (θ0 is recorded this way, not stored)."""
    return hashlib.sha256(flat_row.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def smoothed_ce(logits: torch.Tensor, y: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
    """Per-member mean cross-entropy with per-member label smoothing, as
    ``F.cross_entropy(label_smoothing=ls)``: logits ``(M, B, K)``, y ``(M, B)``, ls ``(M,)``."""
    logp = torch.log_softmax(logits.float(), -1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    smooth = -logp.mean(-1)
    ls = ls.view(-1, 1)
    return ((1 - ls) * nll + ls * smooth).mean(1)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _check(settings: TrainSettings, plans: list[MemberPlan], data: ZooData) -> int:
    n = len(data.train_y)
    if n < settings.batch_size:
        raise UserError(f"train.batch_size={settings.batch_size} exceeds the {n} training "
                        "examples (the last partial batch is dropped, as in the reference)")
    for p in plans:
        if p.hparams["epochs"] <= settings.peak_epoch:
            raise UserError(f"member {p.id} has {p.hparams['epochs']} epochs but the lr peaks "
                            f"at epoch {settings.peak_epoch}: lower train.peak_epoch or raise "
                            "hparams.epochs")
    return n // settings.batch_size


def _batch(data: ZooData, draws: EpochDraws, sl: slice, settings: TrainSettings):
    idx = draws.perm[sl]
    x = data.train_x[idx]
    if settings.augment.enabled:
        x = apply(x, draws.flip[sl], draws.shift[sl], draws.cut[sl], settings.augment, data.fill)
    return x, data.train_y[idx]


def _pins(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    out = []
    for module in model.modules():
        mask = getattr(module, "weight_mask", None)
        if isinstance(mask, torch.Tensor) and isinstance(module.weight, nn.Parameter):
            out.append((module.weight, mask, module.weight_fixed))
    return out


def train_loop(models: list[nn.Module], plans: list[MemberPlan], data: ZooData,
               settings: TrainSettings, device: torch.device) -> list[dict[str, Any]]:
    """Train each model in place, one after another (the reference path)."""
    spe = _check(settings, plans, data)
    bs = settings.batch_size
    records = []
    for model, plan in zip(models, plans):
        hp = plan.hparams
        model.to(device).train()
        fmt = (torch.channels_last if settings.channels_last and data.train_x.dim() == 4
               else torch.contiguous_format)
        model.to(memory_format=fmt)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=hp["lr"], betas=settings.betas, eps=settings.eps,
                                weight_decay=hp["weight_decay"])
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda_for(spe, settings.peak_epoch, hp["epochs"]))
        pins = _pins(model)
        g = torch.Generator().manual_seed(plan.data_seed)
        history: list[float] = []
        diverged = None
        for epoch in range(hp["epochs"]):
            draws = draw_epoch(g, len(data.train_y), data.image_hw, settings.augment).to(device)
            running = 0.0
            for s in range(spe):
                x, y = _batch(data, draws, slice(s * bs, (s + 1) * bs), settings)
                with _autocast(device, settings.precision):
                    out = model(x.contiguous(memory_format=fmt))
                loss = F.cross_entropy(out.float(), y, label_smoothing=hp["label_smoothing"])
                if not torch.isfinite(loss):
                    diverged = {"epoch": epoch, "step": epoch * spe + s}
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    for w, mask, fixed in pins:  # AdamW's decay must not move frozen entries
                        w.copy_(torch.where(mask, w, fixed))
                running += loss.item()
            if diverged:
                break
            history.append(running / spe)
        model.to(memory_format=torch.contiguous_format).eval()
        records.append({"diverged": diverged, "train_loss_history": history,
                        "steps": len(history) * spe if diverged is None else diverged["step"]})
    return records


def train_batched(model: nn.Module, layout: ParamLayout, flat0: torch.Tensor,
                  plans: list[MemberPlan], data: ZooData, settings: TrainSettings,
                  device: torch.device) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Train the rows of ``flat0`` ``(M, D)`` together; returns final rows (CPU) and records."""
    spe = _check(settings, plans, data)
    bs = settings.batch_size
    m_all = len(plans)
    model = model.to(device).train()
    final = flat0.detach().cpu().clone()
    records: list[dict[str, Any]] = [
        {"diverged": None, "train_loss_history": [], "steps": 0} for _ in plans]
    rows = list(range(m_all))  # which members are in the chunk
    flat = flat0.detach().to(device).clone()
    hp = [p.hparams for p in plans]
    opt = StackedAdamW(flat, layout.trainable, torch.tensor([h["lr"] for h in hp]),
                       torch.tensor([h["weight_decay"] for h in hp]), settings.betas,
                       settings.eps)
    ls = torch.tensor([h["label_smoothing"] for h in hp], device=device)
    epochs = [h["epochs"] for h in hp]
    gens = [torch.Generator().manual_seed(p.data_seed) for p in plans]
    alive = torch.ones(m_all, dtype=torch.bool, device=device)
    div_step = torch.full((m_all,), -1, dtype=torch.long, device=device)

    def fwd(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, params, (x,))

    forward = vmap(fwd)
    n = len(data.train_y)
    for epoch in range(max(epochs)):
        # members that reached their epochs or diverged leave the chunk
        alive_cpu = alive.cpu().tolist()
        keep = [i for i, r in enumerate(rows) if epochs[r] > epoch and alive_cpu[i]]
        if len(keep) < len(rows):
            dsteps = div_step.cpu().tolist()
            for i, r in enumerate(rows):
                if i not in keep:
                    final[r] = flat[i].cpu()
                    if not alive_cpu[i]:
                        records[r]["diverged"] = {"epoch": dsteps[i] // spe, "step": dsteps[i]}
                        records[r]["steps"] = dsteps[i]
            sel = torch.tensor(keep, device=device, dtype=torch.long)
            flat, ls, alive, div_step = flat[sel], ls[sel], alive[sel], div_step[sel]
            opt.select(sel)
            rows = [rows[i] for i in keep]
        if not rows:
            break
        m = len(rows)
        per = [draw_epoch(gens[r], n, data.image_hw, settings.augment) for r in rows]
        draws = EpochDraws(*(torch.stack([getattr(d, f) for d in per]).to(device)
                             for f in ("perm", "flip", "shift", "cut")))
        factors = torch.tensor([[triangle_factor(epoch * spe + s, spe, settings.peak_epoch,
                                                 epochs[r]) for r in rows] for s in range(spe)],
                               dtype=torch.float64).to(device)  # one copy per epoch
        running = torch.zeros(m, device=device)
        for s in range(spe):
            sl = slice(s * bs, (s + 1) * bs)
            x, y = _batch(data, draws.rows(sl), slice(None), settings)
            x, y = x.view(m, bs, *x.shape[1:]), y.view(m, bs)
            leaf = flat.detach().requires_grad_(True)
            with _autocast(device, settings.precision):
                logits = forward(layout.views(leaf), x)
            loss = smoothed_ce(logits, y, ls)
            finite = torch.isfinite(loss)
            div_step = torch.where(alive & ~finite, epoch * spe + s, div_step)
            alive = alive & finite
            total = torch.where(alive, loss, torch.zeros_like(loss)).sum()
            (grad,) = torch.autograd.grad(total, leaf)
            flat = leaf.detach()
            opt.step(flat, grad, factors[s], alive)
            running += torch.where(alive, loss.detach(), torch.zeros_like(loss))
        run = (running / spe).cpu().tolist()
        alive_cpu = alive.cpu().tolist()
        for i, r in enumerate(rows):
            if alive_cpu[i]:
                records[r]["train_loss_history"].append(run[i])
                records[r]["steps"] = (epoch + 1) * spe
    for i, r in enumerate(rows):  # members still in the chunk after the last epoch
        final[r] = flat[i].cpu()
        if not bool(alive[i]):
            st = int(div_step[i])
            records[r]["diverged"] = {"epoch": st // spe, "step": st}
            records[r]["steps"] = st
    return final, records


def _chunk_size(model: nn.Module, layout: ParamLayout, data: ZooData, settings: TrainSettings,
                device: torch.device) -> int:
    """Members per batched chunk from a memory budget: activations of one member's batch
    (measured by one forward pass of a single example, x4 for backward and temporaries) plus
    parameters, gradient and the two AdamW moments."""
    if settings.chunk_members:
        return int(settings.chunk_members)
    sizes = []
    hooks = [mod.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel()))
             for mod in model.modules() if not list(mod.children())]
    with torch.no_grad():
        model.to(device)(data.train_x[:1].to(device))
    for h in hooks:
        h.remove()
    per_member = 4 * (4 * sum(sizes) * settings.batch_size + 5 * layout.numel)
    per_member += 4 * data.train_x[0].numel() * settings.batch_size * 3  # batch + augmentation
    if settings.memory_mb:
        budget = settings.memory_mb * 2 ** 20
    elif device.type == "cuda":
        budget = int(0.6 * torch.cuda.mem_get_info(device)[0])
    else:
        budget = 2 * 2 ** 30
    return max(1, budget // per_member)


def train_members(ir, plans: list[MemberPlan], data: ZooData, settings: TrainSettings,
                  device: str | torch.device = "cpu") -> TrainResult:
    """Train the members ``plans`` of the variant compiled to ``ir`` (one IR, so masks / F
    are shared); returns final parameters and per-member records (with θ0's hash)."""
    from asymspec.nn import emit

    device = torch.device(device)
    data = data.to(device)
    path = choose_path(settings.path, device)
    models = [emit(ir, p.init_seed) for p in plans]
    layout = ParamLayout.of(models[0])
    flat0 = torch.stack([layout.flatten(m) for m in models])
    init_hash = [state_sha256(row) for row in flat0]
    if path == "loop":
        records = train_loop(models, plans, data, settings, device)
        final = torch.stack([layout.flatten(m).cpu() for m in models])
    else:
        chunk = _chunk_size(models[0], layout, data, settings, device)
        order = sorted(range(len(plans)), key=lambda i: -plans[i].hparams["epochs"])
        final = torch.empty_like(flat0)
        records = [dict() for _ in plans]
        for lo in range(0, len(order), chunk):
            idx = order[lo:lo + chunk]
            f, recs = train_batched(models[0], layout, flat0[idx], [plans[i] for i in idx],
                                    data, settings, device)
            final[idx] = f
            for i, rec in zip(idx, recs):
                records[i] = rec
    for rec, h, row in zip(records, init_hash, final):
        rec["init_sha256"] = h
        if rec["diverged"] is None and not bool(torch.isfinite(row).all()):
            rec["diverged"] = {"epoch": None, "step": None}
    return TrainResult(layout, final, records, path)

