"""Linear and conv layers whose effective weight mixes trainable and frozen entries.

``effective_weight = where(weight_mask, weight, weight_fixed) + weight_offset`` is computed
functionally in every forward pass: no in-place writes to ``.data`` and no gradient hooks, so any
optimizer (weight decay included) leaves frozen entries exactly as they are, and the gradient of
``weight`` at frozen positions is exactly zero.  Masks, fixed values and offsets are persistent
buffers: they travel in ``state_dict`` so two models of one spec interpolate with identical
frozen entries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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

    def effective_weight(self) -> torch.Tensor:
        w = self.weight
        if self.weight_mask is not None:
            w = torch.where(self.weight_mask, w, self.weight_fixed)
        if self.weight_offset is not None:
            w = w + self.weight_offset
        return w


class AsymLinear(MaskedWeightMixin):
    def __init__(self, in_features: int, out_features: int, bias, mask, fixed, offset,
                 gen: torch.Generator) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup_weight((out_features, in_features), bias, mask, fixed, offset, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

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
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding)

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
        w = self.owner.effective_weight()
        if w.dim() == 2:
            return F.linear(x, w, self.owner.bias)
        return F.conv2d(x, w, self.owner.bias, self.stride, self.padding)
