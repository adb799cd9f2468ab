"""torchvision ops traced as functions: stochastic depth, Swin's patch-merging pad and
shifted-window attention."""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.handlers import heads as heads_mod
from asymspec.audit.lowering.handlers.attention import _linear_from
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import Feat, Raw, Unsupported, _arg
from asymspec.audit.params import plain_weight


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


# ---------------------------------------------------------------- Swin shifted-window attention
def _torchvision_swin():
    try:
        from torchvision.models import swin_transformer as sw
    except Exception:  # pragma: no cover
        return None
    return sw


def _param_key(L, low, fxarg) -> str:
    """The state-dict key of an argument that is a parameter read as is."""
    if not isinstance(low, Raw) or low.kind != "static" or fxarg not in L.param_nodes:
        raise Unsupported("argument is not a parameter read as is")
    return L.param_nodes[fxarg]


def _f_shifted_window_attention(c: Call):
    """``shifted_window_attention`` (Swin V1): multi-head self-attention inside each (shifted)
    window, plus a learned relative position bias per head.

    Windows, padding, the cyclic shift and its mask act on positions only, never on channels,
    so the channel structure is that of ``nn.MultiheadAttention``: a packed q | k | v projection
    (``qkv_weight`` rows), H heads that permute as blocks with one order for q, k, v and the
    output, q and k sharing one permutation within each head and v its own, and the output
    projection.  The bias ``B[h, i, j] = table[index[i, j], h]``
    (``_get_relative_position_bias``) adds column ``h`` of the table to head ``h``'s scores: a
    head permutation must move the table's columns with it, so the table is a node of H units
    tied to the heads of q by group tags.  Swin V2: cosine attention (q and k normalised within
    each head: invariant under the joint within-head permutation) with a learned temperature per
    head (``logit_scale`` (H, 1, 1): a node of H units tied to the heads) and a bias computed by
    an MLP from constant coordinates, whose output units are the heads (tied likewise); the
    MLP's hidden units permute freely."""
    L, n, al, kl = c.lowerer, c.node, c.args, c.kwargs
    ar, kr, out = c.real_args, c.real_kwargs, c.out
    names = ("input", "qkv_weight", "proj_weight", "relative_position_bias", "window_size",
             "num_heads", "shift_size", "attention_dropout", "dropout", "qkv_bias", "proj_bias",
             "logit_scale", "training")
    lo = {nm: _arg(al, kl, i, nm) for i, nm in enumerate(names)}
    re = {nm: _arg(ar, kr, i, nm) for i, nm in enumerate(names)}
    fx_ = {nm: _arg(n.args, n.kwargs, i, nm) for i, nm in enumerate(names)}
    if re["training"] and (re["attention_dropout"] or re["dropout"]):
        raise Unsupported("dropout in training mode")
    x = L.feat(lo["input"], re["input"], -1)
    heads, e = int(re["num_heads"]), re["input"].shape[-1]
    qkv_key = _param_key(L, lo["qkv_weight"], fx_["qkv_weight"])
    proj_key = _param_key(L, lo["proj_weight"], fx_["proj_weight"])
    if e % heads:
        raise Unsupported("heads do not divide the channels")
    bias_low, bias = lo["relative_position_bias"], fx_["relative_position_bias"]
    sw = _torchvision_swin()
    if isinstance(bias_low, Feat):  # V2: computed by an MLP whose outputs are the heads
        if bias_low.cdim != 1 or L.ir.node(bias_low.node)["size"] != heads:
            raise Unsupported("relative position bias does not carry the heads on axis 1")
        table_key = None
    elif (isinstance(bias, fx.Node) and bias.target is sw._get_relative_position_bias
            and bias.args[0] in L.param_nodes and not L.params_in(bias.args[1])):
        table_key = L.param_nodes[bias.args[0]]  # V1: a learned table, one column per head
        table = L.real[bias.args[0]]
        if table.dim() != 2 or table.shape[1] != heads:
            raise Unsupported("relative position bias table does not have one column per head")
    else:
        raise Unsupported("relative position bias is not a table of learned columns per head")
    b_in = re["qkv_bias"] is not None
    nodes = []
    for i, tag in enumerate("qkv"):
        f = _linear_from(L, f"{L.module_path()}.{tag}", x, re["qkv_weight"][i * e:(i + 1) * e],
                         None, "trainable" if b_in else None, out)
        nodes.append(f.node)
    L.record(qkv_key, (tuple(nodes), x.node))
    if b_in:
        L.record(_param_key(L, lo["qkv_bias"], fx_["qkv_bias"]), (tuple(nodes),))
    att = L.add_node(f"{L.module_path()}.attn", "attention", nodes, e, out, out.dim() - 1,
                     attrs={"heads": heads})
    for i, nd in enumerate(nodes):
        L.ir.add_attention_edge(nd, att, i)
    if table_key is not None:
        col = L.add_node(table_key, "param", [], heads, torch.zeros(1, heads), 1,
                         bias="trainable")
        L.record(table_key, (None, col))
    else:
        col = bias_low.node
    heads_mod.link(L, nodes[0], col, heads)
    if re["logit_scale"] is not None:  # V2: one learned temperature per head, (H, 1, 1)
        ls_key = _param_key(L, lo["logit_scale"], fx_["logit_scale"])
        if tuple(re["logit_scale"].shape) != (heads, 1, 1):
            raise Unsupported("logit scale is not one value per head")
        ls = L.add_node(ls_key, "param", [], heads, torch.zeros(1, heads), 1, bias="trainable")
        L.record(ls_key, (ls, None, None))
        heads_mod.link(L, nodes[0], ls, heads)
    b_out = re["proj_bias"] is not None
    o = L.dense(f"{L.module_path()}.proj", "linear", Feat(att, out.dim() - 1),
                plain_weight(proj_key, re["proj_weight"]), e, out, out.dim() - 1,
                bias="trainable" if b_out else None,
                bias_key=_param_key(L, lo["proj_bias"], fx_["proj_bias"]) if b_out else None)
    return o


def _f_relative_position_bias(c: Call):
    """``_get_relative_position_bias(table, index, window)`` of a table computed from features
    (Swin V2's MLP, heads on its last axis): ``out[0, h, i, j] = table[index[i, j], h]`` gathers
    rows, so the heads stay units, now on axis 1.  (A learned V1 table is a static value.)"""
    t = c.args[0]
    if not isinstance(t, Feat) or t.cdim != c.real_args[0].dim() - 1 or c.out.dim() != 4 \
            or isinstance(c.args[1], (Feat,)):
        raise Unsupported("relative position bias from a table in another layout")
    return Feat(t.node, 1)


if _torchvision_swin() is not None:
    handles(_torchvision_swin().shifted_window_attention, raw=True)(_f_shifted_window_attention)
    handles(_torchvision_swin()._get_relative_position_bias)(_f_relative_position_bias)
