"""Loss and accuracy of many members (rows of a flat ``(M, D)`` tensor) on one data set.

Memory-bounded: members go through in chunks and data in batches of ``batch_size``.  On CUDA
the members of a chunk run together under ``vmap``; on CPU one after another (faster there, see
:mod:`asymspec.zoo.train`).  Loss is plain cross-entropy (no label smoothing), summed in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from asymspec.zoo.layout import ParamLayout


@torch.no_grad()
def evaluate_rows(model: nn.Module, layout: ParamLayout, flat: torch.Tensor, x: torch.Tensor,
                  y: torch.Tensor, batch_size: int = 1024, path: str = "loop",
                  chunk: int = 16, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """``{"loss": (M,), "acc": (M,)}`` (float64, CPU) of every row of ``flat``."""
    device = torch.device(device)
    model = model.to(device).eval()
    x, y = x.to(device), y.to(device)
    m = flat.shape[0]
    loss = torch.zeros(m, dtype=torch.float64)
    correct = torch.zeros(m, dtype=torch.float64)

    def fwd(params, xb):
        return functional_call(model, params, (xb,))

    step = chunk if path == "batched" else 1
    for lo in range(0, m, step):
        rows = flat[lo:lo + step].to(device)
        for b in range(0, len(y), batch_size):
            xb, yb = x[b:b + batch_size], y[b:b + batch_size]
            if path == "batched":
                logits = vmap(fwd, in_dims=(0, None))(layout.views(rows), xb).float()
            else:
                logits = fwd({k: v[0] for k, v in layout.views(rows).items()}, xb)
                logits = logits.float().unsqueeze(0)
            ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(len(rows)), reduction="none")
            loss[lo:lo + len(rows)] += ce.view(len(rows), -1).double().sum(1).cpu()
            hits = (logits.argmax(-1) == yb).double().sum(1).cpu()
            correct[lo:lo + len(rows)] += hits
    return {"loss": loss / len(y), "acc": correct / len(y)}
