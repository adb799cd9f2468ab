"""The reference's per-iteration triangle learning-rate schedule.

``factor(it) = interp(it, [0, peak·S, E·S], [0, 1, 0])`` with S steps per epoch and E the
member's own epochs (Lim et al. code, ``train_cifar.py:202-206``, from FFCV's CIFAR example):
linear warm-up from 0 to the peak lr at epoch ``peak`` (5), then linear decay to 0 at the
member's final epoch.  Step ``it`` (0-based) is taken with ``lr · factor(it)``, so the first step
has lr 0, as with ``LambdaLR`` stepped after every iteration.
"""

from __future__ import annotations

import torch


def triangle_factor(it: int, steps_per_epoch: int, peak_epoch: float, epochs: int) -> float:
    """Multiplier of the peak lr at (0-based) iteration ``it``."""
    peak = peak_epoch * steps_per_epoch
    end = epochs * steps_per_epoch
    if it <= 0:
        return 0.0
    if it < peak:
        return it / peak
    if it >= end:
        return 0.0
    return (end - it) / (end - peak) if end > peak else 0.0


def triangle_factors(it: int, steps_per_epoch: int, peak_epoch: float,
                     epochs: torch.Tensor) -> torch.Tensor:
    """:func:`triangle_factor` for a vector of per-member epoch counts (float64 ``(M,)``)."""
    return torch.tensor([triangle_factor(it, steps_per_epoch, peak_epoch, int(e))
                         for e in epochs.tolist()], dtype=torch.float64)


def lambda_for(steps_per_epoch: int, peak_epoch: float, epochs: int):
    """The schedule as a ``torch.optim.lr_scheduler.LambdaLR`` lambda."""
    return lambda it: triangle_factor(it, steps_per_epoch, peak_epoch, epochs)
