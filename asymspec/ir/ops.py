"""The IR's op vocabulary: one registry read by the compiler, the audit and every IR consumer.

Each IR node's ``op`` names an :class:`OpDef` here.  Consumers ask for a *category* instead of
keeping their own list of op names:

``dense``        a weight tensor ``W[out, in, *kernel]`` on a dense edge (linear, conv2d);
``norm``         per-unit affine normalisation with ``weight`` / ``bias`` (and BatchNorm's
                 running statistics) along the node's units;
``activation``   an elementwise function of each unit (identity map from its input);
``passthrough``  keeps the units and reads only unit ``i`` for unit ``i`` without mixing them
                 (pooling over space / tokens / graph nodes, flatten's view of a vector):
                 a unit's scale passes through it unchanged;
``combine``      elementwise combination of several inputs unit by unit (residual add, product);
``layout``       channel-changing wiring (concat, padding, slices, shuffles): ``map`` edges;
``attention``    an attention node (q, k, v inputs);
``source``       graph inputs, constants and the audit's fixed-point markers (pins, opaque
                 values): no learnable units of their own.

``emitter`` names where :mod:`asymspec.nn` keeps the torch-module factory of a compiled op
(``"module:attr"``; a dict there is indexed by the op's name), resolved lazily so this module
imports nothing above the IR; ``None`` for ops only the audit produces (it lowers modules, never
emits them).  ``unit_leaves`` lists the
state_dict leaves whose axis 0 follows the node's units and ``weight_leaves`` those laid out like
a dense weight (out, in, *kernel), for IRs without an explicit tensor-axes table.

:meth:`asymspec.ir.graph.IRGraph.lint` checks every node against this registry (like
``torch.fx.Graph.lint``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

CATEGORIES = ("dense", "norm", "activation", "passthrough", "combine", "layout", "attention",
              "source")


@dataclass(frozen=True)
class OpDef:
    name: str
    category: str
    emitter: str | None = None  # "module:function", resolved by :meth:`emit_factory`
    unit_leaves: tuple[str, ...] = ()
    weight_leaves: tuple[str, ...] = ()
    audit_only: bool = False
    linear: bool = True  # passthrough ops: linear in each unit (max pooling is not: not odd)

    def emit_factory(self) -> Callable:
        """The torch-module factory ``(ir, node_name, generator) -> nn.Module``."""
        if self.emitter is None:
            raise KeyError(f"op '{self.name}' is produced by the audit only and has no emitter")
        mod, _, attr = self.emitter.partition(":")
        target = getattr(importlib.import_module(mod), attr)
        return target[self.name] if isinstance(target, dict) else target


OPS: dict[str, OpDef] = {}


def register_op(name: str, category: str, emitter: str | None = None,
                unit_leaves: tuple[str, ...] = (), weight_leaves: tuple[str, ...] = (),
                audit_only: bool = False, linear: bool = True) -> OpDef:
    """Add an op to the vocabulary (one call per op; names are unique)."""
    if category not in CATEGORIES:
        raise ValueError(f"op '{name}': unknown category '{category}' (one of {CATEGORIES})")
    if name in OPS:
        raise ValueError(f"op '{name}' is already registered")
    op = OPS[name] = OpDef(name, category, emitter, tuple(unit_leaves), tuple(weight_leaves),
                           audit_only, linear)
    return op


def op_def(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown IR op '{name}' (not in asymspec.ir.ops.OPS)") from None


def category(name: str) -> str | None:
    """The op's category, None for an op not in the vocabulary."""
    op = OPS.get(name)
    return op.category if op else None


def ops_in(*categories: str) -> frozenset[str]:
    """Names of every op in the given categories."""
    return frozenset(n for n, op in OPS.items() if op.category in categories)


_NN = "asymspec.nn.model"
_W = ("weight", "weight_mask", "weight_fixed", "weight_offset")
_NORM_LEAVES = ("weight", "bias", "running_mean", "running_var")

# compiled ops (emitted by asymspec.nn) -- the audit produces them too
register_op("input", "source")
register_op("linear", "dense", f"{_NN}:OP_MODULES", unit_leaves=("bias",), weight_leaves=_W)
register_op("conv2d", "dense", f"{_NN}:OP_MODULES", unit_leaves=("bias",), weight_leaves=_W)
for _n in ("layernorm", "batchnorm", "groupnorm"):
    register_op(_n, "norm", f"{_NN}:OP_MODULES", unit_leaves=_NORM_LEAVES)
register_op("activation", "activation", f"{_NN}:OP_MODULES")
register_op("add", "combine", f"{_NN}:OP_MODULES")
register_op("mul", "combine", f"{_NN}:OP_MODULES")
register_op("concat", "layout", f"{_NN}:OP_MODULES")
register_op("pad_channels", "layout", f"{_NN}:OP_MODULES")
register_op("flatten", "passthrough", f"{_NN}:OP_MODULES")
for _n in ("avgpool", "maxpool", "global_avg_pool", "global_max_pool", "mean_aggr", "sum_aggr",
           "max_aggr", "token_mean", "token_first"):
    register_op(_n, "passthrough", f"{_NN}:OP_MODULES", linear="max" not in _n)
register_op("attention", "attention", f"{_NN}:OP_MODULES")

# ops only the audit's lowering produces
for _n, _c in (("embedding", "dense"), ("instancenorm", "norm"), ("affine", "activation"),
               ("binary", "combine"), ("broadcast", "layout"), ("channel_reduce", "layout"),
               ("slice", "layout"),
               ("shuffle", "layout"), ("patch_merge", "layout"), ("stack", "layout"),
               ("cat", "layout"), ("depthwise_conv", "layout"), ("upsample", "layout"),
               ("normalize", "activation"), ("const", "source"), ("param", "source"),
               ("pin", "source"), ("opaque", "source"), ("group_tag", "source"),
               ("head_sum", "layout"), ("head_mean", "layout"), ("head_gate", "combine"),
               ("repeat_heads", "layout"), ("attention_scores", "source")):
    register_op(_n, _c, audit_only=True)

