"""Per-head operations on split channels: what graph attention (PyG ``GATConv``,
``GATv2Conv``) is made of, lowered op by op so that any module composing them gets its symmetries
derived, never assumed.

A :class:`Split` tensor's unit ``h * C + c`` is channel ``c`` of head ``h`` (``H`` heads of
``C`` channels).  The ops:

* ``x * a`` with a *parameter* ``a`` shaped like the heads (``(1, H, C)``: GAT's ``att_src``,
  ``att_dst``, ``att``): a per-unit scale.  Its IR node reads ``x`` through an identity map, and
  ``a`` is recorded as the diagonal grouped weight between the two nodes (``grouped_tensors``:
  one group per unit), so ``a``'s entries move with the units they scale;
* ``x.sum(-1)`` over head_dim (the attention logit ``a . x'`` of each head): a ``head_sum`` node
  of ``H`` units reading ``x`` through a *fixed* block-diagonal matrix of ones (a dense edge
  whose entries are all frozen): unit ``h`` reads exactly the ``C`` units of head ``h``;
* ``g.unsqueeze(-1) * x`` with per-head features ``g`` (``H`` units: the attention coefficients
  ``alpha``) broadcast over head_dim: a ``head_gate`` node reading ``x`` through an identity map
  and ``g`` through the fixed block-diagonal ones (unit ``(h, c)`` reads ``g_h``);
* ``x.mean(heads axis)`` (``GATConv(concat=False)``): a ``head_mean`` node of ``C`` units reading
  unit ``(h, c)`` for every ``h`` with the fixed weight ``1 / H``.

In the unit graph the frozen entries are edges coloured by their values, so an automorphism must
keep heads as blocks and map a head's logit / coefficient with it (``head_sum`` / ``head_gate``),
and, through ``head_mean``, use one channel permutation in every head.  For the permutation spec
(which knows block structure only as ``heads`` groups) every per-head node is linked to the split
tensor's node by group tags (:func:`link`, the encoding grouped convolutions use), and a
``head_mean`` fixes the groups it reads: "the same within-head permutation in every head" is not
a shape a permutation spec can state (sound; the verifier still counts it exactly).

Derivation for ``GATConv`` (checked in ``tests/test_audit_gat.py``): ``x' = W x`` split into
``(H, C)``; ``alpha_ij,h = softmax_j LeakyReLU(a_src[h] . x'_j[h] + a_dst[h] . x'_i[h])``;
``out_i[h] = sum_j alpha_ij,h x'_j[h]``.  Permuting heads by ``pi`` and the channels of head
``h`` by ``tau_h`` -- rows of ``W``, entries of ``a_src`` / ``a_dst``, the output (concat) and
the next layer's input columns and the bias alike -- leaves every logit and every output
unchanged: ``H! (C!)^H`` per layer.  With ``concat=False`` the output is ``mean_h out[h]``:
heads still permute freely (the mean is symmetric in them) but channel ``c`` of every head feeds
output ``c``, so ``tau_h = tau`` for all ``h`` (``H! C!``; ``H!`` alone when the output is the
model's, whose channels are fixed).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx

from asymspec.audit.lowering.interpreter import Lowerer
from asymspec.audit.lowering.values import Feat, Raw, Split, Unsupported


def dims(L: Lowerer, s: Split) -> tuple[int, int]:
    """(heads, head_dim) of a split tensor."""
    size = L.ir.node(s.node)["size"]
    if s.heads < 1 or size % s.heads:
        raise Unsupported("split heads do not divide the channels")
    return s.heads, size // s.heads


def _aligned(s: Split, r: torch.Tensor, nd: int) -> Split:
    shift = nd - r.dim()
    return Split(s.node, s.haxis + shift, s.daxis + shift, s.heads)


def _named(L: Lowerer, base: str) -> str:
    """Node names carry the layer's path (``conv1.mul``) when lowered inside a layer's graph."""
    return base if base.startswith(L.prefix) else L.prefix + base


def _blocks(heads: int, dh: int, value: float = 1.0) -> torch.Tensor:
    """(heads, heads * dh): row h has ``value`` on the columns of head h, zero elsewhere."""
    w = torch.zeros(heads, heads * dh)
    for h in range(heads):
        w[h, h * dh:(h + 1) * dh] = value
    return w


def _fixed_edge(L: Lowerer, src: str, dst: str, w: torch.Tensor, slot: int) -> None:
    """A dense edge whose every entry is frozen to ``w`` (a fixed linear map, no parameter)."""
    L.ir.add_dense_edge(src, dst, tuple(w.shape), slot)
    e = L.ir.edge(src, dst)
    e["mask"], e["fixed"], e["offset"] = torch.zeros(w.shape, dtype=torch.bool), w, None
    e["decided_by"] = ["frozen"]


def link(L: Lowerer, split_node: str, heads_node: str, heads: int) -> None:
    """Group tags tying unit ``h`` of ``heads_node`` to head ``h`` of ``split_node`` (for the
    permutation spec: both become ``heads`` groups sharing one head order).  One link per pair."""
    done = L.__dict__.setdefault("_head_links", set())
    if (split_node, heads_node) in done:
        return
    done.add((split_node, heads_node))
    size = L.ir.node(split_node)["size"]
    dh = size // heads
    probe = torch.zeros(1, heads)
    grp = L.add_node(f"{heads_node}.heads", "group_tag", [], heads, probe, 1)
    for tag, src, width in (("split_heads", split_node, dh), ("head_units", heads_node, 1)):
        n = L.ir.node(src)["size"]
        t = L.add_node(f"{heads_node}.{tag}", "group_tag", [src, grp], n, torch.zeros(1, n), 1)
        L.identity(src, t, 0)
        L.ir.add_map_edge(grp, t, np.arange(n) // width, 1)


# ---------------------------------------------------------------- products
def binary(L: Lowerer, n: fx.Node, op: str, operands: list, reals: list, out
           ) -> Split | None:
    """A product of one split tensor with a per-unit parameter or with per-head features; None
    for every other operand pattern (the caller's rules apply)."""
    if op != "mul" or not isinstance(out, torch.Tensor):
        return None
    idx = [i for i, v in enumerate(operands[:2]) if isinstance(v, Split)]
    if len(idx) != 1 or len(operands) < 2:
        return None
    i = idx[0]
    other, r = operands[1 - i], reals[1 - i]
    if not isinstance(r, torch.Tensor) or r.dim() == 0:
        return None
    nd = out.dim()
    s = _aligned(operands[i], reals[i], nd)
    heads, dh = dims(L, s)
    if out.shape[s.haxis] != heads or out.shape[s.daxis] != dh:
        return None
    rr = r.reshape((1,) * (nd - r.dim()) + tuple(r.shape))
    if isinstance(other, Feat):
        if other.cdim + nd - r.dim() != s.haxis or rr.shape[s.daxis] != 1 \
                or L.ir.node(other.node)["size"] != heads:
            raise Unsupported("features broadcast over split heads in another layout")
        return gate(L, n.name, other.node, s, out)
    if isinstance(other, Raw) and other.kind == "static" and L.params_in(other.fxnode):
        if rr.shape[s.haxis] != heads or rr.shape[s.daxis] != dh or \
                any(rr.shape[a] != 1 for a in range(nd) if a not in (s.haxis, s.daxis)):
            raise Unsupported("parameter does not scale each unit of the split heads")
        key = L.param_nodes.get(other.fxnode)
        if key is None:
            raise Unsupported("split heads scaled by a tensor computed from parameters")
        return scale(L, n.name, s, key, out)
    return None


def scale(L: Lowerer, base: str, s: Split, key: str, out: torch.Tensor) -> Split:
    """``x * a``, ``a`` a parameter with one entry per unit of the split tensor ``x``."""
    heads, dh = dims(L, s)
    name = L.add_node(_named(L, base), "affine", [s.node], heads * dh, out, s.daxis,
                      attrs={"fn": "mul", "per_unit": key})
    L.identity(s.node, name)
    key = L.key(key)
    prev = L.grouped.get(key)
    if prev is not None:  # one tensor scaling two tensors: their units move alike
        if L.ir.node(prev[0])["size"] != heads * dh:
            raise Unsupported(f"parameter '{key}' scales split tensors of different sizes")
        L.ir.add_tie(prev[0], name, f"tensor '{key}' scales both")
    else:
        L.grouped[key] = (name, s.node, heads * dh)
    L.record(key, _rank(L, key))  # no single axis follows the units: grouped_tensors does
    return Split(name, s.haxis, s.daxis, heads)


def _rank(L: Lowerer, key: str) -> tuple:
    t = dict(L.root.named_parameters(remove_duplicate=False)).get(key)
    return (None,) * (t.dim() if t is not None else 1)


def gate(L: Lowerer, base: str, g: str, s: Split, out: torch.Tensor) -> Split:
    """``g * x``: per-head values ``g`` (``H`` units) broadcast over each head of ``x``."""
    heads, dh = dims(L, s)
    name = L.add_node(_named(L, base), "head_gate", [s.node, g], heads * dh, out, s.daxis,
                      attrs={"heads": heads})
    L.identity(s.node, name, 0)
    _fixed_edge(L, g, name, _blocks(heads, dh).t().contiguous(), 1)
    link(L, s.node, g, heads)
    return Split(name, s.haxis, s.daxis, heads)


# ---------------------------------------------------------------- reductions
def reduce(L: Lowerer, base: str, s: Split, dims_: list[int], keep: bool, fn: str,
           out: torch.Tensor) -> Feat:
    """``sum`` / ``mean`` of a split tensor over head_dim (per-head) or over the heads axis."""
    heads, dh = dims(L, s)
    if len(dims_) != 1 or dims_[0] not in (s.haxis, s.daxis) or fn not in ("sum", "mean"):
        raise Unsupported(f"{fn} of split heads over axes {dims_}")
    d = dims_[0]
    kept = s.daxis if d == s.haxis else s.haxis
    cdim = kept if keep else kept - (d < kept)
    if d == s.daxis:  # one value per head
        value = 1.0 if fn == "sum" else 1.0 / dh
        name = L.add_node(_named(L, base), "head_sum", [s.node], heads, out, cdim,
                          attrs={"heads": heads, "fn": fn})
        _fixed_edge(L, s.node, name, _blocks(heads, dh, value), 0)
        link(L, s.node, name, heads)
        return Feat(name, cdim)
    value = 1.0 if fn == "sum" else 1.0 / heads  # over the heads: one value per channel
    w = torch.zeros(dh, heads * dh)
    for h in range(heads):
        w[torch.arange(dh), h * dh + torch.arange(dh)] = value
    name = L.add_node(_named(L, base), "head_mean", [s.node], dh, out, cdim,
                      attrs={"heads": heads, "fn": fn})
    _fixed_edge(L, s.node, name, w, 0)
    return Feat(name, cdim)
