"""``asymspec.zoo.load(run_dir)``: a finished zoo as tensors (the contract in
``/work/coord/CONTRACTS.md``; consumers: MLI, metanetworks).

State tensors are stacked over members ``(M, ...)`` with the keys of the emitted model's
``state_dict`` (parameters from the shards, buffers — identical for all members of a variant —
expanded without copying).  ``flat`` concatenates parameter entries in ``state_dict`` order;
with ``trainable_only`` (default) the frozen W-Asym entries are left out, so a W-Asym ResNet8
row has only its trainable entries (the reference's metanetwork input).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from asymspec.errors import UserError
from asymspec.spec import Spec, load_spec
from asymspec.zoo import store
from asymspec.zoo.layout import trainable_masks


class Zoo:
    def __init__(self, root: Path, config: dict[str, Any], allow_partial: bool = False) -> None:
        self.root = Path(root)
        self.config = config
        self._specs = {k: load_spec(v) for k, v in config["variants"].items()}
        self._members: dict[str, list[dict[str, Any]]] = {}
        self._models: dict[str, torch.nn.Module] = {}
        self._layouts: dict[str, Any] = {}
        for variant in self._specs:
            self._members[variant] = self._read_members(variant, allow_partial)

    # -- description ------------------------------------------------------------------
    @property
    def variants(self) -> list[str]:
        return list(self._specs)

    @property
    def dataset(self) -> dict[str, Any]:
        return dict(self.config.get("dataset", {}))

    @property
    def identity(self) -> str:
        return self.config["identity"]

    @property
    def summary(self) -> dict[str, Any] | None:
        return self.config.get("summary")

    def spec(self, variant: str) -> Spec:
        return self._specs[self._check(variant)]

    def members(self, variant: str) -> list[dict[str, Any]]:
        return [dict(m) for m in self._members[self._check(variant)]]

    def model(self, variant: str) -> torch.nn.Module:
        """One emitted module of ``variant`` (its buffers are every member's buffers)."""
        if variant not in self._models:
            from asymspec.nn import emit
            from asymspec.zoo.zoo import compile_variant

            self._models[variant] = emit(compile_variant(self.spec(variant)), 0)
        return self._models[variant]

    # -- tensors ----------------------------------------------------------------------
    def _by_shard(self, chosen: list[dict[str, Any]]):
        """Yield ``(positions in chosen, shard tensors indexed to those members)`` one shard at
        a time, so memory holds the result plus one shard, never the whole zoo twice."""
        groups: dict[Path, list[int]] = {}
        for pos, m in enumerate(chosen):
            groups.setdefault(m["_shard_dir"], []).append(pos)
        for directory, positions in groups.items():
            tensors = store.read_shard_tensors(directory)
            offsets = torch.tensor([chosen[p]["offset"] for p in positions])
            yield torch.tensor(positions), {k: t[offsets] for k, t in tensors.items()}

    def state(self, variant: str, ids: list[str] | None = None,
              include_diverged: bool = False) -> dict[str, torch.Tensor]:
        """θT stacked ``(M, ...)`` for ``ids`` (default: all non-diverged members, in index
        order), every ``state_dict`` key of the emitted model."""
        chosen = self._select(variant, ids, include_diverged)
        n = len(chosen)
        out = {}
        sd = self.model(variant).state_dict()
        params = set(self._layout(variant).keys)
        for key, buf in sd.items():
            if key in params:
                out[key] = torch.empty((n, *buf.shape), dtype=buf.dtype)
            else:
                out[key] = buf.detach().unsqueeze(0).expand(n, *buf.shape)
        for positions, tensors in self._by_shard(chosen):
            for key, t in tensors.items():
                out[key][positions] = t.to(out[key].dtype)
        return out

    def initial_state(self, variant: str, ids: list[str] | None = None,
                      include_diverged: bool = False) -> dict[str, torch.Tensor]:
        """θ0 stacked ``(M, ...)``, rebuilt from the spec and each member's ``init_seed``
        (bit-identical to the θ0 trained from; :meth:`verify_initial` checks the hashes)."""
        from asymspec.nn import emit
        from asymspec.zoo.zoo import compile_variant

        chosen = self._select(variant, ids, include_diverged)
        ir = compile_variant(self.spec(variant))
        states = [emit(ir, m["init_seed"]).state_dict() for m in chosen]
        return {k: torch.stack([s[k] for s in states]) for k in states[0]} if states else {}

    def verify_initial(self, variant: str, ids: list[str] | None = None) -> bool:
        """True when every rebuilt θ0 has the SHA-256 recorded at training time."""
        from asymspec.zoo.train import state_sha256

        chosen = self._select(variant, ids, True)
        layout = self._layout(variant)
        init = self.initial_state(variant, [m["id"] for m in chosen], True)
        flat = layout.from_states({k: init[k] for k in layout.keys})
        return all(state_sha256(row) == m["init_sha256"] for row, m in zip(flat, chosen))

    def trainable_mask(self, variant: str) -> dict[str, torch.Tensor]:
        return trainable_masks(self.model(self._check(variant)))

    def flat(self, variant: str, ids: list[str] | None = None, trainable_only: bool = True,
             include_diverged: bool = False) -> tuple[torch.Tensor, list[str]]:
        """``(M, D)`` parameter rows (``state_dict`` order; buffers never included) and ids.
        Built shard by shard: peak memory is the result plus one shard."""
        chosen = self._select(variant, ids, include_diverged)
        layout = self._layout(variant)
        keep = layout.trainable if trainable_only else torch.ones(layout.numel, dtype=torch.bool)
        out = torch.empty(len(chosen), int(keep.sum()))
        for positions, tensors in self._by_shard(chosen):
            rows = layout.from_states(tensors)
            out[positions] = rows[:, keep] if trainable_only else rows
        return out, [m["id"] for m in chosen]

    def _layout(self, variant: str):
        from asymspec.zoo.layout import ParamLayout

        if variant not in self._layouts:
            self._layouts[variant] = ParamLayout.of(self.model(self._check(variant)))
        return self._layouts[variant]

    # -- internals --------------------------------------------------------------------
    def _check(self, variant: str) -> str:
        if variant not in self._specs:
            raise UserError(f"zoo {self.root} has no variant {variant!r}; variants: "
                            f"{', '.join(self._specs)}")
        return variant

    def _select(self, variant: str, ids, include_diverged: bool) -> list[dict[str, Any]]:
        members = self._members[self._check(variant)]
        if ids is None:
            return [m for m in members if include_diverged or m["diverged"] is None]
        by_id = {m["id"]: m for m in members}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UserError(f"zoo {self.root}, variant {variant!r}: no member(s) "
                            f"{', '.join(map(str, missing[:5]))}")
        return [by_id[i] for i in ids]

    def _read_members(self, variant: str, allow_partial: bool) -> list[dict[str, Any]]:
        from asymspec.zoo.plan import shard_ranges

        count = self.config.get("variant_members", {}).get(variant, self.config["members"])
        n_shards = len(shard_ranges(count, self.config["shard_size"]))
        out, missing = [], []
        for k in range(n_shards):
            d = store.shard_dir(self.root, variant, k)
            problem = store.verify_shard(d)
            if problem == "missing":
                missing.append(k)
                continue
            if problem is not None:
                raise UserError(f"{d}: {problem}; run the zoo again (same command) to retrain "
                                "this shard")
            rec = store.read_shard_record(d)
            if rec.get("identity") != self.identity:
                raise UserError(f"{d} belongs to another zoo (identity mismatch); remove it")
            for m in rec["members"]:
                out.append({**m, "variant": variant, "shard": k, "_shard_dir": d})
        if missing and not allow_partial:
            raise UserError(f"zoo {self.root}: variant {variant!r} has {len(missing)} of "
                            f"{n_shards} shards unfinished; resume the run (same command) or "
                            "pass allow_partial=True")
        return sorted(out, key=lambda m: m["index"])


def load(run_dir: str | os.PathLike[str], allow_partial: bool = False) -> Zoo:
    """The zoo in ``run_dir`` (a finished ``kind: zoo`` run, or a :func:`train_zoo` root)."""
    root = Path(run_dir)
    path = root / "zoo.json"
    if not path.is_file():
        raise UserError(f"{root} is not a zoo (no zoo.json); zoos are made by `asymspec run "
                        "specs/zoo_resnet8.yaml` or asymspec.zoo.train_zoo")
    config = store.read_json(path)
    if config.get("format") != store.ZOO_FORMAT:
        raise UserError(f"{path}: unknown format {config.get('format')!r}")
    if not config.get("complete") and not allow_partial:
        raise UserError(f"zoo {root} is not finished; resume the run (same command) or pass "
                        "allow_partial=True")
    return Zoo(root, config, allow_partial)
