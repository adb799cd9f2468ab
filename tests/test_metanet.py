"""Metanetworks (asymspec.metanet): Table 14 sizes, inputs, StatNN features, metrics, splits,
symmetry remedies and training, on synthetic zoos of the real emitted ResNet8 specs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from asymspec.compiler import build
from asymspec.errors import UserError
from asymspec.metanet import ParamLayout, Segment, available_metanets, get_metanet, register_metanet
from asymspec.metanet.metrics import kendall_tau, r2
from asymspec.metanet.registry import _METANETS
from asymspec.metanet.split import split_members
from asymspec.metanet.stats import statistics
from asymspec.metanet.symmetry import FlatPermuter, canonicalize_flat
from asymspec.metanet.train import FitConfig, build_metanet, fit
from asymspec.paramtable import parameter_table, totals
from asymspec.spec import load_spec
from tests.conftest import SPECS

SIGMA_RESNET8 = {
    "name": "resnet8_sigma", "seed": 0,
    "model": {"family": "resnet", "depth": 8, "width": 1, "norm": "layernorm",
              "shortcut": "B"},
    "asymmetry": {"seed": 0, "sigma_asym": {"f_std": 1.0, "scale": "inv_sqrt_dim"}},
}


@pytest.fixture(scope="module")
def standard():
    return build(load_spec(SPECS / "resnet8_zoo.yaml"), init_seed=0)


@pytest.fixture(scope="module")
def wasym():
    return build(load_spec(SPECS / "resnet8_zoo_wasym.yaml"), init_seed=0)


def synthetic_zoo(model: nn.Module, members: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Stacked random states of ``model``'s architecture (buffers copied)."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {k: (torch.randn((members, *v.shape), generator=g) * 0.1 if k in params
                else v.unsqueeze(0).expand(members, *v.shape).clone())
            for k, v in model.state_dict().items()}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# -- Table 14 --------------------------------------------------------------------------------

def test_parameter_counts_match_table_14(standard):
    layout = ParamLayout.from_model(standard)
    assert layout.dim == 78_042 and len(layout.segments) == 29
    expected = {"mlp": 4_994_945, "statnn": 119_297, "dmc": 105_357, "deepsets": 8_897}
    for name, count in expected.items():
        assert n_params(build_metanet(name, layout, seed=0)) == count, name
    # the paper's W-Asym zoo: 60,634 trainable inputs (its per-layer nfix is unpublished)
    fake = ParamLayout([Segment("w", (60_634,), None, 0, 60_634, 0)])
    assert n_params(build_metanet("mlp", fake, seed=0)) == 3_880_833
    assert 7 * len(layout.segments) == 203


def test_registry_has_the_four_and_accepts_users():
    assert {"mlp", "dmc", "deepsets", "statnn"} <= set(available_metanets())
    with pytest.raises(UserError, match="unknown metanetwork 'nope'.*statnn"):
        get_metanet("nope")

    @register_metanet("test_linear")
    class Linear(nn.Module):
        permutation_invariant = False

        def __init__(self, layout, hidden=1):
            super().__init__()
            self.lin = nn.Linear(layout.dim, 1)

        def forward(self, x):
            return self.lin(x).squeeze(-1)

    try:
        assert get_metanet("test_linear") is Linear
        layout = ParamLayout([ParamLayout.from_model(nn.Linear(3, 2)).segments[0]])
        x = torch.randn(8, layout.dim)
        split = split_members(range(8), 8, seed=0)
        res = fit("test_linear", layout, x, x[:, 0], split, FitConfig(lr=1e-2, epochs=2))
        assert len(res.history) == 2 and res.n_params == layout.dim + 1
    finally:
        _METANETS.pop("test_linear")


# -- inputs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "dmc", "deepsets", "statnn"])
def test_forward_on_flattened_zoos(name, standard, wasym):
    for model in (standard, wasym):
        layout = ParamLayout.from_model(model)
        x = layout.flatten(synthetic_zoo(model, 3))
        assert x.shape == (3, layout.dim)
        cls = get_metanet(name)
        feats = cls.featurize(x, layout) if hasattr(cls, "featurize") else x
        net = build_metanet(name, layout, seed=1)
        net.train()
        out = net(feats)
        out.sum().backward()
        assert out.shape == (3,) and torch.isfinite(out).all()
        net.eval()
        assert net(feats).shape == (3,)


def test_deepsets_fast_pooling_equals_direct_evaluation():
    """The prefix-sum evaluation is the same function as phi applied to every element."""
    fake = ParamLayout([Segment("w", (5000,), None, 0, 5000, 0)])
    for seed in range(3):
        net = build_metanet("deepsets", fake, seed=seed)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # make every LayerNorm sign pattern likely
            net.phi[1].weight.normal_(generator=g)
            net.phi[1].bias.normal_(generator=g)
            net.phi[0].bias.mul_(4)
        x = torch.randn(5, 5000, generator=g) * (torch.rand(5, 1, generator=g) * 3 + 0.1)
        x[0, :100] = 0.25  # ties
        fast = net(x)
        fast.sum().backward()
        g_fast = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        direct = net.forward_direct(x)
        direct.sum().backward()
        torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)
        for a, b in zip(g_fast, (p.grad for p in net.parameters())):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(net(x[:, torch.randperm(5000, generator=g)]), fast)


def test_fixed_entries_removed(wasym):
    layout = ParamLayout.from_model(wasym)
    trainable = totals(parameter_table(wasym))["trainable"]
    assert layout.dim == trainable < layout.full_dim == 78_042
    assert layout.has_fixed_entries
    state = synthetic_zoo(wasym, 2)
    flat = layout.flatten(state)
    parts = []
    for key in layout.keys:
        v = state[key].reshape(2, -1)
        mask = wasym.state_dict().get(key + "_mask")
        parts.append(v[:, mask.reshape(-1)] if mask is not None and key.endswith("weight") else v)
    assert torch.equal(flat, torch.cat(parts, dim=1))
    assert not any(k.endswith(("_mask", "_fixed")) for k in layout.keys)
    # unflatten puts trainable entries back and keeps fixed ones
    back = layout.unflatten(flat[1], {k: v[0] for k, v in state.items()})
    assert torch.equal(layout.flatten(back, batched=False), flat[1])


def test_sigma_asym_F_dropped():
    model = build(load_spec(SIGMA_RESNET8), init_seed=0)
    layout = ParamLayout.from_model(model)
    assert layout.dim == 78_042 == totals(parameter_table(model))["trainable"]
    f_keys = [k for k in model.state_dict() if "_F." in k]
    assert f_keys and not set(f_keys) & set(layout.keys)
    assert not layout.has_fixed_entries


def test_statnn_features_against_numpy():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    mask = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 0, 1]], dtype=torch.bool)
    net[0].register_buffer("weight_mask", mask)
    layout = ParamLayout.from_model(net)
    assert layout.keys == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [s.size for s in layout.segments] == [9, 3, 3, 1]
    gen = torch.Generator().manual_seed(3)
    state = {k: torch.randn(2, *v.shape, generator=gen) for k, v in net.state_dict().items()
             if k in layout.keys}
    feats = statistics(layout.flatten(state), layout).numpy()
    assert feats.shape == (2, 28)
    for m in range(2):
        want = []
        for key in layout.keys:
            v = state[key][m].numpy()
            v = v[mask.numpy()] if key == "0.weight" else v.reshape(-1)
            var = np.var(v, ddof=1) if v.size > 1 else 0.0
            want += [v.mean(), var, v.min(), v.max(), *np.quantile(v, [0.25, 0.5, 0.75])]
        np.testing.assert_allclose(feats[m], np.array(want), rtol=1e-5, atol=1e-6)


def test_statnn_wholly_fixed_tensor_gives_zeros():
    net = nn.Linear(2, 2)
    net.register_buffer("weight_mask", torch.zeros(2, 2, dtype=torch.bool))
    layout = ParamLayout.from_model(net)
    flat = layout.flatten({"weight": torch.randn(3, 2, 2), "bias": torch.randn(3, 2)})
    assert flat.shape == (3, 2)
    assert torch.equal(statistics(flat, layout)[:, :7], torch.zeros(3, 7))


# -- metrics ---------------------------------------------------------------------------------

def _tau_b_bruteforce(x, y):
    n = len(x)
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx == dy:
                conc += 1
            else:
                disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


def test_r2_and_tau_against_sklearn_and_definition():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(0)
    y = rng.random(40)
    p = y + 0.3 * rng.standard_normal(40)
    assert r2(torch.tensor(p), torch.tensor(y)) == pytest.approx(r2_score(y, p), abs=1e-12)
    assert r2(np.full(5, 0.5), np.full(5, 0.5)) == r2_score(np.full(5, 0.5), np.full(5, 0.5))
    yt, pt = np.round(y * 5) / 5, np.round(p * 4) / 4  # with ties: tau-b
    assert kendall_tau(pt, yt) == pytest.approx(_tau_b_bruteforce(pt, yt), abs=1e-12)
    assert math.isnan(r2(np.array([np.nan, 1.0]), np.array([0.0, 1.0])))
    assert math.isnan(kendall_tau(np.array([np.inf, 1.0, 2.0]), np.array([0.0, 1.0, 2.0])))


# -- splits ----------------------------------------------------------------------------------

def test_split_seeded_shuffled_disjoint_and_paired():
    s = split_members(range(100), 100, seed=5)
    assert s.sizes() == {"train": 50, "val": 25, "test": 25}
    allpos = torch.cat([s.train, s.val, s.test]).sort().values
    assert torch.equal(allpos, torch.arange(100))
    assert torch.equal(split_members(range(100), 100, seed=5).test, s.test)
    assert not torch.equal(split_members(range(100), 100, seed=6).test, s.test)
    assert not torch.equal(s.train, torch.arange(50))  # shuffled
    # a variant missing member 7 (diverged) keeps every other row in the same part
    kept = [i for i in range(100) if i != 7]
    s2 = split_members(kept, 100, seed=5)
    rows = torch.tensor(kept)
    want = set(s.test.tolist()) - {7}
    assert set(rows[s2.test].tolist()) == want
    c = split_members(range(8), 8, seed=0, mode="contiguous")
    assert c.train.tolist() == [0, 1, 2, 3] and c.test.tolist() == [6, 7]


# -- symmetry remedies -----------------------------------------------------------------------

def test_permutation_augmentation_preserves_function(standard):
    model = build(load_spec(SPECS / "resnet8_zoo.yaml"), init_seed=3)
    model.eval()
    layout = ParamLayout.from_model(model)
    permuter = FlatPermuter(model, layout)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    flat = layout.flatten(base, batched=False)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    idx = permuter.sample_batch(3, torch.Generator().manual_seed(1))
    for row in idx:
        moved = flat[row]
        assert not torch.equal(moved, flat)  # really permuted
        model.load_state_dict(layout.unflatten(moved, base))
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)
    model.load_state_dict(base)
    # NodeSort gives one representative per orbit
    canon = canonicalize_flat(model, torch.stack([flat, flat[idx[0]]]), layout)
    assert torch.equal(canon[0], canon[1])


def test_permuter_refuses_wasym(wasym):
    with pytest.raises(UserError, match="W-Asym"):
        FlatPermuter(wasym)


# -- training --------------------------------------------------------------------------------

def test_fit_learns_and_is_deterministic():
    """StatNN on a synthetic zoo whose target is a function of the weights' spread."""
    net = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1))
    layout = ParamLayout.from_model(net)
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(160, generator=g) + 0.2
    x = torch.randn(160, layout.dim, generator=g) * scale[:, None]
    y = 0.3 + 0.5 * (scale - 0.2)
    split = split_members(range(160), 160, seed=0)
    cfg = FitConfig(lr=5e-3, epochs=20, batch_size=32, seed=1, options={"hidden": 32})
    a = fit("statnn", layout, x, y, split, cfg)
    b = fit("statnn", layout, x, y, split, cfg)
    assert a.test["r2"] > 0.5 and a.test["tau"] > 0.5  # (0.81 / 0.73 measured)
    assert a.history == b.history and a.test_pred == b.test_pred
    assert a.best_epoch == max(a.history, key=lambda h: h["val_r2"])["epoch"]
    assert len(a.test_pred) == len(split.test)
    c = fit("statnn", layout, x, y, split, FitConfig(lr=5e-3, epochs=2, batch_size=32, seed=2,
                                                    options={"hidden": 32}))
    assert c.history[0] != a.history[0]


def test_fit_with_augmentation_runs(standard):
    layout = ParamLayout.from_model(standard)
    permuter = FlatPermuter(standard, layout)
    x = layout.flatten(synthetic_zoo(standard, 12, seed=4))
    y = torch.linspace(0.1, 0.9, 12)
    split = split_members(range(12), 12, seed=0)
    res = fit("mlp", layout, x, y, split, FitConfig(lr=1e-3, epochs=2, batch_size=4),
              permuter=permuter)
    assert res.best_epoch in (1, 2) and len(res.history) == 2
