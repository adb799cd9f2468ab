"""torch.compile over emitted models: equal to eager for every shipped spec family, one
compilation for many instances of a spec, the maybe_compile policy, and the readable program."""

from __future__ import annotations

import pytest
import torch
import yaml

import asymspec
from asymspec.errors import UserError
from asymspec.nn import compile_enabled, maybe_compile
from tests.conftest import SPECS

# --set style overrides that shrink a shipped spec of each family to a tiny network (W-Asym
# replaced by nfix=2 everywhere, which tiny fan-ins allow).
SHRINK = {
    "mlp": ["model.input_dim=10", "model.widths=[6, 5]"],
    "resnet": ["model.depth=8", "model.width=1", "model.base_width=5", "model.input_size=8",
               "model.stage_widths=null"],
    "gnn": ["model.in_dim=6", "model.hidden_dim=5", "model.layers=2", "model.out_dim=3"],
    "transformer": ["model.input_dim=6", "model.seq_len=3", "model.d_model=8", "model.heads=2",
                    "model.layers=1", "model.num_classes=3", "model.mlp_ratio=1"],
}
FAST = {"resnet"}  # default suite (conv + linear layers); all families are in the slow one


def _model_specs() -> dict[str, list]:
    """Every shipped model spec, grouped by family."""
    out: dict[str, list] = {}
    for path in sorted(SPECS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "kind" in data or not isinstance(data.get("model"), dict):
            continue
        out.setdefault(data["model"].get("family"), []).append((path, data))
    return out


def _tiny(family: str, path, data: dict) -> list[str]:
    """Shrink overrides plus every asymmetry method at once (W-Asym masks, FiGLU's F, syre
    noise), so one compiled model exercises every emitted layer kind of the family."""
    sets = list(SHRINK[family])
    asym = data.get("asymmetry")
    if not isinstance(asym, dict):
        sets.append("asymmetry={seed: 0}")
    return sets + ["asymmetry.w_asym={nfix: 2, kappa: 1.0}", "asymmetry.syre={kappa: 0.1}",
                   "asymmetry.sigma_asym={f_std: 1.0}"]


def test_every_shipped_family_has_a_shrink_rule() -> None:
    assert set(_model_specs()) <= set(SHRINK), "add a SHRINK entry for the new family"


def _first(family: str):
    return _model_specs()[family][0]


def _check_compiled_equals_eager(family: str, backend: str) -> None:
    path, data = _first(family)
    ir = asymspec.compile_ir(path, _tiny(family, path, data))
    model = asymspec.nn.emit(ir, 1)
    inputs = asymspec.example_inputs(ir, batch=3)
    eager = model(*inputs)
    eager.square().mean().backward()
    eager_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, backend=backend)
    out = compiled(*inputs)
    out.square().mean().backward()
    tol = dict(atol=1e-5, rtol=1e-4)
    assert torch.allclose(out, eager, **tol), path.name
    for k, p in model.named_parameters():
        assert torch.allclose(p.grad, eager_grads[k], **tol), (path.name, k)
    for m in model.modules():
        if getattr(m, "weight_mask", None) is not None:
            assert (m.weight.grad[~m.weight_mask] == 0).all()


@pytest.mark.parametrize("family", sorted(FAST))
def test_compiled_equals_eager_aot(family: str) -> None:
    """Dynamo + AOT autograd (the functionalised graph inductor would get) against eager."""
    torch._dynamo.reset()
    _check_compiled_equals_eager(family, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(set(SHRINK) - FAST))
def test_compiled_equals_eager_aot_slow(family: str) -> None:
    if family not in _model_specs():
        pytest.skip(f"no shipped {family} spec")
    torch._dynamo.reset()
    _check_compiled_equals_eager(family, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(SHRINK))
def test_compiled_equals_eager_inductor(family: str) -> None:
    if family not in _model_specs():
        pytest.skip(f"no shipped {family} spec")
    torch._dynamo.reset()
    _check_compiled_equals_eager(family, "inductor")


@pytest.mark.parametrize("family", ["resnet"])
def test_instances_of_one_spec_compile_once(family: str) -> None:
    """LMC pairs, zoos and sweeps build many models of one spec in one process: dynamo's
    guards must not depend on the instance (else the recompile limit is hit after 8)."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    path, data = _first(family)
    sets = _tiny(family, path, data)
    counter = CompileCounter()
    for seed in range(3):
        model = asymspec.build(path, sets, init_seed=seed)  # a fresh IR each time, like runners
        compiled = torch.compile(model, backend=counter)
        compiled(*asymspec.example_inputs(model.ir, batch=2)).sum().backward()
    assert counter.frame_count == 1


def test_maybe_compile_policy() -> None:
    assert not compile_enabled("cpu")  # auto: eager on CPU
    assert compile_enabled("cpu", "on") and compile_enabled("cpu", True)
    assert not compile_enabled("cuda", "off") and not compile_enabled("cuda", False)
    with pytest.raises(UserError, match="auto, on, off"):
        compile_enabled("cpu", "yes")
    model = asymspec.build(SPECS / "mlp_mnist.yaml", ["model.widths=[4]"])
    keys = list(model.state_dict())
    assert maybe_compile(model, "cpu") is model and model._compiled_call_impl is None
    assert maybe_compile(model, "cpu", "on", backend="eager") is model
    assert model._compiled_call_impl is not None
    assert list(model.state_dict()) == keys  # in place: no _orig_mod. prefix


def test_readable_program_and_fx_export() -> None:
    ir = asymspec.compile_ir(SPECS / "resnet8_zoo_wasym.yaml")
    model = asymspec.nn.emit(ir, 0)
    code = model.code
    assert "def forward(self, x)" in code and "layer1_0_conv1 = " in code
    fx = model.to_fx()
    assert list(fx.state_dict()) == list(model.state_dict())
    (x,) = asymspec.example_inputs(ir)
    assert torch.equal(fx(x), model(x))


def test_intermediates_are_freed_after_their_last_use() -> None:
    """Each non-output value is dropped exactly once, at the step of its last reader."""
    ir = asymspec.compile_ir(SPECS / "transformer_small_wasym.yaml")
    model = asymspec.nn.emit(ir, 0)
    freed: dict[str, int] = {}
    for k, (_, _, dead) in enumerate(model._plan):
        for d in dead:
            assert d not in freed
            freed[d] = k
    produced = set(model.input_names) | {n for n, _ in model._steps}
    assert set(freed) == produced - set(model.output_names)
    for value, k in freed.items():
        readers = [j for j, (_, ins, _) in enumerate(model._plan) if value in ins]
        assert k == max(readers, default=k)
