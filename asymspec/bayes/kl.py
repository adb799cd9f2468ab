"""Closed-form KL between a diagonal-plus-low-rank Gaussian and an isotropic Gaussian prior.

For ``q = N(mu, D + alpha V^T V)`` over ``d`` free weights (``D`` diagonal, ``V`` of shape
``(r, d)``) and the prior ``p = N(0, s I)``::

    KL(q || p) = 1/2 [ (tr D + alpha ||V||_F^2 + ||mu||^2) / s
                       - sum log D - logdet(I_r + alpha V D^-1 V^T) + d log s - d ]

The log-determinant uses the matrix determinant lemma, so the cost is ``O(r^2 d)`` instead of
``O(d^3)``: this is what makes rank-r posteriors over millions of weights affordable
(Tomczak, Swaroop & Turner 2020).  ``tests/test_bayes_kl.py`` checks it against
``torch.distributions`` (LowRankMultivariateNormal vs Normal).
"""

from __future__ import annotations

import math

import torch

PRIOR_FANS = ("in", "reference", "none")


def lowrank_gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, factors: torch.Tensor,
                        alpha: float, prior_logvar: float) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar)) + alpha F^T F) || N(0, exp(prior_logvar) I)).

    Args:
        mu: ``(d,)`` mean of the free weights.
        logvar: ``(d,)`` diagonal log-variances.
        factors: ``(r, d)`` low-rank factors ``F``.
        alpha: scale of the low-rank part (ELRG: ``1/r``).
        prior_logvar: ``log s`` of the isotropic prior.
    """
    var = logvar.exp()
    return lowrank_gaussian_kl_from_sums(
        mu.pow(2).sum(), var.sum(), logvar.sum(), factors.pow(2).sum(),
        (factors / var) @ factors.T, mu.numel(), alpha, prior_logvar)


def lowrank_gaussian_kl_from_sums(sq_mu: torch.Tensor, sum_var: torch.Tensor,
                                  sum_logvar: torch.Tensor, sq_factors: torch.Tensor,
                                  gram: torch.Tensor, d: int, alpha: float,
                                  prior_logvar: float) -> torch.Tensor:
    """The same KL from its sufficient statistics: ``||mu||^2``, ``sum var``, ``sum log var``,
    ``||F||_F^2``, ``gram = F diag(var)^-1 F^T`` (``r x r``) and the dimension ``d`` — so a
    layer can sum over its free entries without gathering them."""
    s = math.exp(prior_logvar)
    r = gram.shape[0]
    inner = torch.eye(r, dtype=gram.dtype, device=gram.device) + alpha * gram
    logdet = torch.linalg.slogdet(inner)[1]
    trace = sum_var + alpha * sq_factors + sq_mu
    return 0.5 * (trace / s - sum_logvar - logdet + d * prior_logvar - d)


def fan(weight_shape: tuple[int, ...], rule: str) -> int:
    """The ``n`` of the prior scaling ``log s = -log(prior_precision * n)``.

    ``in`` (default): the fan-in of one output unit, ``in_features`` for a linear layer and
    ``in_channels * kh * kw`` for a convolution (PyTorch's ``fan_in``), the same rule for every
    layer.  ``reference``: what the reference code does (LIM ``bnn/alg.py``), ``out_features``
    for linear layers but ``in_channels`` for convolutions — inconsistent, kept only to
    reproduce published numbers.  ``none``: ``n = 1`` (an unscaled prior).
    """
    if rule == "in":
        return int(math.prod(weight_shape[1:]))
    if rule == "reference":
        return int(weight_shape[0] if len(weight_shape) == 2 else weight_shape[1])
    if rule == "none":
        return 1
    raise ValueError(f"unknown prior fan rule {rule!r} (one of {', '.join(PRIOR_FANS)})")


def prior_logvar(weight_shape: tuple[int, ...], prior_precision: float, rule: str) -> float:
    """``log sigma_p^2 = -log(prior_precision * n)`` with ``n`` from :func:`fan`."""
    return -math.log(prior_precision * fan(weight_shape, rule))
