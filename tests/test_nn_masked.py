"""Masked / noisy / frozen layers: the fast eager path against the reference formula, and the
frozen-entry invariants under optimizers, weight decay, sharing, torch.func and layout changes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

import asymspec
from asymspec.nn.masked import MaskedWeightMixin
from asymspec.seeding import generator
from tests.data.make_emit_checkpoints import specs

SPECS = specs()  # tiny models covering every layer kind (masked, filters, syre, F, shared...)


def _layers(model: torch.nn.Module) -> list[MaskedWeightMixin]:
    return [m for m in model.modules() if isinstance(m, MaskedWeightMixin)]


def _drift(model: torch.nn.Module, seed: str) -> None:
    """Move every raw trainable entry, frozen positions included (as weight decay does)."""
    g = generator("drift", seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _reference(model, inputs):
    """Output and parameter gradients through the ``where`` formula: functional_call with
    plain (non-Parameter) tensors never takes the fast path."""
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    out = functional_call(model, {**params, **buffers}, tuple(inputs))
    out.square().mean().backward()
    return out.detach(), {k: v.grad for k, v in params.items()}


def _fast(model, inputs):
    model.zero_grad(set_to_none=True)
    out = model(*inputs)
    out.square().mean().backward()
    return out.detach(), {k: v.grad for k, v in model.named_parameters()}


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Run under 1 and 2 torch threads: the CPU scatter takes a numpy path on one thread and
    ``put_`` (split over threads) on more."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.fixture(params=[False, True], ids=["default", "deterministic"])
def deterministic(request):
    """Also under ``torch.use_deterministic_algorithms(True)``, which refuses ``put_``."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(request.param)
    yield request.param
    torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("key", sorted(SPECS))
def test_fast_path_is_bit_identical_to_reference(key: str, threads: int,
                                                 deterministic: bool) -> None:
    ir = asymspec.compile_ir(SPECS[key])
    model = asymspec.nn.emit(ir, 1)
    _drift(model, key)
    inputs = asymspec.example_inputs(ir, batch=5)
    ref_out, ref_grads = _reference(model, inputs)
    out, grads = _fast(model, inputs)
    assert torch.equal(out, ref_out)
    for k in ref_grads:
        assert torch.equal(grads[k], ref_grads[k]), k
    for m in _layers(model):
        if m.weight_mask is not None:
            assert (m.weight.grad[~m.weight_mask] == 0).all()
            assert torch.equal(m.weight.detach()[~m.weight_mask],
                               m.weight_fixed[~m.weight_mask])  # written back for forward


def _muon_like(params, lr=0.05):
    """An 'optimizer' that moves every entry whatever its gradient (orthogonalised updates,
    preconditioners and decays all do): frozen entries must still not move."""
    g = generator("muon-like")

    class Opt:
        def zero_grad(self):
            for p in params:
                p.grad = None

        def step(self):
            with torch.no_grad():
                for p in params:
                    p.add_(torch.randn(p.shape, generator=g) * lr)
    return Opt()


def _data_decay(params, rate=0.9):
    """Old-style code outside torch.optim: decays through ``.data`` (no version bump, no
    optimizer step hook) — the CPU sentinels must catch it."""
    class Opt:
        def zero_grad(self):
            for p in params:
                p.grad = None

        def step(self):
            for p in params:
                p.data.mul_(rate).add_(p.grad, alpha=-0.01)
    return Opt()


class _DataSGD(torch.optim.Optimizer):
    """A torch.optim subclass writing through ``.data`` (bumps no version): the global
    optimizer-step counter must catch it."""

    def __init__(self, params):
        super().__init__(params, {"lr": 0.05})

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.data.mul_(0.7).add_(p.grad, alpha=-group["lr"])


