"""Arithmetic inside attention heads -- the ops rotary position embeddings (RoPE) are made of --
and grouped-query attention's repeated key / value heads.

A :class:`Split` is a feature tensor whose channels are split into (heads, head_dim) axes; its IR
node's unit ``h * dh + i`` is dimension ``i`` of head ``h``.  This module lowers the primitive
operations code performs on such tensors, each one *exactly* (its unit-graph automorphisms are
precisely the unit permutations under which the op is equivariant), so that any composition of
them -- whatever the module calls it -- gets its symmetries derived, never assumed:

* ``x[..., a:b]`` / ``chunk`` along head_dim (or the heads axis): a node reading the selected
  units through a ``map`` edge;
* ``torch.cat`` along head_dim: a node fed by one ``map`` edge per part (each part's units keep
  their own edge colour, so parts cannot trade places);
* ``-x`` and other unary elementwise functions: an identity map into a new node;
* ``x * t`` / ``x + t`` with a constant table ``t`` (RoPE's ``cos`` / ``sin``, a per-dimension
  scale): a ``const`` node whose unit ``(h, i)`` is coloured by the exact float32 bits of the
  table's column at ``(h, i)`` (its values over every other axis: positions, batch), tied to
  ``x`` by identity maps -- a permutation must map each unit to one carrying the *same* column;
* ``x + y``, ``x * y`` of two split tensors: identity maps of both into one node;
* ``repeat_kv`` (``x[:, :, None].expand(...).reshape(...)``) and SDPA's ``enable_gqa``: a node
  whose query-head ``h`` reads key/value head ``h // n_rep`` (:func:`repeat_heads`).

What RoPE leaves of the within-head permutations (derived here, checked by
``tests/test_audit_llama.py``).  Write ``d = dh`` and rotate pairs ``(i, i + r/2)``,
``i < r/2``, of the first ``r <= d`` dimensions (``r = d``: Llama; ``r < d``: GPT-NeoX / Phi's
``partial_rotary_factor``) by angle ``p * theta_i`` at position ``p``:
``rope(x)_p = R(p) x``, ``R(p) = blockdiag_i [[cos p theta_i, -sin p theta_i],
[sin p theta_i, cos p theta_i]] (+) I_{d-r}``; in code ``x * cos + rotate_half(x) * sin`` with
``cos = cat(cos p theta, cos p theta)`` and ``rotate_half(x) = cat(-x[r/2:], x[:r/2])``.  The score
of query position m and key position n is ``(R(m) q)^T (R(n) k) = q^T R(n - m) k`` (R(p) is
orthogonal and R(m)^T R(n) = R(n - m)).  A joint permutation P of q's and k's dimensions (what a
permutation of the q_proj / k_proj rows within a head does) leaves every score unchanged iff
``P^T R(delta) P = R(delta)`` for every offset delta that occurs.  R(delta)'s invariant planes are
the pairs, each rotating by its own frequency; with distinct frequencies P must map every pair
onto itself, and a pair swap conjugates a rotation by angle a into one by -a, which differs
unless ``sin(delta theta_i) = 0`` for all delta.  Hence P = I on the rotated dimensions; the
``d - r`` unrotated ones enter the score as the plain dot product ``q_pass^T k_pass`` and stay
freely permutable (jointly in q and k).  Two pairs with *equal* frequencies (never for the
standard ``theta_i = base^(-2i/r)``) may trade places as whole pairs, keeping orientation.
The lowering produces exactly this without knowing it is RoPE: the two slices and the
concatenation of rotate_half keep the halves apart and, with the sum ``x * cos + rot(x) * sin``,
force the same permutation on both members of a pair; the ``cos`` / ``sin`` columns then leave
only pairs with identical columns (equal frequencies) interchangeable, and an unrotated slice
(``q[..., r:]``, concatenated back) keeps its own free permutation.  GPT-J's interleaved pairs
``(2i, 2i + 1)`` (``x[..., ::2]``, ``x[..., 1::2]``, ``stack((-x2, x1), -1).flatten(-2)``) go
through strided slices, a stack (:class:`Packed`) and the reshape merging it into head_dim: the
same argument with other pair indices.  v is never rotated: its
dimensions permute jointly with the matching ``o_proj`` input columns.

Anything else done to a split tensor (a table that depends on a parameter, an op not listed,
broadcasting a split tensor along its heads or head_dim axes) raises :class:`Unsupported`: the
op is listed and every unit it touches is pinned, so the result stays a flagged lower bound.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx

from asymspec.audit.lowering.interpreter import Lowerer
from asymspec.audit.lowering.values import Packed, Raw, Split, Unsupported
from asymspec.ir.units import exact_row_ids, float_bits


def dims(L: Lowerer, s: Split) -> tuple[int, int]:
    """(heads, head_dim) of a split tensor."""
    size = L.ir.node(s.node)["size"]
    if s.heads < 1 or size % s.heads:
        raise Unsupported("split heads do not divide the channels")
    return s.heads, size // s.heads


def _node(L: Lowerer, base: str, op: str, inputs: list[str], size: int, out: torch.Tensor,
          daxis: int, attrs: dict | None = None) -> str:
    n = L.node
    if n is not None and base.startswith(n.name):  # a bare fx name: say which module it is in
        stack = n.meta.get("nn_module_stack") or {}
        if stack and "asymspec_name" not in n.meta:
            base = f"{L.prefix}{list(stack.values())[-1][0]}.{base}"
    return L.add_node(base, op, inputs, size, out, daxis, attrs=attrs)


def select(L: Lowerer, base: str, s: Split, hsel: np.ndarray, dsel: np.ndarray,
           out: torch.Tensor, haxis: int, daxis: int) -> Split:
    """Heads ``hsel`` and head dimensions ``dsel`` of ``s`` (slices, chunks): unit ``(a, b)`` of
    the result reads unit ``(hsel[a], dsel[b])``."""
    heads, dh = dims(L, s)
    if len(hsel) == heads and len(dsel) == dh and np.array_equal(hsel, np.arange(heads)) \
            and np.array_equal(dsel, np.arange(dh)):
        return Split(s.node, haxis, daxis, heads)
    if len(hsel) == 0 or len(dsel) == 0:
        raise Unsupported("empty slice of split heads")
    index = (np.asarray(hsel)[:, None] * dh + np.asarray(dsel)[None, :]).reshape(-1)
    name = _node(L, base, "slice", [s.node], len(index), out, daxis)
    L.ir.add_map_edge(s.node, name, index)
    return Split(name, haxis, daxis, len(hsel))


def concat_dims(L: Lowerer, base: str, parts: list[Split], out: torch.Tensor, haxis: int,
                daxis: int) -> Split:
    """``torch.cat`` of split tensors along head_dim (rotate_half; rotated | unrotated dims)."""
    shapes = [dims(L, p) for p in parts]
    heads = shapes[0][0]
    if any(h != heads for h, _ in shapes):
        raise Unsupported("concatenating split tensors with different head counts")
    total = sum(d for _, d in shapes)
    name = _node(L, base, "concat", [p.node for p in parts], heads * total, out, daxis)
    hh = np.arange(heads)
    offset = 0
    by_src: dict[str, np.ndarray] = {}
    for p, (_, d) in zip(parts, shapes):
        idx = by_src.setdefault(p.node, np.full(heads * total, -1, dtype=np.int64))
        pos = (hh[:, None] * total + offset + np.arange(d)[None, :]).reshape(-1)
        idx[pos] = (hh[:, None] * d + np.arange(d)[None, :]).reshape(-1)
        offset += d
    for slot, (src, idx) in enumerate(by_src.items()):  # x twice (cat((x, x))): one edge
        L.ir.add_map_edge(src, name, idx, slot)
    return Split(name, haxis, daxis, heads)


def concat_heads(L: Lowerer, base: str, parts: list[Split], out: torch.Tensor, haxis: int,
                 daxis: int) -> Split:
    """``torch.cat`` of split tensors along the heads axis."""
    shapes = [dims(L, p) for p in parts]
    dh = shapes[0][1]
    if any(d != dh for _, d in shapes):
        raise Unsupported("concatenating heads of different sizes")
    total = sum(h * dh for h, _ in shapes)
    name = _node(L, base, "concat", [p.node for p in parts], total, out, daxis)
    offset = 0
    by_src: dict[str, np.ndarray] = {}
    for p, (h, _) in zip(parts, shapes):
        idx = by_src.setdefault(p.node, np.full(total, -1, dtype=np.int64))
        idx[offset:offset + h * dh] = np.arange(h * dh)
        offset += h * dh
    for slot, (src, idx) in enumerate(by_src.items()):
        L.ir.add_map_edge(src, name, idx, slot)
    return Split(name, haxis, daxis, total // dh)


def elementwise(L: Lowerer, base: str, s: Split, out: torch.Tensor, fn: str) -> Split:
    """A unary elementwise function of a split tensor (``-x``, ``silu(x)``)."""
    size = L.ir.node(s.node)["size"]
    name = _node(L, base, "activation", [s.node], size, out, s.daxis, attrs={"fn": fn})
    L.identity(s.node, name)
    return Split(name, s.haxis, s.daxis, s.heads)


def repeat_heads(L: Lowerer, base: str, s: Split, n_rep: int, out: torch.Tensor, haxis: int,
                 daxis: int, interleave: bool = True) -> Split:
    """Every head of ``s`` repeated ``n_rep`` times: head ``h`` of the result reads head
    ``h // n_rep`` (``interleave``: ``repeat_interleave`` / ``repeat_kv`` / SDPA's
    ``enable_gqa``) or ``h % heads`` (``repeat`` / tiling).  Grouped-query attention: the query
    heads sharing one key/value head then meet one copy of it each."""
    heads, dh = dims(L, s)
    if n_rep == 1:
        return Split(s.node, haxis, daxis, heads)
    new = np.arange(heads * n_rep)
    src_head = new // n_rep if interleave else new % heads
    index = (src_head[:, None] * dh + np.arange(dh)[None, :]).reshape(-1)
    name = _node(L, base, "repeat_heads", [s.node], len(index), out, daxis,
                 attrs={"n_rep": n_rep, "interleave": interleave})
    L.ir.add_map_edge(s.node, name, index)
    return Split(name, haxis, daxis, heads * n_rep)


# ---------------------------------------------------------------- binary ops
def _aligned(s: Split, r: torch.Tensor, nd: int) -> Split:
    shift = nd - r.dim()
    return Split(s.node, s.haxis + shift, s.daxis + shift, s.heads)


def binary(L: Lowerer, n: fx.Node, op: str, operands: list, reals: list,
           out: torch.Tensor) -> Split:
    """``x (op) y`` where at least one operand is a split tensor (``op``: add | mul | binary)."""
    if not isinstance(out, torch.Tensor):
        raise Unsupported("binary op on split heads without tensor output")
    nd = out.dim()
    if any(isinstance(v, Packed) for v in operands):
        raise Unsupported("arithmetic on a packed q | k | v projection")
    splits = [(_aligned(v, r, nd), v) for v, r in zip(operands, reals) if isinstance(v, Split)]
    ref = splits[0][0]
    heads, dh = dims(L, ref)
    for s, _ in splits:
        if (s.haxis, s.daxis, s.heads) != (ref.haxis, ref.daxis, ref.heads) \
                or dims(L, s) != (heads, dh):
            raise Unsupported("split operands with different head layouts")
    if out.shape[ref.haxis] != heads or out.shape[ref.daxis] != dh:
        raise Unsupported("split heads broadcast along their heads / head_dim axes")
    ties: list[str] = [s.node for s, _ in splits]
    for v, r in zip(operands, reals):
        if isinstance(v, Split):
            continue
        if not isinstance(r, torch.Tensor) or r.dim() == 0:
            continue  # python scalar or 0-d tensor: the same for every unit
        if not isinstance(v, Raw) or v.kind != "static":
            raise Unsupported("split heads combined with a non-constant tensor")
        table = constant_table(L, v, r, nd, ref.haxis, ref.daxis, heads, dh, out)
        if table is not None:
            ties.append(table)
    if len(set(ties)) == 1:  # scaling by a scalar / channel-uniform table: same units
        return Split(ties[0], ref.haxis, ref.daxis, heads)
    name = _node(L, n.name, op, list(dict.fromkeys(ties)), heads * dh, out, ref.daxis)
    for slot, src in enumerate(dict.fromkeys(ties)):
        L.identity(src, name, slot)
    return Split(name, ref.haxis, ref.daxis, heads)


def constant_table(L: Lowerer, v: Raw, r: torch.Tensor, nd: int, haxis: int, daxis: int,
                   heads: int, dh: int, out: torch.Tensor) -> str | None:
    """A ``const`` node for a constant operand of split heads (None if it is the same for every
    unit).  Unit ``(h, i)`` is coloured by the exact bits of the table's values at ``(h, i)``
    over every other axis, so only units reading identical columns may trade places."""
    if L.params_in(v.fxnode):
        raise Unsupported("split heads combined with a tensor computed from parameters")
    if r.is_meta:
        raise Unsupported("constant table without values (meta device)")
    t = r.detach().reshape((1,) * (nd - r.dim()) + tuple(r.shape))
    th, td = t.shape[haxis], t.shape[daxis]
    if th not in (1, heads) or td not in (1, dh):
        raise Unsupported("constant table does not broadcast over the heads")
    if th == 1 and td == 1:
        return None
    for key in _buffers_in(L, v.fxnode):  # a buffer used as a table is never permuted
        L.record(key, _rank_none(L, key), constant=True)
    cols = t.movedim((haxis, daxis), (0, 1)).reshape(th, td, -1)
    rows, _ = exact_row_ids(float_bits(cols.reshape(th * td, -1)).reshape(th * td, -1))
    rows = rows.reshape(th, td)
    colour = np.broadcast_to(rows, (heads, dh)).reshape(-1).astype(np.int64)
    name = L.add_node(f"const:{v.fxnode.name}", "const", [], heads * dh, out, daxis)
    L.ir.node(name)["unit_colour"] = colour
    return name


def _rank_none(L: Lowerer, key: str) -> tuple:
    t = dict(L.root.named_buffers(remove_duplicate=False)).get(key)
    return (None,) * (t.dim() if t is not None else 1)


def _buffers_in(L: Lowerer, n) -> list[str]:
    """State-dict buffers a static value is computed from (persistent ones only)."""
    keys = (L.buffer_nodes.get(x) for x in L.ancestors(n))
    return [key for key in keys if key is not None and key in L.state_keys]
