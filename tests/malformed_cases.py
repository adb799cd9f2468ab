"""Valid example specs and a deterministic generator of malformed ones.

``BASE_SPECS`` holds one valid spec per family (and three for the generic ``layers`` family) as
YAML text.  :func:`malformed_cases` yields :class:`Case` objects:

* ``stage="load"``: generated from the bases (wrong types, unknown keys at every level, missing
  required fields, out-of-range numbers, bad enums, bad YAML, duplicate keys, bad overrides,
  semantic checks the loader does).  ``load_spec_text(case.text, overrides=case.overrides)``
  must raise ``SpecError`` with a line number and with ``case.field`` in ``str(error)``.
* ``stage="build"``: hand-written specs that pass the loader but that the IR builder or the
  asymmetry passes must reject (cycles, unknown ``in`` names, shape mismatches, impossible
  ``nfix``, duplicate names).  ``case.field`` is a substring the resulting ``str(SpecError)``
  should contain, chosen loosely (``model.layers[2]``, ``nfix``) so it does not fix which exact
  sub-field the builder blames.

``case.field`` is usually the formatted field path (``model.layers[3].in``, see
``asymspec.errors.format_json_path``).  ``case.line_text``, when set, is a substring of the line
the error must point at.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from asymspec.errors import format_json_path

BASE_SPECS: dict[str, str] = {
    "mlp": """\
name: mlp-base
description: A small MLP.
seed: 3
model:
  family: mlp
  input_dim: 784
  widths: [512, 256]
  output_dim: 10
  activation: gelu
  norm: layernorm
  bias: true
asymmetry:
  seed: 1
  w_asym:
    nfix: 8
    kappa: 2.0
    mode: entries
    layers: ["*"]
    overrides:
      "fc*": {nfix: 4}
expect: asymmetric
""",
    "resnet": """\
name: resnet-base
model:
  family: resnet
  depth: 20
  width: 2
  base_width: 16
  norm: batchnorm
  shortcut: A
  in_channels: 3
  num_classes: 10
  input_size: 32
  activation: relu
asymmetry:
  sigma_asym:
    f_std: 0.5
    scale: inv_sqrt_dim
    layers: ["layer1.*", "layer2.*"]
  fixed_bias:
    k: 2.0
expect: symmetric
""",
    "cnn": """\
name: cnn-base
model:
  family: cnn
  in_channels: 3
  input_size: 28
  channels: [16, 32, 64]
  kernel_size: 3
  strides: [1, 2, 2]
  norm: batchnorm
  activation: silu
  bias: false
  hidden: [128]
  global_pool: max
  num_classes: 10
asymmetry:
  seed: 7
  w_asym:
    nfix: 3
    mode: entries
  syre:
    kappa: 0.1
    layers: ["conv*"]
""",
    "gnn": """\
name: gnn-base
model:
  family: gnn
  in_dim: 32
  hidden_dim: 64
  layers: 2
  out_dim: 4
  aggregation: sum
  norm: none
  activation: tanh
  bias: true
asymmetry:
  w_asym:
    nfix: 2
    kappa: 1.5
  sigma_asym:
    f_std: 1.0
""",
    "transformer": """\
name: transformer-base
model:
  family: transformer
  input_dim: 32
  seq_len: 8
  d_model: 64
  heads: 4
  mlp_ratio: 2.0
  layers: 2
  num_classes: 5
  activation: gelu
  pooling: first
asymmetry: none
""",
    "layers_image": """\
name: layers-image
model:
  family: layers
  inputs:
    image: {shape: [3, 32, 32]}
  layers:
    - {name: conv1, op: conv2d, in: image, out_channels: 16, kernel_size: 3, stride: 1,
       padding: 1, bias: false}
    - {name: bn1, op: batchnorm, in: conv1}
    - {name: act1, op: activation, in: bn1, fn: relu}
    - {name: block1.conv, op: conv2d, in: act1, out_channels: 16}
    - {name: block1.gn, op: groupnorm, in: block1.conv, groups: 4}
    - {name: block1.add, op: add, in: [block1.gn, act1]}
    - {name: down, op: pad_channels, in: block1.add, out_channels: 32, stride: 2}
    - {name: mpool, op: maxpool, in: down, kernel_size: 2, stride: 2}
    - {name: apool, op: avgpool, in: mpool, kernel_size: 2}
    - {name: gap, op: global_avg_pool, in: apool}
    - {name: gmp, op: global_max_pool, in: apool}
    - {name: cat, op: concat, in: [gap, gmp]}
    - {name: head, op: linear, in: cat, out_features: 10, bias: true}
  outputs: [head]
