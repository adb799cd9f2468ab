"""Monotonic-linear-interpolation metrics of one loss curve ``r`` over ``α = linspace(0, 1, n)``,
and their aggregation (pure functions on numbers; no torch).

Definitions (Lim et al. 2024, §5.4 and the reference's ``train_cifar.py``; Lucas et al. 2021):

* :func:`lim_delta` — Δ = max_i (r[i+1] − r[i]), the largest single-step rise; negative for a
  strictly decreasing path.  A path is *monotonic* when Δ ≤ 0 (:func:`is_monotonic`).
* :func:`lucas_bump` — Lucas et al.'s bump height: a bump starts at an increase from r[i]; its
  height is the largest r[j] − r[i] before the loss drops below r[i] again (or the path ends);
  the result is the largest bump height, 0 for a monotone path (always ≥ 0).
* :func:`local_convexity` — the share of interior points with a non-negative second difference
  r[i+1] − 2r[i] + r[i−1] ≥ 0.
* :func:`global_convexity` — the share of interior points on or below the chord from (0, r[0])
  to (1, r[−1]) (the paper's definition).  ``chord="reference"`` uses the reference code's line
  r[0] + (r[1] − r[0])·α (the second point placed at α = 1), a bug kept only as a named
  compatibility option: for any non-increasing path it is exactly 1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

CHORDS = ("true", "reference")


def _alphas(n: int) -> list[float]:
    return [i / (n - 1) for i in range(n)]


def _check(r: Sequence[float]) -> list[float]:
    values = [float(v) for v in r]
    if len(values) < 3:
        raise ValueError("an interpolation curve needs at least 3 points")
    return values


def lim_delta(r: Sequence[float]) -> float:
    """The largest single-step change max_i (r[i+1] − r[i]) (can be negative)."""
    v = _check(r)
    return max(b - a for a, b in zip(v, v[1:]))


def is_monotonic(r: Sequence[float], tolerance: float = 0.0) -> bool:
    """Δ ≤ ``tolerance`` (the paper: tolerance 0)."""
    return lim_delta(r) <= tolerance


def lucas_bump(r: Sequence[float]) -> float:
    """Lucas et al.'s maximum bump height (≥ 0; 0 when the path never rises)."""
    v = _check(r)
    best, i, n = 0.0, 0, len(v)
    while i < n - 1:
        if v[i + 1] > v[i]:
            start, peak, j = v[i], v[i], i + 1
            while j < n and v[j] >= start:
                peak = max(peak, v[j])
                j += 1
            best = max(best, peak - start)
            i = j
        else:
            i += 1
    return best


def local_convexity(r: Sequence[float]) -> float:
    """Share of interior points with r[i+1] − 2r[i] + r[i−1] ≥ 0."""
    v = _check(r)
    inner = [v[i + 1] - 2 * v[i] + v[i - 1] >= 0 for i in range(1, len(v) - 1)]
    return sum(inner) / len(inner)


def global_convexity(r: Sequence[float], chord: str = "true") -> float:
    """Share of interior points on or below the chord (see the module docstring)."""
    if chord not in CHORDS:
        raise ValueError(f"chord must be one of {CHORDS}, not {chord!r}")
    v = _check(r)
    alphas = _alphas(len(v))
    end = v[-1] if chord == "true" else v[1]
    line = [v[0] + (end - v[0]) * a for a in alphas]
    inner = [v[i] <= line[i] for i in range(1, len(v) - 1)]
    return sum(inner) / len(inner)


def curve_metrics(r: Sequence[float], tolerance: float = 0.0) -> dict[str, Any]:
    """Every metric of one curve (both chords), or ``finite: False`` for a curve with NaN/inf."""
    if not all(math.isfinite(float(x)) for x in r):
        return {"finite": False}
    delta = lim_delta(r)
    return {"finite": True, "delta": delta, "monotonic": delta <= tolerance,
            "lucas_bump": lucas_bump(r), "local_convexity": local_convexity(r),
            "global_convexity": global_convexity(r, "true"),
            "global_convexity_reference": global_convexity(r, "reference")}


def ttest(a: Sequence[float], b: Sequence[float], welch: bool = False) -> dict[str, float]:
    """Two-sided two-sample t-test (Student's, or Welch's) via scipy: ``{t, p}``.

    Constant samples with equal means give ``p = 1``; with different means ``p = 0``.
    """
    from scipy import stats

    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) < 2 or len(b) < 2:
        return {"t": float("nan"), "p": float("nan")}
    if max(a) == min(a) and max(b) == min(b):
        same = a[0] == b[0]
        return {"t": 0.0 if same else math.copysign(math.inf, a[0] - b[0]),
                "p": 1.0 if same else 0.0}
    with warnings.catch_warnings():  # one constant sample: scipy warns about precision
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=not welch)
    return {"t": float(res.statistic), "p": float(res.pvalue)}
