"""Permutation specs derived from the IR: random group permutations preserve the function."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asymspec
from asymspec.ir.permgroups import perm_spec, random_group_perms
from asymspec.ir.permute import permute_state_dict
from tests.conftest import SPECS
from tests.test_compile import FAMILY, compile_or_skip, random_spec


def _assert_function_preserved(ir, seed: int = 0) -> int:
    model = asymspec.nn.emit(ir, init_seed=3).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    inputs = asymspec.example_inputs(ir, batch=5, seed=2)
    ref = model(*inputs)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    spec = perm_spec(ir, list(state))
    perms = random_group_perms(spec, torch.Generator().manual_seed(seed))
    moved = permute_state_dict(ir, state, spec.node_perms(ir, perms))
    model.load_state_dict(moved)
    assert (model(*inputs) - ref).abs().max().item() <= 1e-5
    changed = sum(not torch.equal(moved[k], state[k]) for k in state)
    return changed


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=FAMILY, width=st.integers(3, 6),
       norm=st.sampled_from(["none", "layernorm", "batchnorm"]),
       act=st.sampled_from(["relu", "tanh", "gelu"]), seed=st.integers(0, 100))
def test_random_group_permutations_preserve_outputs(family, width, norm, act, seed) -> None:
    ir = compile_or_skip(random_spec(family, {}, width, norm, act))
    _assert_function_preserved(ir, seed)


def test_resnet20_groups_stream_and_inner() -> None:
    ir = asymspec.compile_ir(SPECS / "resnet20.yaml")
    spec = perm_spec(ir)
    sizes = sorted(g.size for g in spec.free_groups)
    # per stage: one residual stream + 3 blocks' inner channels
    assert sizes == [16] * 4 + [32] * 4 + [64] * 4
    assert _assert_function_preserved(ir) > 0


def test_option_a_streams_are_fixed_not_wrong() -> None:
    ir = asymspec.compile_ir(SPECS / "resnet20.yaml", ["model.shortcut=A"])
    spec = perm_spec(ir)
    assert any(g.kind == "fixed" and "derived" in g.reason for g in spec.groups.values())
    _assert_function_preserved(ir)


def test_transformer_head_groups() -> None:
    ir = asymspec.compile_ir(SPECS / "transformer_small.yaml")
    spec = perm_spec(ir)
    heads = [g for g in spec.groups.values() if g.kind == "heads"]
    assert len(heads) == 4 and all(g.heads == 4 for g in heads)
    assert _assert_function_preserved(ir) > 0


def test_axes_of_state_dict_keys() -> None:
    ir = asymspec.compile_ir(SPECS / "mlp_mnist.yaml")
    model = asymspec.nn.emit(ir)
    spec = perm_spec(ir, list(model.state_dict()))
    assert spec.axes["fc2.weight"] == ("fc2", "fc1")
    assert spec.axes["fc1.weight"] == ("fc1", None)
    assert spec.axes["norm1.weight"] == ("fc1",)
