"""Linear and conv layers whose effective weight mixes trainable and frozen entries.

The semantics are ``effective_weight = where(weight_mask, weight, weight_fixed) + weight_offset``
(:meth:`MaskedWeightMixin.effective_weight`, the reference formula): any optimizer (weight decay
included) leaves the frozen entries of the effective weight exactly as they are, and the gradient
of ``weight`` at frozen positions is exactly zero.  Masks, fixed values and offsets are
persistent buffers: they travel in ``state_dict`` so two models of one spec interpolate with
identical frozen entries.

Why forward does not evaluate that formula in eager mode: on a CPU, a ``torch.where`` over the
weight with a boolean mask costs about half of a batch-64 dense layer's forward + backward, and
its backward another full pass.  The fast path instead keeps the frozen entries *written into*
the raw ``weight`` Parameter and uses ``weight`` directly:

* the write is a sparse scatter (``put_``) of the frozen positions only, through ``.data`` so
  autograd's version counters and saved tensors are untouched.  It is done only when the weight
  may have moved since the last write: its version counter or storage changed (every in-place
  update under ``no_grad``, ``copy_``, ``load_state_dict``, ``.to()``), any ``torch.optim``
  optimizer stepped (a global step post-hook counts steps; fused optimizers and optimizers that
  write through ``.data`` bump no version), or, on a CPU, one of two sentinel frozen entries no
  longer holds its fixed value (catches ``.data`` writes outside any optimizer).  Off the CPU
  the write is issued on every forward (one asynchronous kernel; a sentinel read would sync).
  :func:`refresh` forces the next forward to write.
* the identity :class:`_ZeroFrozenGrad` zeroes the gradient at the frozen positions in backward
  (again sparse, in place on the gradient its single consumer just produced), so
  ``.backward()``, ``torch.autograd.grad`` and double backward all see zeros there.

Both paths give bit-identical outputs and gradients.  Whenever writing into ``weight`` would not
be right — ``weight`` is not this module's own leaf Parameter (``torch.func.functional_call``
with other tensors), a ``torch.func`` transform (vmap, grad) is active, or ``torch.compile`` is
tracing (inductor fuses the ``where`` into one kernel anyway) — forward uses the reference
formula.  Between an optimizer step and the next forward the raw ``weight`` may therefore hold
drifted values at frozen positions; they are never used (exactly as before this fast path).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook


class _Frozen(NamedTuple):
    """The frozen entries of a weight in one memory layout (see ``_frozen_index``)."""

    index: torch.Tensor  # flat positions in the layout's memory
    values: torch.Tensor  # their fixed values, in the layout's dtype and device
    zeros: torch.Tensor  # zeros like ``values``: ``put_`` (parallel on a CPU) writes them
    host: tuple | None  # CPU float only: (positions, values) as numpy arrays — on one thread
    #                     numpy's fancy indexing scatters ~1.3x faster than index_fill_
    sentinels: tuple[int, float, int, float] | None  # two watched entries (position, value),
    #                                                  CPU only (module docstring)


class _ZeroFrozenGrad(torch.autograd.Function):
    """Identity on the weight whose backward zeroes the gradient at the frozen positions.

    The incoming gradient is the one the single consumer (``F.linear`` / ``F.conv2d`` / the
    autocast cast) just produced, so zeroing it in place touches nobody else's tensor and costs
    one sparse pass, not a dense ``where``.  (Old-style ``ctx`` Function on purpose: the
    ``setup_context`` style costs ~100 us more per call in eager mode.)
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, layer: MaskedWeightMixin,  # type: ignore[override]
                frozen: _Frozen) -> torch.Tensor:
        ctx.layer, ctx.frozen, ctx.stride, ctx.dtype = layer, frozen, w.stride(), w.dtype
        return w.detach()  # same storage; autograd routes the gradient through backward

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        frozen = ctx.frozen
        if (frozen.host is not None and grad.is_contiguous() and grad.stride() == ctx.stride
                and grad.dtype == ctx.dtype and not grad.requires_grad
                and torch.get_num_threads() == 1):  # the common case, fewest Python steps
            grad.numpy().reshape(-1)[frozen.host[0]] = 0
            return grad, None, None
        flat = _flat_view(grad)
        if flat is None:  # an unusual (overlapping / strided) layout: stay out of place
            grad = grad.contiguous()
            flat = grad.view(-1)
        if grad.stride() != ctx.stride or grad.dtype != ctx.dtype:
            frozen = ctx.layer._frozen_index(grad)
        if _split_over_threads(flat):
            flat.put_(frozen.index, frozen.zeros)
        else:
            flat.index_fill_(0, frozen.index, 0)
        return grad, None, None


