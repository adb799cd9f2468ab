"""The ELRG posterior of one linear or conv layer (Tomczak, Swaroop & Turner 2020).

The layer's own ``weight``/``bias`` are the posterior mean; this module adds what is random
about them: a diagonal log-variance (a fixed buffer by default, as in Lim et al. 2024 F.2, or a
parameter) and ``r`` low-rank factors, covariance ``diag(exp(logvar)) + alpha V^T V`` with
``alpha = 1/r``.  Factors have the weight's own layout, ``(r, *weight.shape)``, so the KL and the
forward group them the same way (the reference code does not, see
``shared/notes/reference-facts-experiments.md`` §B.1).

**Only trainable entries are random.**  A W-Asym layer's frozen entries (``weight_mask`` False)
and buffers (fixed biases, frozen FiGLU matrices) are constants: their diagonal variance and
their factor entries are multiplied by the mask in every use, so a sampled weight equals the
fixed value exactly, for linear and conv layers alike.  (The reference re-indexes the conv
factors group-major, which leaks variance into frozen conv entries; this does not.)  They are
also left out of the KL — a point mass has no density — so ``d`` counts free entries only.
(The reference sums its KL over every entry, frozen ones included, with the raw weight at
frozen positions — values that never change since their gradient is masked — and zeroed factors
there: a constant offset in the reported ELBO, with the same gradients apart from the conv
factor re-indexing.)

The forward noise (added to the layer's deterministic output by a hook) is
``sqrt(x^2 * var_w + var_b) * eps`` (local reparameterisation of the diagonal, one draw per
output element) plus ``sqrt(alpha) * sum_k eps_k (x * V_k + Vb_k)`` with ``eps_k`` drawn per
example and rank component: the exact low-rank part of a weight sample shared across an
example's positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from asymspec.bayes.kl import lowrank_gaussian_kl_from_sums, prior_logvar
from asymspec.errors import UserError

FACTOR_INITS = ("zero", "scaled")


@dataclass(frozen=True)
class ELRGConfig:
    """Settings of :func:`asymspec.bayes.elrg` (defaults: Lim et al. 2024 F.2 / LIM code).

    Attributes:
        rank: number of low-rank factors ``r`` (>= 1); ``alpha = 1/r``.
        q_init_logvar: initial diagonal log-variance (paper: -12 ResNets, -10 MLPs).
        learn_diag: learn the diagonal (the paper keeps it fixed: a buffer).
        prior_precision: ``lambda`` in ``log sigma_p^2 = -log(lambda * n)`` (> 0).
        prior_fan: how ``n`` is chosen: ``in`` (fan-in, every layer), ``reference`` (the LIM
            code's linear-out / conv-in-channels mix; compatibility only) or ``none`` (n = 1).
        factor_scale: linear factors start at ``factor_scale * std(W) / sqrt(r) * N(0, 1)``.
        bias_factor_std: bias factors start at ``bias_factor_std * N(0, 1)``.
        conv_factor_init: ``zero`` (the reference) or ``scaled`` (like linear layers).
        seed: seeds the factor initialisation and the noise stream.
    """

    rank: int = 4
    q_init_logvar: float = -10.0
    learn_diag: bool = False
    prior_precision: float = 1.0
    prior_fan: str = "in"
    factor_scale: float = 0.5
    bias_factor_std: float = 0.01
    conv_factor_init: str = "zero"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise UserError(f"ELRG rank must be an integer >= 1, got {self.rank!r}")
        if not (isinstance(self.prior_precision, int | float) and self.prior_precision > 0
                and math.isfinite(self.prior_precision)):
            raise UserError("ELRG prior_precision must be a finite number > 0, got "
                            f"{self.prior_precision!r}")
        if not math.isfinite(self.q_init_logvar):
            raise UserError(f"ELRG q_init_logvar must be finite, got {self.q_init_logvar!r}")
        if self.prior_fan not in ("in", "reference", "none"):
            raise UserError(f"ELRG prior_fan must be in, reference or none, got "
                            f"{self.prior_fan!r}")
        if self.conv_factor_init not in FACTOR_INITS:
            raise UserError(f"ELRG conv_factor_init must be zero or scaled, got "
                            f"{self.conv_factor_init!r}")
        if self.factor_scale < 0 or self.bias_factor_std < 0:
            raise UserError("ELRG factor_scale and bias_factor_std must be >= 0")

    @property
    def alpha(self) -> float:
        return 1.0 / self.rank


def _layer_kind(layer: nn.Module) -> str:
    w = getattr(layer, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() not in (2, 4):
        raise TypeError(f"{type(layer).__name__} has no 2-d or 4-d weight")
    return "linear" if w.dim() == 2 else "conv"


class ELRGPosterior(nn.Module):
    """Variational parameters of one layer; the layer itself is referenced, not owned."""

    def __init__(self, layer: nn.Module, config: ELRGConfig, gen: torch.Generator) -> None:
        super().__init__()
        object.__setattr__(self, "layer", layer)  # not a submodule: the model owns it
        self.kind = _layer_kind(layer)
        self.rank, self.alpha = config.rank, config.alpha
        w = layer.weight
        shape = tuple(w.shape)
        trainable_w = isinstance(w, nn.Parameter)
        mask = getattr(layer, "weight_mask", None) if trainable_w else None
        free = (torch.zeros(shape, dtype=torch.bool) if not trainable_w else
                mask.detach().cpu().bool().clone() if mask is not None else None)
        self.register_buffer("free", free)
        self.random_bias = isinstance(getattr(layer, "bias", None), nn.Parameter)
        if self.kind == "conv":
            self.stride = _pair(getattr(layer, "stride", 1))
            self.padding = _pair(getattr(layer, "padding", 0))
            self.dilation = _pair(getattr(layer, "dilation", 1))
            self.groups = int(getattr(layer, "groups", 1))
            if isinstance(self.padding, str) or getattr(layer, "padding_mode", "zeros") != "zeros":
                raise UserError(f"ELRG supports zero-padded convolutions with numeric padding "
                                f"only ({type(layer).__name__})")
        self.prior_logvar = prior_logvar(shape, config.prior_precision, config.prior_fan)
        dev, dt = w.device, w.dtype
        logvar_w = torch.full(shape, float(config.q_init_logvar), device=dev, dtype=dt)
        logvar_b = torch.full(shape[:1], float(config.q_init_logvar), device=dev, dtype=dt)
        # Factor init: the free entries' spread sets the scale (frozen values are not weights
        # the posterior describes).
        mean = self._free_values(w.detach().cpu())
        std = float(mean.std()) if mean.numel() > 1 else 0.0
        r = config.rank
        if self.kind == "conv" and config.conv_factor_init == "zero":
            v = torch.zeros((r,) + shape)
            vb = torch.zeros((r, shape[0]))
        else:
            v = torch.randn((r,) + shape, generator=gen) * (config.factor_scale * std
                                                            / math.sqrt(r))
            vb = torch.randn((r, shape[0]), generator=gen) * config.bias_factor_std
        if self.free is not None:
            v = v * self.free
        self.factors = nn.Parameter(v.to(dev, dt))
        self.bias_factors = nn.Parameter(vb.to(dev, dt)) if self.random_bias else None
        if config.learn_diag:
            self.logvar = nn.Parameter(logvar_w)
            self.bias_logvar = nn.Parameter(logvar_b) if self.random_bias else None
        else:
            self.register_buffer("logvar", logvar_w)
            self.register_buffer("bias_logvar", logvar_b if self.random_bias else None)

    # -- helpers --------------------------------------------------------------------------
    def _free_values(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1) if self.free is None else t[self.free.to(t.device)]

    def _masked(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.free is None else t * self.free

    def mean_weight(self) -> torch.Tensor:
        """The weight the deterministic layer uses (frozen values and offsets included)."""
        eff = getattr(self.layer, "effective_weight", None)
        return eff() if callable(eff) else self.layer.weight

    def weight_variance(self) -> torch.Tensor:
        """Diagonal variance per weight entry, exactly 0 at frozen entries."""
        return self._masked(self.logvar.exp())

    def num_random(self) -> int:
        """``d``: how many weights and biases are random (free)."""
        nw = self.factors[0].numel() if self.free is None else int(self.free.sum())
        return nw + (self.factors.shape[1] if self.random_bias else 0)

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
            groups: int | None = None) -> torch.Tensor:
        if self.kind == "linear":
            return F.linear(x, w, b)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation,
                        self.groups if groups is None else groups)

    # -- sampling -------------------------------------------------------------------------
    def noise(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """Additive output noise for input ``x`` (one independent weight draw per example)."""
        var_b = self.bias_logvar.exp() if self.random_bias else None
        var = self._op(x * x, self.weight_variance(), var_b)
        std = torch.where(var > 0, var.clamp_min(1e-30).sqrt(), torch.zeros_like(var))
        out = std * torch.randn(var.shape, generator=gen, device=var.device, dtype=var.dtype)
        r, n_out = self.rank, self.factors.shape[1]
        v = self._masked(self.factors)
        if self.kind == "conv" and self.groups != 1:
            lr = torch.stack([self._op(x, v[k], self.bias_factors[k] if self.random_bias
                                       else None) for k in range(r)], dim=1)
        else:
            vw = v.reshape((r * n_out,) + tuple(v.shape[2:]))
            vb = self.bias_factors.reshape(-1) if self.random_bias else None
            y = self._op(x, vw, vb)
            lr = y.reshape(y.shape[:1] + (r, n_out) + y.shape[2:])  # rank-major, as stacked
        eps = torch.randn(lr.shape[:2], generator=gen, device=lr.device, dtype=lr.dtype)
        eps = eps.reshape(eps.shape + (1,) * (lr.dim() - 2))
        return out + math.sqrt(self.alpha) * (eps * lr).sum(1)

    def sample_weight(self, gen: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One explicit draw ``(weight, bias)`` from the posterior (for inspection and tests)."""
        mean = self.mean_weight()
        dev, dt = mean.device, mean.dtype
        eps_d = torch.randn(mean.shape, generator=gen, device=dev, dtype=dt)
        eps_k = torch.randn((self.rank,), generator=gen, device=dev, dtype=dt)
        lowrank = torch.einsum("k,k...->...", eps_k, self._masked(self.factors))
        w = mean + self.weight_variance().sqrt() * eps_d + math.sqrt(self.alpha) * lowrank
        b = getattr(self.layer, "bias", None)
        if self.random_bias:
            eps_b = torch.randn(b.shape, generator=gen, device=dev, dtype=dt)
            b = (b + self.bias_logvar.exp().sqrt() * eps_b
                 + math.sqrt(self.alpha) * eps_k @ self.bias_factors)
        return w, b

    # -- KL -------------------------------------------------------------------------------
    def kl(self) -> torch.Tensor:
        """KL of this layer's posterior to ``N(0, sigma_p^2 I)`` over its free entries.

        Frozen entries are zeroed rather than gathered (cheaper on large layers): zero factor
        columns and zero-weighted sums leave exactly the free-entry KL.
        """
        free = self.free
        mean, lv, v = self.mean_weight(), self.logvar, self.factors
        r = self.rank
        if free is not None:
            mean, lv, v = mean * free, lv * free, v * free
        var = lv.exp() if free is None else lv.exp() * free
        v = v.reshape(r, -1)
        scaled = v / lv.exp().reshape(1, -1)
        gram = scaled @ v.T
        sq_mu, sum_var, sum_lv = mean.pow(2).sum(), var.sum(), lv.sum()
        sq_v = v.pow(2).sum()
        d = self.num_random()
        if self.random_bias:
            b, blv, bv = self.layer.bias, self.bias_logvar, self.bias_factors
            gram = gram + (bv / blv.exp()) @ bv.T
            sq_mu, sum_var = sq_mu + b.pow(2).sum(), sum_var + blv.exp().sum()
            sum_lv, sq_v = sum_lv + blv.sum(), sq_v + bv.pow(2).sum()
        return lowrank_gaussian_kl_from_sums(sq_mu, sum_var, sum_lv, sq_v, gram, d,
                                             self.alpha, self.prior_logvar)

    def extra_repr(self) -> str:
        return (f"{self.kind}, rank={self.rank}, random={self.num_random()}, "
                f"prior_logvar={self.prior_logvar:.3f}")


def _pair(v):
    if isinstance(v, str):
        return v
    return tuple(v) if isinstance(v, tuple | list) else (int(v), int(v))
