"""Attention: ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder``
and ``F.scaled_dot_product_attention`` on split heads."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.handlers import rope
from asymspec.audit.lowering.handlers.linear import _module_of
from asymspec.audit.lowering.handlers.shape import _tie
from asymspec.audit.lowering.interpreter import Lowerer
from asymspec.audit.lowering.registry import handler_for_module, handles
from asymspec.audit.lowering.values import (
    Feat,
    Raw,
    Split,
    Unsupported,
    _arg,
    _flat_values,
    _qual_key,
)
from asymspec.audit.params import (
    plain_weight,
)


# ---------------------------------------------------------------- attention
def _linear_from(L: Lowerer, base: str, x: Feat, weight: torch.Tensor, key: str | None,
                 bias: Any, real_out: torch.Tensor) -> Feat:
    eff = plain_weight(key, weight) if key else plain_weight(None, weight)
    return L.dense(base, "linear", x, eff, weight.shape[0], real_out, real_out.dim() - 1,
                   bias=bias)


@handles(nn.MultiheadAttention)
def _m_mha(c: Call):
    L, m, qual, al = c.lowerer, c.module, c.qual, c.args
    kl, ar, kr, out = c.kwargs, c.real_args, c.real_kwargs, c.out
    if m.bias_k is not None or m.add_zero_attn:
        raise Unsupported("add_bias_kv / add_zero_attn")
    names = ("query", "key", "value")
    xs_l = [_arg(al, kl, i, nm) for i, nm in enumerate(names)]
    xs_r = [_arg(ar, kr, i, nm) for i, nm in enumerate(names)]
    xs = [L.feat(v, r, -1) for v, r in zip(xs_l, xs_r)]
    e = m.embed_dim
    attn_out = out[0]
    q_real = attn_out  # same (.., T, E) layout as the projections
    k = _qual_key
    b_in = m.in_proj_bias is not None
    if m._qkv_same_embed_dim:
        if len({x.node for x in xs}) != 1:
            raise Unsupported("packed in_proj with different query/key/value inputs")
        nodes = []
        for i, tag in enumerate("qkv"):
            real_i = xs_r[i].new_empty(xs_r[i].shape[:-1] + (e,))
            f = _linear_from(L, _qual_key(qual, tag), xs[i], m.in_proj_weight[i * e:(i + 1) * e],
                             None, "trainable" if b_in else None, real_i)
            nodes.append(f.node)
        packed = tuple(nodes)
        # undo the per-slice records made by dense() (key None): record the packed tensors
        L.record(k(qual, "in_proj_weight"), (packed, xs[0].node))
        if b_in:
            L.record(k(qual, "in_proj_bias"), (packed,))
    else:
        nodes = []
        for i, tag in enumerate("qkv"):
            w = getattr(m, f"{tag}_proj_weight")
            real_i = xs_r[i].new_empty(xs_r[i].shape[:-1] + (e,))
            f = _linear_from(L, _qual_key(qual, tag), xs[i], w, k(qual, f"{tag}_proj_weight"),
                             "trainable" if b_in else None, real_i)
            nodes.append(f.node)
        if b_in:
            raise Unsupported("separate q/k/v projections with a packed bias")
    shapes = {L.ir.node(nd)["shape"] for nd in nodes}
    if len(shapes) != 1:
        raise Unsupported("cross-attention with different query / key lengths")
    att = L.add_node(_qual_key(qual, "attn"), "attention", nodes, e, q_real, q_real.dim() - 1,
                     attrs={"heads": m.num_heads})
    for i, nd in enumerate(nodes):
        L.ir.add_attention_edge(nd, att, i)
    o = L.dense(_qual_key(qual, "out_proj"), "linear", Feat(att, q_real.dim() - 1),
                plain_weight(k(qual, "out_proj.weight"), m.out_proj.weight), e, attn_out,
                attn_out.dim() - 1, bias="trainable" if m.out_proj.bias is not None else None,
                bias_key=k(qual, "out_proj.bias"))
    weights = Raw("opaque", None, _qual_key(qual, "weights")) if out[1] is not None else None
    return (o, weights)


def _apply_act(L: Lowerer, act, qual: str, x: Feat, real: torch.Tensor):
    if isinstance(act, nn.Module):
        low, out = L.call_submodule(act, _qual_key(qual, "activation"), [x], [real])
        return low, out
    fn = {F.relu: "relu", F.gelu: "gelu"}.get(act)
    if fn is None:
        raise Unsupported("activation function of the transformer layer")
    out = act(real)
    return L.elementwise(_qual_key(qual, "activation"), "activation", x, out, attrs={"fn": fn}), out


@handles(nn.TransformerEncoderLayer)
def _m_encoder_layer(c: Call):
    L, m, qual, al = c.lowerer, c.module, c.qual, c.args
    kl, ar, kr = c.kwargs, c.real_args, c.real_kwargs
    src_l, src_r = _arg(al, kl, 0, "src"), _arg(ar, kr, 0, "src")
    mask = [_arg(ar, kr, 1, "src_mask"), _arg(ar, kr, 2, "src_key_padding_mask")]
    x = L.feat(src_l, src_r, -1)

    def sub(mod, name, inputs_l, inputs_r, **kw):
        if kw:
            with torch.no_grad():
                o = mod(*inputs_r, **kw)
            h = handler_for_module(mod)
            return h(Call(L, L.node, inputs_l, kw, inputs_r, kw, o, mod, _qual_key(qual, name))), o
        return L.call_submodule(mod, _qual_key(qual, name), inputs_l, inputs_r)

    def sa(h_l, h_r):
        (o_l, _), (o_r, _) = sub(m.self_attn, "self_attn", [h_l, h_l, h_l], [h_r, h_r, h_r],
                                 attn_mask=mask[0], key_padding_mask=mask[1],
                                 need_weights=False)
        return o_l, o_r

    def ff(h_l, h_r):
        a_l, a_r = sub(m.linear1, "linear1", [h_l], [h_r])
        a_l, a_r = _apply_act(L, m.activation, qual, a_l, a_r)
        return sub(m.linear2, "linear2", [a_l], [a_r])

    def add(a_l, a_r, b_l, b_r, tag):
        o_r = a_r + b_r
        return _tie(L, _qual_key(qual, tag), "add", [a_l, b_l], o_r, o_r.dim() - 1), o_r

    h_l, h_r = x, src_r
    if m.norm_first:
        n_l, n_r = sub(m.norm1, "norm1", [h_l], [h_r])
        s_l, s_r = sa(n_l, n_r)
        h_l, h_r = add(h_l, h_r, s_l, s_r, "add1")
        n_l, n_r = sub(m.norm2, "norm2", [h_l], [h_r])
        f_l, f_r = ff(n_l, n_r)
        h_l, h_r = add(h_l, h_r, f_l, f_r, "add2")
    else:
        s_l, s_r = sa(h_l, h_r)
        h_l, h_r = add(h_l, h_r, s_l, s_r, "add1")
        h_l, h_r = sub(m.norm1, "norm1", [h_l], [h_r])
        f_l, f_r = ff(h_l, h_r)
        h_l, h_r = add(h_l, h_r, f_l, f_r, "add2")
        h_l, h_r = sub(m.norm2, "norm2", [h_l], [h_r])
    return h_l


@handles(nn.TransformerEncoder)
def _m_encoder(c: Call):
    L, m, qual, al = c.lowerer, c.module, c.qual, c.args
    kl, ar, kr = c.kwargs, c.real_args, c.real_kwargs
    h_l, h_r = _arg(al, kl, 0, "src"), _arg(ar, kr, 0, "src")
    mask, kpm = _arg(ar, kr, 1, "mask"), _arg(ar, kr, 2, "src_key_padding_mask")
    for i, layer in enumerate(m.layers):
        with torch.no_grad():
            o = layer(h_r, src_mask=mask, src_key_padding_mask=kpm)
        h_l = _m_encoder_layer(Call(L, L.node, [h_l, mask, kpm], {}, [h_r, mask, kpm], {}, o,
                                    layer, _qual_key(qual, f"layers.{i}")))
        h_r = o
    if m.norm is not None:
        h_l, h_r = L.call_submodule(m.norm, _qual_key(qual, "norm"), [h_l], [h_r])
    return h_l


@handles(F.scaled_dot_product_attention)
def _f_sdpa(c: Call):
    """``F.scaled_dot_product_attention`` on split heads (batch, heads, tokens, head_dim).

    Grouped-query attention (``enable_gqa=True``, or fewer key/value heads reaching SDPA already
    repeated by ``repeat_kv``): query head ``h`` reads key/value head ``h // n_rep``; each
    key/value head is repeated into a node of query-head layout (:func:`rope.repeat_heads`), so
    the attention node pairs query head ``h`` with its copy.  The unit graph then admits
    exactly: permutations of the key/value heads carrying their query-head groups, permutations
    of the query heads within a group (their copies are indistinguishable), one permutation of a
    key/value head's key dims shared by all query heads of its group (before RoPE constrains
    it), and one of its value dims, which every query head of the group passes to ``o_proj``."""
    L, n, al, kl = c.lowerer, c.node, c.args, c.kwargs
    ar, kr, out = c.real_args, c.real_kwargs, c.out
    names = ("query", "key", "value")
    nd = out.dim()
    base = _module_of(L, n) or n.name
    q, k, v = (_as_heads(L, base, nm, _arg(al, kl, i, nm), _arg(ar, kr, i, nm), nd)
               for i, nm in enumerate(names))
    for t in (q, k, v):
        if t.haxis != nd - 3 or t.daxis != nd - 1:
            raise Unsupported("unexpected head layout")
    if any(isinstance(x, (Feat, Split)) for x in _flat_values(list(al[3:]) + list(kl.values()))):
        raise Unsupported("attention mask computed from features")
    if k.heads != q.heads or v.heads != q.heads:
        if not _arg(ar, kr, 7, "enable_gqa", False) or k.heads != v.heads \
                or q.heads % k.heads:
            raise Unsupported("query and key / value head counts differ")
        n_rep = q.heads // k.heads
        kr_, vr_ = _arg(ar, kr, 1, "key"), _arg(ar, kr, 2, "value")
        k = rope.repeat_heads(L, _qual_key(base, "k_rep"), k, n_rep, kr_, k.haxis, k.daxis)
        v = rope.repeat_heads(L, _qual_key(base, "v_rep"), v, n_rep, vr_, v.haxis, v.daxis)
    nodes = [q.node, k.node, v.node]
    size = L.ir.node(q.node)["size"]
    if any(L.ir.node(x)["size"] != size for x in nodes):
        raise Unsupported("value head_dim differs from the query / key head_dim")
    att = L.add_node(_qual_key(base, "attn") if base != n.name else n.name, "attention", nodes,
                     size, out, nd - 1, attrs={"heads": q.heads})
    for i, x in enumerate(nodes):
        L.ir.add_attention_edge(x, att, i)
    return Split(att, q.haxis, q.daxis, q.heads)


def _as_heads(L: Lowerer, base: str, tag: str, x, real, nd: int) -> Split:
    """An SDPA operand as split heads.  A single head's projection is never split by its
    ``view`` (one head of ``dh`` channels is just ``dh`` channels), so it arrives as features on
    the last axis; multi-query attention then broadcasts it over the heads axis (``repeat_kv``
    of one key/value head only grows a non-channel axis).  Such an operand is one head repeated
    over the heads axis: every head sees the same permutation of its ``dh`` units."""
    if isinstance(x, Split):
        return x
    if not isinstance(x, Feat) or x.cdim != nd - 1 or real.dim() != nd or nd < 3:
        raise Unsupported("q, k, v are not (batch, heads, tokens, head_dim) projections")
    one = Split(x.node, nd - 3, nd - 1, 1)
    return rope.repeat_heads(L, _qual_key(base, f"{tag}_heads"), one, int(real.shape[nd - 3]),
                             real, nd - 3, nd - 1)
