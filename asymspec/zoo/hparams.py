"""Per-member hyperparameters: distributions from the spec, sampled deterministically.

A distribution is either a plain number (every member gets it) or a mapping::

    {dist: loguniform, low: 0.005, high: 0.5}     # 10**U(log10 low, log10 high)
    {dist: uniform, low: 0.0, high: 0.2}
    {dist: randint, low: 10, high: 40}            # inclusive at both ends
    {dist: choice, values: [0.01, 0.1]}

The default is Lim et al. 2024, Table 13 (``grid_runs/make_hparams.py`` of the reference):
lr = 0.5·10^(−U(0,2)) — exactly loguniform on [0.005, 0.5]; weight decay = 10^(−U(1,5)) —
loguniform on [1e-5, 1e-1]; label smoothing U(0, 0.2); epochs randint(10, 40) inclusive.

Member ``i`` draws from its own generator seeded by (zoo seed, "zoo-hparams", i), in the fixed
order of :data:`HPARAM_NAMES`.  So growing a zoo never changes the draws of existing members,
and every variant of one zoo sees the same draws (as in the reference, where all architectures
share one ``hparams.csv``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from asymspec.errors import UserError
from asymspec.seeding import generator

HPARAM_NAMES = ("lr", "weight_decay", "label_smoothing", "epochs")

TABLE13: dict[str, Any] = {
    "lr": {"dist": "loguniform", "low": 0.005, "high": 0.5},
    "weight_decay": {"dist": "loguniform", "low": 1e-5, "high": 1e-1},
    "label_smoothing": {"dist": "uniform", "low": 0.0, "high": 0.2},
    "epochs": {"dist": "randint", "low": 10, "high": 40},
}

DISTS = ("constant", "uniform", "loguniform", "randint", "choice")


def check_distribution(name: str, d: Any) -> None:
    """Raise :class:`UserError` (naming the field) for a malformed distribution."""
    where = f"hparams.{name}"
    if isinstance(d, bool) or not isinstance(d, (int, float, dict)):
        raise UserError(f"{where}: expected a number or a mapping with 'dist', got {d!r}")
    if not isinstance(d, dict):
        return
    kind = d.get("dist")
    if kind not in DISTS:
        raise UserError(f"{where}.dist: {kind!r} is not one of {', '.join(DISTS)}")
    if kind == "choice":
        if not d.get("values"):
            raise UserError(f"{where}.values: a choice needs a non-empty list of values")
        return
    if kind == "constant":
        if "value" not in d:
            raise UserError(f"{where}.value: a constant needs a value")
        return
    lo, hi = d.get("low"), d.get("high")
    if not isinstance(lo, (int, float)) or not isinstance(hi, (int, float)) or lo > hi:
        raise UserError(f"{where}: needs numbers low <= high, got low={lo!r} high={hi!r}")
    if kind == "loguniform" and lo <= 0:
        raise UserError(f"{where}.low: a loguniform distribution needs low > 0, got {lo}")
    if kind == "randint" and (int(lo) != lo or int(hi) != hi):
        raise UserError(f"{where}: randint needs integer bounds, got {lo}, {hi}")


def _draw(d: Any, g: torch.Generator) -> float:
    u = float(torch.rand((), generator=g, dtype=torch.float64))  # always one draw per field
    if not isinstance(d, dict):
        return float(d)
    kind = d["dist"]
    if kind == "constant":
        return float(d["value"])
    if kind == "choice":
        values = d["values"]
        return values[min(int(u * len(values)), len(values) - 1)]
    lo, hi = float(d["low"]), float(d["high"])
    if kind == "uniform":
        return lo + (hi - lo) * u
    if kind == "loguniform":
        return 10.0 ** (math.log10(lo) + (math.log10(hi) - math.log10(lo)) * u)
    return float(int(lo) + min(int(u * (int(hi) - int(lo) + 1)), int(hi) - int(lo)))


def resolve(distributions: dict[str, Any] | None) -> dict[str, Any]:
    """Table 13 with the fields of ``distributions`` replaced; checks every field."""
    out = dict(TABLE13)
    for name, d in (distributions or {}).items():
        if name not in HPARAM_NAMES:
            raise UserError(f"hparams.{name}: unknown hyperparameter; known: "
                            f"{', '.join(HPARAM_NAMES)}")
        out[name] = d
    for name, d in out.items():
        check_distribution(name, d)
    return out


def sample_member(distributions: dict[str, Any], seed: int, index: int) -> dict[str, Any]:
    """Hyperparameters of member ``index`` (``epochs`` an int, the rest floats)."""
    g = generator(seed, "zoo-hparams", index)
    hp = {name: _draw(distributions[name], g) for name in HPARAM_NAMES}
    hp["epochs"] = int(round(hp["epochs"]))
    if hp["epochs"] < 1:
        raise UserError(f"hparams.epochs: member {index} drew {hp['epochs']} epochs (< 1)")
    return hp


def min_epochs(distributions: dict[str, Any]) -> float:
    """The smallest number of epochs the epoch distribution can produce."""
    d = distributions["epochs"]
    if not isinstance(d, dict):
        return float(d)
    if d["dist"] == "constant":
        return float(d["value"])
    if d["dist"] == "choice":
        return float(min(d["values"]))
    return float(d["low"])
