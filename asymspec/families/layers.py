"""The generic ``layers:`` form: an explicit DAG of named layers with named inputs."""

from __future__ import annotations

from asymspec.ir.program import InputDecl, LayerDecl, Program

_COMMON = {"name", "op", "in"}


def expand(m: dict) -> Program:
    inputs = [
        InputDecl(name, tuple(int(s) for s in cfg["shape"]), cfg.get("kind", "tensor"),
                  ("model", "inputs", name))
        for name, cfg in m["inputs"].items()
    ]
    decls = []
    for i, layer in enumerate(m["layers"]):
        ins = layer["in"]
        ins = [ins] if isinstance(ins, str) else list(ins)
        params = {k: v for k, v in layer.items() if k not in _COMMON}
        decls.append(LayerDecl(layer["name"], layer["op"], ins, params, ("model", "layers", i)))
    return Program(inputs, decls, list(m.get("outputs") or []))
