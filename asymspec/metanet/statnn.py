"""StatNN (Unterthiner et al. 2020): an MLP over 7 statistics of every parameter tensor.

Maths:  s = stats(θ) ∈ R^{7T} (mean, unbiased variance, min, max, quartiles of each of the T
parameter tensors' trainable entries, :mod:`asymspec.metanet.stats`);
y = W_3 · LN(ReLU(W_2 · LN(ReLU(W_1 s + b_1)) + b_2)) + b_3.

Statistics of a tensor do not change when its rows or columns are permuted, so StatNN is
invariant to every neuron permutation (``permutation_invariant``).  The statistics are computed
once per network (:meth:`featurize`), not per batch.

Args:
    layout: the input networks' layout (T = len(layout.segments)).
    hidden (int, default 256): hidden width.

Shapes:
    input (B, 7T) statistics -> output (B,).
Parameters: ResNet8 (T = 29, 203 inputs), hidden 256: 119,297 (Table 14).
"""

from __future__ import annotations

import torch
from torch import nn

from asymspec.metanet.inputs import ParamLayout
from asymspec.metanet.registry import register_metanet
from asymspec.metanet.stats import STATS, statistics


@register_metanet("statnn")
class StatNN(nn.Module):
    permutation_invariant = True

    def __init__(self, layout: ParamLayout, hidden: int = 256) -> None:
        super().__init__()
        d = len(STATS) * len(layout.segments)
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.LayerNorm(hidden),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.LayerNorm(hidden),
                                 nn.Linear(hidden, 1))

    @staticmethod
    def featurize(flat: torch.Tensor, layout: ParamLayout) -> torch.Tensor:
        return statistics(flat, layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)
