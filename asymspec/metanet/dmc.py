"""DMC: a 1D CNN over the raw parameter sequence (Eilertsen et al. 2020; Lim et al. Table 14).

Maths:  the flattened trainable weights are a 1-channel sequence (B, 1, D):

* 6 blocks Conv1d(k=5, padding 2) → ReLU → BatchNorm1d → MaxPool1d(2), channels
  1→2→4→8→16→32→64;
* 4 blocks Conv1d(64→64, k=5, padding 2) → ReLU → BatchNorm1d, MaxPool1d(2) after the 2nd and
  4th (the odd ``i`` of the reference's loop);
* readout: per-position Linear(64→64) → LN → ReLU, mean over positions, then
  Linear(64→64) → LN → ReLU → Linear(64→1).

The reference's padding is not stated in our notes; padding 2 keeps lengths ("same") and does
not change the parameter count.  Pooling floors odd lengths (as ``nn.MaxPool1d(2)``) and is
skipped once a sequence has length 1, so short inputs (small test networks) work too.

Args:
    layout: the input networks' layout (D = layout.dim).
    hidden (int, default 64): channels of the last blocks and readout width.
    kernel (int, default 5): convolution width.

Shapes:
    input (B, D) -> output (B,).
Parameters: 105,357 with the defaults, for any D (Table 14).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asymspec.metanet.inputs import ParamLayout
from asymspec.metanet.registry import register_metanet


class _Pool(nn.Module):
    """MaxPool1d(2), the identity on length-1 sequences."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.max_pool1d(h, 2) if h.shape[-1] >= 2 else h


def _block(c_in: int, c_out: int, kernel: int, pool: bool) -> list[nn.Module]:
    mods: list[nn.Module] = [nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.ReLU(),
                             nn.BatchNorm1d(c_out)]
    if pool:
        mods.append(_Pool())
    return mods


@register_metanet("dmc")
class DMCMetanet(nn.Module):
    permutation_invariant = False

    def __init__(self, layout: ParamLayout, hidden: int = 64, kernel: int = 5) -> None:
        super().__init__()
        chans = [1, 2, 4, 8, 16, 32, hidden]
        mods: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            mods += _block(c_in, c_out, kernel, pool=True)
        for i in range(4):
            mods += _block(hidden, hidden, kernel, pool=i % 2 == 1)
        self.conv = nn.Sequential(*mods)
        self.position = nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                                  nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.unsqueeze(1))  # (B, C, L)
        h = self.position(h.transpose(1, 2)).mean(dim=1)
        return self.head(h).squeeze(-1)
