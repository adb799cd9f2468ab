"""Which layers a pass applies to, and with which per-layer settings.

A method block has ``layers`` (globs selecting layer names) and ``overrides`` (glob -> settings,
applied in order, later globs win).  Globs use :func:`fnmatch.fnmatchcase` (case-sensitive, no
locale or platform dependence).
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


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


def require_finite(values: torch.Tensor, layer: str, field: str, scale: float, where: tuple,
                   error) -> None:
    """Fixed values, noise and biases are float32: a scale that overflows it (``kappa: 1e308``)
    would make them ±inf and every forward NaN, so it is a located spec error (the loader
    already refuses scales that could overflow: this is the check on the values drawn)."""
    import torch

    if not bool(torch.isfinite(values).all()):
        raise error(where, f"layer '{layer}': {field}={scale:g} overflows float32 (the fixed "
                    f"values become infinite); use a {field} below about 1e37")


def unmatched_globs(cfg: dict[str, Any], names: Iterable[str]) -> list[tuple[tuple, str]]:
    """``(path within the method block, glob)`` for each ``layers`` / ``overrides`` glob that
    matches none of ``names``: a typo there would otherwise silently select nothing."""
    names = list(names)
    out: list[tuple[tuple, str]] = []
    for i, glob in enumerate(cfg.get("layers") or ()):
        if not any(fnmatchcase(n, glob) for n in names):
            out.append((("layers", i), glob))
    for glob in cfg.get("overrides") or {}:
        if not any(fnmatchcase(n, glob) for n in names):
            out.append((("overrides", glob), glob))
    return out
