"""The two classic remedies for parameter symmetry, on flat weight vectors.

* :class:`FlatPermuter` — random neuron permutations from the IR's permutation spec
  (:func:`asymspec.ir.permgroups.perm_spec`), as *gather indices* on the flat vector: permuting
  an index-valued copy of the state dict with :func:`~asymspec.ir.permute.permute_state_dict`
  tells where every entry moves, so augmenting a batch is one ``torch.gather``.  Applied to the
  real network, the permuted vector computes the same function (tested).
* :func:`canonicalize_flat` — NodeSort (:mod:`asymspec.align.nodesort`) on every member: one
  representative per permutation orbit.

Both are meant for *standard* networks.  On a W-Asym network the permutation spec still lists
the neuron groups (masks do not fix groups there), but moving the trainable entries while the
fixed ones stay changes the function — exactly the symmetry W-Asym removes — so
:class:`FlatPermuter` refuses layouts with fixed entries.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from asymspec.errors import UserError
from asymspec.ir.permgroups import perm_spec, random_group_perms
from asymspec.ir.permute import permute_state_dict
from asymspec.metanet.inputs import ParamLayout


class FlatPermuter:
    """Random function-preserving permutations of flat vectors of ``model``'s layout."""

    def __init__(self, model: nn.Module, layout: ParamLayout | None = None) -> None:
        self.layout = layout or ParamLayout.from_model(model)
        if self.layout.has_fixed_entries:
            raise UserError("permutation augmentation needs networks without fixed weight "
                            "entries (a W-Asym network is not permutation-symmetric)")
        self.ir = model.ir
        self.spec = perm_spec(self.ir, self.layout.keys)
        self._index_state = {
            s.key: torch.arange(s.full_start, s.full_start + s.numel).reshape(s.shape)
            for s in self.layout.segments}

    @property
    def group_sizes(self) -> dict[str, int]:
        return {g.name: g.size for g in self.spec.free_groups}

    def gather_index(self, perms: Mapping[str, np.ndarray]) -> torch.Tensor:
        """``(dim,)`` index ``idx`` with ``permuted = flat[..., idx]`` for group permutations
        ``perms`` (``perms[g][u]`` = new position of unit ``u``)."""
        moved = permute_state_dict(self.ir, self._index_state,
                                   self.spec.node_perms(self.ir, dict(perms)))
        return torch.cat([moved[s.key].reshape(-1) for s in self.layout.segments])

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """The gather index of one uniformly random permutation of every free group."""
        return self.gather_index(random_group_perms(self.spec, gen))

    def sample_batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``(n, dim)`` gather indices of ``n`` independent random permutations."""
        return torch.stack([self.sample(gen) for _ in range(n)])


def canonicalize_flat(model: nn.Module, flat: torch.Tensor,
                      layout: ParamLayout | None = None) -> torch.Tensor:
    """NodeSort every row of ``flat`` ``(M, dim)`` (networks of ``model``'s architecture)."""
    from asymspec.align.nodesort import canonicalize

    layout = layout or ParamLayout.from_model(model)
    base = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = torch.empty_like(flat)
    for i in range(flat.shape[0]):
        state = layout.unflatten(flat[i].cpu(), base)
        _, canon = canonicalize(model.ir, state)
        out[i] = layout.flatten(canon, batched=False).to(flat.device)
    return out