asymmetry:
  w_asym:
    nfix: 2
    layers: ["conv1", "block1.*", "head"]
    overrides:
      head: {nfix: 4, kappa: 0.5}
""",
    "layers_graph": """\
name: layers-graph
model:
  family: layers
  inputs:
    x: {shape: [16]}
    edges: {shape: [2], kind: edge_index}
  layers:
    - {name: lin1, op: linear, in: x, out_features: 32}
    - {name: agg1, op: mean_aggr, in: [lin1, edges]}
    - {name: ln1, op: layernorm, in: agg1}
    - {name: act1, op: activation, in: ln1, fn: leaky_relu}
    - {name: agg2, op: sum_aggr, in: [act1, edges]}
    - {name: agg3, op: max_aggr, in: [act1, edges]}
    - {name: cat, op: concat, in: [agg2, agg3]}
    - {name: out, op: linear, in: cat, out_features: 3}
asymmetry:
  fixed_bias: {k: 1.0, layers: [lin1]}
""",
    "layers_tokens": """\
name: layers-tokens
model:
  family: layers
  inputs:
    tokens: {shape: [8, 32]}
  layers:
    - {name: embed, op: linear, in: tokens, out_features: 64}
    - {name: attn, op: attention, in: [embed, embed, embed], heads: 4}
    - {name: res, op: add, in: [attn, embed]}
    - {name: gate, op: mul, in: [res, embed]}
    - {name: pool, op: token_mean, in: gate}
    - {name: flat, op: flatten, in: pool}
    - {name: cls, op: linear, in: flat, out_features: 5}
asymmetry:
  sigma_asym: {f_std: 2.0, layers: ["embed"]}
""",
}


@dataclass(frozen=True)
class Case:
    """One malformed spec; iterates as ``(id, text, field, stage)``."""

    id: str
    text: str
    field: str  # substring expected in str(SpecError), usually the formatted field path
    stage: str = "load"  # "load": the loader rejects it; "build": the IR builder / passes do
    overrides: tuple[str, ...] = ()
    line_text: str | None = None  # substring of the line the error must point at

    def __iter__(self) -> Iterator[Any]:
        return iter((self.id, self.text, self.field, self.stage))


# --------------------------------------------------------------------------- helpers
class _Dumper(yaml.SafeDumper):
    """Block style, except lists of scalars which stay on one line (`widths: [512, 256]`)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(x, (list, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1000)


def base_data(name: str) -> dict[str, Any]:
    return yaml.safe_load(BASE_SPECS[name])


def _walk(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, i))


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _with(data: dict, path: tuple, value: Any) -> dict:
    out = copy.deepcopy(data)
    _get(out, path[:-1])[path[-1]] = value
    return out


def _without(data: dict, path: tuple) -> dict:
    out = copy.deepcopy(data)
    del _get(out, path[:-1])[path[-1]]
    return out


def _renamed(data: dict, path: tuple, new: str) -> dict:
    """``data`` with the key at ``path`` renamed to ``new``, keeping the key order."""
    out = copy.deepcopy(data)
    parent = _get(out, path[:-1])
    items = [(new if k == path[-1] else k, v) for k, v in parent.items()]
    parent.clear()
    parent.update(items)
    return out


def _is_user_map(path: tuple) -> bool:
    """Mappings whose keys are user-chosen names (input names, override globs)."""
    return path == ("model", "inputs") or (
        len(path) == 3 and path[0] == "asymmetry" and path[2] == "overrides")


def _last_key(path: tuple) -> str | None:
    return next((p for p in reversed(path) if isinstance(p, str)), None)


def typo(key: str) -> str:
    """A deterministic misspelling: swap the 2nd and 3rd letters, or double the last one."""
    if len(key) >= 4 and key[1] != key[2]:
        return key[0] + key[2] + key[1] + key[3:]
    return key + key[-1]


def _value_line_text(data: dict, path: tuple) -> str | None:
    """The key expected on the line of the value at ``path`` in ``dump(data)``."""
    if path and isinstance(path[-1], int):
        parent = _get(data, path[:-1])
        if any(isinstance(x, (list, dict)) for x in parent):
            return None  # an item of a block list: "- ..." names no key
    return _last_key(path)


