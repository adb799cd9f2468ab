"""Training one metanetwork (Lim et al. 2024, §5.3; reference ``metanet/train.py``).

MSE on the target (test accuracy in [0, 1]), AdamW (weight decay 1e-2), batch 128, 50 epochs; the
validation R² is computed after every epoch and the *test* metrics are those of the epoch with
the best validation R² (the model's weights at that epoch are kept and evaluated once at the
end, which is the same thing).  Every random choice — initial weights, batch order, permutation
augmentation — comes from generators seeded by ``FitConfig.seed``, so a (model, lr, seed) unit is
reproducible in any process.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from asymspec.metanet.init import reset_parameters
from asymspec.metanet.inputs import ParamLayout
from asymspec.metanet.metrics import kendall_tau, mse, r2
from asymspec.metanet.registry import get_metanet
from asymspec.metanet.split import Split
from asymspec.metanet.symmetry import FlatPermuter
from asymspec.seeding import generator


@dataclass
class FitConfig:
    """Hyperparameters of one metanetwork training run (defaults: the paper's)."""

    lr: float
    epochs: int = 50
    batch_size: int = 128
    weight_decay: float = 1e-2
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 512
    options: dict[str, Any] = field(default_factory=dict)  # metanetwork constructor kwargs


@dataclass
class FitResult:
    history: list[dict[str, float]]  # per epoch: train_loss, val_r2, val_tau
    best_epoch: int | None  # 1-based; None when no epoch gave a finite validation R²
    val: dict[str, float]
    test: dict[str, float]
    test_pred: list[float]
    n_params: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def build_metanet(name: str, layout: ParamLayout, seed: int,
                  options: dict[str, Any] | None = None) -> torch.nn.Module:
    """The registered metanetwork ``name`` with weights drawn from ``seed``."""
    model = get_metanet(name)(layout, **(options or {}))
    return reset_parameters(model, generator(seed, "metanet-init", name))


def _featurizer(name: str) -> Callable | None:
    return getattr(get_metanet(name), "featurize", None)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).float()
                      for i in range(0, x.shape[0], batch_size)])


def _scores(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return {"r2": r2(pred, y), "tau": kendall_tau(pred, y), "mse": mse(pred, y)}


def fit(name: str, layout: ParamLayout, x: torch.Tensor, y: torch.Tensor, split: Split,
        cfg: FitConfig, permuter: FlatPermuter | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train metanetwork ``name`` on flat vectors ``x`` (M, layout.dim) -> targets ``y`` (M,).

    With ``permuter`` every training example is replaced, each time it is drawn, by a random
    function-preserving neuron permutation of itself (augmentation).  A metanetwork's
    ``featurize`` (StatNN) is applied once up front, or per batch after augmentation.
    """
    dev = torch.device(cfg.device)
    feat = _featurizer(name)
    x = x.to(dev, torch.float32)
    y = y.to(dev, torch.float32)
    inputs = feat(x, layout) if feat is not None else x
    if permuter is not None:
        inputs = x  # permute raw vectors, featurize per batch
    model = build_metanet(name, layout, cfg.seed, cfg.options).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order_gen = generator(cfg.seed, "metanet-batches")
    perm_gen = generator(cfg.seed, "metanet-augment")
    train, val, test = (s.to(dev) for s in (split.train, split.val, split.test))

    def features(rows: torch.Tensor) -> torch.Tensor:
        if permuter is None:
            return inputs[rows]
        return feat(inputs[rows], layout) if feat is not None else inputs[rows]

    def eval_inputs(rows: torch.Tensor) -> torch.Tensor:
        return features(rows)

    history: list[dict[str, float]] = []
    best_r2, best_epoch, best_state = -math.inf, None, None
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = train[torch.randperm(len(train), generator=order_gen).to(dev)]
        total, count = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            rows = order[i:i + cfg.batch_size]
            if permuter is not None:
                idx = permuter.sample_batch(len(rows), perm_gen).to(dev)
                xb = torch.gather(inputs[rows], 1, idx)
                xb = feat(xb, layout) if feat is not None else xb
            else:
                xb = inputs[rows]
            loss = torch.nn.functional.mse_loss(model(xb), y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
        pv = predict(model, eval_inputs(val), cfg.eval_batch_size)
        rec = {"epoch": epoch, "train_loss": total / max(count, 1), "val_r2": r2(pv, y[val]),
               "val_tau": kendall_tau(pv, y[val])}
        history.append(rec)
        if on_epoch is not None:
            on_epoch(epoch, rec)
        if math.isfinite(rec["val_r2"]) and rec["val_r2"] > best_r2:
            best_r2, best_epoch = rec["val_r2"], epoch
            best_state = copy.deepcopy(model.state_dict())
    nan = {"r2": math.nan, "tau": math.nan, "mse": math.nan}
    if best_state is None:
        return FitResult(history, None, nan, dict(nan), [], _count(model))
    model.load_state_dict(best_state)
    pv = predict(model, eval_inputs(val), cfg.eval_batch_size)
    pt = predict(model, eval_inputs(test), cfg.eval_batch_size)
    return FitResult(history, best_epoch, _scores(pv, y[val]), _scores(pt, y[test]),
                     [float(v) for v in pt.cpu()], _count(model))


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
