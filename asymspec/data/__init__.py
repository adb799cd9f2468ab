"""Data sets for experiments: ``load(name, split, root=None, **options)``.

Data sets live in a registry (:func:`register_dataset`, :func:`dataset_entry`) that runners and
user packages extend.  Built in: ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``
(torchvision formats; a missing set is a :class:`~asymspec.errors.UserError` naming the directory
to put the files in; Fashion-MNIST is also found where Debian's ``dataset-fashion-mnist``
installs it), ``digits`` (scikit-learn's bundled 8x8 digits), ``ogbn-arxiv`` (needs ``ogb``) and
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
from asymspec.data.registry import (
    DatasetEntry,
    dataset_entry,
    load_registered,
    register_dataset,
    registered,
)

SPLITS = ("train", "test", "val")

__all__ = ["ArrayDataset", "AugmentedDataset", "DATASETS", "DatasetEntry", "GraphData",
           "GraphSplit", "RandomCropFlip", "data_root", "dataset_entry", "load",
           "register_dataset", "registered"]


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
    """The ``split`` (``train`` / ``test``; graphs also ``val``) of registered data set
    ``name`` (see :func:`register_dataset`)."""
    return load_registered(name, split, data_root(root), **options)


# -- the built-in data sets -------------------------------------------------------------------


def _idx(name: str):
    def loader(split: str, root: Path) -> ArrayDataset:
        from asymspec.data.vision import load_idx_dataset

        return load_idx_dataset(name, split, root)
    return loader


def _cifar(name: str):
    def loader(split: str, root: Path) -> ArrayDataset:
        from asymspec.data.vision import load_cifar

        return load_cifar(name, split, root)
    return loader


def _digits(split: str, root: Path) -> ArrayDataset:
    from asymspec.data.vision import load_digits_dataset

    return load_digits_dataset(split)


def _arxiv(split: str, root: Path) -> GraphSplit:
    from asymspec.data import graphs

    return GraphSplit(graphs.ogbn_arxiv(root), split)


def _fmnist_knn(split: str, root: Path, **options) -> GraphSplit:
    from asymspec.data import graphs

    return GraphSplit(graphs.fmnist_knn(root, **options), split)


_KNN_OPTIONS = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "num_nodes": {"type": "integer", "minimum": 10,
                      "description": "Nodes (Fashion-MNIST training images)."},
        "k": {"type": "integer", "minimum": 1,
              "description": "Neighbours per node before symmetrisation."},
        "dim": {"type": "integer", "minimum": 1, "maximum": 784,
                "description": "PCA feature dimension."},
    },
}

register_dataset("mnist", _idx("mnist"), description="MNIST (IDX files)")
register_dataset("fashion-mnist", _idx("fashion-mnist"),
                 description="Fashion-MNIST (IDX files; Debian dataset-fashion-mnist)")
register_dataset("cifar10", _cifar("cifar10"), description="CIFAR-10 (torchvision layout)")
register_dataset("cifar100", _cifar("cifar100"), description="CIFAR-100 (torchvision layout)")
register_dataset("digits", _digits, description="scikit-learn's bundled 8x8 digits (offline)")
register_dataset("ogbn-arxiv", _arxiv, kind="graph", splits=SPLITS,
                 description="ogbn-arxiv citation graph (needs ogb)")
register_dataset("fmnist-knn", _fmnist_knn, kind="graph", splits=SPLITS,
                 options_schema=_KNN_OPTIONS,
                 description="offline k-NN graph over Fashion-MNIST images")

# Kept for code that imports these names; the registry is the source of truth.
IMAGE_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "digits")
GRAPH_DATASETS = ("ogbn-arxiv", "fmnist-knn")
DATASETS = IMAGE_DATASETS + GRAPH_DATASETS
