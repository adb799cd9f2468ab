"""Checks JSON Schema cannot express, run by the loader on validated, default-filled data.

Only checks that need nothing but the spec's own fields live here (size limits, finite asymmetry
scales, the ``init`` block's cross-field rules, resnet depth = 6n+2, cnn strides/channels
lengths, odd cnn kernel, transformer heads | d_model).  Checks that need the
built graph (cycles, unknown ``in`` names, shapes, nfix vs fan-in) belong to the IR builder.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from asymspec.spec.init_rule import init_problems
from asymspec.spec.limits import size_problems

_FLOAT_MAX = 1.7976931348623157e308
_FLOAT32_MAX = 3.4028234663852886e38
# The largest |value| a unit-scale draw can have: fixed biases are U(-1, 1); W-Asym values, syre
# noise and F are torch.randn, whose Box-Muller draws stay below sqrt(-2 ln 2**-53) ~ 8.6.  A
# scale times this bound that exceeds float32's range could give infinite fixed values.
_DRAW_BOUND = {"k": 1.0, "kappa": 10.0, "f_std": 10.0}

Path = tuple[str | int, ...]


def semantic_problems(data: dict[str, Any]) -> Iterator[tuple[tuple[Path, ...], str]]:
    """Yield ``(field paths, message)`` for each problem, in a fixed order.

    The first path is the field the problem is about; later ones are related fields to point at
    instead when the first was not written in the file (e.g. a defaulted ``heads``).
    """
    yield from size_problems(data)
    yield from _finite_scales(data)
    yield from init_problems(data)
    model = data["model"]
    family = model["family"]
    if family == "resnet":
        depth = model["depth"]
        if (depth - 2) % 6 != 0:
            lower = depth - (depth - 2) % 6
            yield (("model", "depth"),), (
                f"resnet depth must be 6n+2 (e.g. 20, 32, 44, 56, 110), got {depth}; "
                f"nearest valid depths are {lower} and {lower + 6}")
    elif family == "cnn":
        strides, channels = model["strides"], model["channels"]
        if strides is not None and len(strides) != len(channels):
            yield (("model", "strides"), ("model", "channels")), (
                f"must have one stride per conv layer: channels has {len(channels)} entries, "
                f"strides has {len(strides)}")
        if model["kernel_size"] % 2 == 0:
            yield (("model", "kernel_size"),), (
                f"must be odd (padding is kernel_size // 2), got {model['kernel_size']}")
    elif family == "transformer":
        d_model, heads = model["d_model"], model["heads"]
        if d_model % heads != 0:
            yield (("model", "heads"), ("model", "d_model")), (
                f"d_model ({d_model}) must be divisible by heads ({heads})")
        hidden = d_model * model["mlp_ratio"]
        if not float(hidden).is_integer() or hidden < 1:
            yield (("model", "mlp_ratio"), ("model", "d_model")), (
                f"d_model * mlp_ratio must be a whole number >= 1 (the MLP width), got "
                f"{d_model} * {model['mlp_ratio']} = {hidden}")


def _finite_scales(data: dict[str, Any]) -> Iterator[tuple[tuple[Path, ...], str]]:
    """Every number under ``asymmetry`` must be finite: an infinite kappa / f_std / k makes every
    fixed value ±inf and the forward NaN.  Scales whose draws could overflow float32, and an
    ``f_std`` of 0, are refused here too (see :func:`_scale_problems`), so that ``show``, which
    draws nothing, refuses what ``check`` and ``compile`` would; the passes still check the
    float32 values they draw."""
    asym = data.get("asymmetry")
    if not isinstance(asym, dict):
        return
    stack: list[tuple[Path, Any]] = [(("asymmetry",), asym)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((path + (i,), v) for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, float) and not math.isfinite(node):
            yield (path,), f"must be a finite number, got {node}"
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and \
                abs(node) <= _FLOAT_MAX:
            yield from _scale_problems(path, node)
        elif isinstance(node, int) and not isinstance(node, bool) and path[-1] != "seed" \
                and abs(node) > _FLOAT_MAX:
            digits = int(abs(node).bit_length() * 0.30103)
            yield (path,), f"about 10^{digits} is beyond the range of a float (max ~1.8e308)"


def _scale_problems(path: Path, value: float) -> Iterator[tuple[tuple[Path, ...], str]]:
    """A ``kappa`` / ``f_std`` / ``k`` whose largest possible draw overflows float32 (every
    seed's values could become infinite, the forward NaN), or ``f_std: 0`` (F = 0: FiGLU is x/2
    and any invertible map of the layer is a symmetry; Lim et al. Prop. 2 needs F without zero
    entries)."""
    key = path[-1]
    bound = _DRAW_BOUND.get(key) if isinstance(key, str) else None
    if bound is None:
        return
    if abs(value) * bound > _FLOAT32_MAX:
        limit = _FLOAT32_MAX / bound
        yield (path,), (f"{key}={value:g} overflows float32 (fixed values of that scale can be "
                        f"infinite); use a {key} below {limit:.3g}")
    elif key == "f_std" and value == 0:
        yield (path,), ("f_std=0 makes F all zero entries, so FiGLU is x/2 and every invertible "
                        "map of the layer is a symmetry (Lim et al. Prop. 2 needs F without zero "
                        "entries); use a positive f_std")
