"""Experiment specs: YAML -> profile applied -> overrides -> validated against
``schemas/experiment.schema.json`` with defaults filled, plus the variants' model specs.

Reuses the model-spec machinery (:mod:`asymspec.spec`): positions of every value, located
:class:`~asymspec.errors.SpecError`, ``--set`` overrides, defaults from the schema.  A profile
(``profiles.<name>``) is deep-merged over the spec before the overrides; values that came from
the profile keep their positions inside the ``profiles:`` section, so errors point there.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asymspec.errors import SpecError
from asymspec.spec import Spec
from asymspec.spec.loader import _finish, load_spec
from asymspec.spec.messages import type_name
from asymspec.spec.plain import to_plain
from asymspec.spec.yaml_lines import parse_yaml

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SPEC_DIRS = (_PACKAGE_ROOT / "_specs", _PACKAGE_ROOT.parent / "specs")
TRAIN_KEYS = ("optimizer", "lr", "momentum", "betas", "warmup_epochs", "warmup_start_lr",
              "schedule", "epochs", "batch_size", "weight_decay", "label_smoothing", "augment",
              "max_grad_norm")


@dataclass
class Experiment:
    """A loaded experiment: ``spec`` (validated, defaults filled) and each trained variant's
    model :class:`~asymspec.spec.Spec` (variants with ``from`` share their source's)."""

    spec: Spec
    models: dict[str, Spec] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any]:
        return self.spec.data

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def profile(self) -> str | None:
        return self.data["profile"]

    def variant_names(self) -> list[str]:
        return list(self.data["variants"])

    def source(self, variant: str) -> str:
        """The variant whose trained members ``variant`` uses (itself unless ``from``)."""
        return self.data["variants"][variant]["from"] or variant

    def trained_variants(self) -> list[str]:
        return [v for v in self.variant_names() if self.data["variants"][v]["from"] is None]

    def recipe(self, variant: str) -> dict[str, Any]:
        """The training recipe of ``variant`` (shared fields merged with its own)."""
        out = copy.deepcopy(self.data["train"])
        own = self.data["variants"][self.source(variant)]["train"]
        for key, value in own.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
        return out

    def content_hash(self) -> str:
        """Hash of the resolved experiment and every resolved model spec."""
        h = hashlib.sha256(self.spec.canonical_json().encode())
        for name in sorted(self.models):
            h.update(f"\0{name}\0{self.models[name].canonical_json()}".encode())
        return h.hexdigest()

    def run_name(self) -> str:
        profile = f"-{self.profile}" if self.profile else ""
        return f"{self.name}{profile}-{self.content_hash()[:10]}"

    def to_json(self) -> dict[str, Any]:
        """Everything needed to rebuild this experiment (stored in the run directory)."""
        return {"format": "asymspec-experiment/1", "experiment": self.data,
                "file": self.spec.file,
                "models": {k: v.data for k, v in self.models.items()}}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Experiment:
        spec = load_spec(payload["experiment"], schema="experiment")
        spec.file = payload.get("file")
        models = {k: load_spec(v) for k, v in payload["models"].items()}
        return cls(spec, models)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _remap(table: dict, profile: str, written: dict[str, Any]) -> dict:
    """Positions after merging profile ``profile``: profile positions win for the fields it
    sets (replaced subtrees lose their old positions)."""
    prefix = ("profiles", profile)

    def replaced(path: tuple) -> bool:
        node: Any = written
        for i, part in enumerate(path):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
            if not isinstance(node, dict) and i < len(path) - 1:
                return True  # an ancestor of `path` was replaced by a non-mapping value
        return not isinstance(node, dict)

    out = {p: loc for p, loc in table.items() if not replaced(p)}
    for p, loc in table.items():
        if p[:2] == prefix and len(p) > 2:
            out[p[2:]] = loc
    return out


