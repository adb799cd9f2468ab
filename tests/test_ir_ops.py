"""The IR's op vocabulary (asymspec.ir.ops): one registry for compiler, audit and consumers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import asymspec
from asymspec.audit import lower_module
from asymspec.continuous import continuous_symmetries
from asymspec.ir.ops import OPS, category, op_def, ops_in, register_op
from tests.conftest import SPECS


def test_every_compiled_op_has_an_emitter_and_every_node_lints() -> None:
    from asymspec.nn.model import OP_MODULES

    compiled = {n for n, op in OPS.items() if not op.audit_only and op.category != "source"}
    assert compiled == set(OP_MODULES)  # the registry and the emitter's table agree
    for n in compiled:
        assert op_def(n).emit_factory() is OP_MODULES[n]
    for name in ("resnet20", "gnn_wasym", "transformer_small", "mlp_mnist_sigma"):
        asymspec.build(SPECS / f"{name}.yaml").ir.lint()


def test_audited_models_lint_and_unknown_ops_are_caught() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(4, 2))
    ir = lower_module(net, torch.randn(2, 3, 4, 4))
    ir.lint()
    ir.node("1")["op"] = "no_such_op"
    with pytest.raises(ValueError, match="unknown op"):
        ir.lint()
    with pytest.raises(KeyError, match="unknown IR op"):
        op_def("no_such_op")


def test_categories_and_registration_rules() -> None:
    assert {"linear", "conv2d"} <= ops_in("dense")
    assert {"batchnorm", "layernorm", "groupnorm"} <= ops_in("norm")
    assert category("maxpool") == "passthrough" and not OPS["maxpool"].linear
    assert OPS["avgpool"].linear and category("nope") is None
    with pytest.raises(ValueError, match="already registered"):
        register_op("linear", "dense")
    with pytest.raises(ValueError, match="unknown category"):
        register_op("x_new_op", "weird")
    with pytest.raises(KeyError, match="audit only"):
        op_def("pin").emit_factory()


def test_sign_symmetry_is_not_claimed_through_max_pooling() -> None:
    # tanh is odd: flipping a unit's incoming weights flips its output, and a linear pooling
    # passes the flip on to the next layer, which undoes it.  Max pooling is not odd
    # (max(-x) = -min(x)), so no sign symmetry survives it.
    def ir(pool):
        net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Tanh(), pool, nn.Flatten(), nn.Linear(3, 2))
        return lower_module(net, torch.randn(2, 2, 4, 4))

    kinds = {c.kind for c in continuous_symmetries(ir(nn.AdaptiveAvgPool2d(1)))}
    assert "sign" in kinds
    assert not [c for c in continuous_symmetries(ir(nn.AdaptiveMaxPool2d(1)))
                if c.kind == "sign" and c.status == "present"]
