"""PCA basis of a layer's inputs: the subspace on which a neuron's function is determined.

Two neurons whose weight rows differ only orthogonally to the data compute the same function
on the data, so every identifiability quantity is measured in the top principal directions:
``U`` (d × k) holds the leading eigenvectors of the centred input covariance, with ``k`` the
smallest count whose cumulative explained-variance ratio reaches the threshold (0.9 in the
paper; ``searchsorted`` on the cumulative ratio, inclusive).  Using the covariance (not an SVD
of the samples) gives the same subspace and lets recording stream (:mod:`.points`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asymspec.errors import UserError


@dataclass
class PCABasis:
    U: torch.Tensor  # (d, k), orthonormal columns, float64
    k: int
    d: int
    explained: float  # cumulative explained-variance ratio of the k directions
    ratios: torch.Tensor  # (d,) explained-variance ratio of every direction, descending


def pca_basis(cov: torch.Tensor, explained_variance: float = 0.9) -> PCABasis:
    """Smallest-``k`` principal basis of the covariance ``cov`` reaching ``explained_variance``."""
    if not 0 < explained_variance <= 1:
        raise UserError(f"explained_variance must be in (0, 1], got {explained_variance}")
    cov = cov.double()
    d = cov.shape[0]
    evals, evecs = torch.linalg.eigh((cov + cov.T) / 2)
    evals = evals.flip(0).clamp_min(0)
    evecs = evecs.flip(1)
    total = float(evals.sum())
    if total <= 0:  # constant inputs: no direction carries variance
        ratios = torch.zeros(d, dtype=torch.float64, device=cov.device)
        return PCABasis(evecs[:, :1], 1, d, 0.0, ratios)
    ratios = evals / total
    cum = torch.cumsum(ratios, 0)
    # smallest k with cum[k-1] >= threshold (a 1e-12 slack absorbs round-off at exact hits)
    k = int(torch.searchsorted(cum, torch.tensor([explained_variance - 1e-12],
                                                 dtype=torch.float64, device=cov.device))[0]) + 1
    k = min(max(k, 1), d)
    return PCABasis(evecs[:, :k].contiguous(), k, d, float(cum[k - 1]), ratios)
