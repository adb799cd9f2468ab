"""``elrg(model)``: a variational (ELRG) version of any module with Linear/Conv2d layers.

The wrapped model is used as it is: its layers keep computing the posterior mean, and a forward
hook on each linear/conv layer adds the posterior noise (:class:`~asymspec.bayes.layer.
ELRGPosterior`).  So emitted :class:`~asymspec.nn.IRModule` s, torchvision models and asymspec's
masked layers all work without a module swap, and ``model.state_dict()`` keeps its names
(``vm.model.<name>``; the variational parameters live under ``vm.posteriors``).  Norm layers
and everything else stay point estimates.

Noise is on whenever :attr:`VariationalModel.sampling` is True — in eval mode too, as the
Bayesian model average needs it (:meth:`predict`); ``with vm.mean_only():`` gives the
deterministic mean network.  All noise comes from one seeded ``torch.Generator`` per device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from asymspec.bayes.layer import ELRGConfig, ELRGPosterior
from asymspec.errors import UserError
from asymspec.seeding import generator, stable_seed


class ELBOTerms(NamedTuple):
    """``loss = nll + kl / n_eff`` (the negative ELBO per example) and its parts."""

    loss: torch.Tensor
    nll: torch.Tensor
    kl: torch.Tensor


class _NoiseHook:
    """Forward hook adding one posterior's noise; an object (not a closure) so that
    ``copy.deepcopy`` of the variational model rebinds it to the copied posterior."""

    def __init__(self, owner: VariationalModel, key: str) -> None:
        self.owner, self.key = owner, key

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor):
        if not self.owner.sampling:
            return None
        post = self.owner.posteriors[self.key]
        return output + post.noise(args[0], self.owner.noise_generator(output.device))


def _is_dense(module: nn.Module) -> bool:
    from asymspec.nn.masked import MaskedWeightMixin

    return isinstance(module, nn.Linear | nn.Conv2d | MaskedWeightMixin)


class VariationalModel(nn.Module):
    """A model with an ELRG posterior over its linear and conv weights.

    Attributes:
        model: the wrapped network (its weights are the posterior means).
        posteriors: ``ModuleDict`` of :class:`ELRGPosterior`, keys = layer names with ``.``
            replaced by ``/``.
        config: the :class:`ELRGConfig`.
        sampling: whether forward passes draw noise.
    """

    def __init__(self, model: nn.Module, config: ELRGConfig,
                 exclude: Iterable[str] = ()) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.posteriors = nn.ModuleDict()
        self.sampling = True
        self._generators: dict[str, torch.Generator] = {}
        self._handles: list = []
        excluded = set(exclude)
        if getattr(model, "ir", None) is not None:  # input adaptation reads the model's IR
            object.__setattr__(self, "ir", model.ir)
        from asymspec.nn.masked import SharedDense

        for name, module in model.named_modules():
            if isinstance(module, SharedDense):
                raise UserError(f"layer {name!r} shares another layer's weight; ELRG cannot "
                                "give one weight two independent noise draws (unsupported)")
            if name in excluded or not _is_dense(module):
                continue
            if any(isinstance(h, _NoiseHook) for h in module._forward_hooks.values()):
                raise UserError(f"layer {name!r} is already part of a variational model; "
                                "call .detach() on that one first")
            gen = generator(config.seed, "elrg-factors", name)
            post = ELRGPosterior(module, config, gen)
            if post.num_random() == 0:  # a frozen layer (e.g. FiGLU's F): nothing is random
                continue
            key = name.replace(".", "/")
            self.posteriors[key] = post
            self._handles.append(module.register_forward_hook(_NoiseHook(self, key)))
        if not len(self.posteriors):
            raise UserError("elrg(): the model has no Linear/Conv2d layer with trainable weights")

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def detach(self) -> nn.Module:
        """Remove the noise hooks and return the wrapped model (its weights = the means)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return self.model

    # -- noise ----------------------------------------------------------------------------
    def manual_seed(self, seed: int) -> VariationalModel:
        """Restart the noise streams (one per device) from ``seed``."""
        self._noise_seed = int(seed)
        self._generators.clear()
        return self

    def noise_generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(stable_seed(getattr(self, "_noise_seed", self.config.seed),
                                        "elrg-noise", key))
            self._generators[key] = gen
        return gen

    @contextlib.contextmanager
    def mean_only(self) -> Iterator[VariationalModel]:
        """Within the block, forward passes are the deterministic mean network."""
        old, self.sampling = self.sampling, False
        try:
            yield self
        finally:
            self.sampling = old

    # -- objective ------------------------------------------------------------------------
    def kl(self) -> torch.Tensor:
        """Sum over layers of KL(q || prior), closed form (free entries only)."""
        return torch.stack([p.kl() for p in self.posteriors.values()]).sum()

    def neg_elbo(self, x: torch.Tensor, y: torch.Tensor, n_eff: float,
                 samples: int = 1) -> ELBOTerms:
        """Negative ELBO per example: mean over ``samples`` draws of the batch NLL plus
        ``KL / n_eff`` (``n_eff`` = training-set size x augmentation multiplier)."""
        if n_eff <= 0 or samples < 1:
            raise UserError("neg_elbo needs n_eff > 0 and samples >= 1")
        nll = torch.stack([F.cross_entropy(self.model(x), y) for _ in range(samples)]).mean()
        kl = self.kl()
        return ELBOTerms(nll + kl / n_eff, nll, kl)

    # -- prediction -----------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor, samples: int = 25,
                max_batch: int | None = None) -> torch.Tensor:
        """Log of the Bayesian model average ``log mean_s softmax(f_s(x))``, shape ``(B, C)``.

        Each of the ``samples`` draws is an independent noise draw per example (the batch is
        tiled, as in the reference); ``max_batch`` bounds the tiled batch size (memory).
        """
        if samples < 1:
            raise UserError("predict needs samples >= 1")
        b = x.shape[0]
        per = samples if max_batch is None else max(1, max_batch // max(b, 1))
        acc = None
        done = 0
        while done < samples:
            s = min(per, samples - done)
            xs = x.repeat((s,) + (1,) * (x.dim() - 1))
            logp = F.log_softmax(self.model(xs).float(), dim=-1).reshape(s, b, -1)
            part = torch.logsumexp(logp, dim=0)
            acc = part if acc is None else torch.logaddexp(acc, part)
            done += s
        return acc - math.log(samples)

    # -- bookkeeping ----------------------------------------------------------------------
    def variational_parameters(self) -> list[nn.Parameter]:
        return list(self.posteriors.parameters())

    def num_parameters(self) -> int:
        """Trainable numbers, counting only free entries: the mean network's (W-Asym frozen
        entries excluded) plus the factors (and a learnt diagonal) of random entries."""
        from asymspec.nn.masked import MaskedWeightMixin

        total = 0
        for module in self.model.modules():
            for pname, p in module.named_parameters(recurse=False):
                mask = getattr(module, "weight_mask", None)
                if (pname == "weight" and isinstance(module, MaskedWeightMixin)
                        and mask is not None):
                    total += int(mask.sum())
                else:
                    total += p.numel()
        per_entry = self.config.rank + (1 if self.config.learn_diag else 0)
        return total + sum(per_entry * p.num_random() for p in self.posteriors.values())


def elrg(model: nn.Module, rank: int = 4, *, q_init_logvar: float = -10.0,
         learn_diag: bool = False, prior_precision: float = 1.0, prior_fan: str = "in",
         conv_factor_init: str = "zero", seed: int = 0,
         exclude: Iterable[str] = (), **options) -> VariationalModel:
    """Make ``model`` variational with an ELRG posterior (diagonal + rank-``rank``).

    Args:
        model: any module whose ``nn.Linear``/``nn.Conv2d``/asymspec masked layers get
            posteriors (moved with it: call ``.to(device)`` on the result).
        rank: low-rank factors per layer (``alpha = 1/rank``).
        q_init_logvar: diagonal log-variance (fixed unless ``learn_diag``).
        prior_precision: ``lambda`` of the prior ``log sigma_p^2 = -log(lambda * n)``.
        prior_fan: ``in`` | ``reference`` | ``none`` (see :func:`asymspec.bayes.kl.fan`).
        conv_factor_init: ``zero`` (reference) or ``scaled``.
        seed: factor initialisation and noise stream.
        exclude: layer names to keep as point estimates.
        **options: other :class:`ELRGConfig` fields (``factor_scale``, ``bias_factor_std``).
    """
    cfg = ELRGConfig(rank=rank, q_init_logvar=q_init_logvar, learn_diag=learn_diag,
                     prior_precision=prior_precision, prior_fan=prior_fan,
                     conv_factor_init=conv_factor_init, seed=seed, **options)
    return VariationalModel(model, cfg, exclude)
