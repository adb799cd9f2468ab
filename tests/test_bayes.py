"""ELRG posteriors (asymspec.bayes): KL, noise, frozen entries, prediction, gradients, ECE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import LowRankMultivariateNormal, Normal, kl_divergence

from asymspec.bayes import (
    ELRGConfig,
    elrg,
    expected_calibration_error,
    init_means,
    lowrank_gaussian_kl,
    prior_logvar,
)
from asymspec.errors import UserError
from asymspec.nn.masked import AsymConv2d, AsymLinear
from asymspec.seeding import generator

torch.set_num_threads(1)


def _randomise(vm, seed: int = 0) -> None:
    """Give every posterior non-trivial factors and (learnt) diagonals."""
    g = generator("test-randomise", seed)
    with torch.no_grad():
        for p in vm.posteriors.values():
            p.factors.copy_(torch.randn(p.factors.shape, generator=g) * 0.3)
            p.logvar.copy_(torch.randn(p.logvar.shape, generator=g) * 0.5 - 2)
            if p.random_bias:
                p.bias_factors.copy_(torch.randn(p.bias_factors.shape, generator=g) * 0.3)
                p.bias_logvar.copy_(torch.randn(p.bias_logvar.shape, generator=g) * 0.5 - 2)


def _masked_linear(n_in=5, n_out=4, nfix=2, bias="trainable", seed=0) -> AsymLinear:
    g = generator("test-mask", seed)
    mask = torch.ones(n_out, n_in, dtype=torch.bool)
    for o in range(n_out):
        mask[o, torch.randperm(n_in, generator=g)[:nfix]] = False
    fixed = torch.randn(n_out, n_in, generator=g) * 0.5 * (~mask)
    return AsymLinear(n_in, n_out, bias, mask, fixed, None, g)


def _masked_conv(c_in=3, c_out=4, k=3, nfix=5, seed=0) -> AsymConv2d:
    g = generator("test-mask-conv", seed)
    mask = torch.ones(c_out, c_in * k * k, dtype=torch.bool)
    for o in range(c_out):
        mask[o, torch.randperm(c_in * k * k, generator=g)[:nfix]] = False
    mask = mask.reshape(c_out, c_in, k, k)
    fixed = torch.randn(mask.shape, generator=g) * 0.5 * (~mask)
    return AsymConv2d(c_in, c_out, k, 1, 1, "trainable", mask, fixed, None, g)


def _reference_kl(mu, logvar, factors, alpha, prior_lv):
    q = LowRankMultivariateNormal(mu, math.sqrt(alpha) * factors.T, logvar.exp())
    d = mu.numel()
    p = LowRankMultivariateNormal(torch.zeros(d, dtype=mu.dtype), torch.zeros(d, 1,
                                  dtype=mu.dtype), torch.full((d,), math.exp(prior_lv),
                                                              dtype=mu.dtype))
    kl_lowrank = kl_divergence(q, p)
    # the same through entropy + cross-entropy against the factorised Normal prior
    prior = Normal(0.0, math.exp(prior_lv / 2))
    cross = -(prior.log_prob(mu) - 0.5 * q.variance / prior.variance).sum()
    return kl_lowrank, cross - q.entropy()


@pytest.mark.parametrize("layer_kind", ["linear", "conv", "masked_linear", "masked_conv"])
def test_kl_matches_torch_distributions(layer_kind: str) -> None:
    torch.manual_seed(0)
    layer = {"linear": lambda: nn.Linear(6, 3),
             "conv": lambda: nn.Conv2d(2, 3, 3, padding=1),
             "masked_linear": lambda: _masked_linear(),
             "masked_conv": lambda: _masked_conv(c_in=2, c_out=3)}[layer_kind]()
    vm = elrg(nn.Sequential(layer).double(), rank=3, learn_diag=True, prior_precision=0.7,
              conv_factor_init="scaled")
    _randomise(vm)
    vm.double()
    post = vm.posteriors["0"]
    free = post.free if post.free is not None else torch.ones_like(post.logvar, dtype=torch.bool)
    w = post.mean_weight().detach()
    mu = torch.cat([w[free], layer.bias.detach()])
    lv = torch.cat([post.logvar.detach()[free], post.bias_logvar.detach()])
    fac = torch.cat([post.factors.detach()[:, free], post.bias_factors.detach()], dim=1)
    ref1, ref2 = _reference_kl(mu, lv, fac, 1 / 3, post.prior_logvar)
    ours = post.kl().detach()
    assert torch.allclose(ours, ref1, rtol=1e-9), (ours, ref1)
    assert torch.allclose(ours, ref2, rtol=1e-7), (ours, ref2)


def test_prior_scaling_rules() -> None:
    # default: fan-in for every layer; reference: linear out-features, conv in-channels
    assert prior_logvar((10, 256), 0.01, "in") == pytest.approx(-math.log(0.01 * 256))
    assert prior_logvar((10, 256), 0.01, "reference") == pytest.approx(-math.log(0.01 * 10))
    assert prior_logvar((32, 16, 3, 3), 1.0, "in") == pytest.approx(-math.log(16 * 9))
    assert prior_logvar((32, 16, 3, 3), 1.0, "reference") == pytest.approx(-math.log(16))
    assert prior_logvar((32, 16, 3, 3), 1.0, "none") == 0.0


def test_sampled_weights_equal_fixed_values_exactly() -> None:
    for layer in (_masked_linear(), _masked_conv()):
        vm = elrg(nn.Sequential(layer), rank=4, learn_diag=True, conv_factor_init="scaled")
        _randomise(vm)
        post = vm.posteriors["0"]
        g = torch.Generator().manual_seed(3)
        for _ in range(5):
            w, _ = post.sample_weight(g)
            fixed = ~layer.weight_mask
            assert torch.equal(w[fixed], layer.weight_fixed[fixed])
            assert (w[~fixed] != layer.weight.detach()[~fixed]).all()


def test_forward_noise_never_reaches_fixed_conv_entries() -> None:
    """A delta input isolates single conv taps: where the tap is frozen the noisy output equals
    the mean exactly (the reference's factor re-indexing would leak variance here)."""
    conv = _masked_conv(c_in=3, c_out=4, k=3, nfix=5)
    conv.bias = None
    vm = elrg(nn.Sequential(conv), rank=4, learn_diag=True, conv_factor_init="scaled")
    _randomise(vm)
    for c in range(3):
        x = torch.zeros(1, 3, 5, 5)
        x[0, c, 2, 2] = 1.0
        with vm.mean_only():
            mean = vm(x)
        noisy = vm(x)
        for o in range(4):
            for kh in range(3):
                for kw in range(3):
                    i, j = 2 - kh + 1, 2 - kw + 1
                    same = bool(noisy[0, o, i, j] == mean[0, o, i, j])
                    assert same == (not bool(conv.weight_mask[o, c, kh, kw]))


def test_forward_noise_never_reaches_fixed_linear_entries() -> None:
    lin = _masked_linear(n_in=6, n_out=5, nfix=2, bias=None)
    vm = elrg(nn.Sequential(lin), rank=4, learn_diag=True)
    _randomise(vm)
    x = torch.eye(6)
    with vm.mean_only():
        mean = vm(x)
    noisy = vm(x)
    assert torch.equal(noisy == mean, ~lin.weight_mask.T)


def test_lowrank_noise_has_the_posterior_covariance() -> None:
    """Output covariance of a linear layer over many draws = x-projected posterior covariance:
    diag(sum_j x_j^2 var_oj + var_b) + alpha sum_k (V_k x + vb_k)(V_k x + vb_k)^T."""
    lin = nn.Linear(4, 3)
    vm = elrg(nn.Sequential(lin).double(), rank=2, learn_diag=True)
    _randomise(vm)
    vm.double()
    post = vm.posteriors["0"]
    x = torch.tensor([[0.5, -1.0, 2.0, 0.3]], dtype=torch.float64)
    n = 40000
    with torch.no_grad(), vm.mean_only():
        mean = vm(x)
    with torch.no_grad():
        outs = vm(x.expand(n, 4)) - mean
    emp = outs.T @ outs / n
    v = post.factors.detach() @ x[0] + post.bias_factors.detach()  # (r, out)
    diag = post.logvar.exp().detach() @ (x[0] ** 2) + post.bias_logvar.exp().detach()
    expected = torch.diag(diag) + 0.5 * v.T @ v
    assert torch.allclose(emp, expected, atol=0.05 * float(expected.abs().max()))


def test_predict_one_sample_zero_variance_is_the_deterministic_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(1, 4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    vm = elrg(model, rank=2, conv_factor_init="scaled")
    with torch.no_grad():
        for p in vm.posteriors.values():
            p.factors.zero_()
            p.bias_factors.zero_()
            p.logvar.fill_(-math.inf)
            p.bias_logvar.fill_(-math.inf)
    x = torch.randn(7, 3, 6, 6)
    assert torch.equal(vm.predict(x, samples=1), F.log_softmax(model(x), -1).detach())


def test_predict_is_a_mean_of_probabilities_and_deterministic() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(4, 5)
    a = elrg(model, rank=2, q_init_logvar=-1.0).manual_seed(5)
    lp = a.predict(x, samples=6)
    a.manual_seed(5)
    with torch.no_grad():  # the tiled batch: one independent draw per copy
        probs = F.softmax(a(x.repeat(6, 1)), -1).reshape(6, 4, 3)
    assert torch.allclose(lp.exp(), probs.mean(0), atol=1e-6)
    assert not torch.allclose(probs[0], probs[1])  # the copies really differ
    a.manual_seed(5)
    assert torch.equal(a.predict(x, samples=6), lp)
    chunked = a.predict(x, samples=6, max_batch=8)  # 3 chunks of 2 samples
    assert torch.allclose(chunked.exp().sum(-1), torch.ones(4))


def test_ece_matches_a_hand_computed_case() -> None:
    # confidences .95 (right), .70 (wrong), .62 (right), .64 (wrong); 15 equal-width bins:
    # .95 and .70 are alone in their bins, .62 and .64 share bin [.6, .667).
    probs = torch.tensor([[0.95, 0.05], [0.30, 0.70], [0.62, 0.38], [0.36, 0.64]])
    target = torch.tensor([0, 0, 0, 0])
    expected = (abs(1 - 0.95) + abs(0 - 0.70) + 2 * abs(0.5 - 0.63)) / 4
    assert expected_calibration_error(probs, target) == pytest.approx(expected, abs=1e-6)


def test_elbo_gradient_reaches_means_and_factors_only() -> None:
    lin = _masked_linear(n_in=6, n_out=5, nfix=2)
    model = nn.Sequential(lin, nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 3))
    vm = elrg(model, rank=2)
    _randomise(vm)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    terms = vm.neg_elbo(x, y, n_eff=100.0)
    terms.loss.backward()
    post = vm.posteriors["0"]
    assert not post.logvar.requires_grad and post.logvar.grad is None  # fixed diagonal
    named = dict(vm.named_parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in named.values()), \
        [n for n, p in named.items() if p.grad is None or p.grad.abs().sum() == 0]
    fixed = ~lin.weight_mask
    assert torch.equal(lin.weight.grad[fixed], torch.zeros(int(fixed.sum())))
    assert torch.equal(post.factors.grad[:, fixed], torch.zeros(2, int(fixed.sum())))
    assert set(named) == {n for n, p in vm.named_parameters() if p.requires_grad}
    assert torch.allclose(terms.loss, terms.nll + terms.kl / 100.0)


def test_frozen_layers_and_norms_stay_point_estimates() -> None:
    g = generator("frozen")
    frozen = AsymLinear(4, 4, None, torch.zeros(4, 4, dtype=torch.bool), torch.randn(4, 4), None,
                        g)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), frozen, nn.Linear(4, 2))
    vm = elrg(model)
    assert sorted(vm.posteriors) == ["0", "3"]


