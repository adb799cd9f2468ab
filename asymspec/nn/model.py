"""The torch emitter: one module per IR node, executed in the IR's topological order.

The emitted :class:`IRModule` is a plain ``nn.Module``: it trains with any optimizer, saves and
loads with ``state_dict``, and its parameter names follow the IR node names
(``layer1.0.conv1.weight``), so the IR can map every tensor back to its units.

Why an interpreter and not a generated ``torch.fx.GraphModule``: fx gives every instance its own
class, so ``torch.compile`` recompiles for every model of a spec (measured: 4 instances -> 4
compilations), while this class is shared and compiles once per spec.  Every node is still one
submodule call (forward hooks on ``model.get_submodule(node)`` fire), intermediate values are
dropped right after their last use, and :attr:`IRModule.code` / :meth:`IRModule.to_fx` give the
readable straight-line program.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from asymspec.ir.graph import IRGraph
from asymspec.nn import ops
from asymspec.nn.init import apply_init
from asymspec.nn.masked import AsymConv2d, AsymLinear, SharedDense
from asymspec.seeding import generator

Factory = Callable[[IRGraph, str, torch.Generator], nn.Module]


def _dense(ir: IRGraph, name: str, gen: torch.Generator) -> nn.Module:
    node = ir.node(name)
    _, e = ir.dense_edge(name)
    a = node["attrs"]
    common = dict(bias=node["bias"], mask=e["mask"], fixed=e["fixed"], offset=e["offset"],
                  gen=gen)
    if node["op"] == "linear":
        return AsymLinear(a["in_features"], node["size"], **common)
    return AsymConv2d(a["in_channels"], node["size"], a["kernel_size"], a["stride"],
                      a["padding"], **common)


def _norm(ir: IRGraph, name: str, gen: torch.Generator) -> nn.Module:
    node = ir.node(name)
    c, layout, affine = node["size"], node["layout"], node["attrs"].get("affine", True)
    if node["op"] == "layernorm":
        if layout == "image":  # LayerNorm over channels of a feature map = GroupNorm(1, C)
            return nn.GroupNorm(1, c, affine=affine)
        return nn.LayerNorm(c, elementwise_affine=affine)
    if node["op"] == "groupnorm":
        return nn.GroupNorm(node["attrs"]["groups"], c, affine=affine)
    return (nn.BatchNorm2d if layout == "image" else nn.BatchNorm1d)(c, affine=affine)


def _activation(ir: IRGraph, name: str, gen: torch.Generator) -> nn.Module:
    return ops.ACTIVATIONS[ir.node(name)["attrs"]["fn"]]()


OP_MODULES: dict[str, Factory] = {
    "linear": _dense,
    "conv2d": _dense,
    "layernorm": _norm,
    "batchnorm": _norm,
    "groupnorm": _norm,
    "activation": _activation,
    "add": lambda ir, n, g: ops.Add(),
    "mul": lambda ir, n, g: ops.Mul(),
    "concat": lambda ir, n, g: ops.Concat(ir.node(n)["layout"]),
    "pad_channels": lambda ir, n, g: ops.PadChannels(
        ir.node(n)["attrs"]["pad_lo"], ir.node(n)["attrs"]["pad_hi"],
        ir.node(n)["attrs"]["stride"]),
    "avgpool": lambda ir, n, g: ops.Pool("avg", ir.node(n)["attrs"]["kernel_size"],
                                         ir.node(n)["attrs"]["stride"]),
    "maxpool": lambda ir, n, g: ops.Pool("max", ir.node(n)["attrs"]["kernel_size"],
                                         ir.node(n)["attrs"]["stride"]),
    "global_avg_pool": lambda ir, n, g: ops.GlobalPool("avg"),
    "global_max_pool": lambda ir, n, g: ops.GlobalPool("max"),
    "flatten": lambda ir, n, g: ops.Flatten(),
    "mean_aggr": lambda ir, n, g: ops.Aggregate("mean"),
    "sum_aggr": lambda ir, n, g: ops.Aggregate("sum"),
    "max_aggr": lambda ir, n, g: ops.Aggregate("max"),
    "attention": lambda ir, n, g: ops.Attention(ir.node(n)["attrs"]["heads"]),
    "token_mean": lambda ir, n, g: ops.TokenPool("mean"),
    "token_first": lambda ir, n, g: ops.TokenPool("first"),
}

_RESERVED = set(dir(nn.Module))


class _Scope(nn.Module):
    """An empty container giving dotted layer names their nesting (``layer1.0.conv1``)."""


class IRModule(nn.Module):
    """Executes an IR graph.  ``forward`` takes the IR inputs in declaration order."""

    def __init__(self, ir: IRGraph, init_seed: int = 0) -> None:
        super().__init__()
        self.input_names = list(ir.inputs)
        self.output_names = list(ir.outputs)
        self._steps: list[tuple[str, list[str]]] = []
        for name in ir.topo_order():
            node = ir.node(name)
            if node["op"] == "input":
                continue
            gen = generator(init_seed, "init", name)
            if node.get("shares"):
                a = node["attrs"]
                module = SharedDense(self.get_submodule(node["shares"]), a.get("stride", 1),
                                     a.get("padding", 0))
            else:
                module = OP_MODULES[node["op"]](ir, name, gen)
            self._register(name, module)
            self._steps.append((name, list(node["inputs"])))
        self._modules_by_name = {n: self.get_submodule(n) for n, _ in self._steps}
        self._plan = _plan(self.input_names, self._steps, self.output_names)
        object.__setattr__(self, "ir", ir)  # not a submodule, not in state_dict
        apply_init(self, ir, init_seed)  # the spec's `init` rule (no-op without one)

    def _register(self, name: str, module: nn.Module) -> None:
        parts = name.split(".")
        if parts[0] in _RESERVED:
            raise ValueError(f"layer name {name!r} clashes with an nn.Module attribute")
        scope: nn.Module = self
        for part in parts[:-1]:
            if part not in scope._modules:
                scope.add_module(part, _Scope())
            scope = scope._modules[part]
        scope.add_module(parts[-1], module)

    def forward(self, *args: torch.Tensor):
        if len(args) != len(self.input_names):
            raise TypeError(f"expected inputs {self.input_names}, got {len(args)} tensors")
        values = dict(zip(self.input_names, args))
        for name, inputs, dead in self._plan:
            values[name] = self._modules_by_name[name](*[values[i] for i in inputs])
            for d in dead:  # last use passed: free it now, not when forward returns
                del values[d]
        outs = [values[o] for o in self.output_names]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def to_fx(self) -> torch.fx.GraphModule:
        """The same network as a ``torch.fx.GraphModule`` sharing this module's submodules
        (and so its parameters and buffers, under the same names)."""
        graph = torch.fx.Graph()
        env = {n: graph.placeholder(_py_name(n)) for n in self.input_names}
        for name, inputs in self._steps:
            env[name] = graph.call_module(name, tuple(env[i] for i in inputs))
            env[name].name = _py_name(name)
        outs = [env[o] for o in self.output_names]
        graph.output(outs[0] if len(outs) == 1 else tuple(outs))
        return torch.fx.GraphModule(self, graph, class_name=type(self).__name__)

    @property
    def code(self) -> str:
        """Readable Python of ``forward`` as straight-line code (``print(model.code)``)."""
        return self.to_fx().code


def _py_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _plan(inputs: list[str], steps: list[tuple[str, list[str]]],
          outputs: list[str]) -> list[tuple[str, list[str], tuple[str, ...]]]:
    """Each step with the values whose last use it is (outputs are never freed)."""
    last: dict[str, int] = {}
    for k, (_, ins) in enumerate(steps):
        for i in ins:
            last[i] = k
    keep = set(outputs)
    dead: list[list[str]] = [[] for _ in steps]
    for value, k in last.items():
        if value not in keep:
            dead[k].append(value)
    for k, (name, _) in enumerate(steps):  # a value nobody reads (a dangling node)
        if name not in last and name not in keep:
            dead[k].append(name)
    return [(name, ins, tuple(d)) for (name, ins), d in zip(steps, dead)]


def emit(ir: IRGraph, init_seed: int = 0) -> IRModule:
    """Build the torch module for ``ir`` with deterministic initial weights."""
    return IRModule(ir, init_seed)