def load_experiment(path: str | os.PathLike[str], profile: str | None = None,
                    overrides: Sequence[str] | None = None) -> Experiment:
    """Load the experiment spec at ``path`` with ``profile`` and ``overrides`` applied."""
    filename = os.fspath(path)
    try:
        text = Path(filename).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SpecError(f"cannot read experiment spec: {exc.strerror or exc}", filename) from None
    parsed = parse_yaml(text, filename)
    if not isinstance(parsed.data, dict):
        raise SpecError(f"an experiment spec must be a mapping (name: ..., variants: ...), got "
                        f"{type_name(parsed.data)}", filename, 1, 1)
    data = parsed.data
    values, keys = parsed.values, parsed.keys
    if profile is not None:
        profiles = data.get("profiles") or {}
        if not isinstance(profiles, dict):
            raise SpecError("must be a mapping of profile names to partial specs", filename,
                            *values.get(("profiles",), (None, None)), ("profiles",))
        if profile not in profiles and profile != "paper":
            known = ", ".join(sorted(profiles)) or "none"
            raise SpecError(f"no profile {profile!r} in this spec (profiles: {known})",
                            filename, *keys.get(("profiles",), (1, 1)), ("profiles",))
        chosen = profiles.get(profile) or {}
        if not isinstance(chosen, dict):
            raise SpecError("a profile must be a mapping (a partial experiment spec)", filename,
                            *values.get(("profiles", profile), (None, None)),
                            ("profiles", profile))
        if "profiles" in chosen or "profile" in chosen:
            raise SpecError("a profile cannot set 'profiles' or 'profile'", filename,
                            *values.get(("profiles", profile), (None, None)),
                            ("profiles", profile))
        data = _merge(data, chosen)
        values = _remap(values, profile, chosen)
        keys = _remap(keys, profile, chosen)
        data["profile"] = profile
    elif "profile" in data:
        raise SpecError("'profile' is set by --profile, not in the file", filename,
                        *keys.get(("profile",), (1, 1)), ("profile",))
    spec = _finish(to_plain(data), filename, values, keys, text, overrides, "experiment")
    return Experiment(spec, _load_models(spec))


def _find_model(ref: str, base: Path | None) -> Path | None:
    candidates = []
    p = Path(ref).expanduser()
    if p.is_absolute():
        candidates.append(p)
    else:
        if base is not None:
            candidates.append(base / p)
        candidates.append(Path.cwd() / p)
        candidates += [d / p for d in SPEC_DIRS] + [d / p.name for d in SPEC_DIRS]
    return next((c for c in candidates if c.is_file()), None)


def _load_models(spec: Spec) -> dict[str, Spec]:
    data = spec.data
    base = Path(spec.file).resolve().parent if spec.file else None
    models: dict[str, Spec] = {}
    variants = data["variants"]
    for name, v in variants.items():
        where = ("variants", name)
        if v["from"] is not None:
            src = variants.get(v["from"])
            if src is None:
                raise spec.error(where + ("from",), f"unknown variant {v['from']!r}; variants: "
                                 f"{', '.join(variants)}")
            if src["from"] is not None:
                raise spec.error(where + ("from",), f"variant {v['from']!r} itself uses "
                                 "`from`; point at a trained variant")
            if v["model"] is not None or v["overrides"] or v["train"]:
                raise spec.error(where, "a variant with `from` reuses trained networks: it "
                                 "cannot also set model, overrides or train")
            continue
        if v["model"] is None:
            raise spec.error(where, "needs `model` (a model spec path or mapping) or `from`")
        if v["align"] != "none":
            raise spec.error(where + ("align",), "alignment needs two trained networks of "
                             "another variant: use `from: <variant>` with `align`")
        over = list(data["model_overrides"]) + list(v["overrides"])
        if isinstance(v["model"], dict):
            models[name] = load_spec(v["model"], over)
            continue
        path = _find_model(v["model"], base)
        if path is None:
            raise spec.error(where + ("model",), f"model spec {v['model']!r} not found "
                             f"(looked next to {spec.file or 'the spec'}, in the current "
                             "directory and in the shipped specs/)")
        models[name] = load_spec(path, over)
    return models


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
