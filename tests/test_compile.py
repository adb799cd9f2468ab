"""Compiler core: Table 5 counts, masks, frozen entries under training, determinism."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import asymspec
from asymspec.errors import SpecError
from asymspec.paramtable import parameter_table, totals
from asymspec.passes.w_asym import distinct_subsets
from asymspec.seeding import generator
from tests.conftest import SPECS

# Lim et al. Table 5 (trainable parameters), plus documented deviations in the spec comments.
TABLE5 = {
    "mlp_mnist": 935_434,
    "mlp_mnist_wasym": 834_570,
    "mlp_mnist_sigma": 935_434,
    "resnet20": 272_474,
    "resnet20_sigma": 272_474,
    "resnet20_wasym": 230_026,  # Table 5: 230,024 (see spec comment)
    "resnet20_8x": 17_289_866,
    "gnn": 176_424,
    "gnn_wasym": 171_576,
    "gnn_sigma": 176_424,
    "resnet8_zoo": 78_042,
}


@pytest.mark.parametrize("name", sorted(TABLE5))
def test_table5_trainable_counts(name: str) -> None:
    model = asymspec.build(SPECS / f"{name}.yaml")
    assert totals(parameter_table(model))["trainable"] == TABLE5[name]


@pytest.mark.slow
def test_table5_resnet20_8x_wasym() -> None:
    model = asymspec.build(SPECS / "resnet20_8x_wasym.yaml")
    # Table 5's 16,273,946 plus 2 trainable stem entries per channel (spec comment)
    assert totals(parameter_table(model))["trainable"] == 16_273_946 + 256


def test_every_shipped_spec_builds_and_runs() -> None:
    for path in sorted(SPECS.glob("*.yaml")):
        if path.stem.startswith(("gpt2", "resnet20_8x", "bnn_resnet110", "bnn_mlp16")):
            continue  # large; covered by slow tests / benchmarks
        if "kind" in yaml.safe_load(path.read_text()):
            continue  # an experiment spec, not a model spec
        ir = asymspec.compile_ir(path)
        model = asymspec.nn.emit(ir)
        out = model(*asymspec.example_inputs(ir, batch=2))
        assert torch.isfinite(out).all(), path.name


@pytest.mark.parametrize("n,k,rows", [(4, 2, 6), (5, 2, 10), (10, 3, 50), (784, 64, 512),
                                      (27, 25, 128), (6, 3, 20)])
def test_distinct_subsets_are_distinct_and_sized(n: int, k: int, rows: int) -> None:
    out = distinct_subsets(n, k, rows, generator("t", n, k))
    assert out.shape == (rows, k)
    assert len({tuple(r) for r in out}) == rows
    assert all(len(set(r)) == k for r in out.tolist())
    assert out.min() >= 0 and out.max() < n


def _mask_rows_distinct(mask: torch.Tensor) -> bool:
    rows = (~mask).flatten(1).numpy()
    return np.unique(rows, axis=0).shape[0] == rows.shape[0]


def test_wasym_masks_have_distinct_rows_and_nfix() -> None:
    ir = asymspec.compile_ir(SPECS / "resnet20_wasym.yaml")
    seen = 0
    for _, dst, e in ir.dense_edges():
        if e["mask"] is None:
            continue
        seen += 1
        assert _mask_rows_distinct(e["mask"]), dst
        nfix = ir.node(dst)["asymmetry"]["w_asym"]["nfix"]
        assert ((~e["mask"]).flatten(1).sum(1) == nfix).all(), dst
    assert seen == 22


def test_filters_mode_fixes_whole_filters() -> None:
    spec = _cnn_spec({"w_asym": {"nfix": 2, "mode": "filters", "kappa": 1.0,
                                 "layers": ["conv2"]}})
    ir = asymspec.compile_ir(spec)
    _, e = ir.dense_edge("conv2")
    frozen = ~e["mask"]  # (out, in, k, k)
    per_filter = frozen.flatten(2)
    assert ((per_filter.all(2)) | (~per_filter.any(2))).all()  # all-or-nothing per filter
    assert (per_filter.all(2).sum(1) == 2).all()
    assert _mask_rows_distinct(e["mask"])


def _cnn_spec(asym: dict | str = "none", **model) -> dict:
    m = {"family": "cnn", "in_channels": 3, "input_size": 8, "channels": [6, 8],
         "num_classes": 4}
    m.update(model)
    return {"name": "tiny_cnn", "model": m, "asymmetry": asym if asym == "none" else
            {"seed": 3, **asym}}


def _mlp_spec(asym: dict | str = "none", **model) -> dict:
    m = {"family": "mlp", "input_dim": 12, "widths": [16, 16], "output_dim": 5,
         "norm": "none"}
    m.update(model)
    return {"name": "tiny_mlp", "model": m, "asymmetry": asym if asym == "none" else
            {"seed": 1, **asym}}


def test_impossible_nfix_is_a_located_spec_error() -> None:
    with pytest.raises(SpecError, match="distinct masks"):
        asymspec.build(_mlp_spec({"w_asym": {"nfix": 12}}, input_dim=12, widths=[16]))
    with pytest.raises(SpecError, match="exceeds"):
        asymspec.build(_mlp_spec({"w_asym": {"nfix": 13}}))


@pytest.mark.parametrize("asym", [
    {"w_asym": {"nfix": 3, "kappa": 1.0}},
    {"w_asym": {"nfix": 3, "kappa": 0.0}},
    {"syre": {"kappa": 0.5}},
    {"w_asym": {"nfix": 2}, "syre": {"kappa": 0.1}},
])
def test_frozen_entries_stay_frozen_under_adamw(asym: dict) -> None:
    model = asymspec.build(_mlp_spec(asym, norm="layernorm"))
    layers = [m for m in model.modules() if hasattr(m, "effective_weight")]
    before = [m.effective_weight().detach().clone() for m in layers]
    raw_before = [m.weight.detach().clone() for m in layers]
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.5)
    g = generator("train-test")
    for _ in range(5):
        x = torch.randn(8, 12, generator=g)
        y = torch.randint(0, 5, (8,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for m in layers:
            if m.weight_mask is not None:
                assert (m.weight.grad[~m.weight_mask] == 0).all()
        opt.step()
    for m, b, rb in zip(layers, before, raw_before):
        after = m.effective_weight().detach()
        if m.weight_mask is not None:
            frozen = ~m.weight_mask
            if m.weight_offset is None:
                assert torch.equal(after[frozen], m.weight_fixed[frozen])
            assert torch.equal(after[frozen], b[frozen])
        if m.weight_offset is not None:  # syre: the offset itself is untouched
            base = m.weight.detach()
            if m.weight_mask is not None:
                base = torch.where(m.weight_mask, base, m.weight_fixed)
            assert torch.allclose(after - base, m.weight_offset, atol=1e-6)
        assert not torch.equal(m.weight.detach(), rb)  # the trainable part did train


def test_masks_and_fixed_values_are_in_state_dict_and_roundtrip() -> None:
    spec = _mlp_spec({"w_asym": {"nfix": 3}, "sigma_asym": {"f_std": 1.0}})
    a = asymspec.build(spec, init_seed=0)
    b = asymspec.build(spec, init_seed=1)
    sd = a.state_dict()
    assert "fc1.weight_mask" in sd and "fc1.weight_fixed" in sd and "act1_F.weight" in sd
    # same spec + asymmetry seed: identical frozen parts, different trainable init
    sb = b.state_dict()
    for k in sd:
        if k.endswith(("_mask", "_fixed")) or k.endswith("_F.weight"):
            assert torch.equal(sd[k], sb[k]), k
    assert not torch.equal(sd["fc1.weight"], sb["fc1.weight"])
    b.load_state_dict(sd)
    x = torch.randn(3, 12)
    assert torch.equal(a(x), b(x))


def _state_digest(spec) -> str:
    model = asymspec.build(spec)
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_bit_identical_across_processes() -> None:
    spec = SPECS / "resnet8_zoo_wasym.yaml"
    here = _state_digest(spec)
    code = ("import torch; torch.set_num_threads(1);"
            "from tests.test_compile import _state_digest;"
            f"print(_state_digest({str(spec)!r}))")
    for hashseed in ("1", "987"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=SPECS.parent, env={"PYTHONHASHSEED": hashseed, "PATH": ""},
                             check=True)
        assert out.stdout.strip() == here


# ---------------------------------------------------------------- random architectures
FAMILY = st.sampled_from(["mlp", "cnn", "resnet", "gnn", "transformer"])
METHODS = st.fixed_dictionaries({}, optional={
    "w_asym": st.fixed_dictionaries({"nfix": st.integers(1, 2),
                                     "kappa": st.sampled_from([0.0, 0.5])}),
    "sigma_asym": st.fixed_dictionaries({"f_std": st.sampled_from([0.5, 1.0])}),
    "syre": st.fixed_dictionaries({"kappa": st.sampled_from([0.1])}),
    "fixed_bias": st.fixed_dictionaries({"k": st.sampled_from([1.0])}),
})


def random_spec(family: str, methods: dict, width: int, norm: str, act: str) -> dict:
    if family == "mlp":
        model = {"family": "mlp", "input_dim": 6, "widths": [width, width], "output_dim": 3,
                 "norm": norm, "activation": act}
    elif family == "cnn":
        model = {"family": "cnn", "in_channels": 2, "input_size": 6, "channels": [width, width],
                 "strides": [1, 2], "num_classes": 3, "activation": act,
                 "norm": norm if norm != "batchnorm" else "batchnorm"}
    elif family == "resnet":
        model = {"family": "resnet", "depth": 8, "base_width": 2, "in_channels": 2,
                 "input_size": 8, "num_classes": 3, "activation": act,
                 "norm": norm, "shortcut": "A" if width % 2 else "B"}
    elif family == "gnn":
        model = {"family": "gnn", "in_dim": 5, "hidden_dim": width, "layers": 2, "out_dim": 3,
                 "norm": norm, "activation": act}
    else:
        model = {"family": "transformer", "input_dim": 5, "seq_len": 3, "d_model": 8,
                 "heads": 2, "mlp_ratio": 1, "layers": 1, "num_classes": 3, "activation": act}
    asym = {"seed": 7, **methods} if methods else "none"
    return {"name": f"rand_{family}", "model": model, "asymmetry": asym}


def compile_or_skip(spec: dict):
    """Compile a random spec; tiny layers can make distinct W-Asym rows impossible — skip."""
    try:
        return asymspec.compile_ir(spec)
    except SpecError as exc:
        assume("distinct masks" not in str(exc) and "exceeds" not in str(exc))
        raise


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=FAMILY, methods=METHODS, width=st.integers(3, 6),
       norm=st.sampled_from(["none", "layernorm", "batchnorm"]),
       act=st.sampled_from(["relu", "tanh", "gelu"]))
def test_random_specs_build_forward_backward(family, methods, width, norm, act) -> None:
    ir = compile_or_skip(random_spec(family, methods, width, norm, act))
    model = asymspec.nn.emit(ir)
    inputs = asymspec.example_inputs(ir, batch=4)
    out = model(*inputs)
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