FAMILY_REQUIRED = {
    "mlp": ["family", "input_dim", "output_dim"],
    "resnet": ["family"],
    "cnn": ["family", "channels"],
    "gnn": ["family", "in_dim", "out_dim"],
    "transformer": ["family", "input_dim", "num_classes"],
    "layers": ["family", "inputs", "layers"],
}
OP_REQUIRED = {"linear": ["out_features"], "conv2d": ["out_channels"], "activation": ["fn"],
               "pad_channels": ["out_channels"], "attention": ["heads"]}


def _required(path: tuple, obj: dict) -> list[str]:
    if path == ():
        return ["name", "model"]
    if path == ("model",):
        return FAMILY_REQUIRED[obj["family"]]
    if len(path) == 3 and path[:2] == ("model", "layers"):
        return ["name", "op", "in", *OP_REQUIRED.get(obj["op"], [])]
    if len(path) == 3 and path[:2] == ("model", "inputs"):
        return ["shape"]
    if path == ("asymmetry", "w_asym"):
        return ["nfix"]
    return []


def _wrong_type(value: Any) -> Any:
    if isinstance(value, bool):
        return "maybe"
    if isinstance(value, (int, float)):
        return "abc"
    if isinstance(value, str):
        return 12345
    if isinstance(value, list):
        return 7
    if isinstance(value, dict):
        return [1, 2]
    return None


OUT_OF_RANGE = {
    "input_dim": 0, "output_dim": 0, "depth": 2, "width": 0, "base_width": 0, "in_channels": 0,
    "num_classes": 0, "input_size": 0, "kernel_size": 0, "hidden_dim": 0, "layers": 0,
    "in_dim": 0, "out_dim": 0, "seq_len": 0, "d_model": 0, "heads": 0, "out_features": 0,
    "out_channels": 0, "groups": 0, "stride": 0, "padding": -1, "nfix": -1, "seed": -1,
    "mlp_ratio": 0.0, "kappa": -0.5, "f_std": -1.0, "k": 0.0,
}
POSITIVE_LISTS = ("widths", "channels", "hidden", "strides", "shape")
NONEMPTY_LISTS = ("channels", "shape", "in", "outputs")
ENUM_KEYS = ("activation", "norm", "shortcut", "global_pool", "aggregation", "pooling", "family",
             "op", "fn", "kind", "mode", "scale", "expect")
FLOAT_KEYS = ("kappa", "f_std", "k", "mlp_ratio")


# --------------------------------------------------------------------------- load-stage cases
def _data_cases(base: str) -> Iterator[Case]:
    data = base_data(base)

    def case(kind: str, mutated: dict, path: tuple, line_text: str | None,
             field: tuple | None = None) -> Case:
        shown = format_json_path(path)
        return Case(f"{base}/{kind}/{shown}", dump(mutated),
                    format_json_path(field if field is not None else path), "load", (), line_text)

    for path, value in list(_walk(data)):
        if not path:
            continue
        key = path[-1]
        # wrong types
        wrong = _wrong_type(value)
        if wrong is not None:
            yield case("wrong-type", _with(data, path, wrong), path, _value_line_text(data, path))
        # out-of-range numbers
        if (isinstance(key, str) and key in OUT_OF_RANGE and isinstance(value, (int, float))
                and not isinstance(value, bool)):
            yield case("out-of-range", _with(data, path, OUT_OF_RANGE[key]), path, key)
            if key == "seed":
                yield case("too-large", _with(data, path, 2**63), path, key)
        if isinstance(key, str) and key in POSITIVE_LISTS and isinstance(value, list) and value:
            item = (*path, 0)
            yield case("non-positive-item", _with(data, item, 0), item, key)
        if (key in NONEMPTY_LISTS or path == ("model", "layers")) and isinstance(value, list):
            yield case("empty-list", _with(data, path, []), path, key)
        if key == "name" and isinstance(value, str):
            yield case("empty-name", _with(data, path, ""), path, key)
        if path[-2:-1] == ("layers",) and len(path) == 4 and isinstance(value, str):
            yield case("empty-glob", _with(data, path, ""), path, "layers")
        # bad enums (and the one const: asymmetry: none)
        if isinstance(value, str) and (key in ENUM_KEYS or path == ("asymmetry",)):
            yield case("bad-enum", _with(data, path, value + "x"), path, key)
            if value.upper() != value:
                yield case("bad-enum-case", _with(data, path, value.upper()), path, key)
        # non-finite numbers
        if key in FLOAT_KEYS and isinstance(value, float):
            yield case("nan", _with(data, path, float("nan")), path, key)
            yield case("inf", _with(data, path, float("inf")), path, key)
    # mappings: unknown keys (typos and a made-up key), missing required fields
    for path, value in list(_walk(data)):
        if not isinstance(value, dict):
            continue
        if not _is_user_map(path):
            for key in value:
                bad = typo(key)
                yield case("typo", _renamed(data, (*path, key), bad), (*path, key), bad,
                           field=(*path, bad))
        extra = copy.deepcopy(data)
        _get(extra, path)["colour"] = 1
        yield case("unknown-key", extra, (*path, "colour"), "colour")
        for name in _required(path, value):
            if name in value:
                parent_line = path[-1] if path and isinstance(path[-1], str) else None
                yield case("missing", _without(data, (*path, name)), (*path, name), parent_line)


