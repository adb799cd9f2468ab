"""The trainer every runner reuses: model + data + optimizer + LR schedule + loss hook +
callbacks, returning a per-epoch :class:`History`.

* Optimizers (``adam``, ``adamw``, ``sgd``) and schedules come from ``torch.optim``:
  :func:`make_scheduler` chains a linear warmup (``LinearLR``) with the post-warmup schedule
  (``constant``, ``cosine`` = ``CosineAnnealingLR`` to 0, ``linear`` = ``LinearLR`` to 0) through
  ``SequentialLR``, stepped once per optimisation step.  A recipe with ``warmup_start_lr: 0``,
  ``warmup_epochs: 5`` and ``schedule: linear`` is the triangle of the reference zoo recipe.
* The loss hook ``loss_fn(output, target, ctx)`` replaces the default cross-entropy with the
  recipe's label smoothing (e.g. a KL term for Bayesian networks, MSE for regression).
* Callbacks get a :class:`StepInfo` after every step (``on_step``) and every epoch
  (``on_epoch``); returning ``True`` stops training (e.g. "stop once train accuracy >= 70 %").
* ``eval_every`` records train accuracy / loss on a fixed, non-augmented subset of the training
  data every that many epochs (and before training), which sweeps need for "epochs to reach a
  threshold".
* ``compile`` (``auto`` | ``on`` | ``off``; default: the process default, which the engine sets
  per unit from the experiment's ``resources.compile`` or ``$ASYMSPEC_COMPILE``) runs training
  under ``torch.compile`` (:mod:`asymspec.nn.compile`; ``auto`` = on CUDA only).  An execution
  option, not part of the run's hash: the model leaves :func:`train` uncompiled.
* A non-finite loss either raises :class:`~asymspec.errors.UserError` (``on_nonfinite="raise"``,
  LMC's choice) or stops and records ``diverged = {"epoch", "step"}`` (``"stop"``; zoos).

All randomness (data order, augmentation) comes from one generator seeded by ``data_seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from asymspec.errors import UserError
from asymspec.run.tasks import ArrayTask, GraphTask, Task, adapt_input, fixed_subset
from asymspec.seeding import generator

RECIPE_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "betas": [0.9, 0.999],
    "warmup_epochs": 0.0, "warmup_start_lr": 0.0, "schedule": "constant", "epochs": 10,
    "batch_size": 128, "weight_decay": 0.0, "label_smoothing": 0.0,
    "augment": {"crop_padding": 0, "flip": False}, "max_grad_norm": None,
}


def recipe_with_defaults(recipe: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A full recipe: the schema's defaults (``$defs/recipe``), then ``recipe``, then
    ``changes`` — convenient for runners that build recipes in code."""
    out = {**RECIPE_DEFAULTS, **(recipe or {}), **changes}
    out["augment"] = {**RECIPE_DEFAULTS["augment"], **(out.get("augment") or {})}
    return out


