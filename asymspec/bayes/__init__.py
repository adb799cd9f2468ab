"""Variational Bayesian networks: ELRG posteriors (diagonal + low-rank Gaussian) over any
model's linear and conv layers, their closed-form KL, the negative ELBO and Bayesian model
averaging; calibration metrics for evaluation."""

from asymspec.bayes.init import init_means
from asymspec.bayes.kl import (
    fan,
    lowrank_gaussian_kl,
    lowrank_gaussian_kl_from_sums,
    prior_logvar,
)
from asymspec.bayes.layer import ELRGConfig, ELRGPosterior
from asymspec.bayes.metrics import evaluate_predictions, expected_calibration_error
from asymspec.bayes.model import ELBOTerms, VariationalModel, elrg

__all__ = ["ELBOTerms", "ELRGConfig", "ELRGPosterior", "VariationalModel", "elrg",
           "evaluate_predictions", "expected_calibration_error", "fan", "init_means",
           "lowrank_gaussian_kl",
           "lowrank_gaussian_kl_from_sums",
           "prior_logvar"]
