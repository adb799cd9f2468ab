"""Layout operations: aliases (dropout, clone, dtype casts), reshape / flatten / view, permute /
transpose, expand, indexing and channel slices, split / chunk, padding, concatenation / stacking,
spatial resampling, roll / flip."""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asymspec.audit.lowering.context import Call
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
         *_aten("to.dtype", "to.dtype_layout", "to.device", "_to_copy.default"))
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
        raise Unsupported(f"reshape of split channels {list(ins)} -> {list(outs)}")
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


@handles(nn.Flatten, nn.Unflatten)
def _m_flatten(c: Call):
    L, qual, al, ar, out = c.lowerer, c.qual, c.args, c.real_args, c.out
    return _reshape(L, qual, al[0], ar[0], out)


@handles(torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten)
def _f_reshape(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    _tensor_only_first(al, n)
    return _reshape(L, n.name, al[0], ar[0], out)


@handles("view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten", "view_as",
                "reshape_as")
def _meth_reshape(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
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
    if not isinstance(x, Feat):
        raise Unsupported("indexing")
    xr = ar[0]
    nd = xr.dim()
    comps = list(idx) if isinstance(idx, tuple) else [idx]
    if any(c is Ellipsis for c in comps):
        i = comps.index(Ellipsis)
        used = sum(1 for c in comps if c is not None and c is not Ellipsis)
        comps = comps[:i] + [slice(None)] * (nd - used) + comps[i + 1:]
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
    touched = [i for i, c in enumerate(comps) if c is not None]
    pos = 0
    for c in comps:
        if c is None:
            continue
        width = c.dim() if isinstance(c, torch.Tensor) and c.dtype == torch.bool else 1
        if pos + width - 1 >= cdim and not (isinstance(c, slice) and c == slice(None)):
            raise Unsupported("advanced indexing of the channel axis")
        pos += width
    del touched
    return Feat(x.node, out.dim() - (nd - cdim))


def _split(L: Lowerer, n, x_low, x_real, outs, dim: int):
    if isinstance(x_low, (Split, Packed)):
        raise Unsupported("split / chunk of split attention heads")
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
    if not isinstance(x, Feat):
        return _opaque_like(out, n)
    is_roll = n.target is torch.roll or n.target == "roll"
    dims = _arg(ar, kr, 2 if is_roll else 1, "dims")
    if dims is None:
        raise Unsupported("roll over the flattened tensor")
    dims = [dims] if isinstance(dims, int) else list(dims)
    if any(d % ar[0].dim() == x.cdim for d in dims):
        raise Unsupported("shifts the channel axis")
    return Feat(x.node, x.cdim)


@handles("roll", "flip")
def _meth_roll(c: Call):
    return _f_roll(c)
