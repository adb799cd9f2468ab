"""The data of an identifiability run: a train / validation split of the task's training data
(the reference holds out 10 % with seed 42), evaluation batches per split, and the fixed
training subset on which activations are recorded.

Array data (images, vectors) is split by examples; a graph by its training nodes (the
validation nodes are removed from the training mask).  Everything is cached per process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from asymspec.run.tasks import ArrayTask, GraphTask, Task, eval_batches, fixed_subset, load_task

_CACHE: dict[str, IdentData] = {}


@dataclass
class IdentData:
    train: Task  # what members train on (validation part removed)
    splits: dict[str, Task]  # split name -> a task whose "test" split is that split

    def batches(self, split: str, batch_size: int, examples: int | None, device: str):
        """Evaluation ``(inputs, y, mask)`` batches of ``split`` (train / val / test)."""
        return eval_batches(self.splits[split], "test", batch_size, examples, device)

    def inputs(self, examples: int | None, batch_size: int, device: str,
               adapt) -> list[tuple[torch.Tensor, ...]]:
        """Model-input tuples of a fixed training subset (for recording activations);
        ``adapt(x)`` fits images to the model input (flattening for MLPs)."""
        if isinstance(self.train, GraphTask):
            t = self.train
            return [(t.x.to(device), t.edge_index.to(device))]
        x, _ = fixed_subset(self.train.train_x, self.train.train_y, examples, "ident-record")
        return [(adapt(xb.to(device)),) for xb in x.split(batch_size)]


def ident_data(dataset: dict[str, Any], val_fraction: float, val_seed: int) -> IdentData:
    key = json.dumps([dataset, val_fraction, val_seed], sort_keys=True)
    if key in _CACHE:
        return _CACHE[key]
    task = load_task(dataset)
    g = torch.Generator().manual_seed(val_seed)
    if isinstance(task, GraphTask):
        nodes = torch.nonzero(task.train_mask).flatten()
        perm = nodes[torch.randperm(len(nodes), generator=g)]
        n_val = int(round(val_fraction * len(nodes)))
        val_mask = torch.zeros_like(task.train_mask)
        val_mask[perm[:n_val]] = True
        train_mask = task.train_mask & ~val_mask

        def with_test(mask: torch.Tensor) -> GraphTask:
            return GraphTask(task.x, task.edge_index, task.y, train_mask, mask, task.num_classes)

        train = with_test(task.test_mask)
        splits = {"train": with_test(train_mask), "val": with_test(val_mask),
                  "test": with_test(task.test_mask)}
        if n_val == 0:
            del splits["val"]
    else:
        n = len(task.train_y)
        perm = torch.randperm(n, generator=g)
        n_val = int(round(val_fraction * n))
        val_idx, tr_idx = perm[:n_val], perm[n_val:]
        x_tr, y_tr = task.train_x[tr_idx], task.train_y[tr_idx]
        x_val, y_val = task.train_x[val_idx], task.train_y[val_idx]
        c = task.num_classes
        train = ArrayTask(x_tr, y_tr, task.test_x, task.test_y, c)
        splits = {"train": ArrayTask(x_tr[:0], y_tr[:0], x_tr, y_tr, c),
                  "val": ArrayTask(x_tr[:0], y_tr[:0], x_val, y_val, c),
                  "test": ArrayTask(x_tr[:0], y_tr[:0], task.test_x, task.test_y, c)}
        if n_val == 0:
            del splits["val"]
    out = IdentData(train, splits)
    _CACHE[key] = out
    return out
