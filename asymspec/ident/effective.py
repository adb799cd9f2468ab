"""Asymmetric networks as plain networks with their effective weights.

Aligning two W-Asym / syre networks permutes their units, after which their masks and frozen
values no longer coincide: interpolating raw state dicts would mix one network's trainable
entries with the other's constants.  As in the reference, both networks are first converted to
*standard* networks whose weights are the effective weights ``where(mask, W, F) + offset``
(FiGLU's frozen F becomes an ordinary weight too); permutation, interpolation and evaluation
then act on those.  Without alignment this changes nothing: interpolating effective weights
equals interpolating the raw networks (masks and constants are shared within a kind).

The structure comes from the IR: :func:`plain_ir` drops masks, fixed values and offsets from
every dense edge; the emitted module has the same node names, so state-dict keys line up.
"""

from __future__ import annotations

import torch
from torch import nn

from asymspec.ir.graph import IRGraph
from asymspec.nn.model import IRModule, emit


def plain_ir(ir: IRGraph) -> IRGraph:
    """A copy of ``ir`` whose dense edges carry no mask / fixed values / offsets."""
    out = ir.copy()
    for _, _, edge in out.dense_edges():
        edge["mask"] = edge["fixed"] = edge["offset"] = None
    return out


def effective_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain network computing exactly what ``model`` computes."""
    out: dict[str, torch.Tensor] = {}
    leaves = ("weight_mask", "weight_fixed", "weight_offset")
    for key, value in model.state_dict().items():
        if key.rpartition(".")[2] in leaves:
            continue
        out[key] = value.detach().clone()
    for name, mod in model.named_modules():
        if hasattr(mod, "effective_weight") and hasattr(mod, "weight"):
            with torch.no_grad():
                out[f"{name}.weight"] = mod.effective_weight().detach().clone()
    return out


def plain_model(ir: IRGraph, state: dict[str, torch.Tensor] | None = None) -> IRModule:
    """The plain network of ``ir`` (already plain or not), optionally loaded with ``state``."""
    model = emit(plain_ir(ir), 0)
    if state is not None:
        model.load_state_dict(state)
    return model


def trainable_count(model: nn.Module) -> int:
    """Trainable scalars of the (asymmetric) network: frozen entries do not count."""
    total = 0
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            mask = getattr(mod, "weight_mask", None) if name == "weight" else None
            total += int(mask.sum()) if mask is not None else p.numel()
    return total


def parameter_distance(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                       keys: list[str]) -> float:
    """Euclidean distance between two (effective) states over ``keys``."""
    sq = sum(float(((state_a[k].double() - state_b[k].double()) ** 2).sum()) for k in keys)
    return sq ** 0.5
