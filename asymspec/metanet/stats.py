"""StatNN's input: 7 statistics of every parameter tensor (Unterthiner et al. 2020).

Per tensor (its trainable entries only, as in the reference for W-Asym): mean, unbiased
variance, min, max and the 25/50/75 % quantiles (linear interpolation, as ``numpy.quantile``).
A tensor with no trainable entry (W-Asym's wholly fixed stem conv) gives seven zeros, as in the
reference; a tensor with one entry has variance 0 (not NaN).  ResNet8: 29 tensors -> 203 inputs.
"""

from __future__ import annotations

import torch

from asymspec.metanet.inputs import ParamLayout

STATS = ("mean", "var", "min", "max", "q25", "q50", "q75")
_QUANTILES = (0.25, 0.5, 0.75)
_MAX_QUANTILE_NUMEL = 1 << 22  # torch.quantile refuses very large inputs: go in row chunks


def _quantiles(x: torch.Tensor) -> torch.Tensor:
    q = torch.tensor(_QUANTILES, dtype=x.dtype, device=x.device)
    rows = max(1, _MAX_QUANTILE_NUMEL // max(1, x.shape[1]))
    parts = [torch.quantile(x[i:i + rows], q, dim=1).T for i in range(0, x.shape[0], rows)]
    return torch.cat(parts, dim=0)


def statistics(flat: torch.Tensor, layout: ParamLayout) -> torch.Tensor:
    """``(M, 7 * len(layout.segments))`` statistics of the flat vectors ``flat`` ``(M, dim)``."""
    cols = []
    for s in layout.segments:
        x = flat[:, s.start:s.start + s.size].double()
        if s.size == 0:
            cols.append(torch.zeros(flat.shape[0], len(STATS), dtype=torch.float64,
                                    device=flat.device))
            continue
        var = x.var(dim=1, unbiased=True) if s.size > 1 else torch.zeros_like(x[:, 0])
        cols.append(torch.cat([torch.stack([x.mean(1), var, x.amin(1), x.amax(1)], dim=1),
                               _quantiles(x)], dim=1))
    return torch.cat(cols, dim=1).to(flat.dtype)


def feature_names(layout: ParamLayout) -> list[str]:
    """``"<key>:<stat>"`` for every column of :func:`statistics`."""
    return [f"{s.key}:{name}" for s in layout.segments for name in STATS]
