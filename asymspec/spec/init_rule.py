"""The spec's ``init`` block: its canonical form and the checks JSON Schema cannot express.

``init`` chooses how the trainable weight entries of linear / conv layers are drawn (``default``:
PyTorch's layer default, as before the option existed; ``kaiming_normal`` etc.: the
``torch.nn.init`` rule of that name).  The string form ``init: kaiming_normal`` is shorthand for
``init: {weights: kaiming_normal}``.  A block that changes no layer is dropped from the loaded
spec, so every spec written before the option keeps its content hash (and its run directories).

Cross-field rules (each field is used by some rules only, ``normal`` needs a ``std``) are checked
here, per block and per override merged with its block, so a bad value ends as a located spec
error (exit 2); the per-layer merge of several overrides is checked again by the IR planner
(:mod:`asymspec.passes.init_plan`).  Everything here is plain Python: ``asymspec show`` loads
specs without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

Path = tuple[str | int, ...]

KAIMING = ("kaiming_normal", "kaiming_uniform")
XAVIER = ("xavier_normal", "xavier_uniform")
FIELDS = ("weights", "mode", "nonlinearity", "a", "std")
# torch.nn.init.calculate_gain for the nonlinearities the schema allows (leaky_relu: from ``a``)
GAINS = {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0),
         "selu": 0.75}
_FLOAT32_MAX = 3.4028234663852886e38
_DRAW_BOUND = 10.0  # |standard normal draw| < ~8.6 (see asymspec.spec.semantic)
_STD_MIN = 1e-30  # far above float32's smallest normal (1.2e-38): draws stay distinct


def normalise_init(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with a string ``init`` (a rule name) turned into the mapping ``{weights: ...}``
    (before defaults are filled, so both forms load to the same data and hash)."""
    rule = data.get("init")
    if isinstance(rule, str):
        return {**data, "init": {"weights": rule}}
    return data


def drop_default_init(data: dict[str, Any]) -> None:
    """Remove an ``init`` that changes no layer (``default`` everywhere, no overrides), in place:
    such a spec builds the same weights as one without ``init`` and must hash the same."""
    rule = data.get("init")
    if rule == "default" or (isinstance(rule, dict) and rule.get("weights") == "default"
                             and not rule.get("overrides")):
        del data["init"]


def init_problems(data: dict[str, Any]) -> Iterator[tuple[tuple[Path, ...], str]]:
    """Located problems of ``data['init']`` (validated, defaults filled): the block itself, then
    each override merged with the block."""
    rule = data.get("init")
    if not isinstance(rule, dict):
        return
    base = {f: rule.get(f) for f in FIELDS}
    where = {f: ("init", f) for f in FIELDS}
    yield from (((p,), m) for p, m in rule_problems(base, where))
    for glob, values in (rule.get("overrides") or {}).items():
        merged, source = dict(base), dict(where)
        for f, v in values.items():
            merged[f] = v
            source[f] = ("init", "overrides", glob, f)
        for path, message in rule_problems(merged, source):
            if path[:3] == ("init", "overrides", glob) or not _base_problem(base, path):
                yield (path,), f"for layers matching {glob!r}: {message}"


def _base_problem(base: dict[str, Any], path: Path) -> bool:
    """Whether the block alone already has a problem at ``path`` (reported once, not again for
    every override that inherits it)."""
    return any(p == path for p, _ in rule_problems(base, {f: ("init", f) for f in FIELDS}))


def rule_problems(s: dict[str, Any], source: dict[str, Path]) -> list[tuple[Path, str]]:
    """``(path, message)`` for each inconsistency of one effective rule ``s`` (fields
    :data:`FIELDS`; ``source`` maps each to the spec path it came from)."""
    weights, out = s.get("weights", "default"), []
    std, a = s.get("std"), s.get("a", 0.0) or 0.0
    nonlinearity, mode = s.get("nonlinearity"), s.get("mode", "fan_in")
    for field in ("std", "a"):
        value = s.get(field)
        if isinstance(value, float) and not math.isfinite(value):
            out.append((source[field], f"must be a finite number, got {value}"))
    if out:
        return out
    if weights == "normal":
        if std is None:
            out.append((source["weights"], "weights: normal needs a std (e.g. std: 0.05)"))
        elif std < _STD_MIN:
            out.append((source["std"], f"std={std:g} rounds the weights to 0 in float32 (all "
                                       f"equal: no symmetry breaking); use std >= {_STD_MIN:g}"))
        elif std * _DRAW_BOUND > _FLOAT32_MAX:
            out.append((source["std"], f"std={std:g} overflows float32; use a std below "
                                       f"{_FLOAT32_MAX / _DRAW_BOUND:.3g}"))
    elif std is not None:
        out.append((source["std"], f"std is used only by weights: normal, not {weights}; "
                                   f"remove it or set weights: normal"))
    if mode != "fan_in" and weights not in KAIMING:
        out.append((source["mode"], f"mode is used only by the kaiming rules, not {weights}"))
    if nonlinearity is not None and weights not in KAIMING + XAVIER:
        out.append((source["nonlinearity"], f"nonlinearity (the gain) is used only by the "
                                            f"kaiming and xavier rules, not {weights}"))
    slope_used = weights in KAIMING and nonlinearity in (None, "leaky_relu") or \
        weights in XAVIER and nonlinearity == "leaky_relu"
    if a != 0 and not slope_used:
        out.append((source["a"], "a (the leaky_relu slope) is used only with a leaky_relu "
                                 "gain (kaiming rules, or nonlinearity: leaky_relu)"))
    elif abs(a) > 1e15:
        out.append((source["a"], f"a={a:g} makes the gain sqrt(2/(1+a^2)) vanish (weights "
                                 f"that round to 0 in float32); use |a| <= 1e15"))
    return out


def gain(s: dict[str, Any]) -> float:
    """``torch.nn.init.calculate_gain`` of an effective rule (kaiming / xavier)."""
    nonlinearity = s.get("nonlinearity")
    if nonlinearity is None:
        nonlinearity = "leaky_relu" if s["weights"] in KAIMING else "linear"
    if nonlinearity == "leaky_relu":
        a = float(s.get("a") or 0.0)
        return math.sqrt(2.0 / (1.0 + a * a))
    return GAINS[nonlinearity]


def draw_scale(s: dict[str, Any], fan_in: int, fan_out: int) -> tuple[str, float]:
    """``(distribution, scale)`` of an effective rule for a weight with these fans:
    ``("normal", std)`` or ``("uniform", bound)`` — what ``torch.nn.init`` would use."""
    weights = s["weights"]
    if weights == "normal":
        return "normal", float(s["std"])
    if weights in KAIMING:
        fan = fan_in if s.get("mode", "fan_in") == "fan_in" else fan_out
        std = gain(s) / math.sqrt(fan)
    else:
        std = gain(s) * math.sqrt(2.0 / (fan_in + fan_out))
    if weights.endswith("_uniform"):
        return "uniform", math.sqrt(3.0) * std
    return "normal", std
