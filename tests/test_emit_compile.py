"""torch.compile over emitted models: equal to eager for every shipped spec family, one
compilation for many instances of a spec, the maybe_compile policy, and the readable program."""

from __future__ import annotations

import pytest
import torch
import yaml

import asymspec
from asymspec.errors import UserError
from asymspec.nn import compile_enabled, maybe_compile
from asymspec.nn.masked import MaskedWeightMixin
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


def test_many_specs_in_one_process_keep_compiling() -> None:
    """Every spec is a recompilation of ``IRModule.forward``: more specs than dynamo's default
    recompile limit (8) must still compile, not fall back to eager silently."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    for width in range(2, 12):
        model = asymspec.build(SPECS / "mlp_mnist.yaml", ["model.input_dim=6",
                                                           f"model.widths=[{width}]"])
        maybe_compile(model, "cpu", "on", backend=counter)
        model(torch.randn(2, 6))
    assert counter.frame_count == 10


def _toy_task():
    from asymspec.run.tasks import ArrayTask

    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return ArrayTask(x[:32], y[:32], x[32:], y[32:], 3)


def _trained(compile_setting, backend=None):
    from asymspec.run.trainer import TrainOptions, recipe_with_defaults, train

    model = asymspec.build(SPECS / "mlp_mnist_wasym.yaml",
                           ["model.input_dim=6", "model.widths=[8, 8]", "model.output_dim=3",
                            "asymmetry.w_asym.nfix=2"], init_seed=3)
    recipe = recipe_with_defaults(optimizer="adamw", lr=0.01, weight_decay=0.1, epochs=2,
                                  batch_size=8)
    options = TrainOptions(compile=compile_setting,
                           compile_kwargs={"backend": backend} if backend else {})
    hist = train(model, _toy_task(), recipe, options)
    return model, hist


def test_trainer_compile_option_changes_execution_not_results() -> None:
    """Compiled training (dynamo graphs run by a counting backend) gives the eager run's
    losses and weights; the model leaves ``train`` uncompiled; frozen entries stay fixed."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    eager_model, eager_hist = _trained("off")
    model, hist = _trained("on", counter)
    assert counter.frame_count >= 1
    assert model._compiled_call_impl is None
    assert torch.allclose(torch.tensor(hist.train_loss), torch.tensor(eager_hist.train_loss),
                          atol=1e-6)
    # raw weights may differ at frozen positions (never used: eager re-writes them before a
    # forward, the compiled graph masks them), so compare what forward uses
    for name, m in model.named_modules():
        if isinstance(m, MaskedWeightMixin):
            e = eager_model.get_submodule(name)
            assert torch.allclose(m.effective_weight(), e.effective_weight(), atol=1e-5), name
            if m.weight_mask is not None:
                frozen = ~m.weight_mask
                assert torch.equal(m.effective_weight().detach()[frozen],
                                   m.weight_fixed[frozen])
    for (k, a), b in zip(model.named_buffers(), eager_model.buffers()):
        assert torch.equal(a, b), k


def test_trainer_follows_the_engine_default_and_the_environment(monkeypatch) -> None:
    from torch._dynamo.testing import CompileCounter

    from asymspec.nn.compile import default_setting, use_default

    torch._dynamo.reset()
    counter = CompileCounter()
    with use_default("off"):
        _trained(None, counter)
    assert counter.frame_count == 0
    with use_default("on"):
        _trained(None, counter)
    assert counter.frame_count >= 1
    monkeypatch.setenv("ASYMSPEC_COMPILE", "off")
    with use_default("on"):
        assert default_setting() == "off"  # the environment wins
    monkeypatch.setenv("ASYMSPEC_COMPILE", "sometimes")
    with pytest.raises(UserError, match="ASYMSPEC_COMPILE"):
        default_setting()


def test_resources_compile_is_not_part_of_the_run_hash(tmp_path) -> None:
    from asymspec.run import load_experiment
    from asymspec.run.registry import get_runner

    spec = tmp_path / "e.yaml"
    spec.write_text("name: e\nkind: lmc\ndataset: {name: digits}\n"
                    "variants: {s: {model: mlp_mnist.yaml}}\n")
    plain = load_experiment(spec)
    hashes = {plain.content_hash()}
    for setting, on_cpu in (("on", True), ("off", False), ("auto", False), ("'on'", True)):
        exp = load_experiment(spec, None, [f"resources={{compile: {setting}}}"])
        hashes.add(exp.content_hash())
        assert compile_enabled("cpu", get_runner("lmc")(exp, None).unit_resources().compile) \
            == on_cpu
    assert len(hashes) == 1
    assert get_runner("lmc")(plain, None).unit_resources().compile == "auto"
