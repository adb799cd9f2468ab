"""Size limits: a spec that cannot be built fails early with a located error, never by OOM.

Three limits, each configurable through an environment variable (a positive integer):

``ASYMSPEC_MAX_DIM`` (default 4,194,304 = 2**22)
    the largest integer a ``model`` field may hold (a width, a channel count, an input size...).
    Checked on the spec, before anything is expanded, so per-unit bookkeeping stays bounded.
``ASYMSPEC_MAX_DEPTH`` (default 10,000)
    the largest layer count a family field may ask for (resnet ``depth``, gnn / transformer
    ``layers``) and the most entries a ``widths`` / ``channels`` / ``hidden`` / ``layers`` list
    may have.
``ASYMSPEC_MAX_PARAMS`` (default: physical memory / 16 bytes, at most 2,000,000,000)
    the most weight + bias entries a model may have; checked on the IR before the asymmetry
    passes or the emitter allocate anything (a masked model holds about 13 bytes per entry:
    weight, mask, fixed values, plus init and noise while building).

A spec over a limit raises :class:`~asymspec.errors.SpecError` at the field responsible, naming
the limit and its variable, so ``asymspec check`` / ``show`` / ``compile`` exit 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Limit:
    env: str
    default: int | Callable[[], int]
    what: str

    @property
    def value(self) -> int:
        """The limit in force (the environment variable when it is a positive integer)."""
        raw = os.environ.get(self.env, "").strip().replace("_", "").replace(",", "")
        if raw.isdigit() and int(raw) > 0:
            return int(raw)
        return self.default() if callable(self.default) else self.default

    def describe(self) -> str:
        return (f"the limit of {self.value:,} {self.what} (set {self.env} to a larger number "
                "to allow it)")


MAX_DIM = Limit("ASYMSPEC_MAX_DIM", 2**22, "for any size field")
MAX_DEPTH = Limit("ASYMSPEC_MAX_DEPTH", 10_000, "layers")
BYTES_PER_ENTRY = 16  # weight + init + mask + fixed values + noise, with headroom


def _params_default() -> int:
    """What fits in this machine's memory at :data:`BYTES_PER_ENTRY`, at most 2e9."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2_000_000_000
    return max(1, min(2_000_000_000, ram // BYTES_PER_ENTRY))


MAX_PARAMS = Limit("ASYMSPEC_MAX_PARAMS", _params_default, "parameter entries")

_DEPTH_FIELDS = {"resnet": "depth", "gnn": "layers", "transformer": "layers"}
_LIST_FIELDS = ("widths", "channels", "hidden", "strides", "stage_widths", "layers")


def size_problems(data: dict[str, Any]) -> Iterator[tuple[tuple[Path, ...], str]]:
    """``(field paths, message)`` for every size in ``model`` over :data:`MAX_DIM` /
    :data:`MAX_DEPTH` (the loader's semantic-check protocol)."""
    model = data.get("model")
    if not isinstance(model, dict):
        return
    depth_field = _DEPTH_FIELDS.get(model.get("family"))
    max_depth = MAX_DEPTH.value
    if depth_field and isinstance(model.get(depth_field), int) and \
            model[depth_field] > max_depth:
        yield (("model", depth_field),), (
            f"{model[depth_field]:,} layers is over {MAX_DEPTH.describe()}")
    max_dim = MAX_DIM.value
    for path, value in _integers(model, ("model",)):
        if value > max_dim:
            yield (path,), f"{value:,} is over {MAX_DIM.describe()}"
    for key in _LIST_FIELDS:
        items = model.get(key)
        if isinstance(items, list) and len(items) > max_depth:
            yield (("model", key),), (
                f"{len(items):,} entries is over {MAX_DEPTH.describe()}")


def _integers(node: Any, path: Path) -> Iterator[tuple[Path, int]]:
    if isinstance(node, bool):
        return
    if isinstance(node, int):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _integers(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _integers(value, path + (i,))


def ir_size_problem(ir: Any) -> tuple[str, str, int] | None:
    """``(message, largest layer, its entries)`` when ``ir`` is over :data:`MAX_PARAMS`.

    Counts from shapes only (weights by ``weight_shape``, biases and norm affines by unit count),
    so nothing is allocated.
    """
    total = 0
    largest, largest_n = "", -1
    for _, dst, edge in ir.dense_edges():
        n = 1
        for d in edge["weight_shape"]:
            n *= int(d)
        n += int(ir.node(dst)["size"])
        total += n
        if n > largest_n:
            largest, largest_n = dst, n
    limit = MAX_PARAMS.value
    if total <= limit:
        return None
    return (f"the model has {total:,} parameter entries (largest layer '{largest}': "
            f"{largest_n:,}), over {MAX_PARAMS.describe()}", largest, largest_n)
