"""Reading checkpoints safely, and rebuilding a compiled model from one.

Every file a *user* hands to asymspec (``canonicalize``, ``align``, ``audit``, :func:`load`) is
read with ``torch.load(..., weights_only=True)``: the unpickler only accepts tensors, containers
and plain values, so a crafted file cannot run code (a pickle whose ``__reduce__`` names
``os.system`` is refused *before* anything is called).  What asymspec itself writes —
``asymspec compile`` (format ``asymspec-checkpoint/1``: the resolved spec as YAML *text*, its
hash, the init seed, the state_dict, the parameter table as a list of dicts, the check verdict
as a string) and aligned checkpoints (``perms`` as lists of ints) — is made of exactly those
types, so nothing else needs allow-listing.

Typical use::

    model = asymspec.load("model.pt")        # the compiled module with its weights
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asymspec.errors import UserError

FORMAT = "asymspec-checkpoint/1"


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """The unpickled contents of ``path``, loaded with ``weights_only=True``.

    Raises :class:`UserError` (naming the file) when it is missing, not a torch file, or holds
    anything other than tensors and plain values — in particular when it tries to call code.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(str(exc))
        if "GLOBAL" in detail:
            raise UserError(
                f"{path}: refused to load: the file holds objects other than tensors and plain "
                f"values ({detail[:200]}); asymspec loads checkpoints with weights_only=True, "
                "so no code in a file ever runs") from None
        raise UserError(f"{path}: not a torch checkpoint ({detail[:200]})") from None
    except Exception as exc:  # noqa: BLE001 - any other read failure is the file's fault
        raise UserError(f"{path}: not a torch checkpoint ({type(exc).__name__}: "
                        f"{str(exc)[:300]})") from None


def load_payload(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An asymspec compile checkpoint as a dict (``state_dict``, ``spec``, ...)."""
    obj = read_checkpoint(path)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        raise UserError(f"{path}: not an asymspec checkpoint (a dict with 'state_dict', as "
                        "written by `asymspec compile`)")
    return dict(obj)


def load(path: str | os.PathLike[str], *, spec: Any = None, strict: bool = True):
    """The module compiled into ``path`` by ``asymspec compile``, with its weights.

    The network is rebuilt from the spec stored in the checkpoint (or from ``spec``: a path,
    YAML text, dict or :class:`~asymspec.spec.Spec`) and the state_dict loaded into it.  A
    state_dict that does not fit raises :class:`UserError` naming the file.
    """
    from asymspec.compiler import build

    payload = load_payload(path)
    if spec is None:
        spec = payload.get("spec")
        if not isinstance(spec, str):
            raise UserError(f"{path}: the checkpoint stores no spec; pass spec=...")
    model = build(spec, init_seed=_int_or_none(payload.get("init_seed")))
    try:
        model.load_state_dict(payload["state_dict"], strict=strict)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[:3])
        raise UserError(f"{path}: the state_dict does not fit the spec's model: "
                        f"{detail[:400]}") from None
    return model


def _unpickler_detail(message: str) -> str:
    """The specific line of torch's weights-only error (its boilerplate removed)."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation",
              "WeightsUnpickler error:")
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(boiler)]
    return (useful[0] if useful else lines[0] if lines else "unreadable pickle").rstrip(".")


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
