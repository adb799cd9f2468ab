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
    d = mu.numel()
    s = math.exp(prior_logvar)
    var = logvar.exp()
    trace = var.sum() + alpha * factors.pow(2).sum() + mu.pow(2).sum()
    r = factors.shape[0]
    inner = torch.eye(r, dtype=mu.dtype, device=mu.device) + alpha * (factors / var) @ factors.T
    logdet = torch.linalg.slogdet(inner)[1]
    return 0.5 * (trace / s - logvar.sum() - logdet + d * prior_logvar - d)


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