def make_optimizer(params: Sequence[torch.nn.Parameter] | Any,
                   recipe: dict[str, Any]) -> torch.optim.Optimizer:
    """The recipe's optimizer (weight decay is L2 for adam/sgd, decoupled for adamw), run by
    the recipe's ``optimizer_impl`` (absent: torch's default for the device)."""
    opt, lr, wd = recipe["optimizer"], recipe["lr"], recipe["weight_decay"]
    impl = recipe.get("optimizer_impl") or "default"
    if impl not in ("default", "fused", "foreach"):
        raise UserError(f"unknown optimizer_impl {impl!r}; use default, fused or foreach")
    kwargs = {} if impl == "default" else {impl: True}
    if opt == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe["momentum"], weight_decay=wd,
                               **kwargs)
    if opt not in ("adam", "adamw"):
        raise UserError(f"unknown optimizer {opt!r}; use adam, adamw or sgd")
    cls = torch.optim.AdamW if opt == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=tuple(recipe["betas"]), weight_decay=wd, **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: dict[str, Any],
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Warmup + schedule from ``torch.optim.lr_scheduler``, stepped once per step.

    The warmup goes linearly from ``warmup_start_lr`` to ``lr`` over
    ``round(warmup_epochs * steps_per_epoch)`` steps; afterwards the lr stays (``constant``)
    or decays to 0 at the last step (``cosine`` / ``linear``).
    """
    from torch.optim import lr_scheduler as S

    total = recipe["epochs"] * steps_per_epoch
    warmup = min(round(recipe["warmup_epochs"] * steps_per_epoch), total)
    peak = recipe["lr"]
    rest = max(1, total - warmup)
    kind = recipe["schedule"]
    if kind == "constant":
        after: S.LRScheduler = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif kind == "cosine":
        after = S.CosineAnnealingLR(optimizer, T_max=rest, eta_min=0.0)
    elif kind == "linear":
        after = S.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=rest)
    else:
        raise UserError(f"unknown schedule {kind!r}; use constant, cosine or linear")
    if warmup == 0:
        return after
    # LinearLR needs a start factor > 0; 1e-12 of the peak is 0 for every practical purpose.
    start = max(recipe["warmup_start_lr"] / peak, 1e-12)
    warm = S.LinearLR(optimizer, start_factor=min(start, 1.0), end_factor=1.0,
                      total_iters=warmup)
    return S.SequentialLR(optimizer, [warm, after], milestones=[warmup])


@dataclass
class StepInfo:
    """What callbacks see: progress counters, the last loss, the model and optimizer."""

    epoch: int
    step: int
    loss: float
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    history: History


@dataclass
class History:
    """Per-epoch training record (JSON-friendly via :meth:`to_dict`)."""

    train_loss: list[float] = field(default_factory=list)  # mean training loss per epoch
    lr: list[float] = field(default_factory=list)  # lr at the end of each epoch
    evals: list[dict[str, float]] = field(default_factory=list)  # {epoch, train_loss, train_acc}
    steps: int = 0
    epochs: int = 0
    stopped_early: bool = False
    diverged: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"train_loss_history": self.train_loss, "lr_history": self.lr,
                "evals": self.evals, "steps": self.steps, "epochs": self.epochs,
                "stopped_early": self.stopped_early, "diverged": self.diverged}

    def epochs_to(self, key: str, threshold: float) -> int | None:
        """First evaluated epoch where ``evals[key] >= threshold`` (``None``: never reached)."""
        return next((int(e["epoch"]) for e in self.evals if e[key] >= threshold), None)


LossFn = Callable[[torch.Tensor, torch.Tensor, dict[str, Any]], torch.Tensor]
Callback = Callable[[StepInfo], "bool | None"]


@dataclass
class TrainOptions:
    """Everything but the model, the data and the recipe (keeps :func:`train` short)."""

    data_seed: int = 0
    device: str = "cpu"
    loss_fn: LossFn | None = None
    on_step: Sequence[Callback] = ()
    on_epoch: Sequence[Callback] = ()
    eval_every: int | None = None  # epochs between train-accuracy evaluations
    eval_subset: int | None = 10000  # examples used for those evaluations
    eval_batch_size: int = 1024
    on_nonfinite: str = "raise"  # or "stop"
    drop_last: bool = False
    bar: Any = None  # a Progress bar updated once per epoch
    where: str = ""  # variant name for messages
    compile: bool | str | None = None  # auto | on | off; None: the process default
    compile_kwargs: dict[str, Any] = field(default_factory=dict)  # to torch.compile


def default_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss(out: torch.Tensor, target: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(out, target, label_smoothing=label_smoothing)
    return loss


def _augmenter(recipe: dict[str, Any], task: Task, where: str):
    from asymspec.data import RandomCropFlip

    aug = recipe.get("augment") or {}
    if not (aug.get("crop_padding", 0) or aug.get("flip", False)):
        return None
    if isinstance(task, GraphTask):
        raise UserError(f"variant {where}: train.augment applies to images, not graphs")
    return RandomCropFlip(aug.get("crop_padding", 0), aug.get("flip", False))


def train(model: torch.nn.Module, task: Task, recipe: dict[str, Any],
          options: TrainOptions | None = None) -> History:
    """Train ``model`` in place on ``task`` with ``recipe``; returns its :class:`History`.

    Mini-batches are drawn without replacement in an order from ``options.data_seed``
    (graphs: one full-batch step per epoch on the train mask).  The model is left in
    ``eval()`` mode, and uncompiled (``options.compile`` applies inside this call only).
    """
    from asymspec.nn.compile import compiled

    o = options or TrainOptions()
    model.to(o.device).train()
    with compiled(model, o.device, o.compile, **o.compile_kwargs):
        return _train(model, task, recipe, o)


def _train(model: torch.nn.Module, task: Task, recipe: dict[str, Any],
           o: TrainOptions) -> History:
    device = o.device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, recipe)
    g = generator(o.data_seed, "data-order")
    augment = _augmenter(recipe, task, o.where)
    loss_fn = o.loss_fn or default_loss(recipe["label_smoothing"])
    graph = isinstance(task, GraphTask)
    if graph:
        n, steps_per_epoch, bs = 1, 1, 1
        x, ei = task.x.to(device), task.edge_index.to(device)
        y, mask = task.y.to(device), task.train_mask.to(device)
    else:
        x_all, y_all = task.train_x.to(device), task.train_y.to(device)
        adapt_input(model, x_all[:1], o.where)
        n = len(y_all)
        bs = recipe["batch_size"] or n
        steps_per_epoch = n // bs if o.drop_last and n >= bs else math.ceil(n / bs)
    sched = make_scheduler(opt, recipe, steps_per_epoch)
    hist = History()
    if o.eval_every:
        hist.evals.append({"epoch": 0, **_train_eval(model, task, o)})
    stop = False
    for epoch in range(1, recipe["epochs"] + 1):
        running, count = 0.0, 0
        if graph:
            batches: Any = [None]
        else:
            perm = torch.randperm(n, generator=g)
            batches = perm.split(bs)
            if o.drop_last and n >= bs and n % bs:
                batches = batches[:-1]
        for idx in batches:
            if idx is None:
                out, target = model(x, ei)[mask], y[mask]
            else:
                idx = idx.to(device)
                xb = x_all[idx]
                if augment is not None:
                    xb = augment.batch(xb, g)
                out, target = model(adapt_input(model, xb, o.where)), y_all[idx]
            loss = loss_fn(out, target, {"model": model, "epoch": epoch, "step": hist.steps,
                                         "batch_size": len(target), "num_train": n})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.get("max_grad_norm") is not None:
                torch.nn.utils.clip_grad_norm_(params, recipe["max_grad_norm"])
            opt.step()
            sched.step()
            hist.steps += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                if o.on_nonfinite == "raise":
                    raise UserError(f"variant {o.where}: training diverged (loss {value} at "
                                    f"epoch {epoch}, step {hist.steps}); lower train.lr")
                hist.diverged = {"epoch": epoch, "step": hist.steps}
                stop = True
                break
            running += value * len(target)
            count += len(target)
            info = StepInfo(epoch, hist.steps, value, model, opt, hist)
            if any(cb(info) for cb in o.on_step):
                stop = True
                break
        if hist.diverged is not None:
            break
        hist.epochs = epoch
        hist.train_loss.append(running / max(count, 1))
        hist.lr.append(float(opt.param_groups[0]["lr"]))
        if o.eval_every and epoch % o.eval_every == 0:
            hist.evals.append({"epoch": epoch, **_train_eval(model, task, o)})
            model.train()
        if o.bar is not None:
            o.bar.update(1, loss=f"{hist.train_loss[-1]:.4f}")
        info = StepInfo(epoch, hist.steps, hist.train_loss[-1], model, opt, hist)
        if stop or any(cb(info) for cb in o.on_epoch):
            stop = True
            break
    hist.stopped_early = stop and hist.diverged is None and hist.epochs < recipe["epochs"]
    model.eval()
    return hist


def _train_eval(model: torch.nn.Module, task: Task, o: TrainOptions) -> dict[str, float]:
    """Train loss / accuracy on a fixed non-augmented subset (plain cross-entropy)."""
    from asymspec.run.evaluator import evaluate
    from asymspec.run.tasks import eval_batches

    if isinstance(task, ArrayTask):
        x, y = fixed_subset(task.train_x, task.train_y, o.eval_subset, "train-eval")
        sub = ArrayTask(x, y, x[:0], y[:0], task.num_classes)
        batches = eval_batches(sub, "train", o.eval_batch_size, None, o.device)
    else:
        batches = eval_batches(task, "train", 1, None, o.device)
    res = evaluate(model, batches, where=o.where)
    return {"train_loss": res.loss, "train_acc": res.accuracy}
