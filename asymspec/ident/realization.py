"""Realization cost and pairwise swap cost of neurons (Bürgin et al. 2026).

Mahalanobis estimate on the layer's PCA basis ``U`` (d × k).  Neuron ``i`` has trainable
entries ``D_i`` (0/1) and a frozen part ``F_i`` (W-Asym fixed values, syre noise; 0 when
standard); on the data it computes ``a = Uᵀ(D_i ⊙ w + F_i)``.  The least squared norm of
trainable weights that makes neuron ``i`` compute neuron ``j``'s projected function
``a_j = Uᵀ W_j`` is

    m_ij = (a_j − v_i)ᵀ S_i⁺ (a_j − v_i),   v_i = Uᵀ F_i,   S_i = Uᵀ diag(D_i) U,

and the cost of swapping two neurons relative to leaving them is
``T_ij = m_ij + m_ji − m_ii − m_jj`` (symmetric, zero diagonal).  For standard layers
``S_i = I`` and ``v_i = 0``, so every ``T_ij`` is exactly 0: swaps are free.  Biases are
ignored, as in the reference.

Ridge estimate (:func:`ridge_costs`): the exact minimiser of
``(1/β)·E[(n_j(ŵ·x + b) − n_j(W_j·x + b_j))²] + ‖w‖²`` over neuron ``i``'s trainable
entries ``w`` (``ŵ = D_i ⊙ w + F_i``) and a free bias ``b``, where ``n_j`` is unit ``j``'s
*trained* per-unit normalisation in eval mode (BatchNorm: ``γ/√(var+ε)``; it travels with the
function under a swap).  Because ``b`` is free this is the quadratic form of the centred input
covariance ``C``; with ``λ = g_j²/β`` the minimiser is ``w = (λ C_DD + I)⁻¹ λ (C r)_D`` with
``r = W_j − F_i``, and the cost is ``‖w‖²``.  The reference fits this with 1,000s of AdamW
steps and — a bug — a *fresh* BatchNorm (identity) instead of the trained one;
``norm="fresh"`` reproduces that choice.  Non-per-unit norms (LayerNorm, GroupNorm) have no
per-neuron gain: they use ``g = 1`` (pre-norm fit) and say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from asymspec.ident.coherence import CHUNK, gram_matrices
from asymspec.ident.points import LayerWeights
from asymspec.ir.graph import IRGraph


def realization_costs(U: torch.Tensor, weights: LayerWeights,
                      neurons: Sequence[int] | None = None) -> torch.Tensor:
    """``m[i, j]`` for the chosen neurons (all by default) -> ``(n, n)`` float64 on the CPU.

    Computed on ``U``'s device (pass a CUDA ``U`` for large conv layers)."""
    idx = torch.arange(weights.effective.shape[0]) if neurons is None else \
        torch.as_tensor(list(neurons), dtype=torch.long)
    U = U.double()
    weights = weights.to(U.device)
    a = weights.effective[idx] @ U  # (n, k): a_j
    v = weights.fixed[idx] @ U  # (n, k): v_i
    D = weights.trainable[idx]
    out = torch.empty(len(idx), len(idx), dtype=torch.float64, device=U.device)
    for lo in range(0, len(idx), CHUNK):
        S = gram_matrices(U, D[lo:lo + CHUNK])
        S_pinv = torch.linalg.pinv(S, hermitian=True)
        delta = a[None, :, :] - v[lo:lo + CHUNK, None, :]  # (c, n, k): a_j - v_i
        out[lo:lo + CHUNK] = torch.einsum("cnk,ckl,cnl->cn", delta, S_pinv, delta)
    return out.cpu()


def swap_costs(m: torch.Tensor) -> torch.Tensor:
    """``T_ij = m_ij + m_ji − m_ii − m_jj``."""
    diag = torch.diagonal(m)
    return m + m.T - diag[:, None] - diag[None, :]


def offdiag_summary(T: torch.Tensor) -> dict[str, float]:
    """Statistics of the off-diagonal entries of a square matrix."""
    n = T.shape[0]
    vals = T[~torch.eye(n, dtype=torch.bool, device=T.device)]
    if vals.numel() == 0:
        return {"mean": float("nan"), "median": float("nan"), "min": float("nan"),
                "max": float("nan")}
    return {"mean": float(vals.mean()), "median": float(vals.median()),
            "min": float(vals.min()), "max": float(vals.max())}


# ------------------------------------------------------------------------------------- ridge
def unit_gains(model: nn.Module, ir: IRGraph, layer: str, norm: str = "trained"
               ) -> tuple[torch.Tensor, str]:
    """Per-unit gain ``g`` of the normalisation right after ``layer`` and what it is.

    ``norm="trained"``: a BatchNorm consumer's ``γ/√(running_var+ε)``; ``"fresh"`` (the
    reference's bug): a new BatchNorm in eval mode, ``1/√(1+ε)``.  Other consumers: 1.
    """
    n = ir.node(layer)["size"]
    for c in ir.consumers(layer):
        if ir.node(c)["op"] != "batchnorm":
            continue
        bn = model.get_submodule(c)
        if norm == "fresh":
            return torch.full((n,), 1 / (1 + bn.eps) ** 0.5, dtype=torch.float64), \
                "fresh BatchNorm (reference)"
        var = bn.running_var.detach().double().cpu()
        gamma = bn.weight.detach().double().cpu() if bn.weight is not None else 1.0
        return gamma / (var + bn.eps).sqrt(), f"trained BatchNorm '{c}'"
    return torch.ones(n, dtype=torch.float64), "none (no per-unit norm)"


def ridge_costs(cov: torch.Tensor, weights: LayerWeights, gains: torch.Tensor,
                beta: float, neurons: Sequence[int]) -> torch.Tensor:
    """``r[i, j]``: least ridge cost for neuron ``i`` to realise neuron ``j``'s function."""
    idx = list(neurons)
    cov = cov.double()
    out = torch.empty(len(idx), len(idx), dtype=torch.float64)
    for a, i in enumerate(idx):
        keep = weights.trainable[i].bool()
        C_dd = cov[keep][:, keep]
        evals, Q = torch.linalg.eigh((C_dd + C_dd.T) / 2)
        evals = evals.clamp_min(0)
        for b, j in enumerate(idx):
            lam = float(gains[j]) ** 2 / beta
            r = weights.effective[j] - weights.fixed[i]
            rhs = lam * (cov @ r)[keep]
            w = Q @ ((Q.T @ rhs) / (lam * evals + 1))
            out[a, b] = float(w @ w)
    return out