def _split_over_threads(flat: torch.Tensor) -> bool:
    """Whether to scatter with ``put_``: on a CPU with more than one thread it splits the
    positions over torch's threads (``index_copy_`` / ``index_fill_`` do not), writing the 32k
    frozen entries of a 784x512 layer in ~36 us against ~78 us; after a two-thread GEMM, whose
    output is spread over both cores' caches, the gap grows.  Not under
    ``torch.use_deterministic_algorithms(True)``, which refuses ``put_`` (the positions are
    distinct, so every path writes the same values)."""
    return (flat.device.type == "cpu" and torch.get_num_threads() > 1
            and not torch.are_deterministic_algorithms_enabled())


def _scatter(flat: torch.Tensor, frozen: _Frozen, values: torch.Tensor) -> None:
    """``flat[frozen.index] = values``."""
    if _split_over_threads(flat):
        flat.put_(frozen.index, values)
    else:
        flat.index_copy_(0, frozen.index, values)


def _flat_view(t: torch.Tensor) -> torch.Tensor | None:
    """A 1-d view over ``t``'s memory when ``t`` is dense (any dimension order), else None."""
    if t.is_contiguous():
        return t.view(-1)
    expected = 1  # dense: strides sorted ascending are the running products of the sizes
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return None
        expected *= size
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


_FAST_PATH = [True]


@contextmanager
def fast_path(enabled: bool) -> Iterator[None]:
    """Turn the eager fast path off (``False``) or on inside a ``with`` block — for benchmarks
    against the reference formula and for debugging; results are identical either way."""
    previous, _FAST_PATH[0] = _FAST_PATH[0], bool(enabled)
    try:
        yield
    finally:
        _FAST_PATH[0] = previous


def _use_fast_path(w: torch.Tensor) -> bool:
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    # type() first: isinstance(w, nn.Parameter) runs Parameter's Python __instancecheck__
    return _FAST_PATH[0] and (type(w) is nn.Parameter or isinstance(w, nn.Parameter)) \
        and w.is_leaf


_STEPS = [0]  # optimizer steps taken in this process, by any torch.optim.Optimizer


def _count_step(optimizer, args, kwargs) -> None:
    _STEPS[0] += 1


_STEP_HOOK = register_optimizer_step_post_hook(_count_step)


def refresh(module: nn.Module) -> None:
    """Make the next forward of every masked layer in ``module`` re-write its frozen entries
    into ``weight`` — needed only after writing a weight through ``.data`` outside a
    ``torch.optim`` optimizer in a way the CPU sentinels might miss (module docstring)."""
    for m in module.modules():
        if isinstance(m, MaskedWeightMixin):
            m._written = None


def _locate(mask: torch.Tensor, fixed: torch.Tensor, like: torch.Tensor) -> _Frozen:
    coords = (~mask).nonzero().t()  # (ndim, n), row-major order
    strides = torch.tensor(like.stride(), dtype=torch.long, device=coords.device)
    index = (coords * strides[:, None]).sum(0)
    values = fixed[tuple(coords)].to(like.dtype)
    host, sentinels = None, None
    if like.device.type == "cpu" and like.dtype in (torch.float32, torch.float64):
        host = (index.numpy(), values.numpy())
        if index.numel():  # the largest fixed value in magnitude (any decay or noise moves
            k, last = int(values.abs().argmax()), index.numel() - 1  # it), the last in memory
            sentinels = (int(index[k]), float(values[k]), int(index[last]), float(values[last]))
    values = values.to(like.device)
    zeros = values.new_zeros(()).expand(values.shape)  # put_'s source; allocates one element
    return _Frozen(index.to(like.device), values, zeros, host, sentinels)


