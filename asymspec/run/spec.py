"""Experiment specs: YAML -> profile applied -> overrides -> validated against the core
``schemas/experiment.schema.json`` merged with the runner kind's ``settings_schema``
(:mod:`asymspec.run.schema`) with defaults filled, plus the variants' model specs and the
identities of the upstream runs the experiment reads (:mod:`asymspec.run.upstream`).

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
from asymspec.spec.defaults import fill_defaults
from asymspec.spec.loader import _located, load_spec, spec_with_overrides
from asymspec.spec.messages import pick, type_name
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
    upstreams: dict[str, Any] = field(default_factory=dict)  # name -> UpstreamRef

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
        return list(self.data.get("variants") or {})

    def source(self, variant: str) -> str:
        """The variant whose trained members ``variant`` uses (itself unless ``from``)."""
        return self.data["variants"][variant].get("from") or variant

    def trained_variants(self) -> list[str]:
        return [v for v in self.variant_names()
                if self.data["variants"][v].get("from") is None]

    def upstream_run(self, name: str) -> Path:
        """The run directory of upstream ``name`` (resolved by ``asymspec run``)."""
        from asymspec.errors import UserError

        ref = self.upstreams.get(name)
        if ref is None:
            known = ", ".join(self.upstreams) or "none"
            raise UserError(f"experiment {self.name!r} names no upstream {name!r} "
                            f"(upstreams: {known})")
        if ref.run_dir is None:
            raise UserError(f"upstream {name!r} has not been resolved to a run directory; "
                            "run the experiment with `asymspec run`")
        return Path(ref.run_dir)

    def recipe(self, variant: str) -> dict[str, Any]:
        """The training recipe of ``variant`` (shared fields merged with its own)."""
        out = copy.deepcopy(self.data.get("train") or {})
        own = self.data["variants"][self.source(variant)].get("train") or {}
        for key, value in own.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
        return out

    def content_hash(self) -> str:
        """Hash of the resolved experiment (without ``resources``, which do not change
        results), every resolved model spec and every upstream run's identity."""
        h = hashlib.sha256(_hashed_json(self.data).encode())
        for name in sorted(self.models):
            h.update(f"\0{name}\0{self.models[name].canonical_json()}".encode())
        for name in sorted(self.upstreams):
            h.update(f"\0upstream\0{name}\0{self.upstreams[name].identity}".encode())
        return h.hexdigest()

    def run_name(self) -> str:
        profile = f"-{self.profile}" if self.profile else ""
        return f"{self.name}{profile}-{self.content_hash()[:10]}"

    def to_json(self) -> dict[str, Any]:
        """Everything needed to rebuild this experiment (stored in the run directory)."""
        out = {"format": "asymspec-experiment/1", "experiment": self.data,
               "file": self.spec.file,
               "models": {k: v.data for k, v in self.models.items()},
               "content_hash": self.content_hash()}
        if self.upstreams:
            out["upstreams"] = {k: v.to_json() for k, v in self.upstreams.items()}
        return out

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Experiment:
        from asymspec.run.upstream import UpstreamRef

        spec = finish_experiment(to_plain(payload["experiment"]), None, {}, {}, None, ())
        spec.file = payload.get("file")
        models = {k: load_spec(v) for k, v in payload["models"].items()}
        ups = {k: UpstreamRef.from_json(v) for k, v in (payload.get("upstreams") or {}).items()}
        return cls(spec, models, ups)


