"""Train / validation / test splits of a zoo (50 / 25 / 25 by default).

The reference splits the networks *contiguously in directory-listing order*, unshuffled and
unseeded (``metanet/train.py:153-160``): the split then depends on the file system and on how the
zoo was generated, and any ordering in the zoo (e.g. by hyperparameter row) leaks into it.  We
shuffle with a seeded generator.  ``mode="contiguous"`` reproduces the reference's rule on our
member order, as a named compatibility option.

Splitting is over *member indices* (a zoo's hyperparameter rows), the same for every variant:
row ``i`` of the standard and the W-Asym zoo (same hyperparameters) land in the same split, so
the variants are compared on paired test sets.  Diverged members are dropped after assigning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from asymspec.seeding import generator

SPLIT_MODES = ("shuffled", "contiguous")


@dataclass(frozen=True)
class Split:
    """Positions (into the variant's member list) of each part."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_members(indices: Sequence[int], n_rows: int, seed: int,
                  fractions: Sequence[float] = (0.5, 0.25, 0.25),
                  mode: str = "shuffled") -> Split:
    """Split members (given by their row ``indices``, in member order) of a zoo of ``n_rows``
    rows.  Rows are ranked (shuffled by ``seed``, or in row order for ``contiguous``); the first
    ``fractions[0]`` of the ranking are train rows, the next ``fractions[1]`` validation."""
    if mode not in SPLIT_MODES:
        raise ValueError(f"unknown split mode {mode!r}; use one of {', '.join(SPLIT_MODES)}")
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got "
                         f"{list(fractions)}")
    if mode == "shuffled":
        order = torch.randperm(n_rows, generator=generator(seed, "metanet-split"))
    else:
        order = torch.arange(n_rows)
    rank = torch.empty(n_rows, dtype=torch.long)
    rank[order] = torch.arange(n_rows)
    n_train = int(round(fractions[0] * n_rows))
    n_val = int(round((fractions[0] + fractions[1]) * n_rows)) - n_train
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n_rows):
        raise ValueError(f"member indices must lie in [0, {n_rows})")
    r = rank[idx]
    pos = torch.arange(len(idx))
    return Split(pos[r < n_train], pos[(r >= n_train) & (r < n_train + n_val)],
                 pos[r >= n_train + n_val])