class MaskedWeightMixin(nn.Module):
    """Holds ``weight`` (+ optional ``bias``) and the frozen-entry buffers."""

    def _setup_weight(
        self,
        shape: tuple[int, ...],
        bias,
        mask: torch.Tensor | None,
        fixed: torch.Tensor | None,
        offset: torch.Tensor | None,
        gen: torch.Generator,
    ) -> None:
        fan_in = int(math.prod(shape[1:]))
        bound = 1.0 / math.sqrt(fan_in)  # = PyTorch's default kaiming_uniform(a=sqrt(5)) bound
        init = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        self.frozen = mask is not None and not bool(mask.any())
        if self.frozen:  # nothing trainable (FiGLU's F): the whole weight is a buffer
            self.register_buffer("weight", fixed.clone().float())
            self.weight_mask = None
        else:
            if mask is not None:
                init = torch.where(mask, init, fixed)
                self.register_buffer("weight_mask", mask.clone())
                self.register_buffer("weight_fixed", fixed.clone().float())
            else:
                self.weight_mask = None
            self.weight = nn.Parameter(init)
        if offset is not None:
            self.register_buffer("weight_offset", offset.clone().float())
        else:
            self.weight_offset = None
        b_init = (torch.rand(shape[0], generator=gen) * 2 - 1) * bound
        if isinstance(bias, torch.Tensor):
            self.register_buffer("bias", bias.clone().float())
        elif bias == "trainable":
            self.bias = nn.Parameter(b_init)
        else:
            self.bias = None
        self._frozen_cache: tuple | None = None
        self._written: tuple | None = None

    def effective_weight(self) -> torch.Tensor:
        """The weight forward uses, by the reference formula (differentiable, no side effects)."""
        w = self.weight
        if self.weight_mask is not None:
            w = torch.where(self.weight_mask, w, self.weight_fixed)
        if self.weight_offset is not None:
            w = w + self.weight_offset
        return w

    def forward_weight(self) -> torch.Tensor:
        """The effective weight for a forward pass: equal to :meth:`effective_weight`, same
        gradient, but in eager mode without a dense pass over the weight (module docstring).

        (Parameters and buffers are read from their dicts: ``nn.Module.__getattr__`` costs
        microseconds per lookup, a visible share of a small layer's forward.)"""
        buffers = self._buffers
        w = self._parameters.get("weight")
        if w is None:
            w = buffers["weight"]
        mask = buffers.get("weight_mask")
        if mask is not None:
            frozen = self._write_frozen(w, mask) if _use_fast_path(w) else None
            if frozen is None:
                w = torch.where(mask, w, buffers["weight_fixed"])
            else:
                w = _ZeroFrozenGrad.apply(w, self, frozen)
        offset = buffers.get("weight_offset")
        if offset is not None:
            w = w + offset
        return w

    def _write_frozen(self, w: torch.Tensor, mask: torch.Tensor) -> _Frozen | None:
        """Make the frozen entries of ``w`` hold their fixed values (writing only when they
        may have moved, module docstring); return them, or None when ``w`` cannot be written
        in place (then forward uses the reference formula)."""
        fixed = self._buffers["weight_fixed"]
        done = self._written
        if (done is not None and done[0] is w and done[1] == w._version
                and done[2] == _STEPS[0] and done[3] == w.data_ptr() and done[4] is mask
                and done[5] == mask._version and done[6] is fixed
                and done[7] == fixed._version):
            frozen, host = done[8], done[9]
            s = frozen.sentinels
            if s is None or (host[s[0]] == s[1] and host[s[2]] == s[3]):
                return frozen
        frozen = self._frozen_index(w)
        flat = _flat_view(w.data)
        if flat is None:
            return None
        if frozen.host is not None:
            host = flat.numpy()
            if torch.get_num_threads() == 1:
                host[frozen.host[0]] = frozen.host[1]
            else:
                _scatter(flat, frozen, frozen.values)
            self._written = (w, w._version, _STEPS[0], w.data_ptr(), mask, mask._version,
                             fixed, fixed._version, frozen, host)
        else:  # off the CPU: no cheap host read, so write on every forward
            _scatter(flat, frozen, frozen.values)
        return frozen

    def _frozen_index(self, like: torch.Tensor) -> _Frozen:
        """The frozen entries in ``like``'s memory layout: flat positions and values.

        Cached per layout (the weight and its gradient may differ, e.g. channels-last); the
        cache is dropped when the mask or fixed-value buffer changes identity or version
        (``load_state_dict``, ``.to()``), so in-place buffer updates never see stale positions.
        """
        buffers = self._buffers
        mask, fixed = buffers["weight_mask"], buffers["weight_fixed"]
        key = (mask.data_ptr(), mask._version, fixed.data_ptr(), fixed._version)
        cache = self._frozen_cache
        if cache is None or cache[0] != key:
            cache = self._frozen_cache = (key, {})
        layout = (like.stride(), like.dtype, like.device)
        hit = cache[1].get(layout)
        if hit is None:
            hit = cache[1][layout] = _locate(mask, fixed, like)
        return hit

    def __getstate__(self) -> dict:  # copy.deepcopy, pickle: caches are rebuilt, not copied
        state = dict(super().__getstate__())
        state["_frozen_cache"] = state["_written"] = None
        return state

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half(): drop device-bound caches
        self._frozen_cache = self._written = None
        return super()._apply(fn, recurse)


