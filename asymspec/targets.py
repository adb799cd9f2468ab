"""Resolve ``package.module:attr`` / ``path/to/file.py:attr`` references to torch modules.

Shared by every command that takes a user's model (``audit``, ``perm-spec``, ``align
--module``); failures are :class:`~asymspec.errors.UserError`s naming the reference.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from asymspec.errors import UserError


def load_attr(target: str, label: str = "TARGET"):
    """The object ``target`` names (a class, a factory, an instance, ...)."""
    if ":" not in target:
        raise UserError(f"{label} '{target}': expected 'package.module:attr' or "
                        "'path/to/file.py:attr'")
    mod_name, _, attr = target.rpartition(":")
    try:
        if mod_name.endswith(".py") or "/" in mod_name:
            path = Path(mod_name)
            if not path.is_file():
                raise UserError(f"{label} '{target}': file '{mod_name}' does not exist")
            spec = importlib.util.spec_from_file_location(f"_asymspec_user_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{label} '{target}': cannot import '{mod_name}': "
                        f"{type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{label} '{target}': '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    return obj


def instantiate(target: str, label: str = "TARGET"):
    """An ``nn.Module`` from ``target``: an instance as is, a class or factory called with no
    arguments."""
    from torch import nn

    obj = load_attr(target, label)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise UserError(f"{label} '{target}' is neither an nn.Module nor callable")
    try:
        model = obj()
    except Exception as exc:
        raise UserError(f"{label} '{target}': calling it without arguments failed: "
                        f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{label} '{target}' returned {type(model).__name__}, not an nn.Module")
    return model
