"""Neuron identifiability analyses (Bürgin, Herbst, Lin, Jegelka, ICML 2026), read from the IR.

One module per analysis, none with per-architecture code:

* :mod:`.points` — recording points (the input of every trainable dense layer), streamed
  input moments, a layer's effective / trainable / frozen weight rows;
* :mod:`.pca` — the 90 %-explained-variance PCA basis of a layer's inputs;
* :mod:`.coherence` — coherence ν(U), anisotropy ‖S_i − p·I‖₂, the concentration bound;
* :mod:`.realization` — realization cost ``m_ij`` and swap cost ``T_ij`` (Mahalanobis and
  exact ridge estimates);
* :mod:`.matching` — Pearson activation matching (maximised) and the matching objective;
* :mod:`.effective` — asymmetric networks as plain networks of their effective weights;
* :mod:`.barriers` — loss barriers and the reference's relative accuracy barrier;
* :mod:`.synthetic` — the synthetic coherence experiment.
"""

from asymspec.ident.coherence import (
    DELTAS,
    anisotropy,
    coherence,
    coherence_report,
    concentration_bound,
    gram_matrices,
)
from asymspec.ident.pca import PCABasis, pca_basis
from asymspec.ident.points import (
    LayerWeights,
    Moments,
    RecordingPoint,
    layer_weights,
    record_moments,
    recording_points,
)
from asymspec.ident.realization import realization_costs, ridge_costs, swap_costs

__all__ = [
    "DELTAS",
    "LayerWeights",
    "Moments",
    "PCABasis",
    "RecordingPoint",
    "anisotropy",
    "coherence",
    "coherence_report",
    "concentration_bound",
    "gram_matrices",
    "layer_weights",
    "pca_basis",
    "realization_costs",
    "record_moments",
    "recording_points",
    "ridge_costs",
    "swap_costs",
]
