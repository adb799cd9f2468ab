"""Runner registry: experiment ``kind`` -> runner class.

Runners are found through the entry-point group ``asymspec.runners`` (``name =
"package.module:RunnerClass"``; the shipped ones live in the top-level ``runners`` package:
``lmc = "runners.lmc:LMCRunner"``, ...) or registered in code with :func:`register`; see
``runners/README.md``.  ``asymspec`` itself never imports ``runners``.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from asymspec.errors import UserError

GROUP = "asymspec.runners"
_registered: dict[str, type] = {}


def register(kind: str, cls: type | None = None):
    """Register ``cls`` for ``kind`` (usable as a decorator: ``@register("mine")``)."""
    def deco(c: type) -> type:
        _registered[kind] = c
        c.kind = kind
        return c

    return deco(cls) if cls is not None else deco


def available() -> dict[str, str]:
    """``kind -> where it comes from`` for every known runner."""
    out = {k: f"{v.__module__}:{v.__qualname__}" for k, v in _registered.items()}
    for ep in entry_points(group=GROUP):
        out.setdefault(ep.name, ep.value)
    return out


def get_runner(kind: str) -> type:
    """The runner class for ``kind`` (registered in code, or an entry point)."""
    if kind in _registered:
        return _registered[kind]
    eps = [ep for ep in entry_points(group=GROUP) if ep.name == kind]
    if not eps:
        known = ", ".join(sorted(available()))
        raise UserError(f"no runner for experiment kind {kind!r} (known: {known}); a "
                        f"package registers one in the entry-point group {GROUP!r}")
    try:
        cls = eps[0].load()
    except Exception as exc:
        raise UserError(f"the runner for kind {kind!r} ({eps[0].value}) failed to load: "
                        f"{type(exc).__name__}: {exc}") from None
    cls.kind = kind
    _registered[kind] = cls
    return cls
