"""Metrics of a predictive distribution: NLL, accuracy and expected calibration error.

ECE is torchmetrics' ``MulticlassCalibrationError`` (``n_bins=15``, ``norm='l1'``), as in the
reference evaluation (Lim et al. 2024 §5.2, LIM ``bnn/fit.py``): equal-width confidence bins,
``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`` with confidence = the top class probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor,
                               n_bins: int = 15) -> float:
    """ECE of class probabilities ``probs`` ``(N, C)`` against integer ``target`` ``(N,)``."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(probs.float(), target.long(),
                                              num_classes=probs.shape[-1], n_bins=n_bins,
                                              norm="l1"))


def evaluate_predictions(log_probs: torch.Tensor, target: torch.Tensor,
                         n_bins: int = 15) -> dict[str, float]:
    """``nll`` (mean), ``accuracy`` (fraction) and ``ece`` of predictive log-probabilities."""
    log_probs = log_probs.float()
    return {"nll": float(F.nll_loss(log_probs, target)),
            "accuracy": float((log_probs.argmax(-1) == target).float().mean()),
            "ece": expected_calibration_error(log_probs.exp(), target, n_bins)}
