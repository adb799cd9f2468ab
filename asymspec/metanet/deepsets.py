"""DeepSets over scalar parameters (Lim et al. 2024, Table 14; Zaheer et al. 2017).

Maths:  every trainable entry θ_i is a set element;
φ(θ_i) = ReLU(LN(w θ_i + b)) ∈ R^h,  y = ρ(mean_i φ(θ_i)),
ρ = [Linear(h→h) → LN → ReLU] × (layers − 1) → Linear(h→1).

Invariant to *any* permutation of the parameter vector, not only neuron permutations — it can
only use the distribution of all weights (``permutation_invariant``).

The per-element features are (B, D, h): 2.5 GB at B = 128, D = 78,042, h = 64.  The set is
therefore encoded in chunks of ``chunk`` elements with activation checkpointing during
training, which bounds memory by B·chunk·h without changing the result.

Args:
    layout: the input networks' layout (D = layout.dim).
    hidden (int, default 64): width h.
    layers (int, default 3): number of LN blocks (1 in φ, ``layers - 1`` in ρ).
    chunk (int, default 8192): set elements encoded at a time.

Shapes:
    input (B, D) -> output (B,).
Parameters: h = 64, 3 layers: 8,897 (Table 14).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from asymspec.metanet.inputs import ParamLayout
from asymspec.metanet.registry import register_metanet


@register_metanet("deepsets")
class DeepSetsMetanet(nn.Module):
    permutation_invariant = True

    def __init__(self, layout: ParamLayout, hidden: int = 64, layers: int = 3,
                 chunk: int = 8192) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError("DeepSets needs layers >= 1")
        self.chunk = chunk
        self.phi = nn.Sequential(nn.Linear(1, hidden), nn.LayerNorm(hidden), nn.ReLU())
        rho: list[nn.Module] = []
        for _ in range(layers - 1):
            rho += [nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU()]
        self.rho = nn.Sequential(*rho, nn.Linear(hidden, 1))

    def _encode_sum(self, x: torch.Tensor) -> torch.Tensor:
        return self.phi(x.unsqueeze(-1)).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = 0
        for i in range(0, x.shape[1], self.chunk):
            piece = x[:, i:i + self.chunk]
            if torch.is_grad_enabled() and self.training:
                total = total + checkpoint(self._encode_sum, piece, use_reentrant=False)
            else:
                total = total + self._encode_sum(piece)
        return self.rho(total / x.shape[1]).squeeze(-1)
