"""torch-geometric: GIN, GCN and SAGE convolutions, GAT / GATv2 (lowered from their exported
graphs), graph pooling, scatter aggregations, message passing under ``torch.export``."""

from __future__ import annotations

import torch

from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.handlers.attention import _linear_from
from asymspec.audit.lowering.handlers.shape import _tie
from asymspec.audit.lowering.interpreter import Lowerer
from asymspec.audit.lowering.registry import handles
from asymspec.audit.lowering.values import (
    Feat,
    Raw,
    Split,
    Unsupported,
    _arg,
    _opaque_like,
    _qual_key,
)


# ---------------------------------------------------------------- torch-geometric
def _pyg_classes() -> dict:
    try:
        from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, GINConv, SAGEConv
    except Exception:  # pragma: no cover
        return {}
    return {"gin": GINConv, "gcn": GCNConv, "sage": SAGEConv, "gat": GATConv,
            "gatv2": GATv2Conv}


def _aggr(L: Lowerer, base: str, x: Feat, real: torch.Tensor, kind: str) -> Feat:
    op = {"add": "sum_aggr", "sum": "sum_aggr", "mean": "mean_aggr", "max": "max_aggr"}.get(kind)
    if op is None:
        raise Unsupported(f"aggregation '{kind}'")
    return L.elementwise(base, op, x, real, attrs={"aggr": kind})


def _scatter(x: torch.Tensor, ei: torch.Tensor, reduce: str) -> torch.Tensor:
    from torch_geometric.utils import scatter

    return scatter(x[ei[0]], ei[1], dim=0, dim_size=x.shape[0], reduce=reduce)


def _pyg_x(al, ar):
    if isinstance(ar[0], (tuple, list)):
        raise Unsupported("bipartite (pair) node features")
    if not isinstance(ar[1], torch.Tensor):
        raise Unsupported("sparse adjacency")
    return al[0], ar[0], ar[1]


def _m_gin(c: Call):
    L, m, qual, al, ar = c.lowerer, c.module, c.qual, c.args, c.real_args
    x_l, x_r, ei = _pyg_x(al, ar)
    x = L.feat(x_l, x_r, 1)
    agg_r = _scatter(x_r, ei, "sum")
    a = _aggr(L, _qual_key(qual, "aggr"), x, agg_r, getattr(m, "aggr", "add"))
    h_r = agg_r + (1 + m.eps) * x_r
    h = _tie(L, _qual_key(qual, "add"), "add", [a, x], h_r, 1)
    L.fixed_use(_qual_key(qual, "eps"), "GIN's scalar epsilon")
    low, _ = L.call_submodule(m.nn, _qual_key(qual, "nn"), [h], [h_r])
    return low