def _semantic_cases() -> Iterator[Case]:
    resnet = base_data("resnet")
    for depth in (9, 21, 24, 30, 100, 111):
        mutated = _with(resnet, ("model", "depth"), depth)
        yield Case(f"resnet/depth-not-6n+2/{depth}", dump(mutated), "model.depth", "load", (),
                   "depth")
    cnn = base_data("cnn")
    for strides in ([1, 2], [1, 2, 2, 1], [2]):
        mutated = _with(cnn, ("model", "strides"), strides)
        yield Case(f"cnn/strides-length/{len(strides)}", dump(mutated), "model.strides", "load",
                   (), "strides")
    for k in (2, 4):
        mutated = _with(cnn, ("model", "kernel_size"), k)
        yield Case(f"cnn/even-kernel/{k}", dump(mutated), "model.kernel_size", "load", (),
                   "kernel_size")
    tf = base_data("transformer")
    for d_model, heads in ((64, 5), (64, 3), (30, 4), (100, 8)):
        mutated = _with(_with(tf, ("model", "d_model"), d_model), ("model", "heads"), heads)
        yield Case(f"transformer/heads-divide/{d_model}-{heads}", dump(mutated), "model.heads",
                   "load", (), "heads")
    mutated = _with(_without(tf, ("model", "heads")), ("model", "d_model"), 30)
    yield Case("transformer/heads-divide/defaulted-heads", dump(mutated), "heads", "load", (),
               "d_model")
    mutated = _with(tf, ("model", "mlp_ratio"), 0.33)
    yield Case("transformer/mlp-ratio-fraction", dump(mutated), "model.mlp_ratio", "load", (),
               "mlp_ratio")


def _insert_after(lines: list[str], index: int, new: str) -> str:
    return "\n".join(lines[: index + 1] + [new] + lines[index + 1:]) + "\n"


def _text_cases(base: str) -> Iterator[Case]:
    text = dump(base_data(base))
    lines = text.splitlines()
    name_i = next(i for i, ln in enumerate(lines) if ln.startswith("name:"))
    nested_i = next(i for i, ln in enumerate(lines) if ln.startswith("  ") and ":" in ln)
    flow_i = next((i for i, ln in enumerate(lines) if "[" in ln and "]" in ln), None)

    def syntax(kind: str, new_text: str) -> Case:
        return Case(f"{base}/yaml-syntax/{kind}", new_text, "invalid YAML")

    def replaced(i: int, new: str) -> str:
        return "\n".join(lines[:i] + [new] + lines[i + 1:]) + "\n"

    if flow_i is None:
        yield syntax("unclosed-flow", text + "extra: [1, 2\n")
    else:
        yield syntax("unclosed-flow", replaced(flow_i, lines[flow_i].replace("]", "", 1)))
    yield syntax("tab-indent", replaced(nested_i, "\t" + lines[nested_i].lstrip()))
    yield syntax("unclosed-quote", replaced(name_i, 'name: "unterminated'))
    yield syntax("mapping-in-scalar", replaced(name_i, lines[name_i] + ": oops"))
    yield syntax("bad-dedent", replaced(nested_i, " " + lines[nested_i]))
    yield syntax("stray-bracket", text + "]\n")
    yield syntax("seq-in-map", _insert_after(lines, name_i, "- item"))
    yield syntax("undefined-alias", text + "extra: *nowhere\n")
    yield syntax("two-documents", text + "---\nname: other\n")
    yield syntax("control-char", replaced(name_i, lines[name_i] + "\x07"))

    # duplicate keys: the error points at the second occurrence
    dup = text + "name: again\n"
    yield Case(f"{base}/duplicate-key/name", dup, "name", "load", (), "name: again")
    family_i = next(i for i, ln in enumerate(lines) if ln.strip().startswith("family:"))
    yield Case(f"{base}/duplicate-key/model.family", _insert_after(lines, family_i,
               lines[family_i]), "model.family", "load", (), "family")
    for key, field in (("op:", "model.layers[0].op"), ("nfix:", "asymmetry.w_asym.nfix")):
        hits = [i for i, ln in enumerate(lines) if ln.strip().startswith(key)]
        if hits:
            i = hits[0]
            yield Case(f"{base}/duplicate-key/{field}", _insert_after(lines, i, lines[i]), field,
                       "load", (), key[:-1])

    # values YAML can express but a spec cannot
    yield Case(f"{base}/yaml-tag/binary", replaced(name_i, "name: !!binary aGVsbG8="), "name",
               "load", (), "name")
    yield Case(f"{base}/yaml-tag/custom", replaced(name_i, "name: !include other.yaml"), "name",
               "load", (), "name")
    yield Case(f"{base}/yaml-tag/set", replaced(name_i, "name: !!set {a, b}"), "name", "load",
               (), "name")
    model_i = next(i for i, ln in enumerate(lines) if ln.startswith("model:"))
    yield Case(f"{base}/non-string-key/int", _insert_after(lines, model_i, "  1: one"),
               "model.1", "load", (), "1: one")
    yield Case(f"{base}/non-string-key/bool", _insert_after(lines, model_i, "  yes: one"),
               "model.yes", "load", (), "yes: one")
    yield Case(f"{base}/non-string-key/null", _insert_after(lines, model_i, "  ~: one"),
               "model.~", "load", (), "~: one")


