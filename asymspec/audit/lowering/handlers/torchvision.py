"""torchvision ops traced as functions: stochastic depth, Swin's patch-merging pad."""

from __future__ import annotations

import numpy as np

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import Feat, Unsupported, _arg


def _torchvision_stochastic_depth():
    try:
        from torchvision.ops.stochastic_depth import stochastic_depth
    except Exception:  # pragma: no cover
        return None
    return stochastic_depth


def _f_stochastic_depth(c: Call):
    al, ar, kr = c.args, c.real_args, c.real_kwargs
    training = _arg(ar, kr, 3, "training", True)
    p = _arg(ar, kr, 1, "p", 0.0)
    if training and p > 0:
        raise Unsupported("stochastic depth in training mode")
    return al[0]  # identity in eval mode


if _torchvision_stochastic_depth() is not None:
    handles(_torchvision_stochastic_depth())(_f_stochastic_depth)


def _torchvision_patch_merging_pad():
    try:
        from torchvision.models.swin_transformer import _patch_merging_pad
    except Exception:  # pragma: no cover
        return None
    return _patch_merging_pad


def _f_patch_merging_pad(c: Call):
    """Swin: pads H, W of a (..., H, W, C) tensor to even sizes; newer torchvision also
    concatenates the four 2x2 sub-grids along channels (output unit j = channel j % C of
    sub-grid j // C: one map edge, the sub-grid as unit colour, like a flatten)."""
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    x = al[0]
    c = ar[0].shape[-1]
    if not isinstance(x, Feat) or x.cdim != ar[0].dim() - 1 or out.shape[-1] % c:
        raise Unsupported("patch merging of a non channel-last tensor")
    if out.shape[-1] == c:
        return Feat(x.node, x.cdim)
    j = np.arange(out.shape[-1])
    name = L.add_node(n.name, "patch_merge", [x.node], len(j), out, out.dim() - 1)
    L.ir.node(name)["unit_colour"] = (j // c).astype(np.int64)
    L.ir.add_map_edge(x.node, name, j % c)
    return Feat(name, out.dim() - 1)


if _torchvision_patch_merging_pad() is not None:
    handles(_torchvision_patch_merging_pad())(_f_patch_merging_pad)
