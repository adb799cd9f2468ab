"""Building a zoo: the config, one shard at a time, and the summary once all are done.

A zoo is ``members`` networks per variant; member ``i`` has the same seeds and hyperparameters
in every variant (:mod:`asymspec.zoo.plan`).  Work is split into shards of ``shard_size``
consecutive members of one variant; a shard is trained (:func:`asymspec.zoo.train.
train_members`), evaluated on the train (non-augmented) and test data, and written atomically
(:mod:`asymspec.zoo.store`).  :func:`train_zoo` is the whole loop for library use; the ``zoo``
runner (``runners/zoo``) runs the same shards as units of ``asymspec run``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asymspec.errors import UserError
from asymspec.spec import Spec
from asymspec.zoo import store
from asymspec.zoo.data import ZooData
from asymspec.zoo.distance import pairwise_distance, sample_pairs
from asymspec.zoo.evaluate import evaluate_rows
from asymspec.zoo.hparams import min_epochs, resolve
from asymspec.zoo.plan import plan_members, shard_ranges
from asymspec.zoo.train import TrainSettings, choose_path, train_members

_IR_CACHE: dict[str, Any] = {}


def compile_variant(spec: Spec):
    """The IR of a variant's model spec (cached per process by the spec's canonical JSON)."""
    from asymspec.compiler import compile_ir

    key = spec.canonical_json()
    if key not in _IR_CACHE:
        _IR_CACHE[key] = compile_ir(spec)
    return _IR_CACHE[key]


@dataclass
class ZooConfig:
    """Everything that determines a zoo's contents (and so its identity)."""

    variants: dict[str, Spec]
    members: int
    shard_size: int = 64
    seed: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)  # distributions; {} = Table 13
    settings: TrainSettings = field(default_factory=TrainSettings)
    dataset: dict[str, Any] = field(default_factory=dict)  # what ZooData was made from
    distance_pairs: int = 20000
    variant_members: dict[str, int] = field(default_factory=dict)  # per-variant count override

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variant_members) - set(self.variants))
        if unknown or any(n < 0 for n in self.variant_members.values()):
            raise UserError(f"variant_members: unknown variants {unknown} or a negative count")
        self.hparams = resolve(self.hparams)
        if self.members < 1 or self.shard_size < 1:
            raise UserError(f"a zoo needs members >= 1 and shard_size >= 1, got "
                            f"{self.members} and {self.shard_size}")
        if not self.variants:
            raise UserError("a zoo needs at least one variant")
        if min_epochs(self.hparams) <= self.settings.peak_epoch:
            raise UserError(f"hparams.epochs can be {min_epochs(self.hparams):g}, not after the "
                            f"lr peak at epoch {self.settings.peak_epoch:g}: lower "
                            "train.peak_epoch or raise the epochs")

    def count(self, variant: str) -> int:
        """Members of ``variant``: its own count, else ``members`` (the first ones, so member
        i is the same network recipe in every variant)."""
        return self.variant_members.get(variant, self.members)

    def settings_json(self) -> dict[str, Any]:
        s = self.settings
        return {"batch_size": s.batch_size, "peak_epoch": s.peak_epoch, "betas": list(s.betas),
                "eps": s.eps, "precision": s.precision,
                "augment": {"flip": s.augment.flip, "translate": s.augment.translate,
                            "cutout": s.augment.cutout}}

    def content(self) -> dict[str, Any]:
        """What the identity hashes: not the path / chunking / eval batch, which only change
        speed (the batched and loop paths agree up to float rounding)."""
        return {"members": self.members, "shard_size": self.shard_size, "seed": self.seed,
                "variant_members": {v: self.count(v) for v in self.variants},
                "hparams": self.hparams, "train": self.settings_json(), "dataset": self.dataset,
                "variants": {k: json.loads(v.canonical_json()) for k, v in self.variants.items()}}

    @property
    def identity(self) -> str:
        text = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def shards(self) -> list[tuple[str, int, range]]:
        """(variant, shard index, member indices) of every shard, variant by variant."""
        return [(v, k, r) for v in self.variants
                for k, r in enumerate(shard_ranges(self.count(v), self.shard_size))]

    def to_json(self) -> dict[str, Any]:
        return {"format": store.ZOO_FORMAT, "identity": self.identity, **self.content(),
                "path": self.settings.path, "distance_pairs": self.distance_pairs}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def train_shard(root: Path, config: ZooConfig, variant: str, index: int, data: ZooData,
                device: str | torch.device = "cpu",
                directory: Path | None = None) -> dict[str, Any]:
    """Train, evaluate and write shard ``index`` of ``variant``; returns its record.  A
    complete shard is not redone."""
    directory = Path(directory) if directory else store.shard_dir(root, variant, index)
    problem = store.verify_shard(directory)
    if problem is None:
        return store.read_shard_record(directory)
    if problem != "missing":  # damaged: never trusted, trained again
        (directory / "members.json").unlink(missing_ok=True)
    members = shard_ranges(config.count(variant), config.shard_size)[index]
    plans = plan_members(config.seed, members, config.hparams)
    ir = compile_variant(config.variants[variant])
    result = train_members(ir, plans, data, config.settings, device)
    from asymspec.nn import emit

    model = emit(ir, 0)
    path = choose_path(config.settings.path, device)
    ev = {split: evaluate_rows(model, result.layout, result.final, x, y,
                               config.settings.eval_batch_size, path,
                               config.settings.chunk_members or 16, device)
          for split, x, y in (("train", data.train_x, data.train_y),
                              ("test", data.test_x, data.test_y))}
    records = []
    for offset, (plan, rec) in enumerate(zip(plans, result.records)):
        metrics = {f"{split}_{k}": _finite(float(ev[split][k][offset]))
                   for split in ("train", "test") for k in ("loss", "acc")}
        records.append({**plan.to_json(), "offset": offset, "metrics": metrics, **rec})
    record = {"format": store.SHARD_FORMAT, "variant": variant, "shard": index,
              "identity": config.identity, "path": result.path, "device": str(device),
              "keys": result.layout.keys, "members": records}
    store.write_shard(directory, result.layout.stack_states(result.final), record)
    return record


