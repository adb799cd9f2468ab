"""Data sets for experiments: ``load(name, split, root=None, **options)``.

Names: ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` (torchvision formats; downloaded
where internet exists, otherwise a :class:`~asymspec.errors.UserError` naming the directory to put
the files in; Fashion-MNIST is also found where Debian's ``dataset-fashion-mnist`` installs it),
``digits`` (scikit-learn's bundled 8x8 digits), ``ogbn-arxiv`` (needs ``ogb``) and
``fmnist-knn`` (an offline k-NN graph over Fashion-MNIST images; options ``num_nodes``, ``k``,
``dim``).  Image sets come back as :class:`ArrayDataset` (normalised ``(N, C, H, W)`` float
tensors ``x`` and labels ``y``); graphs as a one-item :class:`GraphSplit` holding the whole
:class:`GraphData` and the split's node mask.

The data root is ``root``, else ``$ASYMSPEC_DATA``, else ``~/.cache/asymspec/data``.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from asymspec.data.augment import RandomCropFlip
from asymspec.data.datasets import ArrayDataset, AugmentedDataset, GraphData, GraphSplit
from asymspec.errors import UserError

IMAGE_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "digits")
GRAPH_DATASETS = ("ogbn-arxiv", "fmnist-knn")
DATASETS = IMAGE_DATASETS + GRAPH_DATASETS
SPLITS = ("train", "test", "val")

__all__ = ["ArrayDataset", "AugmentedDataset", "DATASETS", "GraphData", "GraphSplit",
           "RandomCropFlip", "data_root", "load"]


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root``, else ``$ASYMSPEC_DATA``, else ``~/.cache/asymspec/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("ASYMSPEC_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "asymspec" / "data"


def load(name: str, split: str, root: str | os.PathLike[str] | None = None,
         **options) -> Dataset:
    """The ``split`` (``train`` / ``test``; graphs also ``val``) of data set ``name``."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    allowed = SPLITS if name in GRAPH_DATASETS else SPLITS[:2]
    if split not in allowed:
        raise UserError(f"dataset {name!r} has no split {split!r}; use one of {allowed}")
    if options and name != "fmnist-knn":
        raise UserError(f"dataset {name!r} takes no options, got {sorted(options)}")
    base = data_root(root)
    if name in ("mnist", "fashion-mnist"):
        from asymspec.data.vision import load_idx_dataset

        return load_idx_dataset(name, split, base)
    if name in ("cifar10", "cifar100"):
        from asymspec.data.vision import load_cifar

        return load_cifar(name, split, base)
    if name == "digits":
        from asymspec.data.vision import load_digits_dataset

        return load_digits_dataset(split)
    from asymspec.data import graphs

    graph = graphs.ogbn_arxiv(base) if name == "ogbn-arxiv" else graphs.fmnist_knn(base, **options)
    return GraphSplit(graph, split)
