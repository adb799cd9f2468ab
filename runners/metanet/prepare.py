"""Per zoo variant: the metanetwork data set — inputs, targets, split — written once.

Members that diverged during zoo training are excluded (the zoo marks them), and so is any
member with a non-finite parameter (the reference drops NaN networks).  Inputs are the trainable
entries in ``state_dict`` order (:class:`asymspec.metanet.ParamLayout` of the variant's emitted
model: W-Asym's fixed entries and σ-Asym's F left out); the target is the member's test
accuracy as a fraction.  With ``canonicalize`` a standard (symmetric) variant also gets its
NodeSort-canonical inputs.  Everything lands in ``data/<variant>/inputs.pt`` so the many
training units read it instead of the zoo.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from asymspec.errors import UserError
from asymspec.metanet import ParamLayout
from asymspec.metanet.split import split_members
from asymspec.metanet.symmetry import canonicalize_flat

CHUNK = 500  # members read from the zoo at a time (bounds memory at paper scale)


def is_symmetric_standard(zoo: Any, variant: str) -> bool:
    """True when the variant's model spec applies no asymmetry pass (a standard network)."""
    asym = zoo.spec(variant).data.get("asymmetry")
    if not isinstance(asym, dict):  # absent or "none"
        return True
    return not any(v for k, v in asym.items() if k != "seed")


def _accuracy(member: dict[str, Any]) -> float:
    acc = (member.get("metrics") or {}).get("test_acc")
    return float(acc) if acc is not None else math.nan


def prepare_variant(zoo: Any, variant: str, seed: int, settings: dict[str, Any],
                    out_dir: Path, log: Any = None) -> dict[str, Any]:
    """Write ``out_dir/inputs.pt`` for ``variant``; returns its summary (JSON)."""
    members = zoo.members(variant)
    n_rows = int(getattr(zoo, "config", {}).get("members") or
                 (max(m["index"] for m in members) + 1 if members else 0))
    diverged = [m for m in members if m.get("diverged")]
    usable = [m for m in members if not m.get("diverged") and math.isfinite(_accuracy(m))]
    if settings["max_members"] is not None:
        usable = usable[:settings["max_members"]]
    model = zoo.model(variant)
    layout = ParamLayout.from_model(model)
    rows, kept = [], []
    for i in range(0, len(usable), CHUNK):
        chunk = usable[i:i + CHUNK]
        x = layout.flatten(zoo.state(variant, [m["id"] for m in chunk]))
        finite = torch.isfinite(x).all(dim=1)
        rows.append(x[finite])
        kept += [m for m, ok in zip(chunk, finite.tolist()) if ok]
    if len(kept) < 8:
        raise UserError(f"zoo variant {variant!r} has only {len(kept)} usable members (of "
                        f"{len(members)}); a metanetwork needs at least 8")
    x = torch.cat(rows)
    acc = torch.tensor([_accuracy(m) for m in kept], dtype=torch.float32)
    percent = bool(acc.max() > 1.0)
    y = acc / 100.0 if percent else acc
    split = split_members([m["index"] for m in kept], n_rows, seed,
                          settings["split"]["fractions"], settings["split"]["mode"])
    if min(len(split.train), len(split.val), len(split.test)) < 2:
        raise UserError(f"zoo variant {variant!r}: {len(kept)} members give a split of "
                        f"{split.sizes()}; every part needs at least 2")
    standard = is_symmetric_standard(zoo, variant)
    payload: dict[str, Any] = {"x": x, "y": y, "ids": [m["id"] for m in kept],
                               "index": [m["index"] for m in kept], "train": split.train,
                               "val": split.val, "test": split.test}
    if settings["canonicalize"] and standard:
        if log:
            log(f"data/{variant}: NodeSort of {len(kept)} members")
        payload["x_canonical"] = canonicalize_flat(model, x, layout)
    from asymspec.run.store import atomic_torch_save

    atomic_torch_save(payload, out_dir / "inputs.pt")
    test = split.test.tolist()
    return {"variant": variant, "members": len(members), "used": len(kept),
            "excluded_diverged": len(diverged),
            "excluded_nonfinite": len(usable) - len(kept), "dim": layout.dim,
            "full_dim": layout.full_dim, "tensors": len(layout.segments),
            "fixed_entries_removed": layout.full_dim - layout.dim, "standard": standard,
            "target_was_percent": percent, "split": split.sizes(),
            "target_mean": float(y.mean()), "target_std": float(y.std()),
            "test_ids": [payload["ids"][i] for i in test],
            "test_y": [float(y[i]) for i in test]}


def load_inputs(path: Path) -> dict[str, Any]:
    """The prepared data of a variant (memory-mapped: paper-scale inputs are ~3 GB)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
