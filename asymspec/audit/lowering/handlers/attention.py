"""Attention: ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder``
and ``F.scaled_dot_product_attention`` on split heads."""

from __future__ import annotations

from typing import Any

import numpy as np
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
    Packed,
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
from asymspec.ir.units import exact_row_ids, float_bits


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
    if any(isinstance(x, (Feat, Split, Packed))
           for x in _flat_values(list(al[3:]) + list(kl.values()))):
        raise Unsupported("attention mask computed from features")
    mask = _arg(ar, kr, 3, "attn_mask")
    per_head = False
    if isinstance(mask, torch.Tensor) and mask.dim() >= 3 and mask.shape[-3] > 1:
        if mask.is_meta:
            raise Unsupported("per-head attention mask without values (meta device)")
        m = mask.reshape((1,) * (nd - mask.dim()) + tuple(mask.shape))
        per_head = not bool((m == m.narrow(nd - 3, 0, 1)).all())
        mask_low = _arg(al, kl, 3, "attn_mask")
        if per_head and (not isinstance(mask_low, Raw) or mask_low.kind != "static"
                         or L.params_in(mask_low.fxnode)):
            raise Unsupported("attention mask that differs between heads and is not a constant")
    if k.heads != q.heads or v.heads != q.heads:
        if not _arg(ar, kr, 7, "enable_gqa", False) or k.heads != v.heads \
                or q.heads % k.heads:
            raise Unsupported("query and key / value head counts differ")
        n_rep = q.heads // k.heads
        kr_, vr_ = _arg(ar, kr, 1, "key"), _arg(ar, kr, 2, "value")
        k = rope.repeat_heads(L, _qual_key(base, "k_rep"), k, n_rep, kr_, k.haxis, k.daxis)
        v = rope.repeat_heads(L, _qual_key(base, "v_rep"), v, n_rep, vr_, v.haxis, v.daxis)
    if per_head:  # ALiBi as an SDPA mask: colour the heads by their tables (as in eager)
        heads = _scores_heads(L, base, q, k, out)
        _colour_heads(L, heads.node, mask_low, mask.float(), mask.dim() - 3)
    return _attention_node(L, _qual_key(base, "attn") if base != n.name else n.name, q, k, v,
                           out)


def _attention_node(L: Lowerer, name: str, q: Split, k: Split, v: Split, out,
                    axes: tuple[int, int] | None = None) -> Split:
    """The IR attention node reading q, k, v of one head layout (see ``units._attention``);
    ``axes``: the output's (heads, head_dim) axes (default: (batch.., heads, tokens, dim))."""
    nodes = [q.node, k.node, v.node]
    size = L.ir.node(q.node)["size"]
    if any(L.ir.node(x)["size"] != size for x in nodes) or len({q.heads, k.heads, v.heads}) != 1:
        raise Unsupported("value head_dim differs from the query / key head_dim")
    nd = out.dim()
    att = L.add_node(name, "attention", nodes, size, out, nd - 1, attrs={"heads": q.heads})
    for i, x in enumerate(nodes):
        L.ir.add_attention_edge(x, att, i)
    haxis, daxis = axes if axes is not None else (nd - 3, nd - 1)
    return Split(att, haxis, daxis, q.heads)


# ---------------------------------------------------------------- eager attention
class Scores(Packed):
    """Attention logits / weights ``q k^T`` of split heads, shape (batch, heads, q tokens,
    k tokens): eager attention (``matmul(q, k.transpose(-2, -1))``, scaling, an additive mask,
    ``softmax``, ``matmul(weights, v)``) until the product with ``v`` makes it an attention node.

    It subclasses :class:`Packed` only so that every generic path treats it as a feature value
    whose nodes (``parts``: the scores' heads stand-in, q, k) are pinned when an op the
    lowering does not model reads it, and whose first part is marked when it is an output;
    every Packed-specific rule is refused (``paxis`` / ``take`` raise :class:`Unsupported`).
    What keeps it exact: each op allowed on it is equivariant under permutations of the heads
    and of the q / k dims that keep every ``q_h . k_h``; anything else is unsupported."""

    def __init__(self, q: Split, k: Split, haxis: int, heads: Split, kaxis: int
                 ) -> None:  # noqa: D107
        self.parts = [heads, q, k]  # parts[0]: what the audit marks when the scores are output
        self.q, self.k, self.haxis, self.kaxis = q, k, haxis, kaxis

    @property
    def paxis(self) -> int:  # type: ignore[override]
        raise Unsupported("attention scores used as a packed projection")

    def take(self, i: int) -> Split:
        raise Unsupported("attention scores used as a packed projection")

    def __repr__(self) -> str:
        return f"Scores(q={self.q.node!r}, k={self.k.node!r})"


