"""Which members a zoo has: index, id, seeds and hyperparameters, from (zoo seed, index) alone.

Seeds are derived per member index, not per variant: member ``i`` of every variant has the same
initialisation seed, data order, augmentation draws and hyperparameters, so variants differ only
in architecture (the asymmetry seed — masks, F — comes from each variant's model spec and is
shared by all of its members).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asymspec.seeding import stable_seed
from asymspec.zoo.hparams import sample_member


@dataclass(frozen=True)
class MemberPlan:
    """One member to train.  ``init_seed`` is the ``init_seed`` of ``asymspec.build``."""

    index: int
    init_seed: int
    data_seed: int
    hparams: dict[str, Any] = field(hash=False)

    @property
    def id(self) -> str:
        return member_id(self.index)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "index": self.index, "init_seed": self.init_seed,
                "data_seed": self.data_seed, "hparams": dict(self.hparams)}


def member_id(index: int) -> str:
    return f"m{index:05d}"


def plan_member(seed: int, index: int, distributions: dict[str, Any]) -> MemberPlan:
    return MemberPlan(index=index,
                      init_seed=stable_seed(seed, "zoo-init", index) & 0xFFFFFFFF,
                      data_seed=stable_seed(seed, "zoo-data", index),
                      hparams=sample_member(distributions, seed, index))


def plan_members(seed: int, indices: range | list[int],
                 distributions: dict[str, Any]) -> list[MemberPlan]:
    return [plan_member(seed, i, distributions) for i in indices]


def shard_ranges(members: int, shard_size: int) -> list[range]:
    """Member index ranges of the shards: contiguous, ``shard_size`` each (the last may be
    shorter)."""
    return [range(lo, min(lo + shard_size, members)) for lo in range(0, members, shard_size)]
