"""The verifier on real IRs: generators are real symmetries, certificates and closed forms."""

from __future__ import annotations

import math

import igraph as ig
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asymspec
from asymspec.check import check_ir
from asymspec.ir.permute import permute_state_dict
from asymspec.ir.units import expand
from tests.conftest import SPECS
from tests.test_compile import FAMILY, METHODS, _mlp_spec, compile_or_skip, random_spec


def assert_generators_are_symmetries(ir, report, max_gens: int = 12) -> None:
    """Apply each generator to the emitted module's parameters: outputs must not change."""
    model = asymspec.nn.emit(ir, init_seed=5).eval()
    # make BN statistics and biases non-trivial so a wrong permutation would show
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    inputs = asymspec.example_inputs(ir, batch=5, seed=1)
    ref = model(*inputs)
    state = model.state_dict()
    for gen in report.generators[:max_gens]:
        moved = permute_state_dict(ir, state, gen)
        model.load_state_dict(moved)
        out = model(*inputs)
        assert (out - ref).abs().max().item() <= 1e-5, gen.keys()
        # the permuted parameters differ somewhere (a generator is not the identity on weights)
    model.load_state_dict(state)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=FAMILY, methods=METHODS, width=st.integers(3, 5),
       norm=st.sampled_from(["none", "layernorm", "batchnorm"]),
       act=st.sampled_from(["relu", "tanh"]))
def test_reported_generators_leave_outputs_unchanged(family, methods, width, norm, act) -> None:
    ir = compile_or_skip(random_spec(family, methods, width, norm, act))
    report = check_ir(ir)
    assert report.is_trivial == (not report.generators)
    assert_generators_are_symmetries(ir, report)


def test_standard_mlp_group_is_product_of_factorials() -> None:
    ir = asymspec.compile_ir(_mlp_spec(widths=[5, 4, 3]))
    report = check_ir(ir)
    assert report.order == math.factorial(5) * math.factorial(4) * math.factorial(3)
    assert_generators_are_symmetries(ir, report)


def test_shipped_mlp_log10_order() -> None:
    report = check_ir(asymspec.compile_ir(SPECS / "mlp_mnist.yaml"))
    assert report.log10_order == pytest.approx(3 * math.lgamma(513) / math.log(10), abs=1e-6)
    assert sum(r.orbits for r in report.layers if r.op == "linear") == 512 * 0 + 3 + 10


@pytest.mark.parametrize("kappa", [0.0, 1.0])
def test_wasym_distinct_rows_is_trivial_with_certificate(kappa: float) -> None:
    ir = asymspec.compile_ir(_mlp_spec({"w_asym": {"nfix": 3, "kappa": kappa}}))
    report = check_ir(ir)
    assert report.order == 1 and report.verdict == "asymmetric"
    assert report.certificate["kind"] in ("discrete-refinement", "refinement+reduction+bliss")


def test_two_identical_mask_rows_give_exactly_their_swap() -> None:
    ir = asymspec.compile_ir(_mlp_spec({"w_asym": {"nfix": 3, "kappa": 0.0}}, widths=[6],
                                       output_dim=4, input_dim=8))
    e1 = ir.edge("x", "fc1")
    e2 = ir.edge("act1", "fc2")
    m1, m2 = e1["mask"].clone(), e2["mask"].clone()
    m1[1] = m1[0]  # neurons 0 and 1 of fc1 get the same mask row
    m2[:, 1] = m2[:, 0]  # and the same pattern in fc2's columns
    e1["mask"], e2["mask"] = m1, m2
    report = check_ir(ir)
    assert report.order == 2
    (gen,) = report.generators
    assert gen["fc1"].tolist()[:2] == [1, 0] and (gen["fc1"][2:] == np.arange(2, 6)).all()
    assert set(gen) == {"fc1", "act1"}
    assert_generators_are_symmetries(ir, report)


def test_fixed_bias_removes_automorphisms() -> None:
    report = check_ir(asymspec.compile_ir(_mlp_spec({"fixed_bias": {"k": 1.0}})))
    assert report.order == 1


def _igraph_order(ug) -> int:
    """Independent count: bliss on the fully explicit graph, edge colours by subdivision."""
    src, dst, col = ug.to_explicit()
    colours = list(ug.vertex_colour)
    base = max(colours) + 1
    edges = []
    n = ug.n
    for s, d, c in zip(src.tolist(), dst.tolist(), col.tolist()):
        edges += [(s, n), (n, d)]
        colours.append(base + c)
        n += 1
    g = ig.Graph(n=n, edges=edges, directed=True)
    return g.count_automorphisms(color=colours)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=FAMILY, methods=METHODS, width=st.integers(2, 4),
       norm=st.sampled_from(["none", "layernorm"]))