def _hashed_json(data: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in data.items() if k != "resources"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def finish_experiment(data: dict[str, Any], file: str | None, values: dict, keys: dict,
                      text: str | None, overrides: Sequence[str] | None) -> Spec:
    """Overrides -> the kind's merged schema -> located errors -> defaults -> data-set check.

    The same steps as model specs (:func:`asymspec.spec.loader.load_spec`), but the schema
    depends on the spec's ``kind``: an unknown kind, or one whose runner fails to import, is
    a located error at ``kind``.
    """
    from asymspec.errors import UserError
    from asymspec.run.registry import get_runner
    from asymspec.run.schema import experiment_validator

    spec = spec_with_overrides(data, file, values, keys, text, overrides)
    core = experiment_validator(None)
    kind = data.get("kind", core.schema["properties"]["kind"]["default"])
    runner_cls = None
    if isinstance(kind, str) and kind:
        try:
            runner_cls = get_runner(kind)
        except UserError as exc:
            raise spec.error(("kind",), str(exc)) from None
    checker = experiment_validator(runner_cls)
    errors = list(checker.iter_errors(data))
    if errors:
        problem, more = pick(errors, spec.locate)
        raise _located(spec, problem, more)
    spec.data = fill_defaults(data, checker.schema, checker)
    _drop_default_optimizer_impl(spec.data)
    _check_dataset(spec)
    return spec


def _drop_default_optimizer_impl(data: dict[str, Any]) -> None:
    """Remove ``optimizer_impl: default`` where it changes nothing, in place: it builds the same
    optimizer as no field, so such a spec must hash the same.  A variant's ``default`` under a
    shared non-default one does change something and stays."""
    train = data.get("train")
    shared = train.get("optimizer_impl") if isinstance(train, dict) else None
    if shared == "default":
        del train["optimizer_impl"]
        shared = None
    if shared is not None:
        return
    for variant in (data.get("variants") or {}).values():
        own = variant.get("train") if isinstance(variant, dict) else None
        if isinstance(own, dict) and own.get("optimizer_impl") == "default":
            del own["optimizer_impl"]


def _check_dataset(spec: Spec) -> None:
    """``dataset.name`` must be registered; ``dataset.options`` must fit its options schema."""
    from asymspec.data import registered
    from asymspec.spec.schema import StrictValidator

    ds = spec.data.get("dataset")
    if not isinstance(ds, dict) or "name" not in ds:
        return
    known = registered()
    entry = known.get(ds["name"])
    if entry is None:
        raise spec.error(("dataset", "name"), f"unknown dataset {ds['name']!r}; known: "
                         f"{', '.join(known)} (add one with asymspec.data.register_dataset)")
    options = ds.get("options") or {}
    if options and not entry.options_schema.get("properties"):
        raise spec.error(("dataset", "options"), f"dataset {ds['name']!r} takes no options")
    errors = list(StrictValidator(entry.options_schema).iter_errors(options))
    if errors:
        err = min(errors, key=lambda e: len(e.path))
        path = ("dataset", "options") + tuple(err.path)
        if err.validator == "additionalProperties":
            allowed = ", ".join(entry.options_schema.get("properties", {}))
            raise spec.error(path, f"{err.message}; {ds['name']!r} takes: {allowed}")
        raise spec.error(path, f"dataset {ds['name']!r}: {err.message}")


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
                    overrides: Sequence[str] | None = None,
                    _seen: tuple[str, ...] = ()) -> Experiment:
    """Load the experiment spec at ``path`` with ``profile`` and ``overrides`` applied
    (``_seen``: the specs upstream of this one, to refuse cycles)."""
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
    spec = finish_experiment(to_plain(data), filename, values, keys, text, overrides)
    from asymspec.run.upstream import resolve_upstreams

    return Experiment(spec, _load_models(spec), resolve_upstreams(spec, _seen))


def find_spec_file(ref: str, base: Path | None) -> Path | None:
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
    variants = data.get("variants") or {}
    for name, v in variants.items():
        where = ("variants", name)
        if v.get("from") is not None:
            src = variants.get(v["from"])
            if src is None:
                raise spec.error(where + ("from",), f"unknown variant {v['from']!r}; variants: "
                                 f"{', '.join(variants)}")
            if src.get("from") is not None:
                raise spec.error(where + ("from",), f"variant {v['from']!r} itself uses "
                                 "`from`; point at a trained variant")
            if v["model"] is not None or v["overrides"] or v.get("train"):
                raise spec.error(where, "a variant with `from` reuses trained networks: it "
                                 "cannot also set model, overrides or train")
            continue
        if v["model"] is None:
            raise spec.error(where, "needs `model` (a model spec path or mapping) or `from`")
        if v.get("align", "none") != "none":
            raise spec.error(where + ("align",), "alignment needs two trained networks of "
                             "another variant: use `from: <variant>` with `align`")
        over = list(data.get("model_overrides") or []) + list(v["overrides"])
        if isinstance(v["model"], dict):
            models[name] = load_spec(v["model"], over)
            continue
        path = find_spec_file(v["model"], base)
        if path is None:
            raise spec.error(where + ("model",), f"model spec {v['model']!r} not found "
                             f"(looked next to {spec.file or 'the spec'}, in the current "
                             "directory and in the shipped specs/)")
        models[name] = load_spec(path, over)
    return models


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