@pytest.mark.parametrize("kwargs", [{"rank": 0}, {"prior_precision": -1.0},
                                    {"prior_precision": 0.0}, {"prior_fan": "out"},
                                    {"conv_factor_init": "ones"}])
def test_bad_settings_raise_user_errors(kwargs) -> None:
    with pytest.raises(UserError):
        elrg(nn.Linear(3, 2), **kwargs)
    with pytest.raises(UserError):
        ELRGConfig(**kwargs)


def test_dense_kl_function_matches_torch_distributions() -> None:
    g = generator("dense-kl")
    mu = torch.randn(9, generator=g, dtype=torch.float64)
    lv = torch.randn(9, generator=g, dtype=torch.float64) - 1
    fac = torch.randn(2, 9, generator=g, dtype=torch.float64)
    ref, _ = _reference_kl(mu, lv, fac, 0.5, -0.3)
    assert torch.allclose(lowrank_gaussian_kl(mu, lv, fac, 0.5, -0.3), ref, rtol=1e-9)


def test_init_means_redraws_free_entries_only() -> None:
    lin = _masked_linear(n_in=50, n_out=40, nfix=5)
    before = lin.effective_weight().detach().clone()
    init_means(nn.Sequential(lin), "kaiming_normal", seed=1)
    after = lin.effective_weight().detach()
    fixed = ~lin.weight_mask
    assert torch.equal(after[fixed], before[fixed])
    assert float(after[~fixed].std()) == pytest.approx(math.sqrt(2 / 50), rel=0.1)
    again = _masked_linear(n_in=50, n_out=40, nfix=5)
    init_means(nn.Sequential(again), "kaiming_normal", seed=1)
    assert torch.equal(again.effective_weight(), lin.effective_weight())  # deterministic


def test_state_dict_round_trip_and_detach() -> None:
    torch.manual_seed(0)

    def make():
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))

    a = elrg(make(), rank=2, conv_factor_init="scaled", seed=1)
    b = elrg(make(), rank=2, conv_factor_init="scaled", seed=2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 1, 6, 6)
    assert torch.equal(a.manual_seed(3).predict(x, 4), b.manual_seed(3).predict(x, 4))
    with pytest.raises(UserError):
        elrg(a.model)  # its layers already carry noise hooks
    plain = a.detach()
    assert torch.equal(plain(x), plain(x))  # no noise left
    elrg(plain)  # and it can be wrapped again
