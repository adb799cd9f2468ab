"""Audit op handlers, one module per op family (importing this package registers them all).

Adding an op: write a function taking one :class:`~asymspec.audit.lowering.context.Call`,
decorate it with :func:`~asymspec.audit.lowering.registry.handles` naming its targets, put it in
the family's module, and add a row to the op table in ``tests/test_audit_ops.py``.
"""

from asymspec.audit.lowering.handlers import (  # noqa: F401  (registration)
    activation,
    arithmetic,
    asymspec_nn,
    attention,
    embedding,
    linear,
    norm,
    pooling,
    pyg,
    shape,
    torchvision,
)