def test_order_matches_bliss_on_full_graph(family, methods, width, norm) -> None:
    ir = compile_or_skip(random_spec(family, methods, width, norm, "relu"))
    ug = expand(ir)
    if ug.num_edges > 20_000:
        return
    assert check_ir(ir).order == _igraph_order(ug)


def test_resnet20_standard_and_wasym() -> None:
    std = check_ir(asymspec.compile_ir(SPECS / "resnet20.yaml"))
    expected = 4 * sum(math.lgamma(n + 1) for n in (16, 32, 64)) / math.log(10)
    assert std.log10_order == pytest.approx(expected, abs=1e-6)
    assert not std.ok
    asym = check_ir(asymspec.compile_ir(SPECS / "resnet20_wasym.yaml"))
    assert asym.order == 1 and asym.ok


def test_option_a_shortcut_group() -> None:
    report = check_ir(asymspec.compile_ir(SPECS / "resnet20.yaml", ["model.shortcut=A"]))
    assert report.log10_order == pytest.approx(475.59, abs=0.01)  # verifier-techniques.md


def test_continuous_rules() -> None:
    std = check_ir(asymspec.compile_ir(_mlp_spec()))
    kinds = {(c.layer, c.kind, c.status) for c in std.continuous}
    assert ("fc1", "rescale", "present") in kinds
    asym = check_ir(asymspec.compile_ir(_mlp_spec({"w_asym": {"nfix": 3, "kappa": 1.0}})))
    assert all(c.status == "broken" and c.certainty == "believed" for c in asym.continuous)
    sig = check_ir(asymspec.compile_ir(_mlp_spec({"sigma_asym": {"f_std": 1.0}})))
    assert {c.kind for c in sig.continuous} == {"none-figlu"}


def test_check_accepts_emitted_module() -> None:
    model = asymspec.build(_mlp_spec({"w_asym": {"nfix": 3}}))
    assert asymspec.check(model).order == 1


def test_transformer_closed_form_heads_and_within_head() -> None:
    """Per layer: heads permute (h!), q/k dims within a head jointly and v/out dims within a head
    jointly ((d_h!)^(2h)), MLP hidden (m!); plus the residual stream (d!)."""
    report = check_ir(asymspec.compile_ir(SPECS / "transformer_small.yaml"))

    def lf(n: int) -> float:
        return math.lgamma(n + 1) / math.log(10)

    per_layer = lf(4) + 2 * 4 * lf(16) + lf(256)
    assert report.log10_order == pytest.approx(2 * per_layer + lf(64), abs=1e-6)
    assert report.certificate["reduced"]["component_classes"] >= 2
    assert_generators_are_symmetries(asymspec.compile_ir(SPECS / "transformer_small.yaml"),
                                     report, max_gens=40)


def _siamese(asym="none") -> dict:
    """Two inputs through one shared linear map, summed, then a head."""
    layers = [
        {"name": "enc", "op": "linear", "in": "x1", "out_features": 5},
        {"name": "enc_b", "op": "linear", "in": "x2", "out_features": 5, "share": "enc"},
        {"name": "a1", "op": "activation", "in": "enc", "fn": "relu"},
        {"name": "a2", "op": "activation", "in": "enc_b", "fn": "relu"},
        {"name": "mix", "op": "linear", "in": "a1", "out_features": 4},
        {"name": "mix_b", "op": "linear", "in": "a2", "out_features": 4},
        {"name": "sum", "op": "add", "in": ["mix", "mix_b"]},
        {"name": "head", "op": "linear", "in": "sum", "out_features": 2},
    ]
    return {"name": "siamese", "asymmetry": asym,
            "model": {"family": "layers", "inputs": {"x1": {"shape": [6]}, "x2": {"shape": [6]}},
                      "layers": layers}}


def test_weight_sharing_ties_both_uses() -> None:
    ir = asymspec.compile_ir(_siamese())
    model = asymspec.nn.emit(ir)
    assert "enc_b.weight" not in model.state_dict()  # one tensor, owned by enc
    report = check_ir(ir)
    # enc/enc_b units must move together (5!), and sum's 4 units (4!); a1/a2 follow enc/enc_b
    assert report.order == math.factorial(5) * math.factorial(4)
    for gen in report.generators:
        if "enc" in gen or "enc_b" in gen:
            assert (gen["enc"] == gen["enc_b"]).all()
    assert_generators_are_symmetries(ir, report)
    asym = asymspec.compile_ir(_siamese({"seed": 0, "w_asym": {"nfix": 1, "kappa": 1.0}}))
    assert torch.equal(asym.edge("x1", "enc")["mask"], asym.edge("x2", "enc_b")["mask"])
