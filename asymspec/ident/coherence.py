"""Subspace coherence, anisotropy of the per-neuron Gram matrices, and the concentration bound.

* Coherence ``ν(U) = max_r ‖U_r‖²`` — the largest leverage score of the orthonormal basis
  ``U`` (d × k); ``k/d ≤ ν ≤ 1``.  Low coherence means the data's variance is spread over many
  input coordinates, so a random mask ``D_i`` keeps roughly the same share ``p`` of every
  direction and the masked Gram matrix ``S_i = Uᵀ diag(D_i) U`` concentrates at ``p·I``.
* Anisotropy of neuron ``i``: ``‖S_i − p·I‖₂`` (spectral norm), ``p`` the layer's trainable
  fraction (1 for dense layers, where ``S_i = I`` exactly).
* Matrix-Bernstein bound (Bürgin et al. 2026): with probability ≥ 1 − δ,
  ``‖S_i − p·I‖₂ ≤ (2/3)·b·ν·log(2k/δ) + σ·√ν·√(2·log(2k/δ))`` with ``b = p`` and
  ``σ = √(p(1 − p))`` (``b = p`` bounds ``|d − p|`` only when ``p ≥ ½``; flagged otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

CHUNK = 64  # neurons per batched Gram computation (memory: CHUNK·k²·8 bytes)
DELTAS = (0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)


def coherence(U: torch.Tensor) -> float:
    """``max_r ‖U_r‖²`` for a basis with orthonormal columns."""
    return float((U.double() ** 2).sum(1).max())


def gram_matrices(U: torch.Tensor, trainable: torch.Tensor) -> torch.Tensor:
    """``S_i = Uᵀ diag(D_i) U`` for every row ``D_i`` of ``trainable`` -> ``(n, k, k)``."""
    U = U.double()
    return torch.einsum("dk,nd,dl->nkl", U, trainable.double().to(U.device), U)


def anisotropy(S: torch.Tensor, p: float) -> torch.Tensor:
    """``‖S_i − p·I‖₂`` per neuron (``S``: ``(n, k, k)`` symmetric)."""
    eye = torch.eye(S.shape[-1], dtype=S.dtype, device=S.device)
    return torch.linalg.eigvalsh(S - p * eye).abs().amax(-1)


def concentration_bound(nu: float, k: int, p: float, delta: float) -> float:
    """The matrix-Bernstein bound on ``‖S_i − p·I‖₂`` at failure probability ``delta``."""
    log_term = math.log(2 * k / delta)
    b, sigma = p, math.sqrt(max(p * (1 - p), 0.0))
    return (2 / 3) * b * nu * log_term + sigma * math.sqrt(nu) * math.sqrt(2 * log_term)


def coherence_report(U: torch.Tensor, trainable: torch.Tensor,
                     deltas: Sequence[float] = DELTAS) -> dict:
    """Coherence, mean / max anisotropy and the bound at every δ for one layer (computed on
    ``U``'s device)."""
    trainable = trainable.to(U.device)
    p = float(trainable.double().mean())
    nu = coherence(U)
    k = U.shape[1]
    aniso = torch.cat([anisotropy(gram_matrices(U, trainable[lo:lo + CHUNK]), p)
                       for lo in range(0, trainable.shape[0], CHUNK)])
    return {"nu": nu, "k": k, "d": U.shape[0], "p": p,
            "nu_min": k / U.shape[0],
            "anisotropy_mean": float(aniso.mean()), "anisotropy_max": float(aniso.max()),
            "bound": {str(dl): concentration_bound(nu, k, p, dl) for dl in deltas},
            "bound_valid": p >= 0.5}
