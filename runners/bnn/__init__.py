"""Variational Bayesian networks (Lim et al. 2024 §5.2, Table 2, Figure 4, Table 7):
``kind: bnn``."""

from runners.bnn.runner import BNNRunner

__all__ = ["BNNRunner"]
