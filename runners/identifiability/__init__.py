"""Neuron identifiability analyses (Bürgin et al. 2026): ``kind: identifiability``."""

from runners.identifiability.runner import IdentifiabilityRunner

__all__ = ["IdentifiabilityRunner"]
