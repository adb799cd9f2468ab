"""What a metanetwork reads: the trainable entries of a network, flattened in state_dict order.

Lim et al. (2024, §5.3) feed metanetworks the flattened ``state_dict`` with W-Asym's fixed
entries *removed* (they carry no information: the same for every member of a zoo) and σ-Asym's
frozen FiGLU matrices ``F`` dropped.  :class:`ParamLayout` derives this from an emitted model
alone: a ``state_dict`` key is an input when it is a trainable parameter (buffers — masks, fixed
values, ``F``, frozen biases, running statistics — are not); of a masked weight only the entries
with ``weight_mask == True`` are kept.  The layout is therefore the same for every member of a
variant, and :attr:`ParamLayout.dim` equals the trainable count of
:func:`asymspec.paramtable.parameter_table`.

The layout also records one *segment* per parameter tensor (its trainable entries), which
StatNN's per-tensor statistics use, and maps flat vectors back to state dicts
(:meth:`ParamLayout.unflatten`) so permutations can be applied to (and checked on) real networks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Segment:
    """One parameter tensor: its key, shape, trainable-entry mask (None: all) and offsets."""

    key: str
    shape: tuple[int, ...]
    mask: torch.Tensor | None
    start: int  # offset of its first trainable entry in the flat vector
    size: int  # number of trainable entries (0 for a wholly fixed tensor)
    full_start: int  # offset of its first entry among all parameter entries

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class ParamLayout:
    """Which entries of a network's ``state_dict`` a metanetwork sees, in which order."""

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments
        self.dim = sum(s.size for s in segments)
        self.full_dim = sum(s.numel for s in segments)
        keep = [torch.nonzero(s.mask.reshape(-1)).reshape(-1) + s.full_start if s.mask is not None
                else torch.arange(s.full_start, s.full_start + s.numel) for s in segments]
        #: positions of the trainable entries among all parameter entries (length ``dim``)
        self.trainable_index = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.segments]

    @property
    def has_fixed_entries(self) -> bool:
        return self.dim < self.full_dim

    @classmethod
    def from_model(cls, model: nn.Module) -> ParamLayout:
        """The layout of ``model`` (an emitted :class:`~asymspec.nn.model.IRModule` or any
        module whose frozen weight entries are marked by a boolean ``weight_mask`` buffer)."""
        params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        segments: list[Segment] = []
        start = full = 0
        for key, value in model.state_dict(keep_vars=True).items():
            if key not in params:
                continue
            prefix, _, leaf = key.rpartition(".")
            mask = None
            if leaf == "weight":
                owner = model.get_submodule(prefix) if prefix else model
                m = getattr(owner, "weight_mask", None)
                if isinstance(m, torch.Tensor) and m.shape == value.shape:
                    mask = m.detach().to("cpu", torch.bool).clone()
            size = int(mask.sum()) if mask is not None else value.numel()
            segments.append(Segment(key, tuple(value.shape), mask, start, size, full))
            start += size
            full += value.numel()
        return cls(segments)

    def flatten(self, states: Mapping[str, torch.Tensor], batched: bool = True) -> torch.Tensor:
        """``(M, dim)`` trainable entries of stacked states (``(M, *shape)`` per key); with
        ``batched=False`` a single state dict gives ``(dim,)``."""
        parts = []
        for s in self.segments:
            if s.key not in states:
                raise KeyError(f"state has no tensor {s.key!r} (layout keys: "
                               f"{', '.join(self.keys[:4])}, ...)")
            t = states[s.key] if batched else states[s.key].unsqueeze(0)
            t = t.reshape(t.shape[0], -1)
            if s.mask is not None:
                t = t[:, s.mask.reshape(-1).to(t.device)]
            parts.append(t.float())
        out = torch.cat(parts, dim=1)
        return out if batched else out[0]

    def unflatten(self, flat: torch.Tensor, base: Mapping[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
        """A state dict: ``base`` (buffers, fixed entries) with the trainable entries from
        ``flat`` (``(dim,)``)."""
        if flat.shape != (self.dim,):
            raise ValueError(f"expected a flat vector of {self.dim} entries, got "
                             f"{tuple(flat.shape)}")
        out = {k: v.clone() for k, v in base.items()}
        for s in self.segments:
            piece = flat[s.start:s.start + s.size].to(out[s.key].dtype)
            if s.mask is None:
                out[s.key] = piece.reshape(s.shape).clone()
            else:
                t = out[s.key].reshape(-1)
                t[s.mask.reshape(-1)] = piece
                out[s.key] = t.reshape(s.shape)
        return out
