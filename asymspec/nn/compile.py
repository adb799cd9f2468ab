"""``maybe_compile``: the one place that decides whether an emitted model runs under
``torch.compile``, so every runner makes the same choice and offers the same switch.

Policy (``enabled="auto"``): compile on CUDA, where inductor fuses the frozen-entry ``where``,
FiGLU's sigmoid-and-multiply and the norms into few kernels; stay eager on CPU, where the first
compilation of a model costs tens of seconds to minutes, which the short ``cpu`` profiles never
earn back (and the eager masked layers already avoid the dense passes).  ``enabled=True``
compiles on any device, ``False`` never does.

Compilation is in place (``nn.Module.compile``): the model stays the same object with the same
``state_dict`` keys (``torch.compile(model)`` would wrap it and prefix every key with
``_orig_mod.``), and it is lazy — the first forward call compiles.  All models of one spec share
one compiled graph (dynamo guards do not depend on the instance), so LMC pairs, zoos and sweeps
compile once per spec and input shape.  Different specs share ``IRModule.forward``'s code object,
so each is a recompilation of that one frame; :func:`maybe_compile` raises dynamo's recompile
limit (default 8) so that a sweep over many specs in one process keeps compiling instead of
silently falling back to eager.

Runners do not call this directly: the trainer compiles for the duration of training with the
setting of :class:`~asymspec.run.trainer.TrainOptions` (default: the process default, set per
unit by the engine from the experiment's ``resources.compile``, or ``$ASYMSPEC_COMPILE``).
The setting is an execution option, never part of a run's hash: compiled and eager models
compute the same function (equal up to float rounding, ``tests/test_emit_compile.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from asymspec.errors import UserError

CHOICES = ("auto", "on", "off")
RECOMPILE_LIMIT = 64  # distinct specs x modes x shapes per process before eager fallback
_DEFAULT: list[bool | str] = ["auto"]


def default_setting() -> bool | str:
    """The process default: ``$ASYMSPEC_COMPILE`` when set, else what :func:`use_default`
    set (the engine sets it per unit from ``resources.compile``), else ``"auto"``."""
    env = os.environ.get("ASYMSPEC_COMPILE")
    if env:
        if env not in CHOICES:
            raise UserError(f"$ASYMSPEC_COMPILE: expected one of {', '.join(CHOICES)}, "
                            f"got {env!r}")
        return env
    return _DEFAULT[0]


@contextmanager
def use_default(setting: bool | str | None) -> Iterator[None]:
    """Within the block, :func:`default_setting` is ``setting`` (``None``: unchanged)."""
    previous = _DEFAULT[0]
    if setting is not None:
        compile_enabled("cpu", setting)  # validate
        _DEFAULT[0] = setting
    try:
        yield
    finally:
        _DEFAULT[0] = previous


def compile_enabled(device: torch.device | str, enabled: bool | str | None = "auto") -> bool:
    """Whether :func:`maybe_compile` compiles on ``device`` for the setting ``enabled``
    (``None``: the process default, :func:`default_setting`)."""
    if enabled is None:
        enabled = default_setting()
    if isinstance(enabled, str):
        if enabled not in CHOICES:
            raise UserError(f"compile: expected one of {', '.join(CHOICES)} or a boolean, "
                            f"got {enabled!r}")
        if enabled != "auto":
            return enabled == "on"
        return torch.device(device).type == "cuda" and _inductor_gpu_available()
    return bool(enabled)


def maybe_compile(model: nn.Module, device: torch.device | str,
                  enabled: bool | str | None = "auto", **compile_kwargs: Any) -> nn.Module:
    """Compile ``model``'s forward in place when the policy says so; return ``model``.

    ``enabled``: ``"auto"`` (compile on CUDA only), ``"on"``/``True``, ``"off"``/``False``,
    ``None`` (the process default).  ``compile_kwargs`` go to ``torch.compile`` (e.g.
    ``mode="max-autotune"``, ``backend="aot_eager"``).
    """
    if compile_enabled(device, enabled):
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit,
                                                 4 * RECOMPILE_LIMIT)
        if (enabled if enabled is not None else default_setting()) == "auto":
            config.suppress_errors = True  # auto never fails a run: what dynamo cannot
            #                                compile runs eager (with dynamo's warning)
        model.compile(**compile_kwargs)
    return model


@contextmanager
def compiled(model: nn.Module, device: torch.device | str, enabled: bool | str | None = None,
             **compile_kwargs: Any) -> Iterator[nn.Module]:
    """``maybe_compile`` for the duration of a ``with`` block, then back to eager: the model
    leaves the block exactly as it came in (nothing compiled stays attached to it)."""
    before = getattr(model, "_compiled_call_impl", None)
    maybe_compile(model, device, enabled, **compile_kwargs)
    try:
        yield model
    finally:
        model._compiled_call_impl = before


def _inductor_gpu_available() -> bool:
    """Inductor's GPU backend needs Triton; without it, auto means eager."""
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # pragma: no cover - very old torch
        return False
    return bool(has_triton())
