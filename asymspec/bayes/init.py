"""Re-initialising posterior means the way the reference BNN code does.

LIM's ``bnn/sparse.py`` initialises every Linear/Conv2d weight with ``kaiming_normal_``
(fan-in mode, gain sqrt(2): std = sqrt(2 / fan_in)) and keeps PyTorch's default biases; asymspec
emits PyTorch's default uniform weights (std = 1/sqrt(3 fan_in), 2.4x smaller).  With a fixed
posterior variance the mean's scale sets the signal-to-noise ratio of every layer, so the BNN
runner re-draws the means (free entries only: W-Asym frozen values stay) from seeded generators.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asymspec.seeding import generator

MEAN_INITS = ("keep", "kaiming_normal")


@torch.no_grad()
def init_means(model: nn.Module, rule: str = "kaiming_normal", seed: int = 0) -> nn.Module:
    """Re-draw the trainable entries of every linear/conv weight of ``model`` (in place).

    ``keep`` leaves the model as it is; ``kaiming_normal`` draws ``N(0, 2 / fan_in)`` with one
    generator per layer named ``(seed, "bnn-mean-init", layer name)``.
    """
    if rule not in MEAN_INITS:
        raise ValueError(f"unknown mean init {rule!r} (one of {', '.join(MEAN_INITS)})")
    if rule == "keep":
        return model
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if not isinstance(w, nn.Parameter) or w.dim() not in (2, 4):
            continue
        fan_in = math.prod(w.shape[1:])
        g = generator(seed, "bnn-mean-init", name)
        new = torch.randn(w.shape, generator=g) * math.sqrt(2.0 / fan_in)
        mask = getattr(module, "weight_mask", None)
        if mask is not None:
            new = torch.where(mask.cpu(), new, w.detach().cpu())
        w.copy_(new.to(w.device, w.dtype))
    return model
