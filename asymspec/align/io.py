"""Checkpoints, IRs and data for the alignment commands; every user mistake is a UserError.

A checkpoint is what ``asymspec compile`` writes (a dict with ``state_dict``, ``spec`` YAML text,
...) or a plain ``state_dict`` file.  Outputs keep the input's format and add ``perms``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from asymspec.errors import UserError
from asymspec.ir.graph import IRGraph


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``{"state_dict": ..., ...}`` from a compile checkpoint or a plain state_dict file.

    Loaded with ``weights_only=True`` (:func:`asymspec.checkpoint.read_checkpoint`).
    """
    from asymspec.checkpoint import read_checkpoint

    path = Path(path)
    obj = read_checkpoint(path)  # weights_only=True: a crafted pickle cannot run code
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        payload = dict(obj)
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor)
                                                  for v in obj.values()):
        payload = {"state_dict": obj, "_plain": True}
    else:
        raise UserError(f"{path}: neither an asymspec checkpoint (a dict with 'state_dict') nor "
                        "a state_dict")
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items()}
    payload["_path"] = str(path)
    _require_finite(payload["state_dict"], path)
    return payload


def _require_finite(state: Mapping[str, Any], path: Path) -> None:
    """Matching costs built from NaN / inf weights are meaningless (and scipy's assignment
    solver rejects them), so such a checkpoint is refused up front, naming the tensor."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: state_dict entry '{key}' is a {type(value).__name__}, "
                            "not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise UserError(f"{path}: '{key}' has {bad} NaN or infinite entr"
                            f"{'y' if bad == 1 else 'ies'}; alignment needs finite weights "
                            "(did training diverge?)")


def save_checkpoint(template: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                    perms: Mapping[str, np.ndarray], path: str | Path, **extra: Any) -> None:
    """Write ``state`` in ``template``'s format, adding ``perms`` (lists) and ``extra``."""
    from asymspec.cli import atomic_torch_save

    perm_lists = {g: [int(i) for i in np.asarray(p)] for g, p in perms.items()}
    if template.get("_plain"):
        payload: dict[str, Any] = {"state_dict": dict(state)}
    else:
        payload = {k: v for k, v in template.items() if not k.startswith("_")}
        payload["state_dict"] = dict(state)
    payload["perms"] = perm_lists
    payload.update(extra)
    atomic_torch_save(payload, Path(path))


def ir_from(spec: str | None, overrides: Sequence[str], payload: Mapping[str, Any]) -> IRGraph:
    """The IR of ``spec`` (a path), else of the spec text stored in the checkpoint."""
    from asymspec.compiler import compile_ir

    if spec is not None:
        if not Path(spec).is_file():
            raise UserError(f"{spec}: no such spec file")
        return compile_ir(spec, overrides)
    text = payload.get("spec")
    if not isinstance(text, str):
        raise UserError(f"{payload.get('_path', 'checkpoint')}: holds no spec; pass --spec "
                        "(or --module) to say which network it is")
    import yaml

    return compile_ir(yaml.safe_load(text), overrides)


def check_state(ir: IRGraph, state: Mapping[str, torch.Tensor], where: str) -> None:
    """The checkpoint's keys and shapes must be exactly those of the spec's model."""
    from asymspec.nn import emit

    ref = emit(ir).state_dict()
    missing = sorted(set(ref) - set(state))
    extra = sorted(set(state) - set(ref))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
        if extra:
            parts.append(f"unexpected {', '.join(extra[:4])}" + (" ..." if len(extra) > 4 else ""))
        raise UserError(f"{where}: the checkpoint does not match the spec '{ir.name}' "
                        f"({'; '.join(parts)})")
    for k, v in ref.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(f"{where}: '{k}' has shape {tuple(state[k].shape)}, the spec "
                            f"'{ir.name}' says {tuple(v.shape)}")


def model_from_state(ir: IRGraph, state: Mapping[str, torch.Tensor]) -> nn.Module:
    from asymspec.nn import emit

    model = emit(ir)
    model.load_state_dict(state)
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise UserError(f"--input-shape {text!r}: expected positive integers like 1,3,32,32")
    return shape


def module_factory(ref: str) -> nn.Module:
    """Instantiate ``pkg.mod:Factory`` or ``file.py:Factory`` (called with no arguments)."""
    from asymspec.targets import instantiate

    return instantiate(ref, label="--module")


def lower(module: nn.Module, example: tuple[torch.Tensor, ...]) -> IRGraph:
    try:
        from asymspec.audit import lower_module
    except ImportError:
        raise UserError("--module needs the audit feature (asymspec.audit.lower_module), which "
                        "this installation does not have; use --spec") from None
    return lower_module(module, example)


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise UserError(f"{where}: the checkpoint does not fit the module: "
                        f"{detail[:300] or exc}") from None


def data_batches(name: str, ir: IRGraph | None, input_shape: tuple[int, ...] | None,
                 num_batches: int, batch_size: int) -> list[tuple[torch.Tensor, ...]]:
    """Up to ``num_batches`` training batches of data set ``name`` shaped for the model."""
    try:
        from asymspec import data
    except ImportError:
        raise UserError("--data needs the data feature (asymspec.data), which this "
                        "installation does not have") from None
    ds = data.load(name, split="train")
    graph = getattr(ds, "graph", None)
    if graph is not None:
        return [(graph.x, graph.edge_index)]
    x = getattr(ds, "x", None)
    if not isinstance(x, torch.Tensor):
        xs = [ds[i][0] for i in range(min(len(ds), num_batches * batch_size))]
        x = torch.stack(xs)
    x = x[: num_batches * batch_size].float()
    if ir is not None:
        want = tuple(ir.node(ir.inputs[0])["shape"])
    elif input_shape is not None:
        want = tuple(input_shape[1:])
    else:
        want = tuple(x.shape[1:])
    if tuple(x.shape[1:]) != want:
        x = _fit_images(x, want, name)
    return [(x[i:i + batch_size],) for i in range(0, x.shape[0], batch_size)]


def _fit_images(x: torch.Tensor, want: tuple[int, ...], name: str) -> torch.Tensor:
    """Shape data for the model: same size -> reshape; images -> repeat grey channels to the
    model's channel count and resize bilinearly (activation statistics only need plausible
    inputs, e.g. Fashion-MNIST for an ImageNet-style ResNet)."""
    if int(np.prod(x.shape[1:])) == int(np.prod(want)):
        return x.reshape((x.shape[0],) + want)
    if x.dim() == 4 and len(want) == 3 and (x.shape[1] == want[0] or x.shape[1] == 1):
        x = x.expand(-1, want[0], -1, -1) if x.shape[1] != want[0] else x
        x = torch.nn.functional.interpolate(x, size=want[1:], mode="bilinear",
                                            align_corners=False)
        print(f"note: {name} images resized to {tuple(want)} for the model", file=sys.stderr)
        return x
    raise UserError(f"data set {name!r} has samples of shape {tuple(x.shape[1:])}, the "
                    f"model expects {want}")
