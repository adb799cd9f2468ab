"""Loss-barrier arithmetic on interpolation curves (pure functions, no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def grid(points: int) -> list[float]:
    """``points`` evenly spaced coefficients in [0, 1], with 0.5 added when missing."""
    if points < 3:
        raise ValueError("need at least 3 interpolation points")
    ts = [i / (points - 1) for i in range(points)]
    if not any(abs(t - 0.5) < 1e-12 for t in ts):
        ts = sorted(ts + [0.5])
    return ts


def midpoint_barrier(t: Sequence[float], losses: Sequence[float]) -> float:
    """``L(½θ₁ + ½θ₂) − ½(L(θ₁) + L(θ₂))`` (``t`` must contain 0, 0.5 and 1)."""
    mid = _index(t, 0.5)
    return float(losses[mid]) - 0.5 * (float(losses[_index(t, 0.0)]) +
                                      float(losses[_index(t, 1.0)]))


def max_barrier(t: Sequence[float], losses: Sequence[float]) -> float:
    """``max_t L((1−t)θ₁ + tθ₂) − ((1−t)L(θ₁) + tL(θ₂))`` over the grid (>= 0 at the ends)."""
    l0 = float(losses[_index(t, 0.0)])
    l1 = float(losses[_index(t, 1.0)])
    return max(float(v) - ((1 - ti) * l0 + ti * l1) for ti, v in zip(t, losses))


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": n}


def _index(t: Sequence[float], value: float) -> int:
    for i, ti in enumerate(t):
        if abs(ti - value) < 1e-9:
            return i
    raise ValueError(f"interpolation grid has no point at t={value}")
