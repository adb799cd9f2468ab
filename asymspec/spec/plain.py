"""Normalising a spec given as a Python dict to plain JSON data.

YAML input is already plain (see :mod:`asymspec.spec.yaml_lines`); a dict from Python code may
hold tuples, numpy scalars or ``nan``.  :func:`to_plain` returns a deep copy with tuples as lists
and numpy-like scalars as Python scalars, and rejects anything JSON cannot hold.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from asymspec.errors import SpecError

Path = tuple[str | int, ...]


def to_plain(value: Any, path: Path = ()) -> Any:
    """A plain-JSON deep copy of ``value``; :class:`SpecError` (no line) for what cannot be."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise SpecError(f"expected a finite number, got {number}", field_path=path)
        return number
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpecError(f"mapping keys must be strings, got {type(key).__name__} "
                                f"{key!r}", field_path=path)
            out[key] = to_plain(item, (*path, key))
        return out
    if isinstance(value, (list, tuple)):
        return [to_plain(item, (*path, i)) for i, item in enumerate(value)]
    raise SpecError(f"unsupported value of type {type(value).__name__}: {value!r}",
                    field_path=path)