def scores_matmul(c: Call):
    """``matmul(q, k^T)`` of split heads -> :class:`Scores`; ``matmul(scores, v)`` -> the
    attention node; anything else is not a product this lowering models."""
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    a, b = al[0], al[1]
    nd = out.dim() if isinstance(out, torch.Tensor) else 0
    if nd < 3 or any(r.dim() != nd for r in ar[:2]):
        raise Unsupported("matrix product of features (not a weight)")
    base = _module_of(L, n) or n.name
    if isinstance(a, Scores):
        v = _as_heads(L, base, "value", b, ar[1], nd)
        if v.haxis != nd - 3 or v.daxis != nd - 1 or a.haxis != nd - 3 or a.kaxis != nd - 1:
            raise Unsupported("attention weights times values in an unexpected layout")
        return _attention_node(L, _qual_key(base, "attn") if base != n.name else n.name,
                               a.q, a.k, v, out)
    if isinstance(a, Packed) or isinstance(b, Packed):
        raise Unsupported("matrix product of attention scores / packed projections")
    q = _as_heads(L, base, "query", a, ar[0], nd)
    k = _as_heads(L, base, "key", b, ar[1], nd, daxis=nd - 2)
    if q.haxis != nd - 3 or q.daxis != nd - 1 or k.haxis != nd - 3 or k.daxis != nd - 2:
        raise Unsupported("matrix product of split heads in an unexpected layout")
    if q.heads != k.heads or L.ir.node(q.node)["size"] != L.ir.node(k.node)["size"]:
        raise Unsupported("query and key head counts / sizes differ")
    return Scores(q, k, nd - 3, _scores_heads(L, base, q, k, out), nd - 1)


@handles(torch.einsum, getattr(getattr(torch.ops.aten, "einsum", None), "default", None))
def _f_einsum(c: Call):
    """``einsum`` of split heads, the two products of attention written with letters:
    ``'bhid,bhjd->bhij'`` (q . k per head: :class:`Scores`) and ``'bhij,bhjd->bhid'``
    (weights @ v: the attention node), in any letter order.  Every other equation -- a
    contraction over heads, a diagonal, an einsum with a weight -- is unsupported."""
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    eq = ar[0]
    ops_l = list(al[1]) if len(al) == 2 and isinstance(al[1], (list, tuple)) else list(al[1:])
    ops_r = list(ar[1]) if len(ar) == 2 and isinstance(ar[1], (list, tuple)) else list(ar[1:])
    if not isinstance(eq, str) or "->" not in eq or "." in eq or len(ops_l) != 2:
        raise Unsupported("einsum other than a two-operand product with explicit output")
    lhs, lo = eq.replace(" ", "").split("->")
    la, lb = lhs.split(",")
    if any(len(set(s)) != len(s) for s in (la, lb, lo)) or \
            [len(la), len(lb)] != [r.dim() for r in ops_r]:
        raise Unsupported("einsum with repeated letters")
    a, b = ops_l
    base = _module_of(L, n) or n.name
    nd = out.dim()
    if isinstance(b, Scores) and not isinstance(a, Scores):
        a, b, la, lb = b, a, lb, la
    if isinstance(a, Scores):
        if not isinstance(b, Split):
            raise Unsupported("einsum of attention scores with something other than split heads")
        h, j = la[a.haxis], la[a.kaxis]
        if lb[b.haxis] != h or j not in lb or lb.index(j) in (b.haxis, b.daxis) \
                or j in lo or h not in lo or lb[b.daxis] not in lo \
                or set(la + lb) - {j} != set(lo):
            raise Unsupported(f"einsum '{eq}' is not attention weights times values")
        return _attention_node(L, _qual_key(base, "attn") if base != n.name else n.name,
                               a.q, a.k, b, out, (lo.index(h), lo.index(lb[b.daxis])))
    if not (isinstance(a, Split) and isinstance(b, Split)):
        raise Unsupported(f"einsum '{eq}' of features (not attention heads)")
    h, d = la[a.haxis], la[a.daxis]
    only_a, only_b = set(la) - set(lb), set(lb) - set(la)
    if lb[b.haxis] != h or lb[b.daxis] != d or d in lo or h not in lo \
            or len(only_a) != 1 or len(only_b) != 1 or set(la + lb) - {d} != set(lo):
        raise Unsupported(f"einsum '{eq}' is not query . key per head")
    if a.heads != b.heads or L.ir.node(a.node)["size"] != L.ir.node(b.node)["size"]:
        raise Unsupported("query and key head counts / sizes differ")
    del nd
    return Scores(a, b, lo.index(h), _scores_heads(L, base, a, b, out), lo.index(only_b.pop()))


