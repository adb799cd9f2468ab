"""Members as rows of one flat ``(M, D)`` tensor, and which entries of a model are trainable.

The batched trainer keeps all parameters of a chunk of members in one flat tensor (one leaf for
autograd, one tensor for the optimizer); :meth:`ParamLayout.views` turns rows back into the
``state_dict``-named tensors ``functional_call`` needs, without copying.  Parameters are laid
out in ``state_dict`` order.

Trainable entries: every entry of every ``nn.Parameter``, except the frozen entries of W-Asym
layers (``weight_mask`` False: :mod:`asymspec.nn.masked` replaces them by ``weight_fixed`` in
the forward pass, so their gradient is exactly zero).  Buffers (masks, fixed values, FiGLU's F,
noise) are never trainable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def trainable_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per ``state_dict`` key: a bool tensor of its shape, True where the entry is trained."""
    params = dict(model.named_parameters())
    out = {}
    for key, value in model.state_dict().items():
        if key not in params:
            out[key] = torch.zeros(value.shape, dtype=torch.bool)
            continue
        mask = torch.ones(value.shape, dtype=torch.bool)
        owner, _, leaf = key.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        wm = getattr(module, "weight_mask", None) if leaf == "weight" else None
        if isinstance(wm, torch.Tensor):
            mask = wm.detach().to("cpu", torch.bool).clone()
        out[key] = mask
    return out


@dataclass
class ParamLayout:
    """Where each parameter of a model lives in a flat row of length ``numel``."""

    keys: list[str]
    shapes: list[tuple[int, ...]]
    offsets: list[int]
    numel: int
    trainable: torch.Tensor  # (numel,) bool

    @classmethod
    def of(cls, model: nn.Module) -> ParamLayout:
        params = dict(model.named_parameters())
        masks = trainable_masks(model)
        keys = [k for k in model.state_dict() if k in params]
        shapes = [tuple(params[k].shape) for k in keys]
        offsets, total = [], 0
        for shape in shapes:
            offsets.append(total)
            total += math.prod(shape)
        trainable = (torch.cat([masks[k].reshape(-1) for k in keys]) if keys
                     else torch.zeros(0, dtype=torch.bool))
        return cls(keys, shapes, offsets, total, trainable)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{key: (M, *shape)}`` views of the rows of ``flat`` ``(M, numel)``."""
        m = flat.shape[0]
        return {k: flat[:, o:o + math.prod(s)].view(m, *s)
                for k, s, o in zip(self.keys, self.shapes, self.offsets)}

    def flatten(self, model: nn.Module) -> torch.Tensor:
        """The parameters of ``model`` as one row ``(numel,)`` (a copy, on the model's device)."""
        sd = model.state_dict()
        return torch.cat([sd[k].detach().reshape(-1) for k in self.keys])

    def stack_states(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Contiguous copies of :meth:`views` (what is stored in a shard)."""
        return {k: v.contiguous() for k, v in self.views(flat).items()}

    def from_states(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`stack_states`: ``{key: (M, *shape)}`` -> ``(M, numel)``."""
        m = states[self.keys[0]].shape[0]
        return torch.cat([states[k].reshape(m, -1) for k in self.keys], 1)
