"""``asymspec run SPEC --sweep path=v1,v2,...``: a sweep over any experiment without writing
a sweep spec.

The options become a ``kind: sweep`` spec (base = SPEC with the given profile and ``--set``
overrides, one grid axis per ``--sweep``) written under ``<runs-dir>/.sweeps/``; it is then run
like any other sweep, so its cells are ordinary resumable runs of SPEC.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from asymspec.errors import SpecError


def split_values(text: str) -> list[str]:
    """``1,20`` -> ``['1', '20']``; commas inside ``[]``, ``{}`` or quotes do not split."""
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_sweep_option(text: str, number: int) -> tuple[str, list[Any]]:
    """``path=v1,v2`` -> ``(path, [v1, v2])`` with values parsed as YAML."""
    label = f"<--sweep #{number}>"
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise SpecError(f"bad --sweep {text!r}: write path=value1,value2,... "
                        "(e.g. train.warmup_epochs=1,20)", label, 1, 1)
    values = []
    for i, item in enumerate(split_values(raw)):
        if not item:
            raise SpecError(f"bad --sweep {text!r}: value {i + 1} is empty", label, 1,
                            len(key) + 2)
        try:
            values.append(yaml.safe_load(item))
        except yaml.YAMLError as exc:
            raise SpecError(f"bad --sweep {text!r}: cannot parse {item!r} as YAML ({exc})",
                            label, 1, len(key) + 2) from None
    return key, values


def write_sweep_spec(spec_path: str, profile: str | None, overrides: Sequence[str],
                     sweeps: Sequence[str], runs_dir: str | Path) -> Path:
    """Write the ``kind: sweep`` spec for ``--sweep`` options; returns its path."""
    axes: dict[str, list[Any]] = {}
    for i, text in enumerate(sweeps, start=1):
        key, values = parse_sweep_option(text, i)
        if key in axes:
            raise SpecError(f"--sweep {key} given twice", f"<--sweep #{i}>", 1, 1)
        axes[key] = values
    base = Path(spec_path).resolve()
    try:
        raw = yaml.safe_load(base.read_text(encoding="utf-8-sig"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec: {exc}", str(spec_path)) from None
    name = raw.get("name", base.stem) if isinstance(raw, dict) else base.stem
    if isinstance(raw, dict) and raw.get("kind") == "sweep":
        raise SpecError("--sweep needs an experiment spec; this is already a sweep (edit its "
                        "grid instead)", str(spec_path), 1, 1)
    spec = {"name": f"{name}_sweep", "kind": "sweep",
            "description": f"--sweep over {base.name}: " + "; ".join(sweeps),
            "base": str(base), "base_profile": profile, "base_overrides": list(overrides),
            "grid": {"axes": axes}}
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    out = Path(runs_dir) / ".sweeps" / f"{name}_sweep-{digest}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    from asymspec.atomic import atomic_write_bytes

    atomic_write_bytes(out, text.encode("utf-8"))
    return out