class AsymLinear(MaskedWeightMixin):
    def __init__(self, in_features: int, out_features: int, bias, mask, fixed, offset,
                 gen: torch.Generator) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup_weight((out_features, in_features), bias, mask, fixed, offset, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.forward_weight(), self.bias)

    def extra_repr(self) -> str:
        kind = "frozen" if self.frozen else ("masked" if self.weight_mask is not None else "")
        return f"{self.in_features} -> {self.out_features}" + (f", {kind}" if kind else "")


class AsymConv2d(MaskedWeightMixin):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 padding: int, bias, mask, fixed, offset, gen: torch.Generator) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self._setup_weight(shape, bias, mask, fixed, offset, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen and self.kernel_size == 1 and self.stride == 1 and self.padding == 0 \
                and x.dim() == 4 and x.is_contiguous():
            return self._pointwise(x)
        return F.conv2d(x, self.forward_weight(), self.bias, self.stride, self.padding)

    def _pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """A frozen 1x1 convolution (FiGLU's F on feature maps) as one batched matmul over
        the channels: no layout reorders, and only the input gradient to compute — about a
        third faster than ``F.conv2d`` for forward + backward at ResNet20 widths on a CPU."""
        b, c, h, w = x.shape
        out = torch.matmul(self.weight.view(self.out_channels, c), x.view(b, c, h * w))
        out = out.view(b, self.out_channels, h, w)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        kind = "frozen" if self.frozen else ("masked" if self.weight_mask is not None else "")
        return (f"{self.in_channels} -> {self.out_channels}, k={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}" + (f", {kind}" if kind else ""))


class SharedDense(nn.Module):
    """A second use of another layer's weight and bias (weight sharing).

    The owner is referenced, not registered, so ``state_dict`` holds the tensors once, under the
    owner's name; gradients from every use accumulate into them.
    """

    def __init__(self, owner: MaskedWeightMixin, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        object.__setattr__(self, "owner", owner)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.owner.forward_weight()
        if w.dim() == 2:
            return F.linear(x, w, self.owner.bias)
        return F.conv2d(x, w, self.owner.bias, self.stride, self.padding)