OVERRIDE_SYNTAX = [
    ("no-equals", "model.family"),
    ("empty-key", "=5"),
    ("empty-segment", "model..family=mlp"),
    ("leading-dot", ".model=1"),
    ("trailing-dot", "model.=1"),
    ("bad-index", "model.layers[x]=1"),
    ("unclosed-quote", 'model."family=mlp'),
    ("empty-value", "model.family="),
    ("bad-yaml-value", "model.family=[mlp,"),
    ("bad-yaml-value-2", "model.family={a: 1"),
    ("into-string", "name.first=1"),
    ("into-number", "model.family.x.y=1"),
    ("creates-unknown", "asymmetry.x.layers.5=x"),
]
OVERRIDE_VALUES = [
    ("wrong-type", "seed=abc"),
    ("negative-seed", "seed=-1"),
    ("bad-family", "model.family=mlpx"),
    ("unknown-key", "model.colour=red"),
    ("nan", "asymmetry.syre.kappa=.nan"),
    ("bad-asym", "asymmetry=sometimes"),
    ("w-asym-missing-nfix", "asymmetry.w_asym.kappa=2"),
    ("w-asym-bad-mode", "asymmetry.w_asym.mode=rows"),
]


def _override_cases(base: str) -> Iterator[Case]:
    text = dump(base_data(base))
    for kind, override in OVERRIDE_SYNTAX + OVERRIDE_VALUES:
        if kind == "w-asym-missing-nfix" and "nfix:" in text:
            continue
        yield Case(f"{base}/override/{kind}", text, override, "load", (override,))
    # an index past the end of the first list of the spec
    first_list = next((p for p, v in _walk(base_data(base)) if isinstance(v, list)), None)
    if first_list is not None:
        length = len(_get(base_data(base), first_list))
        override = ".".join(map(str, first_list)) + f".{length + 3}=1"
        yield Case(f"{base}/override/index-out-of-range", text, override, "load", (override,))
    # the second of two overrides is named
    yield Case(f"{base}/override/second-bad", text, "override #2", "load",
               ("seed=5", "model.family"))


def _whole_document_cases() -> Iterator[Case]:
    yield Case("document/empty", "", "<root>")
    yield Case("document/only-comment", "# nothing here\n", "<root>")
    yield Case("document/list", "- name: x\n- model: y\n", "<root>")
    yield Case("document/scalar", "just a string\n", "<root>")
    yield Case("document/recursive-alias", "name: x\nmodel: &m {family: mlp, self: *m}\n",
               "model.self")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n"
        for i in range(8))
    yield Case("document/alias-bomb", bomb, "too large")
    yield Case("document/bad-merge", "name: x\nmodel:\n  <<: 5\n  family: mlp\n", "merge")
    yield Case("document/nesting", "name: x\nmodel: " + "[" * 5000 + "]" * 5000 + "\n",
               "nesting")


