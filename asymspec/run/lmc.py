"""Linear mode connectivity (Lim et al. 2024, §5.1, Table 1, Figure 3).

For every trained variant, ``pairs`` pairs of networks are trained from different
initialisations and data orders (masks / F are the spec's, hence shared within a variant).  Each
pair is interpolated at ``eval.points`` coefficients (all parameters *and* buffers), train and
test loss / accuracy are measured along the path, and the midpoint test-loss barrier
``L(½θ₁+½θ₂) − ½(L(θ₁)+L(θ₂))`` and the max-over-path barrier are reported.  A variant with
``from: standard`` and ``align: weight_matching`` (or ``activation_matching``) reuses the
standard pairs and aligns the second network to the first before interpolating.

Stages: ``members/<variant>-p<i>-<a|b>`` (training), then ``pairs/<variant>-p<i>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from asymspec.errors import UserError
from asymspec.run.barrier import grid, max_barrier, mean_std, midpoint_barrier
from asymspec.run.base import Runner, Unit
from asymspec.run.spec import Experiment
from asymspec.run.store import atomic_torch_save
from asymspec.seeding import generator, stable_seed

# ---------------------------------------------------------------------------------------------
# data


@dataclass
class ImageTask:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int


@dataclass
class GraphTask:
    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor
    train_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int


_TASKS: dict[str, Any] = {}


def load_task(experiment: Experiment):
    """The experiment's data (cached per process)."""
    import json

    from asymspec import data as D

    ds = experiment.data["dataset"]
    key = json.dumps(ds, sort_keys=True)
    if key in _TASKS:
        return _TASKS[key]
    if ds["name"] in D.GRAPH_DATASETS:
        split = D.load(ds["name"], "train", ds["root"], **ds["options"])
        g = split.graph
        task = GraphTask(g.x, g.edge_index, g.y, g.train_mask, g.test_mask, g.num_classes)
    else:
        if ds["options"]:
            raise UserError(f"dataset.options only apply to fmnist-knn, not {ds['name']!r}")
        train = D.load(ds["name"], "train", ds["root"]).subset(ds["train_subset"], seed=0)
        test = D.load(ds["name"], "test", ds["root"]).subset(ds["test_subset"], seed=1)
        task = ImageTask(train.x, train.y, test.x, test.y, train.num_classes)
    _TASKS[key] = task
    return task


def _adapt(model: torch.nn.Module, x: torch.Tensor, where: str) -> torch.Tensor:
    """Flatten images for vector-input models; check the shape against the model's input."""
    ir = model.ir
    node = ir.node(ir.inputs[0])
    shape = tuple(node["shape"])
    if len(shape) == 1 and x.dim() > 2:
        x = x.flatten(1)
    if tuple(x.shape[1:]) != shape:
        raise UserError(
            f"variant {where}: the model expects inputs of shape {shape} but the data has "
            f"{tuple(x.shape[1:])}; override the model's input size (e.g. "
            f"model_overrides: [model.input_dim={x[0].numel()}] for an MLP, or "
            f"model.in_channels / model.input_size for a ResNet)")
    return x


# ---------------------------------------------------------------------------------------------
# training


def _lr_factor(step: int, total: int, warmup: int, start: float, peak: float,
               schedule: str) -> float:
    if warmup and step < warmup:
        return start + (peak - start) * step / warmup
    if schedule == "constant" or total <= warmup:
        return peak
    frac = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * frac))
    return peak * (1 - frac)


def _optimizer(params, recipe: dict[str, Any]) -> torch.optim.Optimizer:
    opt, lr, wd = recipe["optimizer"], recipe["lr"], recipe["weight_decay"]
    if opt == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe["momentum"], weight_decay=wd)
    cls = torch.optim.AdamW if opt == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=tuple(recipe["betas"]), weight_decay=wd)


