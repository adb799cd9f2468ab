"""Which layers a pass applies to, and with which per-layer settings.

A method block has ``layers`` (globs selecting layer names) and ``overrides`` (glob -> settings,
applied in order, later globs win).  Globs use :func:`fnmatch.fnmatchcase` (case-sensitive, no
locale or platform dependence).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any


def settings_for(name: str, cfg: dict[str, Any], fields: tuple[str, ...]) -> dict | None:
    """Settings for layer ``name`` or None if the block does not select it.

    The result maps each field to its value and ``"_source"`` to the JSON path (relative to the
    method block) each value came from, for error messages.
    """
    if not any(fnmatchcase(name, g) for g in cfg.get("layers", ["*"])):
        return None
    out: dict[str, Any] = {f: cfg[f] for f in fields if f in cfg}
    source = {f: (f,) for f in out}
    for glob, values in (cfg.get("overrides") or {}).items():
        if fnmatchcase(name, glob):
            for f, v in values.items():
                out[f] = v
                source[f] = ("overrides", glob, f)
    out["_source"] = source
    return out