OPTIMIZERS = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.5),
    "adamw_fused": lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.5, fused=True),
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.5),
    "data_sgd": _DataSGD,
    "data_decay": _data_decay,
    "adam_l2": lambda ps: torch.optim.Adam(ps, lr=0.05, weight_decay=0.5),
    "sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                               weight_decay=0.5),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=0.01, weight_decay=0.5),
    "muon_like": _muon_like,
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("key", sorted(SPECS))
def test_frozen_entries_exactly_fixed_under_optimizers(key: str, opt_name: str,
                                                      threads: int) -> None:
    ir = asymspec.compile_ir(SPECS[key])
    model = asymspec.nn.emit(ir, 2)
    layers = _layers(model)
    buffers = {k: v.clone() for k, v in model.named_buffers()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    eff0 = [m.effective_weight().detach().clone() for m in layers]
    raw0 = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = OPTIMIZERS[opt_name](list(model.parameters()))
    for step in range(4):
        opt.zero_grad()
        model(*asymspec.example_inputs(ir, batch=6, seed=step)).square().mean().backward()
        for m in layers:
            if m.weight_mask is not None:
                assert (m.weight.grad[~m.weight_mask] == 0).all()
        opt.step()
    model(*asymspec.example_inputs(ir, batch=2))  # a forward after the last step
    for k, v in model.named_buffers():  # masks, fixed values, noise, F, fixed biases
        if k in buffers:
            assert torch.equal(v, buffers[k]), k
    for m, e0 in zip(layers, eff0):
        eff = m.effective_weight().detach()
        if m.weight_mask is not None:
            frozen = ~m.weight_mask
            assert torch.equal(eff[frozen], e0[frozen])
            assert torch.equal(m.weight.detach()[frozen], m.weight_fixed[frozen])
        if m.frozen:
            assert torch.equal(eff, e0)
    assert any(not torch.equal(p.detach(), raw0[k]) for k, p in model.named_parameters())


def test_two_forwards_before_one_backward_and_shared_weights() -> None:
    """The in-place write-back never bumps autograd versions: graphs built before it stay
    valid (sharing re-uses the owner's weight twice in one forward)."""
    ir = asymspec.compile_ir(SPECS["siamese_wasym"])
    model = asymspec.nn.emit(ir, 3)
    _drift(model, "twice")
    a, b = asymspec.example_inputs(ir, batch=4, seed=1), asymspec.example_inputs(ir, seed=2)
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    bufs = dict(model.named_buffers())
    ref = (functional_call(model, {**params, **bufs}, a).sum()
           + functional_call(model, {**params, **bufs}, b).square().sum())
    ref.backward()
    loss = model(*a).sum() + model(*b).square().sum()
    loss.backward()
    assert torch.equal(loss.detach(), ref.detach())
    for k, p in model.named_parameters():
        assert torch.equal(p.grad, params[k].grad), k
    enc = model.get_submodule("enc")
    assert (enc.weight.grad[~enc.weight_mask] == 0).all()


def test_vmap_over_stacked_state_with_masked_layers() -> None:
    """The zoo's pattern: one model, a stacked state dict, vmap(functional_call)."""
    ir = asymspec.compile_ir(SPECS["mlp_all"])
    members = [asymspec.nn.emit(ir, s) for s in range(3)]
    _drift(members[1], "vmap")  # a member whose raw frozen entries are not the fixed ones
    params, buffers = stack_module_state(members)
    (x,) = asymspec.example_inputs(ir, batch=4)
    base = copy.deepcopy(members[0]).to("meta")
    outs = vmap(lambda p, b: functional_call(base, {**p, **b}, (x,)))(params, buffers)
    for i, m in enumerate(members):
        assert torch.allclose(outs[i], m(x), atol=1e-6, rtol=1e-5)
    # gradients through the stacked state are zero at frozen positions
    grads = torch.func.grad(lambda p: vmap(
        lambda pp, b: functional_call(base, {**pp, **b}, (x,)))(p, buffers).sum())(params)
    mask = members[0].fc1.weight_mask
    assert (grads["fc1.weight"][:, ~mask] == 0).all()


def test_functional_call_leaves_the_callers_tensors_alone() -> None:
    ir = asymspec.compile_ir(SPECS["mlp_all"])
    a, b = asymspec.nn.emit(ir, 0), asymspec.nn.emit(ir, 1)
    sa, sb = a.state_dict(), b.state_dict()
    mid = {k: (sa[k] + sb[k]) / 2 if sa[k].is_floating_point() else sa[k] for k in sa}
    before = {k: v.clone() for k, v in mid.items()}
    (x,) = asymspec.example_inputs(ir)
    out = functional_call(a, mid, (x,))
    for k in mid:
        assert torch.equal(mid[k], before[k]), k
    c = asymspec.nn.emit(ir, 2)
    c.load_state_dict(mid)
    assert torch.equal(c(x), out)


def test_buffer_changes_and_dtype_changes_are_seen() -> None:
    """Loading other masks (another asymmetry seed) or casting must not reuse stale frozen
    positions or values."""
    spec = SPECS["resnet_syre"]
    ir = asymspec.compile_ir(spec)
    model = asymspec.nn.emit(ir, 0)
    (x,) = asymspec.example_inputs(ir)
    model(x)  # fills the frozen-position caches
    other = asymspec.build({**spec, "asymmetry": {**spec["asymmetry"], "seed": 99}})
    assert not torch.equal(other.conv1.weight_mask, model.conv1.weight_mask)
    model.load_state_dict(other.state_dict())
    assert torch.equal(model(x), _reference(other, (x,))[0])
    model.double()
    ref, _ = _reference(model, (x.double(),))
    assert torch.equal(model(x.double()), ref)


def test_channels_last_convolutions(threads: int) -> None:
    ir = asymspec.compile_ir(SPECS["cnn_filters"])
    model = asymspec.nn.emit(ir, 4).to(memory_format=torch.channels_last)
    _drift(model, "cl")
    (x,) = asymspec.example_inputs(ir, batch=3)
    x = x.to(memory_format=torch.channels_last)
    ref_out, ref_grads = _reference(model, (x,))
    out, grads = _fast(model, (x,))
    assert torch.allclose(out, ref_out, atol=1e-6)
    conv = model.get_submodule("conv1")
    assert not conv.weight.is_contiguous()
    assert (conv.weight.grad[~conv.weight_mask] == 0).all()
    for k in ref_grads:
        assert torch.allclose(grads[k], ref_grads[k], atol=1e-6), k


def test_frozen_pointwise_conv_matches_conv2d() -> None:
    """FiGLU's F on feature maps runs as a matmul over channels; same function as conv2d."""
    from asymspec.nn import AsymConv2d

    g = generator("pointwise")
    f = torch.randn(6, 4, 1, 1, generator=g)
    layer = AsymConv2d(4, 6, 1, 1, 0, None, torch.zeros(6, 4, 1, 1, dtype=torch.bool), f,
                       None, g)
    x = torch.randn(3, 4, 5, 5, generator=g, requires_grad=True)
    out = layer(x)
    ref = torch.nn.functional.conv2d(x, f)
    assert torch.allclose(out, ref, atol=1e-6)
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    (rx,) = torch.autograd.grad(ref.square().sum(), x)
    assert torch.allclose(gx, rx, atol=1e-5)
    cl = x.detach().to(memory_format=torch.channels_last)  # falls back to conv2d
    assert torch.allclose(layer(cl), ref, atol=1e-6)


def test_double_backward_matches_reference(threads: int) -> None:
    """Gradient penalties (create_graph=True) through the fast path equal the reference."""
    from asymspec.nn.masked import fast_path

    ir = asymspec.compile_ir(SPECS["mlp_all"])
    grads = []
    for fast in (True, False):
        model = asymspec.nn.emit(ir, 0)
        (x,) = asymspec.example_inputs(ir)
        with fast_path(fast):
            loss = model(x).square().mean()
            first = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
            sum(g.square().sum() for g in first).backward()
        assert (model.fc1.weight.grad[~model.fc1.weight_mask] == 0).all()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_plain_user_loop_keeps_frozen_entries_on_every_forward(threads: int) -> None:
    """A user's loop (no trainer): after every step of AdamW / SGD with weight decay the next
    forward equals the reference formula, frozen entries equal their constants, and the
    raw weights between steps really drift (so the write is exercised, not vacuous)."""
    from asymspec.nn.masked import fast_path

    ir = asymspec.compile_ir(SPECS["mlp_all"])
    for make in (lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.3),
                 lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.3)):
        model = asymspec.nn.emit(ir, 5)
        opt = make(model.parameters())
        fc1 = model.fc1
        frozen = ~fc1.weight_mask
        for step in range(3):
            inputs = asymspec.example_inputs(ir, batch=4, seed=step)
            loss = model(*inputs).square().mean()
            assert torch.equal(fc1.weight.detach()[frozen], fc1.weight_fixed[frozen])
            opt.zero_grad()
            loss.backward()
            assert (fc1.weight.grad[frozen] == 0).all()
            opt.step()
            assert not torch.equal(fc1.weight.detach()[frozen], fc1.weight_fixed[frozen])
            with torch.no_grad(), fast_path(False):
                ref = model(*inputs)
            with torch.no_grad():
                assert torch.equal(model(*inputs), ref)