def _scores_heads(L: Lowerer, base: str, q: Split, k: Split, out) -> Split:
    """The IR stand-in of the scores tensor, for when it is itself a model output
    (``output_attentions``) or read by an unsupported op: what is kept is its head axis.  An
    attention node ``(q, k, q)`` pairs q's and k's units (and puts them into heads); a node of
    ``H`` units (``attention_scores``) is read by a tag node beside it, unit ``(h, i)`` reading
    head ``h``, so fixing those ``H`` units (an output) fixes the heads of q and k while their
    within-head dims stay free, as the scores allow.  When the scores only feed ``@ v`` this adds
    no constraint (the attention node pairs q and k the same way)."""
    heads, dh = rope.dims(L, q)
    pair = L.add_node(_qual_key(base, "scores"), "attention", [q.node, k.node, q.node],
                      heads * dh, out, out.dim() - 1, attrs={"heads": heads})
    for i, x in enumerate((q.node, k.node)):
        L.ir.add_attention_edge(x, pair, i)
    probe = out.new_empty((1, heads)) if not out.is_meta else torch.empty(1, heads)
    head = L.add_node(_qual_key(base, "scores_heads"), "attention_scores", [], heads, probe, 1)
    tag = L.add_node(_qual_key(base, "scores_tag"), "broadcast", [pair, head], heads * dh, out,
                     out.dim() - 1)
    L.identity(pair, tag, 0)
    L.ir.add_map_edge(head, tag, np.arange(heads * dh) // dh, 1)
    return Split(head, 1, 1, 1)


def scores_binary(L: Lowerer, op: str, operands: list, reals: list, out) -> Scores:
    """Scaling attention logits by a scalar, adding a constant mask (causal / padding), or
    dividing by one: still the same q . k pairing.  A term with one value per head couples the
    heads to it: features with one unit per head (T5's learned relative-position bias, looked
    up from a table with constant buckets) are tied to the scores' head units, so a head
    permutation moves the table's columns along; a constant per-head table (ALiBi slopes)
    colours the head units by its exact per-head values, so only heads with identical tables may
    trade places."""
    if op not in ("add", "mul") or not isinstance(out, torch.Tensor):
        raise Unsupported("arithmetic on attention scores")
    sc = [v for v in operands if isinstance(v, Scores)]
    if len(sc) != 1:
        raise Unsupported("arithmetic combining two attention score tensors")
    s = sc[0]
    nd = out.dim()
    heads_node = s.parts[0].node
    heads = L.ir.node(heads_node)["size"]
    for v, r in zip(operands, reals):
        if v is s or not isinstance(r, torch.Tensor) or r.dim() == 0:
            continue
        ax = s.haxis - (nd - r.dim())
        per_head = ax >= 0 and r.shape[ax] != 1
        if isinstance(v, Feat):
            if not per_head or v.cdim != ax or L.ir.node(v.node)["size"] != heads:
                raise Unsupported("attention scores combined with features not one per head")
            L.ir.add_tie(heads_node, v.node, "a per-head term of the attention scores")
            continue
        if not isinstance(v, Raw) or v.kind != "static" or L.params_in(v.fxnode):
            raise Unsupported("attention scores combined with features or parameters")
        if per_head:
            _colour_heads(L, heads_node, v, r, ax)
    return s


def _colour_heads(L: Lowerer, heads_node: str, v: Raw, r: torch.Tensor, ax: int) -> None:
    """Colour the scores' head units by the exact values of a constant per-head table."""
    if r.is_meta:
        raise Unsupported("per-head constant table without values (meta device)")
    for key in rope._buffers_in(L, v.fxnode):  # a buffer used as a table is never permuted
        L.record(key, rope._rank_none(L, key), constant=True)
    rows = float_bits(r.detach().movedim(ax, 0).reshape(r.shape[ax], -1))
    ids, _ = exact_row_ids(rows.reshape(r.shape[ax], -1))
    node = L.ir.node(heads_node)
    prev = node["unit_colour"]
    if prev is not None:
        ids, _ = exact_row_ids(np.stack([np.asarray(prev), ids], axis=1))
    node["unit_colour"] = ids.astype(np.int64)


def scores_unary(c: Call, fn: str) -> Scores:
    """softmax over keys (or any non-head axis), exp, tanh (soft-capping): elementwise in the
    heads, so the pairing survives."""
    s, ar, kr = c.args[0], c.real_args, c.real_kwargs
    if fn in ("softmax", "log_softmax"):
        dim = ar[1] if len(ar) > 1 else kr.get("dim")
        if not isinstance(dim, int) or dim % ar[0].dim() == s.haxis:
            raise Unsupported(f"{fn} of attention scores across heads")
    elif fn not in ("exp", "tanh", "sigmoid", "relu", "neg", "clamp"):
        raise Unsupported(f"{fn} of attention scores")
    return s


def _as_heads(L: Lowerer, base: str, tag: str, x, real, nd: int, daxis: int | None = None
              ) -> Split:
    """An SDPA operand as split heads.  A single head's projection is never split by its
    ``view`` (one head of ``dh`` channels is just ``dh`` channels), so it arrives as features on
    the last axis; multi-query attention then broadcasts it over the heads axis (``repeat_kv``
    of one key/value head only grows a non-channel axis).  Such an operand is one head repeated
    over the heads axis: every head sees the same permutation of its ``dh`` units."""
    daxis = nd - 1 if daxis is None else daxis
    if isinstance(x, Split):
        return x
    if not isinstance(x, Feat) or x.cdim != daxis or real.dim() != nd or nd < 3:
        raise Unsupported("q, k, v are not (batch, heads, tokens, head_dim) projections")
    one = Split(x.node, nd - 3, daxis, 1)
    return rope.repeat_heads(L, _qual_key(base, f"{tag}_heads"), one, int(real.shape[nd - 3]),
                             real, nd - 3, daxis)
