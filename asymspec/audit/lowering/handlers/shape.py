"""Layout operations: aliases (dropout, clone, dtype casts), reshape / flatten / view, permute /
transpose, expand, indexing and channel slices, split / chunk, padding, concatenation / stacking,
spatial resampling, roll / flip."""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.handlers import rope
from asymspec.audit.lowering.handlers.activation import _tensor_only_first
from asymspec.audit.lowering.handlers.linear import _module_of
from asymspec.audit.lowering.interpreter import Lowerer
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import (
    Feat,
    Packed,
    Raw,
    Split,
    Unsupported,
    _arg,
    _opaque_like,
    _static_like,
)


# ---------------------------------------------------------------- identity-like
@handles(nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
def _m_alias(c: Call):
    al = c.args
    return al[0]


@handles(F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, torch.clone)
def _f_alias(c: Call):
    al = c.args
    return al[0]


def _aten(*names: str) -> list:
    """ATen overloads by ``"packet.overload"`` name (those this torch lacks are skipped)."""
    out = []
    for name in names:
        packet, _, overload = name.partition(".")
        out.append(getattr(getattr(torch.ops.aten, packet, None), overload, None))
    return out


@handles("contiguous", "clone", "detach", "float", "double", "half", "to", "type_as",
         "requires_grad_", "type", "bfloat16", "cpu", "cuda",
         *_aten("to.dtype", "to.dtype_layout", "to.device", "_to_copy.default",
                "type_as.default"))
def _meth_alias(c: Call):
    """dtype / device conversions and copies (``.to(dtype)`` inside RMSNorm): same units."""
    al, ar, out = c.args, c.real_args, c.out
    if not isinstance(out, torch.Tensor) or not isinstance(ar[0], torch.Tensor) or \
            out.shape != ar[0].shape:
        raise Unsupported("conversion changes the shape")
    return al[0]


# ---------------------------------------------------------------- layout
def reshape_map(in_shape: tuple, out_shape: tuple, cdim: int):
    """How the channel axis survives a reshape: ('alias', new_cdim), ('merge', new_cdim,
    index, colour) or None (the channel axis is split)."""
    c = in_shape[cdim]
    s_in = math.prod(in_shape[cdim + 1:])
    before = math.prod(in_shape[:cdim])
    for k in range(len(out_shape)):
        if (out_shape[k] == c and math.prod(out_shape[k + 1:]) == s_in
                and math.prod(out_shape[:k]) == before):
            return ("alias", k)
    for k in range(len(out_shape)):
        inner = math.prod(out_shape[k + 1:])
        if inner == 0 or s_in % inner or (inner * out_shape[k]) % (s_in * c):
            continue
        j = np.arange(out_shape[k], dtype=np.int64) * inner
        index = (j // s_in) % c
        colour = (j // (s_in * c)) * s_in + (j % s_in)
        return ("merge", k, index, colour)
    return None


def _reshape(L: Lowerer, base: str, x_low, x_real, out):
    ins, outs = tuple(x_real.shape), tuple(out.shape)
    if ins == outs:  # a view of the same shape (export writes many): nothing moves
        return x_low
    if isinstance(x_low, Split):  # merging (heads, head_dim) back into channels
        h, d = x_low.haxis, x_low.daxis
        size = L.size(Feat(x_low.node, 0))
        lo, hi = min(h, d), max(h, d)
        if hi == lo + 1:
            for k in range(len(outs)):
                if (outs[k] == size and math.prod(outs[:k]) == math.prod(ins[:lo])
                        and math.prod(outs[k + 1:]) == math.prod(ins[hi + 1:])):
                    if d == h + 1:
                        return Feat(x_low.node, k)
                    # (head_dim, heads) order: a fixed channel shuffle (ShuffleNet)
                    heads = x_low.heads
                    dh = size // heads
                    j = np.arange(size)
                    index = (j % heads) * dh + j // heads
                    name = L.add_node(base, "shuffle", [x_low.node], size, out, k)
                    L.ir.add_map_edge(x_low.node, name, index)
                    return Feat(name, k)
        moved = _split_axes_after_reshape(ins, outs, x_low)
        if moved is not None:
            return moved
        raise Unsupported(f"reshape of split channels {list(ins)} -> {list(outs)}")
    if isinstance(x_low, Packed):
        return _reshape_packed(L, base, x_low, ins, outs, out)
    if not isinstance(x_low, Feat):
        return x_low
    m = reshape_map(ins, outs, x_low.cdim)
    if m is None:
        c = ins[x_low.cdim]
        for k in range(len(outs) - 2):  # channels split into (parts, heads, head_dim)
            if (outs[k] > 1 and outs[k] * outs[k + 1] * outs[k + 2] == c
                    and math.prod(outs[:k]) == math.prod(ins[:x_low.cdim])
                    and math.prod(outs[k + 3:]) == math.prod(ins[x_low.cdim + 1:])):
                width = c // outs[k]
                parts = []
                for i in range(outs[k]):
                    part = x_real.narrow(x_low.cdim, i * width, width)
                    f = _channel_slice(L, f"{base}.{i}", x_low,
                                       np.arange(i * width, (i + 1) * width), part, x_low.cdim)
                    parts.append(Split(f.node, k + 1, k + 2, outs[k + 1]))
                return Packed(parts, k)
        for k in range(len(outs) - 1):  # channels split into (heads, head_dim)
            if (outs[k] * outs[k + 1] == c and math.prod(outs[:k]) == math.prod(ins[:x_low.cdim])
                    and math.prod(outs[k + 2:]) == math.prod(ins[x_low.cdim + 1:])):
                return Split(x_low.node, k, k + 1, outs[k])
        raise Unsupported("reshape splits the channel axis")
    if m[0] == "alias":
        return Feat(x_low.node, m[1])
    _, k, index, colour = m
    name = L.add_node(base, "flatten", [x_low.node], len(index), out, k)
    L.ir.node(name)["unit_colour"] = colour.astype(np.int64)
    L.ir.add_map_edge(x_low.node, name, index)
    return Feat(name, k)


def _axis_after_reshape(ins: tuple, outs: tuple, a: int) -> int | None:
    """Where axis ``a`` of a tensor of shape ``ins`` lands after a reshape to ``outs`` when it
    survives whole (same size, same number of elements before it); None if it does not or the
    answer is ambiguous (a size-1 axis among others)."""
    before = math.prod(ins[:a])
    hits = [k for k in range(len(outs)) if outs[k] == ins[a] and math.prod(outs[:k]) == before]
    return hits[0] if len(hits) == 1 else None


def _split_axes_after_reshape(ins: tuple, outs: tuple, x: Split) -> Split | None:
    h, d = _axis_after_reshape(ins, outs, x.haxis), _axis_after_reshape(ins, outs, x.daxis)
    if h is None or d is None or h == d:
        return None
    return Split(x.node, h, d, x.heads)


def _reshape_packed(L: Lowerer, base: str, x: Packed, ins: tuple, outs: tuple, out) -> Any:
    """A packed / repeated tensor (parts along ``paxis``, each a split tensor) reshaped: axes
    that survive whole keep their roles; the parts axis merged with the heads axis gives one
    split tensor whose heads are (head, part) pairs -- ``repeat_kv``'s
    ``x[:, :, None].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d)``."""
    p = x.paxis
    s0 = x.parts[0]
    if any((s.haxis, s.daxis, s.heads) != (s0.haxis, s0.daxis, s0.heads) for s in x.parts):
        raise Unsupported("reshape of a packed projection with mixed head layouts")
    ax = [_axis_after_reshape(ins, outs, a) for a in (p, s0.haxis, s0.daxis)]
    if None not in ax and len(set(ax)) == 3:
        return Packed([Split(s.node, ax[1], ax[2], s.heads) for s in x.parts], ax[0])
    if abs(s0.daxis - p) == 1:
        return _merge_parts_into_dims(L, base, x, ins, outs, out)
    h = s0.haxis
    d = _axis_after_reshape(ins, outs, s0.daxis)
    if abs(h - p) != 1 or d is None:
        raise Unsupported(f"reshape of a packed projection {list(ins)} -> {list(outs)}")
    lo = min(h, p)
    merged = [k for k in range(len(outs)) if outs[k] == ins[h] * ins[p]
              and math.prod(outs[:k]) == math.prod(ins[:lo])]
    if len(merged) != 1 or merged[0] == d:
        raise Unsupported(f"reshape of a packed projection {list(ins)} -> {list(outs)}")
    k = merged[0]
    n_parts, heads = len(x.parts), s0.heads
    if len({s.node for s in x.parts}) == 1:  # the same heads repeated: grouped-query attention
        return rope.repeat_heads(L, base, s0, n_parts, out, k, d, interleave=h < p)
    dh = L.size(Feat(s0.node, 0)) // heads
    total = n_parts * heads * dh
    name = L.add_node(base, "concat", list(dict.fromkeys(s.node for s in x.parts)), total, out,
                      d)
    new = np.arange(n_parts * heads)
    part, head = (new % n_parts, new // n_parts) if h < p else (new // heads, new % heads)
    by_src: dict[str, np.ndarray] = {}
    for i, s in enumerate(x.parts):
        idx = by_src.setdefault(s.node, np.full(total, -1, dtype=np.int64))
        for q in np.nonzero(part == i)[0]:
            idx[q * dh:(q + 1) * dh] = head[q] * dh + np.arange(dh)
    for slot, (src, idx) in enumerate(by_src.items()):
        L.ir.add_map_edge(src, name, idx, slot)
    return Split(name, k, d, n_parts * heads)


def _merge_parts_into_dims(L: Lowerer, base: str, x: Packed, ins: tuple, outs: tuple, out
                           ) -> Split:
    """The parts axis of stacked split heads merged with head_dim: head dim ``j`` of the result
    is dim ``j // P`` of part ``j % P`` (parts axis after head_dim: interleaved, GPT-J) or dim
    ``j % dh`` of part ``j // dh`` (before it)."""
    p, s0 = x.paxis, x.parts[0]
    d, n_parts = s0.daxis, len(x.parts)
    heads, dh = rope.dims(L, s0)
    h = _axis_after_reshape(ins, outs, s0.haxis)
    merged = [k for k in range(len(outs)) if outs[k] == dh * n_parts
              and math.prod(outs[:k]) == math.prod(ins[:min(d, p)])]
    if h is None or len(merged) != 1 or merged[0] == h:
        raise Unsupported(f"reshape of stacked split heads {list(ins)} -> {list(outs)}")
    width = dh * n_parts
    j = np.arange(width)
    part, dim = (j % n_parts, j // n_parts) if d < p else (j // dh, j % dh)
    name = L.add_node(base, "concat", list(dict.fromkeys(s.node for s in x.parts)),
                      heads * width, out, merged[0])
    by_src: dict[str, np.ndarray] = {}
    hh = np.arange(heads)[:, None]
    for i, s in enumerate(x.parts):
        idx = by_src.setdefault(s.node, np.full(heads * width, -1, dtype=np.int64))
        cols = np.nonzero(part == i)[0]
        idx[(hh * width + cols[None, :]).reshape(-1)] = (hh * dh + dim[cols][None, :]).reshape(-1)
    for slot, (src, idx) in enumerate(by_src.items()):
        L.ir.add_map_edge(src, name, idx, slot)
    return Split(name, h, merged[0], heads)


def _squeeze_map(nd_in: int, nd_out: int, name: str, dims_arg, ins: tuple) -> list[int] | None:
    """Axis ``a`` of the input -> its position after ``unsqueeze`` / ``squeeze`` with explicit
    dims (None where it is removed)."""
    if name == "unsqueeze":
        d = int(dims_arg) % nd_out
        return [a + (a >= d) for a in range(nd_in)]
    if dims_arg is None:
        drop = {a for a in range(nd_in) if ins[a] == 1}
    else:
        ds = [dims_arg] if isinstance(dims_arg, int) else list(dims_arg)
        drop = {int(a) % nd_in for a in ds if ins[int(a) % nd_in] == 1}
    out, k = [], 0
    for a in range(nd_in):
        out.append(None if a in drop else k)
        k += a not in drop
    return out


def _squeeze_heads(c: Call, name: str):
    """``unsqueeze`` / ``squeeze`` of a split or packed tensor: exact axis bookkeeping (a
    generic reshape cannot tell size-1 axes apart)."""
    x, ar, kr, out = c.args[0], c.real_args, c.real_kwargs, c.out
    dims_arg = ar[1] if len(ar) > 1 else kr.get("dim")
    if name == "unsqueeze" and dims_arg is None:
        raise Unsupported("unsqueeze without a dim")
    m = _squeeze_map(ar[0].dim(), out.dim(), name, dims_arg, tuple(ar[0].shape))
    if isinstance(x, Packed):
        parts = [(m[s.haxis], m[s.daxis]) for s in x.parts]
        if m[x.paxis] is None or any(None in pr for pr in parts):
            raise Unsupported("squeezes a heads / head_dim / parts axis")
        return Packed([Split(s.node, h, d, s.heads) for s, (h, d) in zip(x.parts, parts)],
                      m[x.paxis])
    if m[x.haxis] is None or m[x.daxis] is None:
        raise Unsupported("squeezes the heads / head_dim axis")
    return Split(x.node, m[x.haxis], m[x.daxis], x.heads)


@handles(nn.Flatten, nn.Unflatten)
def _m_flatten(c: Call):
    L, qual, al, ar, out = c.lowerer, c.qual, c.args, c.real_args, c.out
    return _reshape(L, qual, al[0], ar[0], out)


@handles(torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten)
def _f_reshape(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    _tensor_only_first(al, n)
    name = getattr(n.target, "__name__", "")
    if name in ("squeeze", "unsqueeze") and isinstance(al[0], (Split, Packed)):
        return _squeeze_heads(c, name)
    return _reshape(L, n.name, al[0], ar[0], out)


@handles("view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten", "view_as",
                "reshape_as")
def _meth_reshape(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    if n.target in ("squeeze", "unsqueeze") and isinstance(al[0], (Split, Packed)):
        return _squeeze_heads(c, n.target)
    return _reshape(L, n.name, al[0], ar[0], out)


def _perm_dims(L, n, ar, kr) -> list[int]:
    x = ar[0]
    nd = x.dim()
    name = n.target if n.op == "call_method" else n.target.__name__
    if name == "permute":
        dims = ar[1] if len(ar) == 2 and isinstance(ar[1], (list, tuple)) else \
            (ar[1:] if len(ar) > 1 else kr["dims"])
        return [d % nd for d in dims]
    if name in ("transpose", "swapaxes", "swapdims"):
        a, b = (ar[1], ar[2]) if len(ar) >= 3 else (kr.get("dim0"), kr.get("dim1"))
        p = list(range(nd))
        p[a % nd], p[b % nd] = p[b % nd], p[a % nd]
        return p
    if name == "t":
        return list(range(nd))[::-1]
    if name == "movedim":
        src, dst = ar[1], ar[2]
        src = [src] if isinstance(src, int) else list(src)
        dst = [dst] if isinstance(dst, int) else list(dst)
        return _movedim_perm(nd, src, dst)
    raise Unsupported(f"unknown permutation {name}")


def _movedim_perm(nd: int, src: list[int], dst: list[int]) -> list[int]:
    probe = torch.empty([2 + i for i in range(nd)])
    moved = torch.movedim(probe, src, dst)
    return [list(probe.shape).index(s) for s in moved.shape]


@handles(torch.permute, torch.transpose, torch.swapaxes, torch.movedim, torch.t)
def _f_permute(c: Call):
    L, n, al, ar, kr = c.lowerer, c.node, c.args, c.real_args, c.real_kwargs
    if isinstance(al[0], Packed):
        p = _perm_dims(L, n, ar, kr)
        x = al[0]
        return Packed([Split(s.node, p.index(s.haxis), p.index(s.daxis), s.heads)
                       for s in x.parts], p.index(x.paxis))
    if isinstance(al[0], Split):
        p = _perm_dims(L, n, ar, kr)
        x = al[0]
        return Split(x.node, p.index(x.haxis), p.index(x.daxis), x.heads)
    if not isinstance(al[0], Feat):
        return al[0]
    p = _perm_dims(L, n, ar, kr)
    return Feat(al[0].node, p.index(al[0].cdim))


@handles("permute", "transpose", "swapaxes", "swapdims", "movedim", "t")
def _meth_permute(c: Call):
    return _f_permute(c)


@handles("expand", "expand_as", "broadcast_to", "repeat")
def _meth_expand(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    x = al[0]
    if isinstance(x, Packed):
        if tuple(out.shape) == tuple(ar[0].shape):
            return x
        raise Unsupported("expands a packed projection")
    if isinstance(x, Split):
        return _expand_split(L, n.name, x, tuple(ar[0].shape), out)
    if not isinstance(x, Feat):
        return x
    new = x.cdim + out.dim() - ar[0].dim()
    if out.shape[new] == ar[0].shape[x.cdim]:
        return Feat(x.node, new)
    if ar[0].shape[x.cdim] == 1:
        name = L.add_node(n.name, "broadcast", [x.node], out.shape[new], out, new)
        L.ir.add_map_edge(x.node, name, np.zeros(out.shape[new], dtype=np.int64))
        return Feat(name, new)
    raise Unsupported("repeats the channel axis")


def _expand_split(L: Lowerer, base: str, x: Split, ins: tuple, out):
    """``expand`` / ``repeat`` of split heads.  Tiling along other axes keeps the units; one
    size-1 axis grown to n copies becomes n repeated parts (:class:`Packed`, merged into heads
    by a later reshape: ``repeat_kv``); growing a single head repeats it; anything else
    (growing or tiling the heads / head_dim axes) is unsupported."""
    outs = tuple(out.shape)
    shift = len(outs) - len(ins)
    if shift < 0:
        raise Unsupported("expand removes axes")
    h, d = x.haxis + shift, x.daxis + shift
    heads, dh = rope.dims(L, x)
    grown = [a for a in range(len(outs))
             if (a < shift and outs[a] > 1) or (a >= shift and outs[a] != ins[a - shift])]
    if d in grown:
        raise Unsupported("expands / tiles the head_dim axis")
    if h in grown:
        if len(grown) == 1 and heads == 1:
            return rope.repeat_heads(L, base, x, outs[h], out, h, d)
        raise Unsupported("expands / tiles the heads axis")
    new = Split(x.node, h, d, heads)
    fresh = [a for a in grown if a < shift or ins[a - shift] == 1]  # size 1 -> n copies
    if not fresh:
        return new
    if len(fresh) > 1:
        raise Unsupported("split heads expanded along several axes")
    return Packed([new] * outs[fresh[0]], fresh[0])


def _channel_slice(L: Lowerer, base: str, x: Feat, index: np.ndarray, out, cdim: int) -> Feat:
    size = L.size(x)
    if len(index) == size and np.array_equal(index, np.arange(size)):
        return Feat(x.node, cdim)
    name = L.add_node(base, "slice", [x.node], len(index), out, cdim)
    L.ir.add_map_edge(x.node, name, index)
    return Feat(name, cdim)


@handles(operator.getitem)
def _f_getitem(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    x, idx = al[0], ar[1]
    if isinstance(x, (tuple, list)):
        return x[idx]
    if isinstance(x, Packed) and isinstance(idx, int) and x.paxis == 0:
        return x.take(idx)  # qkv[0]: the query part
    if isinstance(x, Split):
        return _getitem_split(L, n.name, x, ar[0], idx, out)
    if not isinstance(x, Feat):
        raise Unsupported("indexing")
    xr = ar[0]
    nd = xr.dim()
    comps = _index_components(idx, nd)
    cdim = x.cdim
    basic = all(c is None or isinstance(c, (int, slice)) for c in comps)
    if basic:
        in_pos = out_pos = 0
        new_cdim, chan = None, None
        for c in comps:
            if c is None:
                out_pos += 1
                continue
            if in_pos == cdim:
                if isinstance(c, int):
                    raise Unsupported("selects a single channel")
                new_cdim, chan = out_pos, c
            in_pos += 1
            if isinstance(c, slice):
                out_pos += 1
        if new_cdim is None:
            new_cdim = out_pos + (cdim - in_pos)
        index = np.arange(L.size(x))
        if chan is not None:
            index = index[chan]
        return _channel_slice(L, n.name, x, index, out, new_cdim)
    # advanced indexing: supported when the channel axis and everything after it is untouched
    pos = 0
    for c in comps:
        if c is None:
            continue
        width = c.dim() if isinstance(c, torch.Tensor) and c.dtype == torch.bool else 1
        if pos + width - 1 >= cdim and not (isinstance(c, slice) and c == slice(None)):
            raise Unsupported("advanced indexing of the channel axis")
        pos += width
    return Feat(x.node, out.dim() - (nd - cdim))



def _index_components(idx, nd: int) -> list:
    """An index (``x[idx]``) as one component per axis or ``None``, ``...`` expanded for ``nd``
    input dimensions."""
    comps = list(idx) if isinstance(idx, tuple) else [idx]
    if any(c is Ellipsis for c in comps):
        i = comps.index(Ellipsis)
        used = sum(1 for c in comps if c is not None and c is not Ellipsis)
        comps = comps[:i] + [slice(None)] * (nd - used) + comps[i + 1:]
    return comps

def _getitem_split(L: Lowerer, base: str, x: Split, xr, idx, out) -> Split:
    """Basic indexing of split heads (``x[..., :r]``, ``x[:, :, None]``): slices of the heads /
    head_dim axes select units; integers and tensors there are unsupported."""
    nd = xr.dim()
    comps = _index_components(idx, nd)
    heads, dh = rope.dims(L, x)
    hsel, dsel = np.arange(heads), np.arange(dh)
    where: dict[int, int] = {}
    in_pos = out_pos = 0
    for c in comps:
        if c is None:
            out_pos += 1
            continue
        if isinstance(c, int) and in_pos not in (x.haxis, x.daxis):
            in_pos += 1
            continue
        if not isinstance(c, slice):
            raise Unsupported("indexing of split heads with integers or tensors")
        if in_pos == x.haxis:
            hsel = hsel[c]
        elif in_pos == x.daxis:
            dsel = dsel[c]
        where[in_pos] = out_pos
        in_pos += 1
        out_pos += 1
    for a in range(in_pos, nd):
        where[a] = out_pos + (a - in_pos)
    return rope.select(L, base, x, hsel, dsel, out, where[x.haxis], where[x.daxis])


def _split_heads(L: Lowerer, n, x: Split, x_real, outs, dim: int):
    """``chunk`` / ``split`` of split heads: along head_dim (GPT-NeoX's packed q | k | v per
    head) or the heads axis each piece selects units; along other axes every piece keeps
    them."""
    heads, dh = rope.dims(L, x)
    if dim not in (x.haxis, x.daxis):
        return tuple(Split(x.node, x.haxis, x.daxis, heads) for _ in outs)
    res, offset = [], 0
    for i, o in enumerate(outs):
        k = o.shape[dim]
        rng = np.arange(offset, offset + k)
        hsel, dsel = (rng, np.arange(dh)) if dim == x.haxis else (np.arange(heads), rng)
        res.append(rope.select(L, f"{n.name}.{i}", x, hsel, dsel, o, x.haxis, x.daxis))
        offset += k
    return tuple(res)


def _split(L: Lowerer, n, x_low, x_real, outs, dim: int):
    if isinstance(x_low, Split):
        return _split_heads(L, n, x_low, x_real, outs, dim % x_real.dim())
    if isinstance(x_low, Packed):
        raise Unsupported("split / chunk of a packed projection")
    if not isinstance(x_low, Feat):
        return _opaque_like(outs, n)
    dim = dim % x_real.dim()
    if dim != x_low.cdim:
        return tuple(Feat(x_low.node, x_low.cdim) for _ in outs)
    res, offset = [], 0
    for i, o in enumerate(outs):
        k = o.shape[dim]
        res.append(_channel_slice(L, f"{n.name}.{i}", x_low, np.arange(offset, offset + k), o,
                                  dim))
        offset += k
    return tuple(res)


@handles(torch.chunk, torch.split, torch.unbind)
def _f_split(c: Call):
    L, n, al, ar, kr, out = c.lowerer, c.node, c.args, c.real_args, c.real_kwargs, c.out
    name = n.target if isinstance(n.target, str) else n.target.__name__
    dim = _arg(ar, kr, 2 if name != "unbind" else 1, "dim", 0)
    if name == "unbind" and isinstance(al[0], Packed):
        if dim % ar[0].dim() != al[0].paxis:
            raise Unsupported("unbind of a packed projection along another axis")
        return tuple(al[0].take(i) for i in range(len(al[0].parts)))
    if isinstance(al[0], Packed):
        raise Unsupported(f"{name} of a packed projection")
    if name == "unbind":
        if isinstance(al[0], Feat) and dim % ar[0].dim() == al[0].cdim:
            raise Unsupported("unbinds the channel axis")
        return tuple(Feat(al[0].node, al[0].cdim - (1 if dim % ar[0].dim() < al[0].cdim else 0))
                     for _ in out) if isinstance(al[0], Feat) else _opaque_like(out, n)
    return _split(L, n, al[0], ar[0], out, dim)


@handles("chunk", "split", "unbind")
def _meth_split(c: Call):
    L, n, al, ar, kr, out = c.lowerer, c.node, c.args, c.real_args, c.real_kwargs, c.out
    if n.target == "unbind":
        return _f_split(c)
    dim = _arg(ar, kr, 2, "dim", 0)
    return _split(L, n, al[0], ar[0], out, dim)


@handles(F.pad)
def _f_pad(c: Call):
    L, n, al, ar, kr, out = c.lowerer, c.node, c.args, c.real_args, c.real_kwargs, c.out
    x = al[0]
    if isinstance(x, (Split, Packed)):
        raise Unsupported("padding of split attention heads")
    if not isinstance(x, Feat):
        return _opaque_like(out, n)
    pad = list(_arg(ar, kr, 1, "pad"))
    nd = ar[0].dim()
    pos = nd - 1 - x.cdim  # pad pairs start at the last axis
    if 2 * pos + 1 >= len(pad) or (pad[2 * pos] == 0 and pad[2 * pos + 1] == 0):
        return Feat(x.node, x.cdim)
    lo, hi = pad[2 * pos], pad[2 * pos + 1]
    mode = _arg(ar, kr, 2, "mode", "constant")
    if mode != "constant" or lo < 0 or hi < 0:
        raise Unsupported("non-constant padding of the channel axis")
    size = L.size(x)
    index = np.concatenate([np.full(lo, -1), np.arange(size), np.full(hi, -1)])
    name = L.add_node(n.name, "pad_channels", [x.node], len(index), out, x.cdim,
                      attrs={"pad_lo": lo, "pad_hi": hi})
    L.ir.add_map_edge(x.node, name, index)
    return Feat(name, x.cdim)


# ---------------------------------------------------------------- cat / stack
@handles(torch.cat, torch.concat, torch.stack)
def _f_cat(c: Call):
    L, n, al, ar, kr, out = c.lowerer, c.node, c.args, c.real_args, c.real_kwargs, c.out
    items_l, items_r = list(al[0]), list(ar[0])
    dim = _arg(ar, kr, 1, "dim", 0)
    stack = n.target is torch.stack
    if any(isinstance(v, (Split, Packed)) for v in items_l):
        return _cat_heads(L, n, items_l, items_r, dim, stack, out)
    feats = [v for v in items_l if isinstance(v, Feat)]
    if not feats:
        return _opaque_like(out, n) if any(isinstance(v, Raw) and v.kind != "static"
                                           for v in items_l) else _static_like(out, n)
    nd = items_r[0].dim()
    cdim = feats[0].cdim
    if any(f.cdim != cdim for f in feats):
        raise Unsupported("concatenated tensors carry channels on different axes")
    mats = [L.feat(v, r, cdim) for v, r in zip(items_l, items_r)]
    base = _module_of(L, n) or n.name
    if stack:
        d = dim % (nd + 1)
        new = cdim + (1 if d <= cdim else 0)
        return _tie(L, base, "stack", mats, out, new)
    d = dim % nd
    if d != cdim:
        return _tie(L, base, "cat", mats, out, cdim)
    total = sum(L.size(f) for f in mats)
    name = L.add_node(base, "concat", [f.node for f in mats], total, out, cdim)
    offset = 0
    for i, f in enumerate(mats):
        index = np.full(total, -1)
        index[offset:offset + L.size(f)] = np.arange(L.size(f))
        L.ir.add_map_edge(f.node, name, index, i)
        offset += L.size(f)
    return Feat(name, cdim)


def _cat_heads(L: Lowerer, n, items_l, items_r, dim: int, stack: bool, out) -> Split:
    """``torch.cat`` of split heads: along head_dim (rotate_half, rotated | unrotated dims),
    along the heads axis, or along another axis (tokens: the units are shared).  ``torch.stack``
    of split heads (GPT-J's ``rotate_every_two``: ``stack((-x2, x1), -1).flatten(-2)``) is a
    :class:`Packed` of the parts along the new axis, resolved by the reshape that follows."""
    if not all(isinstance(v, Split) for v in items_l):
        raise Unsupported("concatenating split heads with other tensors")
    nd = out.dim()
    if any(r.dim() != nd - stack for r in items_r):
        raise Unsupported("concatenating split heads of different ranks")
    s0 = items_l[0]
    if any((s.haxis, s.daxis) != (s0.haxis, s0.daxis) for s in items_l) \
            or len({rope.dims(L, s) for s in items_l}) != 1:
        raise Unsupported("concatenating split heads with different layouts")
    d = dim % nd
    if stack:
        return Packed([Split(s.node, s.haxis + (s.haxis >= d), s.daxis + (s.daxis >= d),
                             s.heads) for s in items_l], d)
    base = _module_of(L, n) or n.name
    if d == s0.daxis:
        return rope.concat_dims(L, base, list(items_l), out, s0.haxis, s0.daxis)
    if d == s0.haxis:
        return rope.concat_heads(L, base, list(items_l), out, s0.haxis, s0.daxis)
    if len({rope.dims(L, s) for s in items_l}) != 1:
        raise Unsupported("concatenating split heads of different sizes")
    f = _tie(L, base, "cat", [Feat(s.node, s.daxis) for s in items_l], out, s0.daxis)
    return Split(f.node, s0.haxis, s0.daxis, s0.heads)


def _tie(L: Lowerer, base: str, op: str, feats: list[Feat], out, cdim: int) -> Feat:
    sizes = {L.size(f) for f in feats}
    if len(sizes) != 1:
        raise Unsupported("operands have different channel counts")
    name = L.add_node(base, op, [f.node for f in feats], sizes.pop(), out, cdim,
                      role="residual" if op == "add" else "hidden")
    for i, f in enumerate(feats):
        if f.node in [g.node for g in feats[:i]]:
            continue  # x + x: one edge
        L.identity(f.node, name, i)
    return Feat(name, cdim)


# ---------------------------------------------------------------- spatial resampling
@handles(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def _m_upsample(c: Call):
    L, qual, al, ar, out = c.lowerer, c.qual, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], 1)
    return L.elementwise(qual, "upsample", x, out)


@handles(F.interpolate, F.upsample)
def _f_upsample(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    _tensor_only_first(al, n)
    x = L.feat(al[0], ar[0], 1)
    return L.elementwise(n.name, "upsample", x, out)


@handles(torch.roll, torch.flip)
def _f_roll(c: Call):
    """Shifting / flipping along non-channel axes is channel-wise: the same node."""
    n, al, ar, kr, out = c.node, c.args, c.real_args, c.real_kwargs, c.out
    x = al[0]
    if isinstance(x, Packed):
        raise Unsupported("roll / flip of a packed projection")
    if not isinstance(x, (Feat, Split)):
        return _opaque_like(out, n)
    is_roll = n.target is torch.roll or n.target == "roll"
    dims = _arg(ar, kr, 2 if is_roll else 1, "dims")
    if dims is None:
        raise Unsupported("roll over the flattened tensor")
    dims = [dims] if isinstance(dims, int) else list(dims)
    if isinstance(x, Split):
        if any(d % ar[0].dim() in (x.haxis, x.daxis) for d in dims):
            raise Unsupported("shifts the heads / head_dim axis")
        return x
    if any(d % ar[0].dim() == x.cdim for d in dims):
        raise Unsupported("shifts the channel axis")
    return Feat(x.node, x.cdim)


@handles("roll", "flip")
def _meth_roll(c: Call):
    return _f_roll(c)