def load_cases() -> Iterator[Case]:
    for base in BASE_SPECS:
        yield from _data_cases(base)
        yield from _text_cases(base)
        yield from _override_cases(base)
    yield from _semantic_cases()
    yield from _whole_document_cases()


# --------------------------------------------------------------------------- build-stage cases
def _layers(layers: str, inputs: str = "x: {shape: [16]}", extra: str = "") -> str:
    """A ``layers``-family spec from flow-style layer lines."""
    body = "\n".join(f"    - {ln.strip()}" for ln in layers.strip().splitlines())
    ins = "\n".join(f"    {ln.strip()}" for ln in inputs.strip().splitlines())
    head = "name: build-case\nmodel:\n  family: layers\n"
    return f"{head}  inputs:\n{ins}\n  layers:\n{body}\n{extra}"


IMG = "img: {shape: [3, 8, 8]}"
TOK = "tok: {shape: [4, 12]}"
GRAPH = "x: {shape: [6]}\nedges: {shape: [2], kind: edge_index}"

BUILD_CASES: list[tuple[str, str, str]] = [
    # cycles
    ("cycle/self-loop", _layers("{name: a, op: linear, in: a, out_features: 4}"), "model.layers"),
    ("cycle/two", _layers("""
        {name: a, op: linear, in: b, out_features: 4}
        {name: b, op: linear, in: a, out_features: 4}
        {name: c, op: linear, in: x, out_features: 4}"""), "model.layers"),
    ("cycle/three-via-add", _layers("""
        {name: a, op: linear, in: x, out_features: 16}
        {name: b, op: add, in: [a, d]}
        {name: c, op: activation, in: b, fn: relu}
        {name: d, op: linear, in: c, out_features: 16}"""), "model.layers"),
    ("cycle/via-concat", _layers("""
        {name: a, op: concat, in: [x, b]}
        {name: b, op: linear, in: a, out_features: 4}"""), "model.layers"),
    ("cycle/after-valid-prefix", _layers("""
        {name: a, op: linear, in: x, out_features: 8}
        {name: b, op: activation, in: [a], fn: relu}
        {name: c, op: linear, in: e, out_features: 8}
        {name: d, op: layernorm, in: c}
        {name: e, op: activation, in: d, fn: tanh}"""), "model.layers"),
    ("cycle/image", _layers("""
        {name: c1, op: conv2d, in: c2, out_channels: 3}
        {name: c2, op: conv2d, in: c1, out_channels: 3}""", IMG), "model.layers"),
    # unknown names in `in` / outputs
    ("unknown-in/typo", _layers("""
        {name: fc1, op: linear, in: x, out_features: 8}
        {name: fc2, op: linear, in: fc, out_features: 4}"""), "model.layers[1].in"),
    ("unknown-in/never-defined", _layers("""
        {name: fc1, op: linear, in: x, out_features: 8}
        {name: fc2, op: linear, in: hidden, out_features: 4}"""), "model.layers[1].in"),
    ("unknown-in/in-list", _layers("""
        {name: fc1, op: linear, in: x, out_features: 16}
        {name: sum, op: add, in: [fc1, fc9]}"""), "model.layers[1].in"),
    ("unknown-in/input-name", _layers("{name: fc1, op: linear, in: image, out_features: 8}"),
     "model.layers[0].in"),
    ("unknown-in/edge-input", _layers("""
        {name: lin, op: linear, in: x, out_features: 6}
        {name: agg, op: mean_aggr, in: [lin, edge]}""", GRAPH), "model.layers[1].in"),
    ("unknown-in/dotted", _layers("""
        {name: block1.conv1, op: conv2d, in: img, out_channels: 4}
        {name: block1.act, op: activation, in: block1.conv, fn: relu}""", IMG),
     "model.layers[1].in"),
    ("unknown-in/case", _layers("""
        {name: Fc1, op: linear, in: x, out_features: 8}
        {name: fc2, op: linear, in: fc1, out_features: 4}"""), "model.layers[1].in"),
    ("unknown-output", _layers("{name: fc1, op: linear, in: x, out_features: 8}",
                               extra="  outputs: [fc2]\n"), "model.outputs"),
    # shape mismatches
    ("shape/linear-on-conv", _layers("""
        {name: conv, op: conv2d, in: img, out_channels: 4}
        {name: fc, op: linear, in: conv, out_features: 10}""", IMG), "model.layers[1]"),
    ("shape/linear-on-image-input", _layers("{name: fc, op: linear, in: img, out_features: 10}",
                                            IMG), "model.layers[0]"),
    ("shape/conv-on-vector", _layers("{name: conv, op: conv2d, in: x, out_channels: 4}"),
     "model.layers[0]"),
    ("shape/conv-after-flatten", _layers("""
        {name: flat, op: flatten, in: img}
        {name: conv, op: conv2d, in: flat, out_channels: 4}""", IMG), "model.layers[1]"),
    ("shape/add-sizes", _layers("""
        {name: a, op: linear, in: x, out_features: 8}
        {name: b, op: linear, in: x, out_features: 4}
        {name: s, op: add, in: [a, b]}"""), "model.layers[2]"),
    ("shape/add-input-and-layer", _layers("""
        {name: a, op: linear, in: x, out_features: 8}
        {name: s, op: add, in: [a, x]}"""), "model.layers[1]"),
    ("shape/mul-sizes", _layers("""
        {name: a, op: linear, in: x, out_features: 8}
        {name: b, op: linear, in: x, out_features: 6}
        {name: m, op: mul, in: [a, b]}"""), "model.layers[2]"),
    ("shape/add-channels", _layers("""
        {name: a, op: conv2d, in: img, out_channels: 8}
        {name: b, op: conv2d, in: img, out_channels: 4}
        {name: s, op: add, in: [a, b]}""", IMG), "model.layers[2]"),
    ("shape/add-spatial", _layers("""
        {name: a, op: conv2d, in: img, out_channels: 4, stride: 2}
        {name: b, op: conv2d, in: img, out_channels: 4}
        {name: s, op: add, in: [a, b]}""", IMG), "model.layers[2]"),
    ("shape/add-vector-and-image", _layers("""
        {name: a, op: conv2d, in: img, out_channels: 4}
        {name: g, op: global_avg_pool, in: a}
        {name: s, op: add, in: [a, g]}""", IMG), "model.layers[2]"),
    ("shape/concat-spatial", _layers("""
        {name: a, op: conv2d, in: img, out_channels: 4, stride: 2}
        {name: b, op: conv2d, in: img, out_channels: 4}
        {name: c, op: concat, in: [a, b]}""", IMG), "model.layers[2]"),
    ("shape/attention-heads", _layers("{name: att, op: attention, in: [tok, tok, tok], heads: 5}",
                                      TOK), "model.layers[0]"),
    ("shape/attention-on-vector", _layers("{name: att, op: attention, in: [x, x, x], heads: 2}"),
     "model.layers[0]"),
    ("shape/attention-qkv", _layers("""
        {name: q, op: linear, in: tok, out_features: 8}
        {name: att, op: attention, in: [q, tok, tok], heads: 2}""", TOK), "model.layers[1]"),
    ("shape/token-mean-on-vector", _layers("{name: p, op: token_mean, in: x}"),
     "model.layers[0]"),
    ("shape/global-pool-on-vector", _layers("{name: p, op: global_avg_pool, in: x}"),
     "model.layers[0]"),
    ("shape/maxpool-on-tokens", _layers("{name: p, op: maxpool, in: tok}", TOK),
     "model.layers[0]"),
    ("shape/groupnorm-groups", _layers("""
        {name: c, op: conv2d, in: img, out_channels: 16}
        {name: g, op: groupnorm, in: c, groups: 3}""", IMG), "model.layers[1]"),
    ("shape/pad-channels-shrinks", _layers("""
        {name: c, op: conv2d, in: img, out_channels: 16}
        {name: p, op: pad_channels, in: c, out_channels: 8}""", IMG), "model.layers[1]"),
    ("shape/pool-too-big", _layers("{name: p, op: maxpool, in: img, kernel_size: 16}", IMG),
     "model.layers[0]"),
    ("shape/conv-kernel-too-big", _layers(
        "{name: c, op: conv2d, in: img, out_channels: 4, kernel_size: 11, padding: 0}", IMG),
     "model.layers[0]"),
    ("shape/aggr-one-input", _layers("{name: agg, op: mean_aggr, in: x}", GRAPH),
     "model.layers[0]"),
    ("shape/aggr-swapped", _layers("{name: agg, op: sum_aggr, in: [edges, x]}", GRAPH),
     "model.layers[0]"),
    ("shape/aggr-two-features", _layers("""
        {name: lin, op: linear, in: x, out_features: 6}
        {name: agg, op: max_aggr, in: [lin, x]}""", GRAPH), "model.layers[1]"),
    ("shape/linear-on-edges", _layers("{name: lin, op: linear, in: edges, out_features: 6}",
                                      GRAPH), "model.layers[0]"),
    ("shape/linear-two-inputs", _layers("{name: lin, op: linear, in: [x, x], out_features: 6}"),
     "model.layers[0]"),
    # duplicate names
    ("duplicate/layer", _layers("""
        {name: fc, op: linear, in: x, out_features: 8}
        {name: act, op: activation, in: fc, fn: relu}
        {name: fc, op: linear, in: act, out_features: 4}"""), "model.layers[2]"),
    ("duplicate/layer-and-input", _layers("{name: x, op: linear, in: x, out_features: 8}"),
     "model.layers[0]"),
    ("duplicate/dotted", _layers("""
        {name: block.fc, op: linear, in: x, out_features: 8}
        {name: block.fc, op: linear, in: block.fc, out_features: 8}"""), "model.layers[1]"),
]

