"""Flat MLP metanetwork (Lim et al. 2024, §5.3 and Table 14).

Maths:  y = W_2 · LayerNorm(ReLU(W_1 x + b_1)) + b_2,  x ∈ R^D the flattened trainable weights.

It sees the raw parameter vector, so a neuron permutation of the input network (same function)
moves its input: the model has to learn the symmetry from data, which is why removing the
symmetry (W-Asym) helps it most (paper: τ .389 standard vs .864 W-Asym).

Args:
    layout: the input networks' :class:`~asymspec.metanet.inputs.ParamLayout` (D = layout.dim).
    hidden (int, default 64): hidden width.

Shapes:
    input (B, D) -> output (B,).
Parameters: D·h + h + 2h + h + 1; ResNet8 (D = 78,042): 4,994,945; W-Asym (60,634): 3,880,833.
"""

from __future__ import annotations

import torch
from torch import nn

from asymspec.metanet.inputs import ParamLayout
from asymspec.metanet.registry import register_metanet


@register_metanet("mlp")
class MLPMetanet(nn.Module):
    permutation_invariant = False

    def __init__(self, layout: ParamLayout, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(layout.dim, hidden), nn.ReLU(), nn.LayerNorm(hidden),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)
