"""Per-layer parameter counts: trainable, frozen and buffer entries (cf. Lim et al. Table 5).

Two ways to count, which agree (a test checks every shipped spec): :func:`parameter_table` reads
an emitted module; :func:`ir_parameter_table` reads the IR alone — even one compiled with
``draw=False`` — so ``asymspec show`` prints counts without importing torch, allocating or
initialising any weight.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from asymspec.ir.deferred import mask_count

if TYPE_CHECKING:
    from asymspec.ir.graph import IRGraph
    from asymspec.nn.model import IRModule


@dataclass
class ParamRow:
    layer: str
    op: str
    units: int
    trainable: int
    fixed: int  # frozen weight entries (W-Asym, FiGLU F) and frozen biases
    buffers: int  # other buffer entries: masks, fixed-value stores, noise, running stats

    def as_dict(self) -> dict:
        return asdict(self)


def parameter_table(model: IRModule) -> list[ParamRow]:
    """Count what each IR node's module holds.

    A masked weight's frozen entries count as *fixed*, not trainable, even though the raw
    ``weight`` tensor has them (their gradient is exactly zero).  The mask and fixed-value
    buffers that implement this count as buffers.
    """
    rows = []
    for name, _ in model._steps:
        mod = model.get_submodule(name)
        node = model.ir.node(name)
        trainable = fixed = buffers = 0
        mask = getattr(mod, "weight_mask", None)
        for leaf, p in mod.named_parameters(recurse=False):
            if leaf == "weight" and mask is not None:
                trainable += int(mask.sum())
                fixed += int((~mask).sum())
            else:
                trainable += p.numel()
        for leaf, b in mod.named_buffers(recurse=False):
            if leaf in ("weight", "bias"):  # frozen weight (FiGLU F) or frozen bias
                fixed += b.numel()
            else:
                buffers += b.numel()
        rows.append(ParamRow(name, node["op"], node["size"], trainable, fixed, buffers))
    return rows


def ir_parameter_table(ir: IRGraph) -> list[ParamRow]:
    """The rows :func:`parameter_table` gives for ``emit(ir)``, computed from the IR's shapes
    and pass decisions (masks, fixed maps, noise, frozen biases) without building the module.

    Mirrors the emitter's layout: a dense layer whose mask is all-false holds its weight as a
    frozen buffer; a partly masked one holds the weight plus ``weight_mask`` and
    ``weight_fixed``; syre noise is a ``weight_offset`` buffer; a frozen bias is a buffer;
    a layer sharing another's weight holds nothing; norms hold affine parameters and (batch
    norm) running statistics.  ``ir`` may be drawn or compiled with ``draw=False`` (deferred
    masks count their trainable entries): the rows are the same.
    """
    rows = []
    for name in ir.topo_order():
        node = ir.node(name)
        if node["op"] == "input":
            continue
        trainable = fixed = buffers = 0
        op, size = node["op"], int(node["size"])
        if op in ("linear", "conv2d") and not node.get("shares"):
            _, e = ir.dense_edge(name)
            n = math.prod(int(d) for d in e["weight_shape"])
            mask = e["mask"]
            if mask is None:
                trainable += n
            else:
                free = mask_count(mask)
                if free == 0:
                    fixed += n
                else:
                    trainable += free
                    fixed += n - free
                    buffers += 2 * n
            if e["offset"] is not None:
                buffers += n
            bias = node["bias"]
            if bias == "trainable":
                trainable += size
            elif bias is not None and not isinstance(bias, str):
                fixed += size
        elif op in ("layernorm", "groupnorm", "batchnorm"):
            if node["attrs"].get("affine", True):
                trainable += 2 * size
            if op == "batchnorm":
                buffers += 2 * size + 1
        rows.append(ParamRow(name, op, size, trainable, fixed, buffers))
    return rows


def totals(rows: list[ParamRow]) -> dict[str, int]:
    return {k: sum(getattr(r, k) for r in rows) for k in ("trainable", "fixed", "buffers")}


def format_table(rows: list[ParamRow], only_nonzero: bool = True) -> str:
    shown = [r for r in rows if not only_nonzero or (r.trainable or r.fixed or r.buffers)]
    header = ("layer", "op", "units", "trainable", "fixed", "buffers")
    body = [(r.layer, r.op, str(r.units), f"{r.trainable:,}", f"{r.fixed:,}", f"{r.buffers:,}")
            for r in shown]
    t = totals(rows)
    body.append(("total", "", "", f"{t['trainable']:,}", f"{t['fixed']:,}", f"{t['buffers']:,}"))
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = []
    for j, row in enumerate([header, *body]):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if j == 0 or j == len(body) - 1:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