def train_model(model: torch.nn.Module, task, recipe: dict[str, Any], data_seed: int,
                device: str, bar=None, where: str = "") -> dict[str, Any]:
    """Train ``model`` in place; returns the per-epoch training loss history."""
    from asymspec.data import RandomCropFlip

    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(params, recipe)
    g = generator(data_seed, "data-order")
    aug = recipe["augment"]
    augment = None
    if aug.get("crop_padding", 0) or aug.get("flip", False):
        if isinstance(task, GraphTask):
            raise UserError(f"variant {where}: train.augment applies to images, not graphs")
        augment = RandomCropFlip(aug.get("crop_padding", 0), aug.get("flip", False))
    if isinstance(task, GraphTask):
        n, steps_per_epoch = 1, 1
        x, ei = task.x.to(device), task.edge_index.to(device)
        y, mask = task.y.to(device), task.train_mask.to(device)
    else:
        x_all = task.train_x.to(device)
        _adapt(model, x_all[:1], where)
        y_all = task.train_y.to(device)
        n = len(y_all)
        bs = recipe["batch_size"] or n
        steps_per_epoch = math.ceil(n / bs)
    epochs = recipe["epochs"]
    total = epochs * steps_per_epoch
    warmup = round(recipe["warmup_epochs"] * steps_per_epoch)
    history: list[float] = []
    step = 0
    for _epoch in range(epochs):
        running, count = 0.0, 0
        batches = ([None] if isinstance(task, GraphTask)
                   else torch.randperm(n, generator=g).split(bs))
        for idx in batches:
            lr = _lr_factor(step, total, warmup, recipe["warmup_start_lr"], recipe["lr"],
                            recipe["schedule"])
            for group in opt.param_groups:
                group["lr"] = lr
            if idx is None:
                out = model(x, ei)[mask]
                target = y[mask]
            else:
                idx = idx.to(device)
                xb = x_all[idx]
                if augment is not None:
                    xb = augment.batch(xb, g)
                out = model(_adapt(model, xb, where))
                target = y_all[idx]
            loss = F.cross_entropy(out, target, label_smoothing=recipe["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe["max_grad_norm"] is not None:
                torch.nn.utils.clip_grad_norm_(params, recipe["max_grad_norm"])
            opt.step()
            step += 1
            running += float(loss.detach()) * len(target)
            count += len(target)
        if not math.isfinite(running):
            raise UserError(f"variant {where}: training diverged (loss {running / count}); "
                            "lower train.lr")
        history.append(running / count)
        if bar is not None:
            bar.update(1, loss=f"{history[-1]:.4f}")
    model.eval()
    return {"train_loss_history": history, "steps": step}


# ---------------------------------------------------------------------------------------------
# interpolation and evaluation


def interpolate_state(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                      t: float) -> dict[str, torch.Tensor]:
    """``(1−t)·a + t·b`` for every floating tensor (parameters and buffers); other tensors
    (integer counters, boolean masks) are taken from ``a``.  Uses ``asymspec.align.interpolate``
    when the alignment package provides it."""
    try:
        from asymspec.align import interpolate
    except ImportError:
        interpolate = None
    if interpolate is not None:
        return interpolate(state_a, state_b, t)
    out = {}
    for k, a in state_a.items():
        b = state_b[k]
        out[k] = torch.lerp(a, b.to(a.dtype), t) if a.is_floating_point() else a.clone()
    return out


def _batches(task, split: str, batch_size: int, subset: int | None, device: str):
    if isinstance(task, GraphTask):
        mask = task.train_mask if split == "train" else task.test_mask
        return [((task.x.to(device), task.edge_index.to(device)), task.y.to(device),
                 mask.to(device))]
    x, y = (task.train_x, task.train_y) if split == "train" else (task.test_x, task.test_y)
    if subset is not None and subset < len(y):
        perm = torch.randperm(len(y), generator=generator(0, "eval-subset", split))[:subset]
        x, y = x[perm], y[perm]
    return [((xb.to(device),), yb.to(device), None)
            for xb, yb in zip(x.split(batch_size), y.split(batch_size))]


def _has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def evaluate_states(model: torch.nn.Module, states: list[dict[str, torch.Tensor]], batches,
                    use_vmap: bool = True, where: str = "") -> tuple[list[float], list[float]]:
    """Mean cross-entropy and accuracy of every state in ``states`` on ``batches``.

    With ``use_vmap`` all states are evaluated at once through ``torch.func.functional_call``
    + ``vmap``; models that vmap cannot handle fall back to one state at a time.
    """
    T = len(states)
    loss_sum = torch.zeros(T, dtype=torch.float64)
    correct = torch.zeros(T, dtype=torch.float64)
    total = 0
    model.eval()
    device = next(iter(batches[0][0])).device
    if use_vmap:
        try:
            from torch.func import functional_call, vmap

            stacked = {k: torch.stack([s[k] for s in states]).to(device) for k in states[0]}

            def f(p, *inputs):
                return functional_call(model, p, inputs)

            outs = []
            with torch.no_grad():
                for inputs, y, mask in batches:
                    inputs = (_adapt(model, inputs[0], where),) + tuple(inputs[1:])
                    dims = (0,) + (None,) * len(inputs)
                    out = vmap(f, in_dims=dims)(stacked, *inputs)  # (T, B, C)
                    outs.append((out, y, mask))
            for out, y, mask in outs:
                if mask is not None:
                    out, y = out[:, mask], y[mask]
                B = len(y)
                loss = F.cross_entropy(out.reshape(T * B, -1), y.repeat(T), reduction="none")
                loss_sum += loss.view(T, B).sum(1).double().cpu()
                correct += (out.argmax(-1) == y).sum(1).double().cpu()
                total += B
            return (loss_sum / total).tolist(), (correct / total).tolist()
        except UserError:
            raise
        except Exception:  # vmap does not support some op: evaluate point by point
            loss_sum.zero_()
            correct.zero_()
            total = 0
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for i, state in enumerate(states):
            model.load_state_dict(state)
            n = 0
            for inputs, y, mask in batches:
                inputs = (_adapt(model, inputs[0], where),) + tuple(inputs[1:])
                out = model(*inputs)
                if mask is not None:
                    out, y = out[mask], y[mask]
                loss_sum[i] += float(F.cross_entropy(out, y, reduction="sum"))
                correct[i] += float((out.argmax(-1) == y).sum())
                n += len(y)
            total = n
    model.load_state_dict(original)
    return (loss_sum / total).tolist(), (correct / total).tolist()


def evaluate_graph_states(model: torch.nn.Module, states: list[dict[str, torch.Tensor]],
                          inputs: tuple[torch.Tensor, ...], y: torch.Tensor,
                          masks: list[torch.Tensor], use_vmap: bool = True
                          ) -> list[tuple[list[float], list[float]]]:
    """Loss and accuracy curves on each node mask, one forward pass per state."""
    losses = [[] for _ in masks]
    accs = [[] for _ in masks]
    chunk = 5 if use_vmap else 1
    original = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(states), chunk):
            group = states[lo:lo + chunk]
            outs = None
            if use_vmap:
                try:
                    from torch.func import functional_call, vmap

                    stacked = {k: torch.stack([s[k] for s in group]).to(y.device)
                               for k in group[0]}
                    outs = vmap(lambda p: functional_call(model, p, inputs))(stacked)
                except Exception:  # vmap cannot handle an op: loop from now on
                    use_vmap, chunk, outs = False, 1, None
            if outs is None:
                outs = []
                for s in group:
                    model.load_state_dict(s)
                    outs.append(model(*inputs))
            for out in outs:
                for i, m in enumerate(masks):
                    o, t = out[m], y[m]
                    losses[i].append(float(F.cross_entropy(o, t)))
                    accs[i].append(float((o.argmax(-1) == t).float().mean()))
    model.load_state_dict(original)
    return [(losses[i], accs[i]) for i in range(len(masks))]


# ---------------------------------------------------------------------------------------------
# the runner


class LMCRunner(Runner):
    kind = "lmc"

    def check(self) -> None:
        task = load_task(self.experiment)  # missing data fails here, before any unit
        if isinstance(task, ImageTask):
            for v in self.experiment.models:
                _adapt(self._build(v), task.test_x[:1], v)

    def _member_id(self, variant: str, pair: int, side: str) -> str:
        return f"{variant}-p{pair}-{side}"

    def stages(self) -> list[list[Unit]]:
        exp = self.experiment
        seed = exp.data["seed"]
        members, pairs = [], []
        for v in exp.trained_variants():
            for i in range(exp.data["pairs"]):
                for side in ("a", "b"):
                    members.append(Unit("members", self._member_id(v, i, side),
                                        stable_seed(seed, "init", v, i, side),
                                        {"variant": v, "pair": i, "side": side,
                                         "data_seed": stable_seed(seed, "data", v, i, side)}))
        for v in exp.variant_names():
            for i in range(exp.data["pairs"]):
                pairs.append(Unit("pairs", f"{v}-p{i}", stable_seed(seed, "align", v, i),
                                  {"variant": v, "pair": i, "source": exp.source(v),
                                   "align": exp.data["variants"][v]["align"]}))
        return [members, pairs]

    def _build(self, variant: str, init_seed: int | None = None) -> torch.nn.Module:
        from asymspec.compiler import build

        return build(self.experiment.models[variant], init_seed=init_seed)

    def run_unit(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        if unit.group == "members":
            return self._train(unit, out_dir)
        return self._pair(unit)

    # -- stage 1 --------------------------------------------------------------------------
    def _train(self, unit: Unit, out_dir: Path) -> dict[str, Any]:
        variant = unit.info["variant"]
        task = load_task(self.experiment)
        recipe = self.experiment.recipe(variant)
        model = self._build(variant, unit.seed)
        with self.progress.bar(recipe["epochs"], unit.id, level=1,
                               every=max(1, recipe["epochs"] // 5)) as bar:
            hist = train_model(model, task, recipe, unit.info["data_seed"], self.device, bar,
                               variant)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_torch_save({"state_dict": state, "variant": variant, "init_seed": unit.seed,
                           "data_seed": unit.info["data_seed"]}, out_dir / "checkpoint.pt")
        test = _batches(task, "test", self.experiment.data["eval"]["batch_size"], None,
                        self.device)
        loss, acc = evaluate_states(model, [model.state_dict()], test, use_vmap=False,
                                    where=variant)
        return {"train_loss": hist["train_loss_history"][-1], "test_loss": loss[0],
                "test_acc": acc[0], "steps": hist["steps"],
                "train_loss_history": hist["train_loss_history"]}

    # -- stage 2 --------------------------------------------------------------------------
    def _load_state(self, member: str) -> dict[str, torch.Tensor]:
        path = self.store.unit_dir("members", member) / "checkpoint.pt"
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]

    def _pair(self, unit: Unit) -> dict[str, Any]:
        exp = self.experiment
        info = unit.info
        source, i, method = info["source"], info["pair"], info["align"]
        task = load_task(exp)
        ev, al = exp.data["eval"], exp.data["align"]
        sa = self._load_state(self._member_id(source, i, "a"))
        sb = self._load_state(self._member_id(source, i, "b"))
        model = self._build(source).to(self.device)
        align_info: dict[str, Any] = {}
        reset = None
        if method != "none":
            try:
                import asymspec.align as align
            except ImportError:
                raise UserError(f"variant {info['variant']!r} needs asymspec.align "
                                f"({method}), which is not installed in this version") from None
            if method == "weight_matching":
                res = align.weight_matching(model.ir, sa, sb, max_sweeps=al["max_sweeps"],
                                            seed=unit.seed % (2**31), restarts=al["restarts"])
            else:
                batches = [(_adapt(model, b[0][0].to(self.device), info["variant"]),)
                           + tuple(b[0][1:])
                           for b in _batches(task, "train", al["batch_size"], None,
                                             self.device)[: al["batches"]]]
                ma, mb = self._build(source).to(self.device), self._build(source).to(self.device)
                ma.load_state_dict(sa)
                mb.load_state_dict(sb)
                res = align.activation_matching(model.ir, ma, mb, batches,
                                                method=al["method"])
                if _has_batchnorm(model):
                    reset = (align.reset_bn_stats, batches)
            sb = {k: v.detach().cpu() for k, v in res.state.items()}
            obj = [float(o) for o in res.objective]
            align_info = {"objective": obj[-1] if obj else None, "objective_trace": obj}
        ts = grid(ev["points"])
        states = [interpolate_state(sa, sb, t) for t in ts]
        if reset is not None:
            states = [self._reset(model, s, *reset) for s in states]
        out: dict[str, Any] = {"t": ts, **align_info}
        use_vmap = ev["vmap"] and reset is None
        if isinstance(task, GraphTask):  # one forward pass over the graph serves both splits
            (inputs, y, _), = _batches(task, "train", 1, None, self.device)
            masks = [task.train_mask.to(self.device), task.test_mask.to(self.device)]
            # vmap over gather/scatter is far slower than a loop on CPU (measured 15x)
            curves = evaluate_graph_states(model, states, inputs, y, masks, use_vmap=False)
        for k, split in enumerate(("train", "test")):
            if isinstance(task, GraphTask):
                loss, acc = curves[k]
            else:
                batches = _batches(task, split, ev["batch_size"],
                                   ev["train_subset"] if split == "train" else None,
                                   self.device)
                loss, acc = evaluate_states(model, states, batches, use_vmap, info["variant"])
            out[f"{split}_loss"], out[f"{split}_acc"] = loss, acc
            out[f"{split}_barrier_mid"] = midpoint_barrier(ts, loss)
            out[f"{split}_barrier_max"] = max_barrier(ts, loss)
            out[f"{split}_acc_drop_mid"] = 0.5 * (acc[0] + acc[-1]) - acc[ts.index(0.5)]
        return out

    def _reset(self, model, state, reset_fn, batches):
        model.load_state_dict(state)
        reset_fn(model, batches)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    # -- aggregation ----------------------------------------------------------------------
    def finalize(self) -> dict[str, Any]:
        exp = self.experiment
        store = self.store
        out: dict[str, Any] = {"format": "asymspec-results/1", "kind": "lmc", "name": exp.name,
                               "profile": exp.profile, "dataset": exp.data["dataset"]["name"],
                               "pairs": exp.data["pairs"], "variants": {}}
        for v in exp.variant_names():
            spec_v = exp.data["variants"][v]
            source = exp.source(v)
            pairs = [store.load_metrics("pairs", f"{v}-p{i}")
                     for i in range(exp.data["pairs"])]
            members = [store.load_metrics("members", self._member_id(source, i, s))
                       for i in range(exp.data["pairs"]) for s in ("a", "b")]
            m = [p["metrics"] for p in pairs]
            out["t"] = m[0]["t"]
            entry = {
                "label": spec_v["label"] or v, "source": source, "align": spec_v["align"],
                "paper": spec_v["paper"],
                "curves": {k: [p[k] for p in m]
                           for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
                "barrier": {k: mean_std([p[k] for p in m]) | {"values": [p[k] for p in m]}
                            for k in ("test_barrier_mid", "test_barrier_max",
                                      "train_barrier_mid", "train_barrier_max",
                                      "test_acc_drop_mid")},
                "endpoint_test_acc": mean_std([mm["metrics"]["test_acc"] for mm in members]),
                "endpoint_test_loss": mean_std([mm["metrics"]["test_loss"] for mm in members]),
                "train_wall_s": round(sum(mm["wall_s"] for mm in members), 2),
                "eval_wall_s": round(sum(p["wall_s"] for p in pairs), 2),
            }
            if m[0].get("objective") is not None:
                entry["align_objective"] = mean_std([p["objective"] for p in m])
            out["variants"][v] = entry
        out["wall_s"] = {"train": sum(e["train_wall_s"] for v, e in out["variants"].items()
                                      if e["source"] == v),
                         "eval": sum(e["eval_wall_s"] for e in out["variants"].values())}
        return out

    @classmethod
    def render(cls, run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
        from asymspec.run.lmc_report import render

        return render(Path(run_dir), results, experiment)
