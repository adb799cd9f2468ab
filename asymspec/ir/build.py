"""Lower a :class:`~asymspec.ir.program.Program` to the IR, inferring shapes.

Every structural mistake (unknown input, cycle, duplicate name, shape mismatch) becomes a
:class:`~asymspec.errors.SpecError` located at the spec field that declared the layer.
"""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx
import numpy as np

from asymspec.errors import SpecError
from asymspec.ir.graph import IRGraph
from asymspec.ir.program import LayerDecl, Program

ErrorFactory = Callable[[tuple, str], SpecError]

ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "leaky_relu", "identity", "sigmoid")


def _default_error(path: tuple, message: str) -> SpecError:
    return SpecError(message, field_path=tuple(path))


def _conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


class _Builder:
    def __init__(self, program: Program, name: str, error: ErrorFactory) -> None:
        self.p = program
        self.ir = IRGraph(name)
        self.error = error

    # -------------------------------------------------------------- helpers
    def fail(self, decl: LayerDecl, message: str, field: str | None = None) -> SpecError:
        # generic `layers:` entries have per-layer fields; family layers point at the family
        # field that produced them
        generic = tuple(decl.source[:2]) == ("model", "layers")
        path = tuple(decl.source) + ((field,) if field and generic else ())
        return self.error(path, f"layer '{decl.name}': {message}")

    def node(self, name: str) -> dict:
        return self.ir.node(name)

    def expect_layout(self, decl: LayerDecl, src: str, layouts: tuple[str, ...]) -> dict:
        nd = self.node(src)
        if nd["layout"] not in layouts:
            want = " or ".join(layouts)
            raise self.fail(
                decl,
                f"op '{decl.op}' needs a {want} input, but '{src}' has shape "
                f"{list(nd['shape'])} ({nd['layout']})"
                + ("; insert a flatten or global pool first" if nd["layout"] == "image" else ""),
                "in",
            )
        return nd

    def identity(self, src: str, dst: str, slot: int = 0) -> None:
        self.ir.add_map_edge(src, dst, np.arange(self.node(src)["size"]), slot)

    def add(self, decl: LayerDecl, size: int, shape: tuple, layout: str, **kw) -> None:
        self.ir.add_node(
            decl.name,
            decl.op,
            decl.inputs,
            size,
            shape,
            layout,
            role=decl.role or kw.pop("role", "hidden"),
            source=decl.source,
            **kw,
        )

    # -------------------------------------------------------------- main
    def run(self) -> IRGraph:
        names: dict[str, tuple] = {}
        for inp in self.p.inputs:
            if inp.name in names:
                raise self.error(inp.source, f"duplicate name '{inp.name}'")
            names[inp.name] = inp.source
        for decl in self.p.layers:
            if decl.name in names:
                raise self.fail(decl, f"duplicate name '{decl.name}'", "name")
            names[decl.name] = decl.source
        # dotted names become nested torch modules: one may not be a prefix of another
        for a in names:
            if "." in a:
                parts = a.split(".")
                for i in range(1, len(parts)):
                    prefix = ".".join(parts[:i])
                    if prefix in names:
                        raise self.error(
                            names[a], f"name '{a}' nests inside the layer '{prefix}'"
                        )
        deps = nx.DiGraph()
        decl_by_name = {d.name: d for d in self.p.layers}
        for i, decl in enumerate(self.p.layers):
            deps.add_node(decl.name, order=i)
            if not decl.inputs:
                raise self.fail(decl, "has no inputs", "in")
            for src in decl.inputs:
                if src not in names:
                    close = _closest(src, names)
                    hint = f" (did you mean '{close}'?)" if close else ""
                    raise self.fail(decl, f"input '{src}' is not defined{hint}", "in")
                if src in decl_by_name:
                    deps.add_edge(src, decl.name)
            owner = decl.params.get("share")
            if owner:
                if owner not in decl_by_name or decl_by_name[owner].op != decl.op:
                    raise self.fail(decl, f"share: '{owner}' is not a {decl.op} layer", "share")
                if decl_by_name[owner].params.get("share"):
                    raise self.fail(decl, f"share: '{owner}' itself shares another layer's "
                                    "weight; name the owner", "share")
                deps.add_edge(owner, decl.name)
        try:
            cycle = nx.find_cycle(deps)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            members = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
            raise self.fail(decl_by_name[cycle[0][1]], f"layers form a cycle: {members}", "in")

        for inp in self.p.inputs:
            if inp.kind == "edge_index":
                self.ir.add_node(inp.name, "input", [], 0, (2,), "edges", role="input",
                                 source=inp.source)
            else:
                shape = tuple(inp.shape)
                layout = {1: "vector", 2: "tokens", 3: "image"}.get(len(shape))
                if layout is None:
                    raise self.error(inp.source, "input shape must have 1 (features), 2 "
                                     "(tokens, features) or 3 (channels, height, width) entries")
                size = shape[-1] if layout == "tokens" else shape[0]
                self.ir.add_node(inp.name, "input", [], size, shape, layout, role="input",
                                 source=inp.source)
            self.ir.inputs.append(inp.name)

        order = nx.lexicographical_topological_sort(deps, key=lambda n: deps.nodes[n]["order"])
        for name in order:
            decl = decl_by_name[name]
            handler = getattr(self, f"op_{decl.op}", None)
            if handler is None:
                raise self.fail(decl, f"unknown op '{decl.op}'", "op")
            handler(decl)

        outputs = self.p.outputs or [self.p.layers[-1].name]
        for out in outputs:
            if out not in self.ir.g:
                raise self.error(tuple(self.p.source) + ("outputs",),
                                 f"output '{out}' is not a layer")
            nd = self.node(out)
            if nd["layout"] == "edges":
                raise self.error(tuple(self.p.source) + ("outputs",),
                                 f"output '{out}' is not a feature tensor")
            nd["role"] = "output"
            self.ir.outputs.append(out)
        return self.ir

    # -------------------------------------------------------------- ops
    def _share(self, d: LayerDecl, src: str) -> None:
        """Point the new dense edge at the owner's parameter (weight sharing)."""
        owner = d.params.get("share")
        if not owner:
            return
        mine = self.ir.edge(src, d.name)
        o_src, o_edge = self.ir.dense_edge(owner)
        if o_edge["weight_shape"] != mine["weight_shape"]:
            raise self.fail(d, f"share: weight shape {list(mine['weight_shape'])} differs from "
                            f"'{owner}''s {list(o_edge['weight_shape'])}", "share")
        mine["param"] = o_edge["param"]
        node = self.node(d.name)
        node["shares"] = owner
        node["bias"] = self.node(owner)["bias"]

    def op_linear(self, d: LayerDecl) -> None:
        (src,) = self._arity(d, 1)
        nd = self.expect_layout(d, src, ("vector", "tokens"))
        out = int(d.params["out_features"])
        shape = (out,) if nd["layout"] == "vector" else (nd["shape"][0], out)
        bias = "trainable" if d.params.get("bias", True) else None
        self.add(d, out, shape, nd["layout"], attrs={"in_features": nd["size"]}, bias=bias)
        self.ir.add_dense_edge(src, d.name, (out, nd["size"]))
        self._share(d, src)

    def op_conv2d(self, d: LayerDecl) -> None:
        (src,) = self._arity(d, 1)
        nd = self.expect_layout(d, src, ("image",))
        c, h, w = nd["shape"]
        k = int(d.params.get("kernel_size", 3))
        s = int(d.params.get("stride", 1))
        p = d.params.get("padding")
        p = k // 2 if p is None else int(p)
        ho, wo = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
        if ho < 1 or wo < 1:
            raise self.fail(d, f"kernel {k} with stride {s}, padding {p} does not fit the "
                            f"{h}x{w} input", "kernel_size")
        out = int(d.params["out_channels"])
        bias = "trainable" if d.params.get("bias", True) else None
        self.add(d, out, (out, ho, wo), "image",
                 attrs={"kernel_size": k, "stride": s, "padding": p, "in_channels": c},
                 bias=bias)
        self.ir.add_dense_edge(src, d.name, (out, c, k, k))
        self._share(d, src)

    def _elementwise(self, d: LayerDecl, role: str = "hidden", **attrs) -> None:
        (src,) = self._arity(d, 1)
        nd = self.node(src)
        if nd["layout"] == "edges":
            raise self.fail(d, f"'{src}' is an edge index, not features", "in")
        self.add(d, nd["size"], nd["shape"], nd["layout"], attrs=attrs, role=role)
        self.identity(src, d.name)

    def op_activation(self, d: LayerDecl) -> None:
        fn = d.params.get("fn", "relu")
        if fn not in ACTIVATIONS:
            raise self.fail(d, f"unknown activation '{fn}'", "fn")
        self._elementwise(d, fn=fn)

    def op_layernorm(self, d: LayerDecl) -> None:
        self._elementwise(d, role="norm", affine=d.params.get("affine", True))

    def op_batchnorm(self, d: LayerDecl) -> None:
        (src,) = self._arity(d, 1)
        if self.node(src)["layout"] == "tokens":
            raise self.fail(d, "batchnorm over tokens is not supported; use layernorm", "op")
        self._elementwise(d, role="norm", affine=d.params.get("affine", True))

    def op_groupnorm(self, d: LayerDecl) -> None:
        (src,) = self._arity(d, 1)
        nd = self.expect_layout(d, src, ("image",))
        groups = int(d.params.get("groups", 1))
        if groups < 1 or nd["size"] % groups:
            raise self.fail(d, f"groups={groups} does not divide {nd['size']} channels",
                            "groups")
        self._elementwise(d, role="norm", groups=groups, affine=d.params.get("affine", True))

    def op_add(self, d: LayerDecl) -> None:
        srcs = self._arity(d, None, at_least=2)
        shapes = {tuple(self.node(s)["shape"]) for s in srcs}
        if len(shapes) != 1:
            desc = ", ".join(f"'{s}' {list(self.node(s)['shape'])}" for s in srcs)
            raise self.fail(d, f"add needs inputs of equal shape, got {desc}", "in")
        nd = self.node(srcs[0])
        self.add(d, nd["size"], nd["shape"], nd["layout"], role="residual")
        for i, s in enumerate(srcs):
            self.identity(s, d.name, i)

    def op_mul(self, d: LayerDecl) -> None:
        srcs = self._arity(d, 2)
        if self.node(srcs[0])["shape"] != self.node(srcs[1])["shape"]:
            raise self.fail(d, f"mul needs inputs of equal shape, got "
                            f"{list(self.node(srcs[0])['shape'])} and "
                            f"{list(self.node(srcs[1])['shape'])}", "in")
        nd = self.node(srcs[0])
        self.add(d, nd["size"], nd["shape"], nd["layout"])
        for i, s in enumerate(srcs):
            self.identity(s, d.name, i)

    def op_concat(self, d: LayerDecl) -> None:
        srcs = self._arity(d, None, at_least=2)
        nds = [self.node(s) for s in srcs]
        layouts = {n["layout"] for n in nds}
        rest = {tuple(n["shape"][1:]) if n["layout"] == "image" else tuple(n["shape"][:-1])
                for n in nds}
        if len(layouts) != 1 or len(rest) != 1 or "edges" in layouts:
            raise self.fail(d, "concat needs inputs that differ only in their channel "
                            "dimension, got " + ", ".join(str(list(n["shape"])) for n in nds),
                            "in")
        total = sum(n["size"] for n in nds)
        layout = nds[0]["layout"]
        shape = (total,) + nds[0]["shape"][1:] if layout == "image" else \
            nds[0]["shape"][:-1] + (total,)
        self.add(d, total, shape, layout)
        offset = 0
        for i, (s, n) in enumerate(zip(srcs, nds)):
            index = np.full(total, -1)
            index[offset:offset + n["size"]] = np.arange(n["size"])
            self.ir.add_map_edge(s, d.name, index, i)
            offset += n["size"]

    def op_pad_channels(self, d: LayerDecl) -> None:
        (src,) = self._arity(d, 1)
        nd = self.expect_layout(d, src, ("image",))
        c, h, w = nd["shape"]
        out = int(d.params["out_channels"])
        s = int(d.params.get("stride", 2))
        if out < c:
            raise self.fail(d, f"out_channels {out} is smaller than the input's {c}",
                            "out_channels")
        lo = (out - c) // 2
        self.add(d, out, (out, (h - 1) // s + 1, (w - 1) // s + 1), "image",
                 attrs={"pad_lo": lo, "pad_hi": out - c - lo, "stride": s}, role="residual")
        index = np.full(out, -1)
        index[lo:lo + c] = np.arange(c)
        self.ir.add_map_edge(src, d.name, index)

    def _pool(self, d: LayerDecl, kind: str) -> None:
        (src,) = self._arity(d, 1)
        nd = self.expect_layout(d, src, ("image",))
        c, h, w = nd["shape"]
        k = int(d.params.get("kernel_size", 2))
        s = d.params.get("stride")
        s = k if s is None else int(s)
        ho, wo = _conv_out(h, k, s, 0), _conv_out(w, k, s, 0)
        if ho < 1 or wo < 1:
            raise self.fail(d, f"pool kernel {k} does not fit the {h}x{w} input", "kernel_size")
        self.add(d, c, (c, ho, wo), "image", attrs={"kind": kind, "kernel_size": k, "stride": s})
        self.identity(src, d.name)

    def op_avgpool(self, d: LayerDecl) -> None:
        self._pool(d, "avg")

    def op_maxpool(self, d: LayerDecl) -> None:
        self._pool(d, "max")

    def _global_pool(self, d: LayerDecl, kind: str) -> None:
        (src,) = self._arity(d, 1)
        nd = self.expect_layout(d, src, ("image",))
        self.add(d, nd["size"], (nd["size"],), "vector", attrs={"kind": kind})
        self.identity(src, d.name)

    def op_global_avg_pool(self, d: LayerDecl) -> None:
        self._global_pool(d, "avg")

    def op_global_max_pool(self, d: LayerDecl) -> None:
        self._global_pool(d, "max")

    def op_flatten(self, d: LayerDecl) -> None:
        (src,) = self._arity(d, 1)
        nd = self.expect_layout(d, src, ("image", "tokens", "vector"))
        shape = nd["shape"]
        total = int(np.prod(shape))
        j = np.arange(total)
        if nd["layout"] == "image":  # channel-major: unit j is channel j // (H*W)
            per = shape[1] * shape[2]
            index, colour = j // per, j % per
        elif nd["layout"] == "tokens":  # token-major: unit j is feature j % F of token j // F
            index, colour = j % shape[1], j // shape[1]
        else:
            index, colour = j, np.zeros(total, dtype=np.int64)
        self.add(d, total, (total,), "vector")
        # the spatial position / token of a flattened unit is part of its identity
        self.node(d.name)["unit_colour"] = colour.astype(np.int64)
        self.ir.add_map_edge(src, d.name, index)

    def _aggr(self, d: LayerDecl, kind: str) -> None:
        x, ei = self._arity(d, 2)
        nd = self.expect_layout(d, x, ("vector",))
        if self.node(ei)["layout"] != "edges":
            raise self.fail(d, f"second input '{ei}' must be an edge_index input", "in")
        self.add(d, nd["size"], nd["shape"], "vector", attrs={"aggr": kind})
        self.identity(x, d.name, 0)
        self.ir.add_map_edge(ei, d.name, np.full(nd["size"], -1), 1)

    def op_mean_aggr(self, d: LayerDecl) -> None:
        self._aggr(d, "mean")

    def op_sum_aggr(self, d: LayerDecl) -> None:
        self._aggr(d, "sum")

    def op_max_aggr(self, d: LayerDecl) -> None:
        self._aggr(d, "max")

    def op_attention(self, d: LayerDecl) -> None:
        q, k, v = self._arity(d, 3)
        nds = [self.expect_layout(d, s, ("tokens",)) for s in (q, k, v)]
        if len({n["shape"] for n in nds}) != 1:
            raise self.fail(d, "attention needs q, k, v of equal shape, got "
                            + ", ".join(str(list(n["shape"])) for n in nds), "in")
        heads = int(d.params["heads"])
        size = nds[0]["size"]
        if heads < 1 or size % heads:
            raise self.fail(d, f"heads={heads} does not divide the width {size}", "heads")
        self.add(d, size, nds[0]["shape"], "tokens", attrs={"heads": heads})
        for i, s in enumerate((q, k, v)):
            self.ir.add_attention_edge(s, d.name, i)

    def op_token_mean(self, d: LayerDecl) -> None:
        (src,) = self._arity(d, 1)
        nd = self.expect_layout(d, src, ("tokens",))
        self.add(d, nd["size"], (nd["size"],), "vector", attrs={"kind": "mean"})
        self.identity(src, d.name)

    def op_token_first(self, d: LayerDecl) -> None:
        (src,) = self._arity(d, 1)
        nd = self.expect_layout(d, src, ("tokens",))
        self.add(d, nd["size"], (nd["size"],), "vector", attrs={"kind": "first"})
        self.identity(src, d.name)

    def _arity(self, d: LayerDecl, n: int | None, at_least: int = 1) -> list[str]:
        if n is not None and len(d.inputs) != n:
            raise self.fail(d, f"op '{d.op}' takes {n} input(s), got {len(d.inputs)}", "in")
        if len(d.inputs) < at_least:
            raise self.fail(d, f"op '{d.op}' takes at least {at_least} inputs", "in")
        return list(d.inputs)


def _closest(name: str, names) -> str | None:
    import difflib

    m = difflib.get_close_matches(name, list(names), n=1)
    return m[0] if m else None


def build_ir(program: Program, name: str = "model", error: ErrorFactory | None = None) -> IRGraph:
    """Build the IR for ``program``; ``error(path, message)`` makes located SpecErrors."""
    return _Builder(program, name, error or _default_error).run()
