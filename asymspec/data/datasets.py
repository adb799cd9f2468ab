"""In-memory datasets: whole splits as tensors (these data sets fit in memory easily)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from asymspec.seeding import generator


class ArrayDataset(Dataset):
    """Images ``x`` (float, normalised, ``(N, C, H, W)``) and integer labels ``y``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, name: str = "", num_classes: int = 0):
        if len(x) != len(y):
            raise ValueError("x and y must have the same length")
        self.x = x
        self.y = y.long()
        self.name = name
        self.num_classes = num_classes or int(self.y.max()) + 1

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]

    def subset(self, n: int | None, seed: int = 0) -> ArrayDataset:
        """The first ``n`` examples of a seeded permutation (the whole set for ``None``)."""
        if n is None or n >= len(self):
            return self
        perm = torch.randperm(len(self), generator=generator(seed, "subset", self.name))[:n]
        return ArrayDataset(self.x[perm], self.y[perm], self.name, self.num_classes)


class AugmentedDataset(Dataset):
    """``base`` with a per-sample transform; sample ``i`` of epoch ``e`` uses its own generator
    seeded by ``(seed, e, i)``, so results do not depend on batching or worker order."""

    def __init__(self, base: ArrayDataset, transform, seed: int = 0) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return self.transform(x, generator(self.seed, "augment", self.epoch, int(i))), y


@dataclass
class GraphData:
    """One graph for transductive node classification."""

    x: torch.Tensor  # (num_nodes, features)
    edge_index: torch.Tensor  # (2, num_edges), both directions
    y: torch.Tensor  # (num_nodes,)
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    name: str = ""

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1

    def mask(self, split: str) -> torch.Tensor:
        return {"train": self.train_mask, "val": self.val_mask, "test": self.test_mask}[split]


class GraphSplit(Dataset):
    """A one-item dataset: the whole graph and the node mask of one split."""

    def __init__(self, graph: GraphData, split: str) -> None:
        self.graph = graph
        self.split = split

    @property
    def mask(self) -> torch.Tensor:
        return self.graph.mask(self.split)

    @property
    def num_classes(self) -> int:
        return self.graph.num_classes

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> GraphData:
        if i != 0:
            raise IndexError(i)
        return self.graph
