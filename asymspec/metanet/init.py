"""Seeded initialisation of metanetworks from an explicit ``torch.Generator``.

PyTorch's layer constructors draw from the global RNG.  :func:`reset_parameters` redraws every
parameter from the *same* distributions as PyTorch's defaults — Linear / Conv weights and biases
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (what ``kaiming_uniform_(a=sqrt(5))`` amounts to), norm
layers ones / zeros — but from ``gen``, so a (model, seed) pair gives bit-identical weights in any
process, whatever else ran before.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_NORMS = (nn.LayerNorm, nn.BatchNorm1d, nn.GroupNorm)


@torch.no_grad()
def reset_parameters(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """Re-initialise ``module``'s Linear / Conv1d / norm layers from ``gen``; returns it."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            m.weight.uniform_(-bound, bound, generator=gen)
            if m.bias is not None:
                m.bias.uniform_(-bound, bound, generator=gen)
        elif isinstance(m, _NORMS):
            if getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
            if isinstance(m, nn.BatchNorm1d):
                m.reset_running_stats()
    return module