def _m_gcn(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    x_l, x_r, ei = _pyg_x(al, ar)
    x = L.feat(x_l, x_r, 1)
    lin_r = m.lin(x_r)
    h = _linear_from(L, _qual_key(qual, "lin"), x, m.lin.weight, _qual_key(qual, "lin.weight"),
                     "trainable" if m.lin.bias is not None else None, lin_r)
    if m.lin.bias is not None:
        L.record(_qual_key(qual, "lin.bias"), (h.node,))
    a = _aggr(L, _qual_key(qual, "aggr"), h, out, "add")
    if m.bias is not None:
        L.ir.node(a.node)["bias"] = "trainable"
        L.record(_qual_key(qual, "bias"), (a.node,))
    return a


def _m_sage(c: Call):
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    x_l, x_r, ei = _pyg_x(al, ar)
    if m.project:
        raise Unsupported("SAGEConv(project=True)")
    if not isinstance(m.aggr, str):
        raise Unsupported("SAGEConv with an aggregation module")
    x = L.feat(x_l, x_r, 1)
    agg_r = _scatter(x_r, ei, "sum" if m.aggr == "add" else m.aggr)
    a = _aggr(L, _qual_key(qual, "aggr"), x, agg_r, m.aggr)
    ol = m.lin_l(agg_r)
    left = _linear_from(L, _qual_key(qual, "lin_l"), a, m.lin_l.weight,
                        _qual_key(qual, "lin_l.weight"),
                        "trainable" if m.lin_l.bias is not None else None, ol)
    if m.lin_l.bias is not None:
        L.record(_qual_key(qual, "lin_l.bias"), (left.node,))
    h, h_r = left, ol
    if m.root_weight:
        orr = m.lin_r(x_r)
        right = _linear_from(L, _qual_key(qual, "lin_r"), x, m.lin_r.weight,
                             _qual_key(qual, "lin_r.weight"),
                             "trainable" if m.lin_r.bias is not None else None, orr)
        if m.lin_r.bias is not None:
            L.record(_qual_key(qual, "lin_r.bias"), (right.node,))
        h_r = ol + orr
        h = _tie(L, _qual_key(qual, "add"), "add", [left, right], h_r, 1)
    if m.normalize:
        h = L.elementwise(_qual_key(qual, "normalize"), "activation", h, out,
                          attrs={"fn": "normalize"})
    return h


def _m_exported(c: Call):
    """A message passing layer lowered op by op: the layer alone is exported (``torch.export``)
    and its ATen graph lowered like any other (attention logits and coefficients through
    :mod:`.heads`, gathers and scatters through the handlers below).  Nothing is assumed from the
    layer's name: an op the lowering does not model stays unsupported, as anywhere else."""
    from asymspec.audit.lowering.registry import is_leaf
    from asymspec.audit.trace import TraceFailure, export_trace

    L, m, qual = c.lowerer, c.module, c.qual
    if c.kwargs or c.real_kwargs:
        raise Unsupported("message passing layer called with keyword arguments")
    if any(isinstance(a, (tuple, list)) for a in c.real_args):
        raise Unsupported("bipartite (pair) node features")
    try:
        graph, root = export_trace(m, tuple(c.real_args), is_leaf)
    except TraceFailure as exc:
        raise Unsupported(str(exc)) from exc
    saved = L.node
    try:
        low, _ = L.run_graph(root, graph, qual + "." if qual else "", list(c.args),
                             list(c.real_args))
    finally:
        L.node = saved
    if isinstance(c.out, torch.Tensor) and isinstance(low, (tuple, list)) and len(low) == 1:
        return low[0]  # the exported graph returns a 1-tuple
    return low


for _k, _fn in (("gin", _m_gin), ("gcn", _m_gcn), ("sage", _m_sage), ("gat", _m_exported),
                ("gatv2", _m_exported)):
    _c = _pyg_classes().get(_k)
    if _c is not None:
        handles(_c)(_fn)


def _pyg_pools() -> dict:
    try:
        from torch_geometric.nn import pool
    except Exception:  # pragma: no cover
        return {}
    return {getattr(pool, n): n.split("_")[1] for n in
            ("global_add_pool", "global_mean_pool", "global_max_pool") if hasattr(pool, n)}


def _f_graph_pool(c: Call):
    L, n, al, ar, out = c.lowerer, c.node, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], 1)
    kind = _pyg_pools()[n.target]
    return L.elementwise(n.name, "global_max_pool" if kind == "max" else "global_avg_pool", x,
                         out, attrs={"kind": f"graph_{kind}"})


for _t in _pyg_pools():
    handles(_t)(_f_graph_pool)


# ---------------------------------------------------------------- scatter aggregations
def _m_asymspec_aggregate(c: Call):
    """asymspec's own ``Aggregate`` op: neighbourhood aggregation over ``edge_index``."""
    L, m, qual, al, ar, out = c.lowerer, c.module, c.qual, c.args, c.real_args, c.out
    x = L.feat(al[0], ar[0], 1)
    return _aggr(L, qual, x, out, m.aggr)


def _f_scatter(c: Call):
    """torch_geometric.utils.scatter(src, index, dim, dim_size, reduce): channel-wise when
    ``dim`` is not the channel axis."""
    L, n, al, kl = c.lowerer, c.node, c.args, c.kwargs
    ar, kr, out = c.real_args, c.real_kwargs, c.out
    x = al[0]
    if not isinstance(x, Feat):
        return _opaque_like(out, n)
    dim = _arg(ar, kr, 2, "dim", 0) % ar[0].dim()
    if dim == x.cdim or isinstance(_arg(al, kl, 1, "index"), (Feat, Split)):
        raise Unsupported("scatter along the channel axis / by feature values")
    reduce = _arg(ar, kr, 4, "reduce", "sum")
    if reduce not in ("sum", "add", "mean", "max", "min"):
        raise Unsupported(f"scatter reduce '{reduce}'")
    return L.elementwise(n.name, "max_aggr" if reduce in ("max", "min") else
                         ("mean_aggr" if reduce == "mean" else "sum_aggr"), x, out,
                         attrs={"aggr": reduce})


def _register_scatter() -> None:
    try:
        from asymspec.nn.ops import Aggregate

        handles(Aggregate)(_m_asymspec_aggregate)
    except Exception:  # pragma: no cover
        pass
    try:
        from torch_geometric.utils import scatter

        handles(scatter)(_f_scatter)
    except Exception:  # pragma: no cover
        pass


_register_scatter()


# ---------------------------------------------------------------- message passing under export
def _aten_ops(*names: str) -> list:
    out = []
    for name in names:
        packet, _, overload = name.partition(".")
        out.append(getattr(getattr(torch.ops.aten, packet, None), overload, None))
    return out


