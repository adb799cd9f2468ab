"""Lower a traced module into the compiler's IR (:class:`asymspec.ir.graph.IRGraph`).

The traced graph is executed node by node on the example inputs (real values give every shape)
(:class:`~.interpreter.GraphLowering`, a ``torch.fx.Interpreter``) while each node is lowered by
a small handler, looked up in one registry (:mod:`.registry`, one decorator
:func:`~.registry.handles`); handlers take one typed :class:`~.context.Call` and live in
:mod:`.handlers`, one module per op family.

Weight tying is found by tensor identity: every name of one tensor maps to its first name, and a
tensor used along different axes (an embedding reused as the output layer, a module called twice)
ties the IR nodes of corresponding axes (``IRGraph.add_tie``), so every automorphism permutes the
one tensor consistently.  A tensor some use must not permute (read by an unsupported op, or in a
computation outside any layer) pins every node it is used along and is listed as unsupported.

Every feature tensor is a :class:`Feat`: an IR node (its units are the tensor's channel axis) and
the axis ``cdim`` that carries them.  Views, transposes, dropout, token selection and other
channel-preserving operations re-use the IR node with a new ``cdim``; channel-changing layout
operations (flatten, concatenation, channel slices, padding) become ``map`` edges exactly as in
:mod:`asymspec.ir.build`.

Everything else is a :class:`Raw` value: graph inputs and the outputs of unsupported operations
(whose units are fixed points, materialised on demand along whichever axis a consumer needs),
integer index tensors (token ids, ``edge_index``) and *static* values (computed from parameters,
buffers and constants only; resolved by :mod:`asymspec.audit.params` when a layer uses them).

Unsupported operations are never skipped: each one is recorded with its fx node name, module
path and target, every feature tensor it reads is pinned (an identity map into a node whose
units carry distinct frozen biases, so each unit is a fixed point) and its outputs are fixed.
No automorphism can then move anything an unsupported operation touches, which keeps every
reported symmetry real; a claim of *asymmetry* may depend on the pins, so the audit's verdict is
``unknown`` whenever anything was unsupported.
"""

from asymspec.audit.lowering import handlers  # noqa: F401  (registers every handler)
from asymspec.audit.lowering.context import Call
from asymspec.audit.lowering.interpreter import GraphLowering, Lowerer, lower
from asymspec.audit.lowering.registry import handles, is_leaf
from asymspec.audit.lowering.values import (
    Feat,
    Lowered,
    Raw,
    Split,
    Unsupported,
    UnsupportedOp,
)

__all__ = ["Call", "Feat", "GraphLowering", "Lowered", "Lowerer", "Raw", "Split", "Unsupported",
           "UnsupportedOp", "handles", "is_leaf", "lower"]