_MLP4 = """\
name: build-case
model: {family: mlp, input_dim: 4, widths: [8], output_dim: 2}
asymmetry:
  w_asym: {nfix: %d}
"""

NFIX_CASES: list[tuple[str, str, str]] = [
    ("nfix/exceeds-fan-in/mlp", _MLP4 % 5, "nfix"),
    ("nfix/too-few-subsets/mlp", _MLP4 % 2, "nfix"),  # C(4, 2) = 6 < 8 rows
    ("nfix/too-few-subsets/mlp-3-of-4", _MLP4 % 3, "nfix"),  # C(4, 3) = 4 < 8
    ("nfix/exceeds-fan-in/layers", _layers("{name: fc, op: linear, in: x, out_features: 2}",
                                           "x: {shape: [3]}",
                                           "asymmetry:\n  w_asym: {nfix: 4}\n"), "nfix"),
    ("nfix/too-few-subsets/layers", _layers("{name: fc, op: linear, in: x, out_features: 4}",
                                            "x: {shape: [3]}",
                                            "asymmetry:\n  w_asym: {nfix: 2}\n"), "nfix"),
    ("nfix/conv-entries", _layers("""
        {name: c, op: conv2d, in: img, out_channels: 2, kernel_size: 1}""",
                                  "img: {shape: [1, 4, 4]}", "asymmetry:\n  w_asym: {nfix: 2}\n"),
     "nfix"),
    ("nfix/conv-filters", _layers("""
        {name: c, op: conv2d, in: img, out_channels: 2, kernel_size: 3}""",
                                  "img: {shape: [1, 4, 4]}",
                                  "asymmetry:\n  w_asym: {nfix: 2, mode: filters}\n"), "nfix"),
    ("nfix/override-glob", _layers("""
        {name: fc1, op: linear, in: x, out_features: 8}
        {name: fc2, op: linear, in: fc1, out_features: 2}""", "x: {shape: [16]}",
                                   "asymmetry:\n  w_asym:\n    nfix: 1\n"
                                   "    overrides: {fc2: {nfix: 100}}\n"), "nfix"),
    ("nfix/gnn", "name: build-case\nmodel: {family: gnn, in_dim: 2, out_dim: 2}\n"
                 "asymmetry:\n  w_asym: {nfix: 3}\n", "nfix"),
    ("nfix/transformer", "name: build-case\nmodel: {family: transformer, input_dim: 8, "
                         "num_classes: 2, d_model: 8, heads: 2}\n"
                         "asymmetry:\n  w_asym: {nfix: 9}\n", "nfix"),
    ("nfix/cnn", "name: build-case\nmodel: {family: cnn, in_channels: 1, channels: [4], "
                 "kernel_size: 1}\nasymmetry:\n  w_asym: {nfix: 2}\n", "nfix"),
    ("nfix/resnet", "name: build-case\nmodel: {family: resnet, depth: 8}\n"
                    "asymmetry:\n  w_asym: {nfix: 30}\n", "nfix"),
]


def build_cases() -> Iterator[Case]:
    for case_id, text, field in BUILD_CASES + NFIX_CASES:
        yield Case(f"build/{case_id}", text, field, "build")


def malformed_cases(stage: str | None = None) -> Iterator[Case]:
    """All cases (load-stage first), or only those of one ``stage`` ("load" or "build")."""
    if stage in (None, "load"):
        yield from load_cases()
    if stage in (None, "build"):
        yield from build_cases()


def all_ids_unique() -> bool:
    ids = [c.id for c in malformed_cases()]
    return len(ids) == len(set(ids))

