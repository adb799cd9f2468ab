"""W-Asymmetry (Lim et al. 2024, §4.1, eq. 2): freeze ``nfix`` entries of every row.

For each selected linear / conv layer, every output unit (row) gets a random set of ``nfix``
fixed positions, and **all rows of the mask are pairwise distinct** — Theorem 1's condition,
which the reference implementation only meets with high probability.  Fixed values are drawn
from N(0, kappa^2).  Conv layers fix either ``nfix`` kernel entries among ``in * k * k``
(``mode: entries``) or ``nfix`` whole input filters (``mode: filters``).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

from asymspec.ir.deferred import Deferred
from asymspec.ir.graph import IRGraph
from asymspec.passes.select import require_finite, settings_for

if TYPE_CHECKING:
    import torch

NAME = "w_asym"
FIELDS = ("nfix", "kappa", "mode")
MAX_ENUMERATE = 200_000


def distinct_subsets(n: int, k: int, rows: int, gen: torch.Generator) -> np.ndarray:
    """``rows`` pairwise distinct random k-subsets of ``range(n)``, as sorted int64 rows.

    Caller guarantees ``comb(n, k) >= rows``.  When the subsets are scarce they are enumerated
    and sampled without replacement; otherwise random subsets are drawn and duplicates redrawn
    (expected redraws are tiny when comb(n, k) >> rows).
    """
    import torch

    total = math.comb(n, k)
    if total <= MAX_ENUMERATE and total <= 8 * rows:
        combos = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64)
        combos = combos.reshape(total, k)
        pick = torch.randperm(total, generator=gen)[:rows].numpy()
        return combos[np.sort(pick)][torch.randperm(rows, generator=gen).numpy()]
    scores = torch.rand(rows, n, generator=gen)
    out = np.sort(torch.topk(scores, k, dim=1).indices.numpy().astype(np.int64), axis=1)
    while True:
        _, first = np.unique(out, axis=0, return_index=True)
        dup = np.setdiff1d(np.arange(rows), first)
        if dup.size == 0:
            return out
        redraw = torch.topk(torch.rand(dup.size, n, generator=gen), k, dim=1).indices
        out[dup] = np.sort(redraw.numpy().astype(np.int64), axis=1)


def apply(ir: IRGraph, cfg: dict, seed: int, error, draw: bool = True) -> list[str]:
    """Mask the selected weights (``draw=False``: deferred placeholders whose trainable count is
    the weight's size less ``nfix`` entries — or ``nfix`` whole filters — per output unit)."""
    changed = []
    for _, dst, edge in list(ir.dense_edges()):
        node = ir.node(dst)
        # never mask a pass's own fixed maps (FiGLU's F); sharers follow their owner
        if node["shares"] or node["added_by"] is not None:
            continue
        s = settings_for(dst, cfg, FIELDS)
        if s is None or int(s["nfix"]) == 0:
            continue
        nfix, kappa, mode = int(s["nfix"]), float(s.get("kappa", 1.0)), s.get("mode", "entries")
        shape = edge["weight_shape"]
        out = shape[0]
        filters = len(shape) == 4 and mode == "filters"
        n = shape[1] if filters else int(np.prod(shape[1:]))
        where = ("asymmetry", NAME) + s["_source"]["nfix"]
        unit = "input filters" if filters else "entries"
        if nfix > n:
            raise error(where, f"layer '{dst}': nfix={nfix} exceeds the {n} {unit} per output "
                        f"unit (fan-in)")
        if math.comb(n, nfix) < out:
            raise error(where, f"layer '{dst}': only C({n}, {nfix}) = {math.comb(n, nfix)} "
                        f"distinct masks exist for {out} output units; distinct rows are "
                        f"impossible (change nfix)")
        if draw:
            edge["mask"], edge["fixed"] = _draw(shape, n, nfix, kappa, filters, seed, dst)
            require_finite(edge["fixed"], dst, "kappa", kappa,
                           ("asymmetry", NAME) + s["_source"].get("kappa", ("kappa",)), error)
        else:
            # every row fixes nfix of its n entries (or filters of kernel_size**2 entries each)
            per_entry = math.prod(shape[2:]) if filters else 1
            trainable = math.prod(shape) - out * nfix * per_entry
            edge["mask"] = Deferred(tuple(shape), "mask", trainable)
            edge["fixed"] = Deferred(tuple(shape))
        edge["decided_by"].append(NAME)
        node.setdefault("asymmetry", {})[NAME] = {"nfix": nfix, "kappa": kappa, "mode": mode}
        changed.append(dst)
    return changed


def _draw(shape: tuple[int, ...], n: int, nfix: int, kappa: float, filters: bool, seed: int,
          layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's mask (True = trainable) and fixed values (zero where trainable), each from
    its own named stream."""
    import torch

    from asymspec.seeding import generator

    out = shape[0]
    rows = distinct_subsets(n, nfix, out, generator(seed, NAME, "mask", layer))
    fixed_flat = np.zeros((out, n), dtype=bool)
    np.put_along_axis(fixed_flat, rows, True, axis=1)
    fixed_pos = torch.from_numpy(fixed_flat)
    if filters:
        fixed_pos = fixed_pos[:, :, None, None].expand(shape).clone()
    else:
        fixed_pos = fixed_pos.reshape(shape)
    values = torch.randn(shape, generator=generator(seed, NAME, "values", layer)) * kappa
    return ~fixed_pos, torch.where(fixed_pos, values, torch.zeros(()))
