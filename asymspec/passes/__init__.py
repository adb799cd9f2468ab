"""Asymmetry passes: each one rewrites the IR and records what it decided.

Passes run in a fixed order (:data:`ORDER`) whatever the order in the spec, so results do not
depend on YAML key order: biases first, then masks (W-Asym), then noise (syre), then FiGLU,
whose own fixed maps the earlier passes must not touch.

Each pass takes ``draw``: with ``draw=False`` it makes every decision (selection, settings, the
nodes and edges it adds, shape-level checks) but stores
:class:`~asymspec.ir.deferred.Deferred` placeholders instead of drawing masks, fixed values and
noise, and imports no torch (``asymspec show`` counts parameters that way).  Decisions never
depend on drawn values, so both modes give the same structure and counts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from asymspec.errors import SpecWarning
from asymspec.ir.deferred import DRAWN_KEY
from asymspec.ir.graph import IRGraph
from asymspec.passes import fixed_bias, sigma_asym, syre, w_asym
from asymspec.passes.select import unmatched_globs

PASSES: dict[str, Callable] = {
    fixed_bias.NAME: fixed_bias.apply,
    w_asym.NAME: w_asym.apply,
    syre.NAME: syre.apply,
    sigma_asym.NAME: sigma_asym.apply,
}
ORDER = ("fixed_bias", "w_asym", "syre", "sigma_asym")


def run_passes(ir: IRGraph, asymmetry: dict | str | None, error, draw: bool = True) -> IRGraph:
    """Apply every method configured in ``asymmetry`` to a copy of ``ir`` (``draw=False``:
    decisions only, random tensors left :class:`~asymspec.ir.deferred.Deferred`)."""
    ir = ir.copy()
    if not draw:
        ir.g.graph[DRAWN_KEY] = False
    if not asymmetry or asymmetry == "none":
        return ir
    seed = int(asymmetry.get("seed", 0))
    _check_globs(ir, asymmetry, error)
    for name in ORDER:
        cfg = asymmetry.get(name)
        if cfg is None:
            continue
        changed = PASSES[name](ir, cfg, seed, error, draw)
        ir.g.graph["passes"].append({"pass": name, "layers": changed})
    sync_shared(ir)
    return ir


def _check_globs(ir: IRGraph, asymmetry: dict, error) -> None:
    """A ``layers`` or ``overrides`` glob that matches no layer of the model gets a located
    :class:`~asymspec.errors.SpecWarning` naming it: a typo must not silently leave layers
    symmetric.  Not an error, because a spec written for a deeper model (``overrides: {fc4:
    ...}``) is routinely reused with fewer layers (``--set model.widths=[128,128]``)."""
    names = sorted(n for n in ir.g.nodes if ir.node(n)["op"] != "input")
    for method in ORDER:
        cfg = asymmetry.get(method)
        if not cfg:
            continue
        for path, glob in unmatched_globs(cfg, names):
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            where = error(("asymmetry", method) + path,
                          f"glob {glob!r} matches no layer of the model, so it selects nothing "
                          f"(layers: {shown})")
            warnings.warn(SpecWarning(str(where)), stacklevel=3)


def sync_shared(ir: IRGraph) -> None:
    """Layers that share a weight use the owner's masks, fixed values, noise and bias."""
    for name in ir.g.nodes:
        owner = ir.node(name).get("shares")
        if not owner:
            continue
        _, mine = ir.dense_edge(name)
        _, theirs = ir.dense_edge(owner)
        for key in ("mask", "fixed", "offset"):
            mine[key] = theirs[key]
        mine["decided_by"] = list(theirs["decided_by"])
        ir.node(name)["bias"] = ir.node(owner)["bias"]