@handles(torch.index_select, "index_select", *_aten_ops("index_select.default"))
def _f_index_select(c: Call):
    """Gathering rows (graph nodes, tokens) of a feature tensor: every row keeps its channels,
    so the units are the input's (``x_j = x.index_select(-2, edge_index[0])``)."""
    al, ar, kr, out = c.args, c.real_args, c.real_kwargs, c.out
    x = al[0]
    if not isinstance(x, (Feat, Split)) or not isinstance(out, torch.Tensor):
        raise Unsupported("index_select of a non-feature tensor")
    dim = _arg(ar, kr, 1, "dim", 0) % ar[0].dim()
    if dim in _channel_axes(x) or isinstance(_arg(al, {}, 2, "index"), (Feat, Split)):
        raise Unsupported("index_select along the channel axis / by feature values")
    return x  # rows of split heads (GAT's x_j): the same split units


@handles("new_zeros", "new_ones", "new_full", "new_empty", torch.zeros_like, torch.ones_like,
         *_aten_ops("new_zeros.default", "new_ones.default", "new_full.default",
                    "zeros_like.default", "ones_like.default"))
def _f_new_constant(c: Call):
    """A constant shaped like a feature tensor (``x.new_zeros(...)``): it reads only the
    input's shape, never its values -- a static value, not a feature."""
    if not isinstance(c.out, torch.Tensor) or c.node.op == "call_method" and \
            c.node.target == "new_empty":
        raise Unsupported("uninitialised buffer")
    return Raw("static", c.node, c.node.name)


_SCATTER = {"sum": "sum_aggr", "add": "sum_aggr", "mean": "mean_aggr", "amax": "max_aggr",
            "amin": "max_aggr", "prod": None}


@handles(*_aten_ops("scatter_add.default", "scatter_add_.default", "index_add.default",
                    "index_add_.default", "scatter_reduce.two", "scatter_reduce_.two"))
def _f_aten_scatter(c: Call):
    """``zeros.scatter_add_(dim, index, src)`` / ``index_add`` / ``scatter_reduce`` onto a
    constant-zero base along a non-channel axis: PyG's aggregation under ``torch.export``.  Each
    output row aggregates input rows channel by channel, so the units are ``src``'s."""
    L, n, al, ar, kr, out = c.lowerer, c.node, c.args, c.real_args, c.real_kwargs, c.out
    base, src = al[0], al[3] if len(al) > 3 else None
    name = str(n.target)
    reduce = "sum"
    if "scatter_reduce" in name:
        reduce = _arg(ar, kr, 4, "reduce", "sum")
    if "index_add" in name and _arg(ar, kr, 4, "alpha", 1) != 1:
        raise Unsupported("index_add with alpha")
    if not isinstance(src, (Feat, Split)) or not isinstance(base, Raw) or base.kind != "static" \
            or not _zero_base(base.fxnode, ar[0], name):
        raise Unsupported("scatter onto a non-zero or non-constant base")
    dim = ar[1] % ar[0].dim()
    if dim in _channel_axes(src) or isinstance(al[2], (Feat, Split)) \
            or _SCATTER.get(reduce) is None:
        raise Unsupported(f"scatter along the channel axis / by feature values / '{reduce}'")
    if isinstance(src, Split):  # GAT's messages, one per (head, channel): units kept
        size = L.ir.node(src.node)["size"]
        agg = L.add_node(L.prefix + n.name, _SCATTER[reduce], [src.node], size, out, src.daxis,
                         attrs={"aggr": reduce})
        L.identity(src.node, agg)
        return Split(agg, src.haxis, src.daxis, src.heads)
    return L.elementwise(n.name, _SCATTER[reduce], src, out, attrs={"aggr": reduce})


def _channel_axes(x) -> tuple[int, ...]:
    return (x.haxis, x.daxis) if isinstance(x, Split) else (x.cdim,)


def _zero_base(node, value: torch.Tensor, op_name: str) -> bool:
    """Whether the scatter's base is all zeros.  An in-place scatter has already overwritten
    the concrete base, so it must come straight from a zeros constructor."""
    if not op_name.split(".")[-2].endswith("_"):
        return not bool(value.any())
    target = getattr(node, "target", None)
    name = target if isinstance(target, str) else str(target)
    return "zeros" in name and len(node.users) == 1


@handles(*_aten_ops("expand_as.default"))
def _f_aten_expand_as(c: Call):
    """``index.view(-1, 1).expand_as(messages)``: an index or constant broadcast to a feature's
    shape stays an index / constant (it reads only the shape)."""
    x = c.args[0]
    if isinstance(x, Raw) and x.kind in ("index", "static"):
        return Raw(x.kind, c.node, c.node.name)
    raise Unsupported("expand_as of a feature tensor")
