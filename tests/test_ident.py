"""Neuron identifiability analyses (asymspec.ident): matching, realization / swap costs,
coherence, PCA, the synthetic coherence data, and IR-driven recording on MLP / ResNet / GNN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import asymspec
from asymspec.align import exact_groups
from asymspec.ident import (
    LayerWeights,
    coherence,
    coherence_report,
    concentration_bound,
    layer_weights,
    pca_basis,
    realization_costs,
    record_moments,
    recording_points,
    swap_costs,
)
from asymspec.ident import synthetic as syn
from asymspec.ident.barriers import path_barriers, relative_accuracy_barrier
from asymspec.ident.effective import effective_state, plain_model, trainable_count
from asymspec.ident.matching import match, objective, similarities
from asymspec.ident.points import as_rows
from asymspec.ident.realization import ridge_costs
from asymspec.ir.permgroups import perm_spec, plant_permutation
from asymspec.ir.permute import permute_state_dict
from tests.conftest import SPECS

torch.set_num_threads(1)

NETS = {
    "mlp": ("mlp_mnist.yaml", ["model.widths=[48,48,48]", "model.input_dim=24",
                               "model.activation=gelu"]),
    "resnet": ("resnet20.yaml", ["model.base_width=4"]),
    "gnn": ("gnn.yaml", ["model.hidden_dim=32", "model.in_dim=16"]),
}


def _ir(net: str, extra: list[str] | None = None):
    path, overrides = NETS[net]
    return asymspec.compile_ir(SPECS / path, overrides + (extra or []))


def _batches(ir, n: int = 4, batch: int = 96):
    return [asymspec.example_inputs(ir, batch=batch, seed=s, num_edges=4 * batch)
            for s in range(n)]


# ----------------------------------------------------------------------------- matching
@pytest.mark.parametrize("net", list(NETS))
def test_pearson_matching_recovers_a_planted_permutation(net) -> None:
    ir = _ir(net)
    model_a = asymspec.nn.emit(ir, init_seed=1).eval()
    planted, state_b = plant_permutation(ir, model_a.state_dict(), seed=3, noise=0.0)
    model_b = asymspec.nn.emit(ir, init_seed=2).eval()
    model_b.load_state_dict(state_b)
    batches = _batches(ir)
    sims = similarities(ir, model_a, model_b, batches)
    perms = match(ir, sims)
    assert set(sims) == set(planted)  # every free group has a recording point
    # the maximised objective is the correlation: 1 for every live unit of an exact copy
    # (a dead / constant unit — a ReLU never active on the data — scores 0 against all and
    # cannot be identified); every live unit is recovered
    for g, s in sims.items():
        gather = np.argsort(perms[g])
        matched = s.sim[np.arange(len(gather)), gather]
        live = np.abs(matched - 1) < 1e-6
        assert np.all(live | (matched == 0)) and live.mean() > 0.85
        back = perms[g][planted[g]]
        assert np.array_equal(back[live], np.nonzero(live)[0])
        obj = objective(s.sim, n_random=20, seed=0)
        assert obj["optimal"] == pytest.approx(matched.mean()) and obj["optimal"] > 0.8
        assert obj["identity"] < obj["optimal"] - 0.3 and obj["random_mean"] < 0.5
    # with every unit live, the groups are recovered exactly and A comes back bit for bit
    if exact_groups(perms, planted) == len(planted):
        spec = perm_spec(ir)
        back = permute_state_dict(ir, state_b, spec.node_perms(ir, perms))
        for k, v in model_a.state_dict().items():
            assert torch.equal(back[k], v), k
    else:
        assert net == "gnn" or net == "resnet"


def test_uncorrelatedness_variant_picks_the_least_correlated_pairing() -> None:
    ir = _ir("mlp")
    model_a = asymspec.nn.emit(ir, init_seed=1).eval()
    planted, state_b = plant_permutation(ir, model_a.state_dict(), seed=3, noise=0.0)
    model_b = asymspec.nn.emit(ir, init_seed=2).eval()
    model_b.load_state_dict(state_b)
    batches = _batches(ir)
    rho = similarities(ir, model_a, model_b, batches)
    bad = similarities(ir, model_a, model_b, batches, similarity="uncorrelatedness")
    perms_bad = match(ir, bad)
    assert exact_groups(perms_bad, planted) == 0
    for g, s in rho.items():
        np.testing.assert_allclose(bad[g].sim, 1 - np.abs(s.sim))
        # the correlation achieved by the reference's pairing is far below the optimum
        gather = np.argsort(perms_bad[g])
        achieved = s.sim[np.arange(len(gather)), gather].mean()
        assert achieved < objective(s.sim, 0)["optimal"] - 0.5


def test_objective_statistics() -> None:
    sim = np.eye(6) * 0.9 + 0.05
    obj = objective(sim, n_random=100, seed=1)
    assert obj["optimal"] == pytest.approx(0.95) and obj["identity"] == pytest.approx(0.95)
    assert obj["random_std"] > 0 and 0.05 < obj["random_mean"] < 0.95
    assert objective(sim, n_random=100, seed=1) == obj  # seeded


# ----------------------------------------------------------------------------- realization
def _weights(n: int = 6, d: int = 9, p: float = 0.7, seed: int = 0, zero_w: bool = False):
    g = torch.Generator().manual_seed(seed)
    D = (torch.rand(n, d, generator=g) < p).double()
    fixed = (1 - D) * torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.zeros(n, d, dtype=torch.float64) if zero_w else \
        torch.randn(n, d, generator=g, dtype=torch.float64)
    return LayerWeights(D * w + fixed, D, fixed), w


def test_realization_cost_of_a_neurons_own_fixed_function_is_zero() -> None:
    U = torch.linalg.qr(torch.randn(9, 5, generator=torch.Generator().manual_seed(1),
                                    dtype=torch.float64))[0]
    lw, _ = _weights(zero_w=True)  # every neuron computes exactly its frozen part
    m = realization_costs(U, lw)
    assert torch.allclose(torch.diagonal(m), torch.zeros(6, dtype=torch.float64), atol=1e-10)
    T = swap_costs(m)
    assert torch.allclose(T, T.T) and torch.all(torch.diagonal(T) == 0)
    assert (T[~torch.eye(6, dtype=torch.bool)] > 0).all()  # swapping costs norm


def test_realization_cost_is_the_least_trainable_norm() -> None:
    lw, w = _weights(seed=2)
    U = torch.eye(9, dtype=torch.float64)  # full basis: the function is the whole row
    m = realization_costs(U, lw)
    own = ((lw.trainable * w) ** 2).sum(1)
    torch.testing.assert_close(torch.diagonal(m), own)
    # neuron i realising neuron j: the trainable part must equal W_j - F_i on D_i; the rest of
    # the difference cannot be realised and is ignored by the pseudo-inverse
    i, j = 0, 3
    need = lw.trainable[i] * (lw.effective[j] - lw.fixed[i])
    assert float(m[i, j]) == pytest.approx(float((need ** 2).sum()))
    T = swap_costs(m)
    torch.testing.assert_close(T, T.T)


def test_standard_layers_swap_for_free() -> None:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(7, 10, generator=g, dtype=torch.float64)
    lw = LayerWeights(W, torch.ones_like(W), torch.zeros_like(W))
    U = torch.linalg.qr(torch.randn(10, 4, generator=g, dtype=torch.float64))[0]
    T = swap_costs(realization_costs(U, lw))
    assert T.abs().max() < 1e-10


def test_ridge_cost_tends_to_the_exact_cost() -> None:
    lw, w = _weights(d=7, seed=4)
    g = torch.Generator().manual_seed(5)
    A = torch.randn(7, 7, generator=g, dtype=torch.float64)
    cov = A @ A.T + torch.eye(7, dtype=torch.float64)  # full rank: every direction counts
    gains = torch.ones(6, dtype=torch.float64)
    r = ridge_costs(cov, lw, gains, beta=1e-9, neurons=range(6))
    m = realization_costs(torch.eye(7, dtype=torch.float64), lw)
    # with a full-rank input covariance the exact fit needs the residual off D_i to vanish:
    # only possible when it is zero (i == j); there the ridge cost is the own norm
    torch.testing.assert_close(torch.diagonal(r), torch.diagonal(m), rtol=1e-5, atol=1e-8)
    big = ridge_costs(cov, lw, gains, beta=1e3, neurons=range(6))
    assert (big < r + 1e-12).all()  # more regularisation, smaller weights


def test_ridge_uses_the_trained_batchnorm_gain() -> None:
    from asymspec.ident.realization import unit_gains

    ir = _ir("mlp", ["model.norm=batchnorm"])
    model = asymspec.nn.emit(ir, init_seed=0).eval()
    bn = model.get_submodule("norm1")
    with torch.no_grad():
        bn.running_var.copy_(torch.linspace(0.5, 4.0, bn.num_features))
        bn.weight.copy_(torch.linspace(1.0, 2.0, bn.num_features))
    g, what = unit_gains(model, ir, "fc1", "trained")
    torch.testing.assert_close(g, (bn.weight / (bn.running_var + bn.eps).sqrt()).double())
    assert "trained BatchNorm 'norm1'" == what
    g_fresh, what = unit_gains(model, ir, "fc1", "fresh")
    assert torch.allclose(g_fresh, torch.full_like(g_fresh, (1 + bn.eps) ** -0.5))
    assert "fresh" in what
    # a larger gain weighs the fit more: the cost approaches the exact one from below
    lw, _ = _weights(n=4, d=5, seed=7)
    cov = torch.eye(5, dtype=torch.float64)
    small = ridge_costs(cov, lw, torch.full((4,), 0.1, dtype=torch.float64), 1.0, range(4))
    large = ridge_costs(cov, lw, torch.full((4,), 10.0, dtype=torch.float64), 1.0, range(4))
    assert (small <= large + 1e-12).all()


# ----------------------------------------------------------------------------- coherence / PCA
def test_coherence_of_identity_and_random_bases() -> None:
    d, k = 64, 8
    assert coherence(torch.eye(d)[:, :k]) == 1.0
    # a Hadamard basis spreads every direction evenly: the minimum k/d
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < d:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    assert coherence(H[:, :k] / math.sqrt(d)) == pytest.approx(k / d)
    # a random orthonormal basis: mean leverage exactly k/d, max within [k/d, 1]
    U = torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(0),
                                    dtype=torch.float64))[0]
    lev = (U ** 2).sum(1)
    assert float(lev.mean()) == pytest.approx(k / d)
    assert k / d < coherence(U) < 1.0


def test_anisotropy_and_bound() -> None:
    d, k = 64, 8
    U = torch.eye(d, dtype=torch.float64)[:, :k]
    ones = torch.ones(5, d)
    rep = coherence_report(U, ones)
    assert rep["anisotropy_max"] == pytest.approx(0.0, abs=1e-12) and rep["p"] == 1.0
    mask = (torch.rand(50, d, generator=torch.Generator().manual_seed(1)) < 0.8).double()
    rep = coherence_report(U, mask)
    # identity basis: S_i = diag(D_i[:k]), so ‖S_i − pI‖ = max(p, 1 − p) when D_i[:k] mixes
    assert rep["anisotropy_max"] == pytest.approx(max(rep["p"], 1 - rep["p"]), abs=1e-9)
    assert concentration_bound(1.0, 8, 0.8, 0.01) > concentration_bound(1.0, 8, 0.8, 0.1)
    assert concentration_bound(0.5, 8, 1.0, 0.1) == pytest.approx(
        (2 / 3) * 0.5 * math.log(160))


def test_pca_picks_the_smallest_k_reaching_the_threshold() -> None:
    cov = torch.diag(torch.tensor([5.0, 3.0, 1.0, 0.5, 0.5], dtype=torch.float64))
    b = pca_basis(cov, 0.9)  # cumulative 0.5, 0.8, 0.9 -> k = 3 (inclusive)
    assert b.k == 3 and b.explained == pytest.approx(0.9)
    assert pca_basis(cov, 0.85).k == 3 and pca_basis(cov, 0.8).k == 2
    assert torch.allclose(b.U.abs(), torch.eye(5, dtype=torch.float64)[:, :3])


# ----------------------------------------------------------------------------- synthetic
@pytest.mark.parametrize("construction", syn.CONSTRUCTIONS)
def test_synthetic_data_has_coherence_one_over_c(construction) -> None:
    for c in (1, 2, 3, 5, 10):
        d = syn.data(construction, c, seed=2)
        B = d["B"]
        torch.testing.assert_close(B.T @ B, torch.eye(2, dtype=torch.float64))
        assert coherence(B) == pytest.approx(1 / c)
        x = d["x_train"].double()
        basis = pca_basis(torch.cov(x.T), 0.999)
        assert basis.k == 2 and coherence(basis.U) == pytest.approx(1 / c, abs=1e-5)
        # targets are ReLU(z1 + z2), recoverable from x
        z = x @ B
        torch.testing.assert_close(torch.relu(z.sum(1)).float(), d["y_train"],
                                   atol=1e-5, rtol=1e-5)


def test_synthetic_training_is_deterministic_and_learns() -> None:
    cfg = syn.SyntheticConfig(epochs=30, pairs=2)
    a = syn.run_cell("random_tight_frame", 4, 0, cfg)
    b = syn.run_cell("random_tight_frame", 4, 0, cfg)
    assert a["midpoint_barrier"] == b["midpoint_barrier"]
    y = syn.data("random_tight_frame", 4, 0, cfg)["y_test"]
    assert max(max(e) for e in a["endpoint_loss"]) < 0.2 * float((y - y.mean()).pow(2).mean())
    assert len(a["curves"][0]) == 21 and a["coherence"] == 0.25


# ----------------------------------------------------------------------------- IR-driven
@pytest.mark.parametrize("net", list(NETS))
def test_analyses_run_on_any_spec(net) -> None:
    ir = _ir(net)
    model = asymspec.nn.emit(ir, init_seed=0).eval()
    points = recording_points(ir)
    dense = [n for n in ir.topo_order() if ir.node(n)["op"] in ("linear", "conv2d")]
    assert [p.layer for p in points] == dense
    stats = record_moments(model, points, _batches(ir), max_rows_per_batch=500,
                           gen=torch.Generator().manual_seed(0))
    for p in points:
        basis = pca_basis(stats[p.layer].cov)
        lw = layer_weights(model, p)
        assert lw.effective.shape == (p.out_dim, p.in_dim) and basis.U.shape[0] == p.in_dim
        rep = coherence_report(basis.U, lw.trainable)
        assert basis.k / p.in_dim - 1e-9 <= rep["nu"] <= 1 + 1e-9
        T = swap_costs(realization_costs(basis.U, lw))
        assert T.abs().max() < 1e-8  # standard networks: swaps are free


def test_conv_rows_reproduce_the_conv() -> None:
    ir = _ir("resnet")
    model = asymspec.nn.emit(ir, init_seed=0).eval()
    p = next(q for q in recording_points(ir) if q.op == "conv2d" and q.stride == 2)
    seen = {}
    mod = model.get_submodule(p.layer)
    h = mod.register_forward_hook(lambda m, a, out: seen.update(x=a[0], y=out))
    with torch.no_grad():
        model(*asymspec.example_inputs(ir, batch=2))
    h.remove()
    rows = as_rows(seen["x"], p)
    lw = layer_weights(model, p)
    bias = mod.bias if mod.bias is not None else 0
    y = (rows.double() @ lw.effective.T).float() + bias
    ref = seen["y"].permute(0, 2, 3, 1).reshape(-1, p.out_dim)
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)


def test_asymmetric_layers_and_effective_networks() -> None:
    ir = asymspec.compile_ir(SPECS / "mlp_mnist_wasym.yaml",
                             ["model.widths=[32,32,32]", "model.input_dim=20",
                              "asymmetry.w_asym.nfix=4", "asymmetry.w_asym.overrides.fc4.nfix=8"])
    model = asymspec.nn.emit(ir, init_seed=3).eval()
    p = recording_points(ir)[1]
    lw = layer_weights(model, p)
    mod = model.get_submodule(p.layer)
    torch.testing.assert_close(lw.effective, lw.trainable * mod.weight.double() + lw.fixed)
    assert lw.trainable_fraction == pytest.approx(28 / 32)
    # the plain network of effective weights computes the same function
    plain = plain_model(ir, effective_state(model)).eval()
    x = asymspec.example_inputs(ir, batch=5)
    with torch.no_grad():
        torch.testing.assert_close(plain(*x), model(*x))
    full = sum(q.numel() for q in model.parameters())
    assert trainable_count(model) == full - 3 * 32 * 4 - 10 * 8
    # W-Asym swaps are not free
    stats = record_moments(model, [p], _batches(ir))
    T = swap_costs(realization_costs(pca_basis(stats[p.layer].cov).U, lw))
    assert T[~torch.eye(32, dtype=torch.bool)].mean() > 0


def test_barriers() -> None:
    t = [0, 0.25, 0.5, 0.75, 1]
    out = path_barriers(t, [1.0, 1.5, 2.0, 1.5, 1.0], [0.9, 0.8, 0.45, 0.8, 0.88])
    assert out["loss_barrier_mid"] == 1.0 and out["loss_barrier_max"] == 1.0
    assert out["acc_barrier_rel"] == pytest.approx(-50.0)
    assert relative_accuracy_barrier([0.5, 0.6, 0.5]) == 0.0
