"""AdamW for many members at once, on one flat ``(M, D)`` parameter tensor.

The same update as ``torch.optim.AdamW`` (decoupled weight decay ``p ← p·(1 − lr·wd)``, then
``p ← p − lr/bc1 · m / (√v/√bc2 + eps)``), with a learning rate and weight decay per member
(row) and a per-member ``active`` flag: inactive members (diverged, or past their epochs) keep
their parameters and moments untouched, and so do entries outside ``trainable`` (frozen W-Asym
entries stay exactly at their fixed values, also under weight decay).
"""

from __future__ import annotations

import torch


class StackedAdamW:
    def __init__(self, flat: torch.Tensor, trainable: torch.Tensor, lr: torch.Tensor,
                 weight_decay: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.exp_avg = torch.zeros_like(flat)
        self.exp_avg_sq = torch.zeros_like(flat)
        self.steps = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
        self.trainable = trainable.to(flat.device).view(1, -1)
        self.lr = lr.to(flat.device, torch.float64)
        self.weight_decay = weight_decay.to(flat.device, torch.float64)
        self.betas = betas
        self.eps = eps

    @torch.no_grad()
    def step(self, flat: torch.Tensor, grad: torch.Tensor, factor: torch.Tensor,
             active: torch.Tensor) -> None:
        """One update of every active row; ``factor`` ``(M,)`` scales each member's peak lr."""
        b1, b2 = self.betas
        self.steps += active.to(torch.float64)
        steps = self.steps.clamp(min=1)
        lr = self.lr * factor.to(flat.device, torch.float64)
        bc1 = 1 - b1 ** steps
        bc2_sqrt = (1 - b2 ** steps).sqrt()
        col = (lambda t: t.to(flat.dtype).view(-1, 1))
        a = active.view(-1, 1)
        m = torch.where(a, self.exp_avg.lerp(grad, 1 - b1), self.exp_avg)
        v = torch.where(a, self.exp_avg_sq * b2 + (1 - b2) * grad * grad, self.exp_avg_sq)
        self.exp_avg, self.exp_avg_sq = m, v
        denom = v.sqrt() / col(bc2_sqrt) + self.eps
        new = flat * col(1 - lr * self.weight_decay) - col(lr / bc1) * m / denom
        flat.copy_(torch.where(a & self.trainable, new, flat))

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (members leaving the chunk are dropped)."""
        self.exp_avg = self.exp_avg[rows]
        self.exp_avg_sq = self.exp_avg_sq[rows]
        self.steps = self.steps[rows]
        self.lr = self.lr[rows]
        self.weight_decay = self.weight_decay[rows]