def test_unchanged_weights_are_not_rewritten_and_refresh_forces_a_write() -> None:
    """The write is skipped while nothing could have moved the weight; a ``.data`` edit of a
    single frozen entry that is not a sentinel is the one change only :func:`refresh` sees."""
    from asymspec.nn.masked import refresh

    ir = asymspec.compile_ir(SPECS["mlp_all"])
    model = asymspec.nn.emit(ir, 6)
    (x,) = asymspec.example_inputs(ir, batch=3)
    expected = model(x).detach()
    fc1 = model.fc1
    frozen = fc1._frozen_index(fc1.weight)
    watched = {frozen.sentinels[0], frozen.sentinels[2]}
    pos = next(int(i) for i in frozen.index if int(i) not in watched)
    fc1.weight.data.view(-1)[pos] += 1.0  # through .data: no version bump, no optimizer
    assert not torch.equal(model(x), expected)  # skipped: documented limitation
    refresh(model)
    assert torch.equal(model(x), expected)
    fc1.weight.data.mul_(0.5)  # a .data decay moves the sentinels: written without refresh
    ref, _ = _reference(model, (x,))
    assert torch.equal(model(x), ref)


def test_copies_rebuild_their_caches() -> None:
    """deepcopy / pickle carry no cached positions or views of the original's memory."""
    import pickle

    ir = asymspec.compile_ir(SPECS["mlp_all"])
    model = asymspec.nn.emit(ir, 7)
    (x,) = asymspec.example_inputs(ir, batch=3)
    model(x)
    assert model.fc1._written is not None
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin.fc1._written is None and twin.fc1._frozen_cache is None
        _drift(twin, "twin")
        ref, _ = _reference(twin, (x,))
        assert torch.equal(twin(x), ref)
    assert torch.equal(model(x), _reference(model, (x,))[0])  # the original is untouched
