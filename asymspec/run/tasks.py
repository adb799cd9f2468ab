"""Experiment data as in-memory tensors: what the trainer and the evaluator consume.

An :class:`ArrayTask` holds a train and a test split as tensors (images ``(N, C, H, W)`` or any
other inputs ``(N, ...)``, labels / targets ``(N, ...)``); a :class:`GraphTask` one graph with
node masks (transductive node classification).  :func:`load_task` turns an experiment's
``dataset:`` section into one, through the dataset registry (:mod:`asymspec.data`), cached per
process so units of one run share the tensors.

Batches handed to the evaluator are ``(inputs, y, mask)`` triples: ``inputs`` a tuple of
positional model inputs, ``y`` the targets and ``mask`` ``None`` or the boolean node mask whose
outputs count (graphs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from asymspec.errors import UserError
from asymspec.seeding import generator

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor, "torch.Tensor | None"]


@dataclass
class ArrayTask:
    """Train / test tensors (classification when ``num_classes`` > 0)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int = 0

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {name!r}")
        return (self.train_x, self.train_y) if name == "train" else (self.test_x, self.test_y)


ImageTask = ArrayTask  # the name LMC has always used


@dataclass
class GraphTask:
    """One graph; ``train_mask`` / ``test_mask`` select the nodes of each split."""

    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor
    train_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int

    def mask(self, name: str) -> torch.Tensor:
        return self.train_mask if name == "train" else self.test_mask


Task = ArrayTask | GraphTask
_CACHE: dict[str, Task] = {}


def load_task(dataset: dict[str, Any]) -> Task:
    """The task for an experiment's (validated, defaults filled) ``dataset`` section.

    Subsets are fixed seeded permutations (seed 0 for train, 1 for test), so every unit and
    every process sees the same examples.  Cached per process.
    """
    from asymspec import data as D

    key = json.dumps(dataset, sort_keys=True)
    if key in _CACHE:
        return _CACHE[key]
    entry = D.dataset_entry(dataset["name"])
    options = dataset.get("options") or {}
    if entry.kind == "graph":
        g = D.load(dataset["name"], "train", dataset.get("root"), **options).graph
        task: Task = GraphTask(g.x, g.edge_index, g.y, g.train_mask, g.test_mask, g.num_classes)
    else:
        train = D.load(dataset["name"], "train", dataset.get("root"), **options)
        test = D.load(dataset["name"], "test", dataset.get("root"), **options)
        train = train.subset(dataset.get("train_subset"), seed=0)
        test = test.subset(dataset.get("test_subset"), seed=1)
        task = ArrayTask(train.x, train.y, test.x, test.y, getattr(train, "num_classes", 0))
    _CACHE[key] = task
    return task


def clear_cache() -> None:
    """Forget cached tasks (tests that monkeypatch data locations call this)."""
    _CACHE.clear()


def adapt_input(model: torch.nn.Module, x: torch.Tensor, where: str = "") -> torch.Tensor:
    """Flatten images for vector-input asymspec models and check the shape against the
    model's declared input (models without an ``ir`` are passed ``x`` unchanged)."""
    ir = getattr(model, "ir", None)
    if ir is None:
        return x
    shape = tuple(ir.node(ir.inputs[0])["shape"])
    if len(shape) == 1 and x.dim() > 2:
        x = x.flatten(1)
    if tuple(x.shape[1:]) != shape:
        raise UserError(
            f"variant {where}: the model expects inputs of shape {shape} but the data has "
            f"{tuple(x.shape[1:])}; override the model's input size (e.g. "
            f"model_overrides: [model.input_dim={x[0].numel()}] for an MLP, or "
            f"model.in_channels / model.input_size for a ResNet)")
    return x


def fixed_subset(x: torch.Tensor, y: torch.Tensor, n: int | None, *purpose: object
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` examples of a permutation seeded by ``purpose`` (all when ``None``)."""
    if n is None or n >= len(y):
        return x, y
    perm = torch.randperm(len(y), generator=generator(0, *purpose))[:n]
    return x[perm], y[perm]


def eval_batches(task: Task, split: str, batch_size: int, subset: int | None = None,
                 device: str = "cpu") -> list[Batch]:
    """Fixed-order, non-augmented batches of ``split`` for evaluation.

    ``subset`` picks a fixed random subset (seeded by the split name: the one LMC has always
    used).  A graph is one batch with the split's node mask.
    """
    if isinstance(task, GraphTask):
        mask = task.mask(split)
        return [((task.x.to(device), task.edge_index.to(device)), task.y.to(device),
                 mask.to(device))]
    x, y = task.split(split)
    x, y = fixed_subset(x, y, subset, "eval-subset", split)
    return [((xb.to(device),), yb.to(device), None)
            for xb, yb in zip(x.split(batch_size), y.split(batch_size))]


def iterate_minibatches(n: int, batch_size: int | None, g: torch.Generator,
                        drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Index tensors of one epoch in a random order drawn from ``g``."""
    bs = batch_size or n
    perm = torch.randperm(n, generator=g)
    for idx in perm.split(bs):
        if drop_last and len(idx) < bs:
            return
        yield idx
