"""Metrics read off training curves and result files of sweep cells.

``epochs_to_threshold`` is Fig 6's quantity (Lim et al. 2024, App. A): the (fractional) number
of epochs until a curve — train accuracy, evaluated at the given epochs — first reaches a
threshold, interpolated linearly between the two evaluations around the crossing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def epochs_to_threshold(epochs: Sequence[float], values: Sequence[float],
                        threshold: float) -> float | None:
    """First (interpolated) epoch at which ``values`` reaches ``threshold``; None if never.

    ``epochs[i]`` is when ``values[i]`` was measured (e.g. 0, 1, 2, ... with 0 = at init).
    If the first measurement already reaches it, that epoch is returned.  NaN values never
    count as reaching it (a diverged run does not "reach" 70 % accuracy).
    """
    if len(epochs) != len(values):
        raise ValueError(f"{len(epochs)} epochs but {len(values)} values")
    prev_e = prev_v = None
    for e, v in zip(epochs, values):
        v = float(v)
        if not math.isnan(v) and v >= threshold:
            if prev_e is None or prev_v is None or math.isnan(prev_v) or v == prev_v:
                return float(e)
            frac = (threshold - prev_v) / (v - prev_v)
            return float(prev_e + frac * (e - prev_e))
        prev_e, prev_v = float(e), v
    return None


def lookup(results: Any, path: str) -> Any:
    """``results["a"]["b"][0]`` for ``path`` ``a.b.0`` (KeyError naming the missing part)."""
    node = results
    done: list[str] = []
    for part in path.split("."):
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise KeyError(f"{'.'.join(done) or 'results'} is a list of {len(node)}; "
                               f"no item {part!r}") from None
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            have = ", ".join(sorted(node)) if isinstance(node, dict) else type(node).__name__
            raise KeyError(f"{'.'.join(done + [part])} not found (have: {have})")
        done.append(part)
    return node


def mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """Pointwise mean of equally long curves."""
    if not curves:
        return []
    n = min(len(c) for c in curves)
    return [sum(float(c[i]) for c in curves) / len(curves) for i in range(n)]
