"""On-disk layout of a zoo: shards of members in safetensors plus JSON records, atomic.

::

    <root>/zoo.json                                 config, identity; ``complete`` + summary
                                                    once every shard is done
    <root>/shards/<variant>-s<k>/members.safetensors   trained parameters, one tensor per
                                                    parameter name, shape (members, ...)
    <root>/shards/<variant>-s<k>/members.json       the shard's members (ids, seeds,
                                                    hyperparameters, metrics, divergence,
                                                    θ0 hash, offset in the shard) — written
                                                    last: a shard is complete exactly when
                                                    this file exists

Both files are written atomically (temp file + ``os.replace``), so ``kill -9`` at any moment
leaves complete shards and at worst stray ``.*.tmp`` files; a restarted run redoes only the
incomplete shard.  θ0 is not stored: it is rebuilt bit-identically from the variant's spec and
each member's ``init_seed`` (its SHA-256 is recorded to prove it).  Buffers (masks, fixed
values, F) are not stored either: they are the variant's, identical for all members.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from asymspec.atomic import atomic_write_bytes

SHARD_FORMAT = "asymspec-zoo-shard/1"
ZOO_FORMAT = "asymspec-zoo/1"


def shard_name(variant: str, index: int) -> str:
    return f"{variant}-s{index:04d}"


def shard_dir(root: Path, variant: str, index: int) -> Path:
    return Path(root) / "shards" / shard_name(variant, index)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def verify_shard(directory: Path) -> str | None:
    """``None`` when the shard is complete and readable, ``"missing"`` when it has no record,
    else what is wrong (a garbled record, a missing or truncated tensor file, wrong keys or
    member count).  Reads the safetensors header only, not the tensors."""
    from safetensors import safe_open

    directory = Path(directory)
    if not (directory / "members.json").is_file():
        return "missing"
    try:
        record = read_shard_record(directory)
        keys, count = list(record["keys"]), len(record["members"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"members.json is damaged ({type(exc).__name__}: {exc})"
    try:
        with safe_open(str(directory / "members.safetensors"), "pt") as fh:
            stored = sorted(fh.keys())
            rows = {fh.get_slice(k).get_shape()[0] for k in stored}
    except Exception as exc:  # missing, truncated or not safetensors at all
        return f"members.safetensors is unreadable ({type(exc).__name__}: {exc})"
    if stored != sorted(keys) or rows != {count}:
        return "members.safetensors does not match members.json (keys or member count)"
    return None


def is_complete(root: Path, variant: str, index: int) -> bool:
    return verify_shard(shard_dir(root, variant, index)) is None


def write_shard(directory: Path, tensors: dict[str, torch.Tensor],
                record: dict[str, Any]) -> None:
    """Write a shard's tensors, then (last, the completion marker) its record."""
    directory = Path(directory)
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                   metadata={"format": SHARD_FORMAT, "variant": str(record["variant"])})
    atomic_write_bytes(directory / "members.safetensors", data)
    write_json(directory / "members.json", record)


def read_shard_record(directory: Path) -> dict[str, Any]:
    return read_json(Path(directory) / "members.json")


def read_shard_tensors(directory: Path) -> dict[str, torch.Tensor]:
    return st_load((Path(directory) / "members.safetensors").read_bytes())


def clean_temporaries(root: Path) -> int:
    n = 0
    for p in Path(root).rglob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n
