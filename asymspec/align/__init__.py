"""Alignment and canonicalisation of networks, driven only by the IR's permutation spec.

* :func:`weight_matching` — Git Re-Basin weight matching (coordinate descent + LAP);
* :func:`activation_matching` — correlation of recorded activations, one LAP per group;
* :func:`reset_bn_stats`, :func:`repair` — BatchNorm statistics reset, REPAIR (Jordan et al.);
* :func:`canonicalize`, :func:`average` — NodeSort (Sorensen 2020) with an exact lexicographic
  sort, and averaging of canonicalised networks;
* :func:`interpolate` — linear interpolation of two state dicts.
"""

from asymspec.align.activation_matching import activation_matching
from asymspec.align.bn import repair, reset_bn_stats
from asymspec.align.nodesort import average, canonicalize, interpolate
from asymspec.align.weight_matching import AlignResult, exact_groups, weight_matching

__all__ = [
    "AlignResult",
    "activation_matching",
    "average",
    "canonicalize",
    "exact_groups",
    "interpolate",
    "repair",
    "reset_bn_stats",
    "weight_matching",
]
