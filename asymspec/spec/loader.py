"""``load_spec``: YAML file / text / dict -> validated :class:`Spec` with defaults filled in.

Steps: parse YAML keeping positions -> apply overrides -> validate against
``model.schema.json`` (the single most relevant error becomes a located :class:`SpecError`) ->
fill defaults -> semantic checks -> resolve context-dependent ``null`` defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path as FsPath
from typing import Any

from asymspec.errors import SpecError
from asymspec.spec.defaults import fill_defaults, resolve_derived
from asymspec.spec.init_rule import drop_default_init, normalise_init
from asymspec.spec.messages import Problem, pick, type_name
from asymspec.spec.overrides import Override, apply_override, parse_override
from asymspec.spec.plain import to_plain
from asymspec.spec.resolved import Location, Path, Spec
from asymspec.spec.schema import validator
from asymspec.spec.semantic import semantic_problems
from asymspec.spec.yaml_lines import parse_yaml

Source = str | os.PathLike[str] | Mapping[str, Any]


def load_spec(source: Source, overrides: Sequence[str] | None = None, *,
              schema: str = "model") -> Spec:
    """Load a spec from a YAML file path (``str`` or path-like) or from a dict.

    ``overrides`` are ``dotted.key=value`` strings applied before validation.  Every problem
    with the spec raises :class:`SpecError`; specs from a dict have no line numbers.
    ``schema`` names the schema in ``schemas/`` (``"experiment"`` for experiment specs); the
    model-specific semantic checks and derived defaults only run for ``"model"``.
    """
    if isinstance(source, Mapping):
        return _finish(to_plain(source), None, {}, {}, None, overrides, schema)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load_spec() takes a path or a dict, got {type(source).__name__}")
    filename = os.fspath(source)
    try:
        raw = FsPath(filename).read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read spec file: {exc.strerror or exc}", filename) from None
    return load_spec_text(decode_spec(raw, filename), filename, overrides, schema=schema)


_UTF16_32 = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
             (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def decode_spec(raw: bytes, filename: str | None = None) -> str:
    """Spec bytes -> text: UTF-8 (a BOM is allowed); UTF-16/32 get a message saying so."""
    for bom, name in _UTF16_32:
        if raw.startswith(bom):
            raise SpecError(f"the spec file is {name} (it starts with a {name} byte-order mark); "
                            f"{name} is not supported: save it as UTF-8", filename, 1, 1)
    if len(raw) >= 4 and (raw[0::2][:2] == b"\x00\x00" or raw[1::2][:2] == b"\x00\x00"):
        raise SpecError("the spec file looks like UTF-16 (every other byte is zero); UTF-16 is "
                        "not supported: save it as UTF-8", filename, 1, 1)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(f"spec file is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
                        "save it as UTF-8", filename, line, column) from None


def load_spec_text(text: str, filename: str | None = None,
                   overrides: Sequence[str] | None = None, *, schema: str = "model") -> Spec:
    """Load a spec from YAML text; ``filename`` is only used in messages."""
    parsed = parse_yaml(text, filename)
    if parsed.data is None:
        raise SpecError("the spec is empty; expected a mapping with at least 'name' and 'model'",
                        filename, 1, 1)
    if not isinstance(parsed.data, dict):
        line, column = parsed.values[()]
        raise SpecError(f"the spec must be a mapping (name: ..., model: ...), got "
                        f"{type_name(parsed.data)}", filename, line, column)
    return _finish(parsed.data, filename, parsed.values, parsed.keys, text, overrides, schema)


def spec_with_overrides(data: dict[str, Any], file: str | None, values: dict[Path, Location],
                        keys: dict[Path, Location], text: str | None,
                        overrides: Sequence[str] | None) -> Spec:
    """Apply ``key=value`` overrides to ``data`` (in place) and wrap it as a :class:`Spec` whose
    positions forget the overridden subtrees and remember which mappings an override created
    (shared by model and experiment specs; validation comes after)."""
    if isinstance(overrides, str):
        raise TypeError("overrides must be a list of 'key=value' strings, not one string")
    parsed = tuple(parse_override(o, i + 1) for i, o in enumerate(overrides or ()))
    created: dict[Path, Override] = {}
    for override in parsed:
        new = apply_override(data, override)
        if new is not None:
            created[new] = override
        # Positions inside the overridden subtree describe values that are gone.
        n = len(override.path)
        values = {p: loc for p, loc in values.items() if p[:n] != override.path}
        keys = {p: loc for p, loc in keys.items() if p[:n] != override.path}
    return Spec(data, file, values, text, keys, parsed, created)


def _finish(data: dict[str, Any], file: str | None, values: dict[Path, Location],
            keys: dict[Path, Location], text: str | None,
            overrides: Sequence[str] | None, schema: str = "model") -> Spec:
    spec = spec_with_overrides(data, file, values, keys, text, overrides)

    schema_validator = validator(schema)
    errors = list(schema_validator.iter_errors(data))
    if errors and schema == "model" and "kind" in data and "model" not in data:
        raise spec.error(("kind",), _experiment_not_model(data))
    if errors:
        problem, more = pick(errors, spec.locate)
        raise _located(spec, problem, more)

    if schema == "model":
        data = normalise_init(data)  # `init: kaiming_normal` = `init: {weights: ...}`
    spec.data = fill_defaults(data, schema_validator.schema, schema_validator)
    if schema != "model":
        return spec
    for paths, message in semantic_problems(spec.data):
        chosen = next((p for p in paths if p in spec.locations or spec.override_for(p)), paths[0])
        raise spec.error(chosen, message)
    resolve_derived(spec.data)
    drop_default_init(spec.data)
    return spec


def _experiment_not_model(data: dict[str, Any]) -> str:
    """The message for an experiment spec given where a model spec is expected (``asymspec
    show lmc_resnet20.yaml``): "unknown key 'kind'" would send the user the wrong way."""
    variants = data.get("variants")
    files = sorted({v["model"] for v in variants.values()
                    if isinstance(v, dict) and isinstance(v.get("model"), str)}) \
        if isinstance(variants, dict) else []
    shown = f" (its variants use {', '.join(files[:4])}{', ...' if len(files) > 4 else ''})" \
        if files else ""
    return (f"this is an experiment spec (kind: {data['kind']}), but a model spec is expected "
            f"here{shown}; give a model spec, or run the experiment with `asymspec run`")


def _located(spec: Spec, problem: Problem, more: int) -> SpecError:
    message = problem.message
    if more:
        message += f" ({more} more problem{'s' if more != 1 else ''} after this one)"
    # A missing field is reported at its parent mapping, an unknown key at the key itself.
    target = problem.path[:-1] if problem.anchor == "parent" else problem.path
    override = spec.override_for(target)
    if override is not None:
        return override.error(message, path=problem.path)
    if problem.anchor == "key":
        loc = spec.key_locations.get(target)
    elif problem.anchor == "parent":
        loc = spec.key_locations.get(target) or spec.locations.get(target)
    else:
        loc = None
    if loc is None:
        line, column = spec.locate(target)
    else:
        line, column = loc
    return SpecError(message, spec.file, line, column, problem.path)