def summarize(root: Path, config: ZooConfig) -> dict[str, Any]:
    """Per-variant statistics: accuracy / loss mean ± std, diverged count, pair distances."""
    from asymspec.zoo.loader import Zoo

    zoo = Zoo(Path(root), config.to_json(), allow_partial=False)
    out = {}
    for variant in zoo.variants:
        members = zoo.members(variant)
        if not members:
            continue
        ok = [m for m in members if m["diverged"] is None]
        stats = {"members": len(members), "diverged": len(members) - len(ok)}
        for key in ("train_acc", "test_acc", "train_loss", "test_loss"):
            vals = torch.tensor([m["metrics"][key] for m in ok
                                 if m["metrics"][key] is not None], dtype=torch.float64)
            stats[key] = ({"mean": float(vals.mean()), "std": float(vals.std())
                           if len(vals) > 1 else 0.0} if len(vals) else None)
        flat, _ = zoo.flat(variant)
        pairs = sample_pairs(len(flat), config.distance_pairs, config.seed, variant)
        stats["distance"] = pairwise_distance(flat, pairs)
        stats["trainable_params"] = int(flat.shape[1])
        out[variant] = stats
    return out


def start_zoo(root: Path, config: ZooConfig) -> None:
    """Create ``zoo.json`` (incomplete) or check that ``root`` holds this same zoo."""
    path = Path(root) / "zoo.json"
    if path.is_file():
        old = store.read_json(path)
        if old.get("identity") != config.identity:
            raise UserError(f"{root} holds a different zoo (identity {old.get('identity')}, "
                            f"this config {config.identity}); use another directory")
        return
    store.write_json(path, {**config.to_json(), "complete": False})


def finish_zoo(root: Path, config: ZooConfig) -> dict[str, Any]:
    """Write the final ``zoo.json`` (complete, with the summary); returns the summary."""
    summary = summarize(root, config)
    store.write_json(Path(root) / "zoo.json", {**config.to_json(), "complete": True,
                                               "summary": summary})
    return summary


def train_zoo(root: str | Path, config: ZooConfig, data: ZooData,
              device: str | torch.device = "cpu",
              on_shard: Callable[[str, int, dict], None] | None = None) -> dict[str, Any]:
    """Train every incomplete shard of ``config`` into ``root`` and finish the zoo; a killed
    run restarted with the same arguments continues with the first incomplete shard."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    store.clean_temporaries(root)
    start_zoo(root, config)
    for variant, index, _ in config.shards():
        if store.is_complete(root, variant, index):
            continue
        record = train_shard(root, config, variant, index, data, device)
        if on_shard is not None:
            on_shard(variant, index, record)
    return finish_zoo(root, config)
