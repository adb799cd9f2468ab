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
compile once per spec and input shape.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from asymspec.errors import UserError

CHOICES = ("auto", "on", "off")


def compile_enabled(device: torch.device | str, enabled: bool | str = "auto") -> bool:
    """Whether :func:`maybe_compile` compiles on ``device`` for the setting ``enabled``."""
    if isinstance(enabled, str):
        if enabled not in CHOICES:
            raise UserError(f"compile: expected one of {', '.join(CHOICES)} or a boolean, "
                            f"got {enabled!r}")
        if enabled != "auto":
            return enabled == "on"
        return torch.device(device).type == "cuda" and _inductor_gpu_available()
    return bool(enabled)


def maybe_compile(model: nn.Module, device: torch.device | str,
                  enabled: bool | str = "auto", **compile_kwargs: Any) -> nn.Module:
    """Compile ``model``'s forward in place when the policy says so; return ``model``.

    ``enabled``: ``"auto"`` (compile on CUDA only), ``"on"``/``True``, ``"off"``/``False``.
    ``compile_kwargs`` go to ``torch.compile`` (e.g. ``mode="max-autotune"``).
    """
    if compile_enabled(device, enabled):
        model.compile(**compile_kwargs)
    return model


def _inductor_gpu_available() -> bool:
    """Inductor's GPU backend needs Triton; without it, auto means eager."""
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # pragma: no cover - very old torch
        return False
    return bool(has_triton())
