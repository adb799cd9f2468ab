"""``asymspec show`` counts parameters without drawing a tensor or importing torch, and its counts
are exactly those of the built module (every shipped model spec, and the pass combinations the
shipped specs do not cover)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from click.testing import CliRunner

import asymspec
from asymspec.cli import main
from asymspec.ir.deferred import Deferred, is_drawn
from asymspec.paramtable import ir_parameter_table, parameter_table, totals
from tests.conftest import REPO, SPECS

# building these takes seconds each (tens of millions of entries): slow suite only
SLOW = {"gpt2_small", "gpt2_small_wasym", "resnet20_8x", "resnet20_8x_sigma",
        "resnet20_8x_wasym", "resnet110", "resnet110_wasym"}


def _model_specs() -> list:
    """Every shipped spec that describes a model (experiment specs have a ``kind``)."""
    out = []
    for path in sorted([*SPECS.glob("*.yaml"), *SPECS.glob("bnn_models/*.yaml")]):
        if "kind" in yaml.safe_load(path.read_text()):
            continue
        marks = [pytest.mark.slow] if path.stem in SLOW else []
        out.append(pytest.param(path, id=str(path.relative_to(SPECS)), marks=marks))
    return out


def _module_totals(model: torch.nn.Module) -> dict[str, int]:
    """Counts read off the module alone: trainable = parameter entries less the frozen entries
    of masked weights; fixed = those frozen entries plus frozen weight / bias buffers; buffers =
    every other buffer entry."""
    trainable = fixed = buffers = 0
    for mod in model.modules():
        mask = getattr(mod, "weight_mask", None)
        frozen = int((~mask).sum()) if mask is not None else 0
        trainable += sum(p.numel() for p in mod.parameters(recurse=False)) - frozen
        fixed += frozen
        for leaf, b in mod.named_buffers(recurse=False):
            if leaf in ("weight", "bias"):
                fixed += b.numel()
            else:
                buffers += b.numel()
    return {"trainable": trainable, "fixed": fixed, "buffers": buffers}


def _show_json(spec) -> dict:
    res = CliRunner().invoke(main, ["show", str(spec), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


@pytest.mark.parametrize("spec", _model_specs())
def test_show_counts_equal_the_built_module(spec):
    shown = _show_json(spec)
    model = asymspec.build(spec)
    assert shown["layers"] == [r.as_dict() for r in parameter_table(model)]
    assert shown["totals"] == totals(parameter_table(model)) == _module_totals(model)


MLP = {"family": "mlp", "input_dim": 6, "widths": [5, 4], "output_dim": 3}
CNN = {"family": "cnn", "in_channels": 4, "input_size": 6, "channels": [4, 5], "num_classes": 3}
SHARED = {"family": "layers", "inputs": {"x1": {"shape": [6]}, "x2": {"shape": [6]}},
          "layers": [{"name": "enc", "op": "linear", "in": "x1", "out_features": 5},
                     {"name": "enc_b", "op": "linear", "in": "x2", "out_features": 5,
                      "share": "enc"},
                     {"name": "sum", "op": "add", "in": ["enc", "enc_b"]},
                     {"name": "act", "op": "activation", "in": "sum", "fn": "relu"},
                     {"name": "head", "op": "linear", "in": "act", "out_features": 1}]}


@pytest.mark.parametrize("model, asym", [
    ({**MLP, "norm": "batchnorm"}, {"syre": {"kappa": 0.1}, "fixed_bias": {"k": 0.5}}),
    (MLP, {"w_asym": {"nfix": 2, "overrides": {"fc2": {"nfix": 1}}},
           "sigma_asym": {"f_std": 1.0, "scale": "inv_sqrt_dim"}}),
    (CNN, {"w_asym": {"nfix": 1, "mode": "filters", "overrides": {"conv2": {"nfix": 2}}},
           "syre": {"kappa": 0.2}}),
    (CNN, {"w_asym": {"nfix": 3, "layers": ["conv*"]}, "sigma_asym": {"f_std": 2.0}}),
    (SHARED, {"w_asym": {"nfix": 2}, "fixed_bias": {"k": 1.0}, "sigma_asym": {}}),
    # one output unit whose every entry is fixed: the weight is a frozen buffer
    ({"family": "mlp", "input_dim": 3, "widths": [], "output_dim": 1},
     {"w_asym": {"nfix": 3}}),
])
def test_counts_without_drawing_match_for_every_pass(model, asym):
    spec = {"name": "t", "model": model, "asymmetry": asym}
    deferred = asymspec.compile_ir(spec, draw=False)
    drawn = asymspec.compile_ir(spec)
    assert not is_drawn(deferred) and is_drawn(drawn)
    assert ir_parameter_table(deferred) == ir_parameter_table(drawn)
    model_ = asymspec.build(spec)
    assert ir_parameter_table(deferred) == parameter_table(model_)
    assert totals(ir_parameter_table(deferred)) == _module_totals(model_)


def test_deferred_ir_has_the_drawn_structure_and_no_tensor():
    spec = {"name": "t", "model": CNN,
            "asymmetry": {"w_asym": {"nfix": 2}, "sigma_asym": {}, "syre": {"kappa": 0.1},
                          "fixed_bias": {}}}
    deferred, drawn = asymspec.compile_ir(spec, draw=False), asymspec.compile_ir(spec)
    assert list(deferred.g.nodes) == list(drawn.g.nodes)
    assert list(deferred.g.edges) == list(drawn.g.edges)
    assert deferred.g.graph["passes"] == drawn.g.graph["passes"]
    for u, v, e in deferred.dense_edges():
        d = drawn.edge(u, v)
        for key in ("mask", "fixed", "offset"):
            assert (e[key] is None) == (d[key] is None)
            if e[key] is not None:
                assert isinstance(e[key], Deferred) and e[key].shape == tuple(d[key].shape)
        if e["mask"] is not None:
            assert e["mask"].count_true() == int(d["mask"].sum())
    for n in deferred.g.nodes:
        assert not isinstance(deferred.node(n)["bias"], torch.Tensor)


def test_deferred_ir_is_refused_where_values_are_needed():
    ir = asymspec.compile_ir(SPECS / "mlp_mnist_wasym.yaml", draw=False)
    with pytest.raises(ValueError, match="draw=False"):
        asymspec.check_ir(ir)


def test_show_imports_no_torch_and_prints_no_warning():
    code = ("import sys; from asymspec.cli import main\n"
            "try:\n    main(['show', 'specs/resnet20_wasym.yaml'])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = sorted(m for m in ('torch', 'scipy', 'igraph', 'torch_geometric')"
            " if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                              "OMP_NUM_THREADS": "1"}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout and "230,026" in res.stdout
    assert res.stderr == ""


def test_show_refuses_overflowing_scales_like_check():
    """Scales whose draws could overflow float32 are spec errors, so ``show`` (which draws
    nothing) refuses them as ``check`` does."""
    for override in ("asymmetry.syre={kappa: 1.0e+38}", "asymmetry.sigma_asym.f_std=0.0"):
        for cmd in ("show", "check"):
            res = CliRunner().invoke(main, [cmd, str(SPECS / "mlp_mnist.yaml"), "--set",
                                            override])
            assert res.exit_code == 2, res.output
            assert "<override #1>:1:" in res.output and "Traceback" not in res.output


def test_experiment_spec_given_to_show_says_what_it_is():
    res = CliRunner().invoke(main, ["show", str(SPECS / "lmc_resnet20.yaml")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "lmc_resnet20.yaml:7:" in res.output and "experiment spec (kind: lmc)" in res.output
    assert "resnet20_wasym.yaml" in res.output and "asymspec run" in res.output


@pytest.mark.filterwarnings("ignore:.*'fc4' matches no layer")  # the spec's 4th layer is gone
def test_show_counts_a_trillion_entry_model_without_allocating(monkeypatch):
    """With the size limit raised, ``show`` describes a model far too large to build: nothing
    but per-unit bookkeeping is allocated (masks and weights are never drawn)."""
    monkeypatch.setenv("ASYMSPEC_MAX_PARAMS", str(10**15))
    w = 1_000_000
    shown = _show_json_args(SPECS / "mlp_mnist_wasym.yaml", f"model.widths=[{w},{w}]")
    fc = {r["layer"]: r for r in shown["layers"]}
    assert fc["fc2"]["trainable"] == w * w - w * 64 + w and fc["fc2"]["fixed"] == w * 64
    assert fc["fc3"]["trainable"] == 10 * w - 10 * 64 + 10
    assert shown["totals"]["trainable"] + shown["totals"]["fixed"] == \
        (784 * w + w) + (w * w + w) + (10 * w + 10) + 2 * (2 * w)


def _show_json_args(spec, *overrides) -> dict:
    args = ["show", str(spec), "--json", *[f"--set={o}" for o in overrides]]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index("{"):])
