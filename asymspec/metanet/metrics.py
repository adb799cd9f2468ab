"""Metrics of the metanetwork experiment: R² (as sklearn's ``r2_score``) and Kendall τ-b
(scipy's ``kendalltau``, what the reference reports).

:func:`r2` is computed in torch so the per-epoch validation score needs no host round trip per
batch; it follows sklearn's conventions (a constant target gives 1.0 for a perfect prediction,
else 0.0).  Non-finite predictions give NaN for both metrics (a diverged metanetwork is
reported as such, never silently scored).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def r2(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``."""
    p = torch.as_tensor(pred, dtype=torch.float64).reshape(-1)
    t = torch.as_tensor(target, dtype=torch.float64).reshape(-1).to(p.device)
    if p.numel() != t.numel() or p.numel() < 2:
        raise ValueError(f"r2 needs two equally long vectors of >= 2 values, got {p.numel()} "
                         f"and {t.numel()}")
    if not bool(torch.isfinite(p).all()):
        return math.nan
    ss_res = float(((t - p) ** 2).sum())
    ss_tot = float(((t - t.mean()) ** 2).sum())
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def kendall_tau(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """Kendall's τ-b between predictions and targets (NaN when undefined)."""
    from scipy.stats import kendalltau

    p = np.asarray(torch.as_tensor(pred).detach().cpu(), dtype=np.float64).reshape(-1)
    t = np.asarray(torch.as_tensor(target).detach().cpu(), dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(p)):
        return math.nan
    tau = kendalltau(p, t).statistic
    return float(tau) if tau is not None else math.nan


def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(((pred.double() - target.double()) ** 2).mean())
