"""What flows between nodes while lowering: feature tensors (:class:`Feat`, :class:`Split`),
raw values (:class:`Raw`: inputs, outputs of unsupported ops, index tensors, static values), and
the records of a lowering (:class:`UnsupportedOp`, :class:`Lowered`)."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from asymspec.ir.graph import IRGraph


class Unsupported(Exception):
    """Raised by a handler: the op (or this use of it) is not understood."""


@dataclass
class Feat:
    node: str
    cdim: int  # non-negative axis of the real tensor carrying the node's units


@dataclass
class Split:
    """A feature tensor whose channel axis is split into (heads, head_dim) axes."""

    node: str
    haxis: int
    daxis: int
    heads: int


@dataclass
class Packed:
    """A feature tensor whose channel axis was reshaped into (parts, heads, head_dim): a packed
    q | k | v projection (timm's ``qkv.reshape(B, N, 3, H, dh)``).  Axis ``paxis`` indexes the
    parts; each part is a :class:`Split` of a channel slice (axes counted in this tensor)."""

    parts: list[Split]
    paxis: int

    @property
    def node(self) -> str:  # for messages and pins: the first part
        return self.parts[0].node

    def take(self, i: int) -> Split:
        """Part ``i`` with the parts axis removed."""
        s = self.parts[i]
        return Split(s.node, s.haxis - (s.haxis > self.paxis), s.daxis - (s.daxis > self.paxis),
                     s.heads)


@dataclass
class Raw:
    kind: str  # input | opaque | index | static
    fxnode: fx.Node | None = None
    name: str = ""


@dataclass
class UnsupportedOp:
    fx_node: str
    module: str
    target: str
    reason: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self) -> str:
        where = f" in module '{self.module}'" if self.module else ""
        return f"{self.target} (fx node '{self.fx_node}'{where}): {self.reason}"


@dataclass
class Lowered:
    ir: IRGraph
    unsupported: list[UnsupportedOp]
    tensor_axes: dict[str, tuple]
    constant_keys: set[str]
    state_keys: set[str] = field(default_factory=set)


def _layout(ndim: int, cdim: int) -> str:
    if ndim <= 2:
        return "vector"
    return "image" if cdim == 1 else "tokens"


def _target_name(n: fx.Node, root) -> str:
    if n.op == "call_module":
        try:
            return type(root.get_submodule(str(n.target))).__name__
        except AttributeError:
            return str(n.target)
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    t = n.target
    if isinstance(t, torch._ops.OpOverload):  # an ATen op from torch.export without a rewrite
        return str(t)
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", str(t))
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    return f"{mod}.{name}" if mod else name


def _mutates(n: fx.Node) -> bool:
    """Whether ``n`` writes into an operand in place (``x[i] = v``, ``x.mul_(2)``, a mutating
    ATen overload such as ``aten.copy_``)."""
    if n.op == "call_function":
        if n.target is operator.setitem:
            return True
        schema = getattr(n.target, "_schema", None)
        if schema is not None:
            return bool(getattr(schema, "is_mutable", False))
        return False
    if n.op == "call_method":
        name = str(n.target)
        return name.endswith("_") and not name.endswith("__")
    return False


def _dead_writes(graph: fx.Graph) -> set:
    """In-place writes whose result nothing reads: the written tensor is read later through
    another node, so skipping them as dead would silently drop what they write."""
    live = _live_nodes(graph, ())
    return {n for n in graph.nodes if n not in live and _mutates(n)}


def _live_nodes(graph: fx.Graph, roots=None) -> set:
    """Nodes the outputs depend on, plus ``roots`` (default: :func:`_dead_writes`) and what
    they read."""
    live: set = set()
    if roots is None:
        roots = _dead_writes(graph)
    stack = [n for n in graph.nodes if n.op == "output"] + list(roots)
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(n.all_input_nodes)
    return live


def _flat_values(x) -> list:
    out: list = []
    if isinstance(x, (list, tuple)):
        for v in x:
            out.extend(_flat_values(v))
    elif isinstance(x, dict):
        for v in x.values():
            out.extend(_flat_values(v))
    elif isinstance(x, slice):
        out.extend(_flat_values([x.start, x.stop, x.step]))
    else:
        out.append(x)
    return out


def _has_tensor(x) -> bool:
    if isinstance(x, torch.Tensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_tensor(v) for v in x)
    if isinstance(x, dict):
        return any(_has_tensor(v) for v in x.values())
    return False


def _opaque_like(out_r, n):
    if isinstance(out_r, torch.Tensor):
        if out_r.is_floating_point():
            return Raw("opaque", n, n.name if n is not None else "opaque")
        return Raw("index", n, n.name if n is not None else "index")
    if isinstance(out_r, (list, tuple)):
        return type(out_r)(_opaque_like(v, n) for v in out_r) if not hasattr(out_r, "_fields") \
            else tuple(_opaque_like(v, n) for v in out_r)
    return None


def _static_like(out_r, n):
    if isinstance(out_r, torch.Tensor):
        return Raw("static", n, n.name)
    if isinstance(out_r, (list, tuple)):
        return tuple(_static_like(v, n) for v in out_r)
    return None


# ============================================================================ handlers
def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _qual_key(qual: str, leaf: str) -> str:
    return f"{qual}.{leaf}" if qual else leaf
