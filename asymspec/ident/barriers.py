"""Barrier measures on an interpolation path, as the identifiability analyses report them.

* ``loss_barrier_mid`` — ``L(½) − ½(L(0) + L(1))`` and ``loss_barrier_max`` — the largest gap
  between the path and the straight line of its endpoint losses (Lim et al.; Frankle et al.);
* ``acc_barrier_rel`` — the reference's (``interpolation.py::compute_barrier``) relative
  accuracy barrier in percent, ``100·(min_λ acc(λ) − max(acc(0), acc(1))) / max(acc(0),
  acc(1))`` (≤ 0; 0 means no accuracy is lost anywhere on the path).
"""

from __future__ import annotations

from collections.abc import Sequence

from asymspec.run.barrier import max_barrier, midpoint_barrier


def relative_accuracy_barrier(acc: Sequence[float]) -> float:
    best_end = max(float(acc[0]), float(acc[-1]))
    if best_end <= 0:
        return 0.0
    return 100.0 * (min(float(a) for a in acc) - best_end) / best_end


def path_barriers(t: Sequence[float], loss: Sequence[float], acc: Sequence[float]
                  ) -> dict[str, float]:
    return {"loss_barrier_mid": midpoint_barrier(t, loss),
            "loss_barrier_max": max_barrier(t, loss),
            "acc_barrier_rel": relative_accuracy_barrier(acc)}
