"""Metanetworks: predict a network's test accuracy from its weights (Lim et al. 2024, §5.3).

* :mod:`~asymspec.metanet.registry` — ``@register_metanet("name")``; the four of the paper are
  registered on import: ``mlp``, ``dmc``, ``deepsets``, ``statnn`` (one file each).
* :mod:`~asymspec.metanet.inputs` — :class:`ParamLayout`: trainable entries in state_dict order
  (W-Asym fixed entries and σ-Asym's F removed); :mod:`~asymspec.metanet.stats` — StatNN's
  features.
* :mod:`~asymspec.metanet.train` — :func:`fit`: MSE + AdamW, metrics at the best-validation-R²
  epoch; :mod:`~asymspec.metanet.split`, :mod:`~asymspec.metanet.metrics`.
* :mod:`~asymspec.metanet.symmetry` — NodeSort canonicalisation and permutation augmentation.

The ``metanet`` experiment (``runners/metanet``) runs all of this on a zoo run.
"""

from asymspec.metanet import deepsets, dmc, mlp, statnn  # noqa: F401  (register the four)
from asymspec.metanet.inputs import ParamLayout, Segment
from asymspec.metanet.registry import available_metanets, get_metanet, register_metanet

__all__ = ["ParamLayout", "Segment", "available_metanets", "get_metanet", "register_metanet"]
