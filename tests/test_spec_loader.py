"""The spec loader: defaults, line numbers, overrides, dict input, hashing, the schema itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from asymspec.errors import SpecError
from asymspec.spec import Spec, load_schema, load_spec, load_spec_text, schema_path
from asymspec.spec import schema as schema_module
from asymspec.spec.schema import validator

try:
    from tests.malformed_cases import BASE_SPECS
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from malformed_cases import BASE_SPECS

REPO = Path(__file__).resolve().parents[1]


def load(text: str, overrides: list[str] | None = None) -> Spec:
    return load_spec_text(textwrap.dedent(text), "spec.yaml", overrides)


def error_of(text: str, overrides: list[str] | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        load(text, overrides)
    return info.value


MLP = """\
name: tiny
model:
  family: mlp
  input_dim: 4
  output_dim: 2
"""

# --------------------------------------------------------------------------- defaults


def test_mlp_defaults() -> None:
    spec = load(MLP)
    assert spec.data == {
        "name": "tiny",
        "description": "",
        "seed": 0,
        "model": {"family": "mlp", "input_dim": 4, "widths": [], "output_dim": 2,
                  "activation": "relu", "norm": "none", "bias": True},
        "asymmetry": "none",
        "expect": None,
    }
    assert list(spec.data) == ["name", "description", "seed", "model", "asymmetry", "expect"]
    assert spec.name == "tiny" and spec.seed == 0 and spec.family == "mlp"
    assert spec.asymmetry_methods == {}


@pytest.mark.parametrize(("model", "expected"), [
    ("{family: resnet}", {"depth": 20, "width": 1, "base_width": 16, "norm": "batchnorm",
                          "shortcut": "B", "in_channels": 3, "num_classes": 10,
                          "input_size": 32, "activation": "relu"}),
    ("{family: cnn, channels: [8, 16]}", {"in_channels": 3, "input_size": 32, "kernel_size": 3,
                                          "strides": [1, 1], "norm": "none",
                                          "activation": "relu", "bias": True, "hidden": [],
                                          "global_pool": "avg", "num_classes": 10}),
    ("{family: gnn, in_dim: 5, out_dim: 2}", {"hidden_dim": 256, "layers": 3,
                                              "aggregation": "mean", "norm": "layernorm",
                                              "activation": "relu", "bias": True}),
    ("{family: transformer, input_dim: 8, num_classes: 3}", {
        "seq_len": 16, "d_model": 64, "heads": 4, "mlp_ratio": 4.0, "layers": 2,
        "activation": "gelu", "pooling": "mean"}),
])
def test_family_defaults(model: str, expected: dict) -> None:
    spec = load(f"name: x\nmodel: {model}\n")
    for key, value in expected.items():
        assert spec.model[key] == value, key
        assert type(spec.model[key]) is type(value), key


def test_layers_defaults_inside_arrays_and_maps() -> None:
    spec = load("""\
        name: dag
        model:
          family: layers
          inputs:
            img: {shape: [3, 8, 8]}
          layers:
            - {name: c, op: conv2d, in: img, out_channels: 4}
            - {name: c5, op: conv2d, in: c, out_channels: 4, kernel_size: 5}
            - {name: g, op: groupnorm, in: c5}
            - {name: p, op: avgpool, in: g, kernel_size: 4}
            - {name: pad, op: pad_channels, in: p, out_channels: 8}
            - {name: gap, op: global_avg_pool, in: pad}
            - {name: fc, op: linear, in: gap, out_features: 2}
        """)
    m = spec.model
    assert m["inputs"]["img"] == {"shape": [3, 8, 8], "kind": "tensor"}
    c, c5, g, p, pad, gap, fc = m["layers"]
    assert c == {"name": "c", "op": "conv2d", "in": "img", "out_channels": 4, "kernel_size": 3,
                 "stride": 1, "padding": 1, "bias": True, "share": None}
    assert c5["padding"] == 2  # null default resolved to kernel_size // 2
    assert g["groups"] == 1
    assert p["stride"] == 4  # null default resolved to kernel_size
    assert pad["stride"] == 2
    assert gap == {"name": "gap", "op": "global_avg_pool", "in": "pad"}
    assert fc["bias"] is True
    assert m["outputs"] == ["fc"]  # null default resolved to the last layer


def test_asymmetry_defaults() -> None:
    spec = load(MLP + "asymmetry:\n  w_asym: {nfix: 2, kappa: 3}\n  sigma_asym: {}\n"
                      "  syre: {}\n  fixed_bias: {}\n")
    asym = spec.data["asymmetry"]
    assert asym["seed"] == 0
    assert asym["w_asym"] == {"nfix": 2, "kappa": 3.0, "mode": "entries", "layers": ["*"],
                              "overrides": {}}
    assert isinstance(asym["w_asym"]["kappa"], float)  # numbers are floats, ints stay ints
    assert asym["sigma_asym"] == {"f_std": 1.0, "scale": "absolute", "layers": ["*"],
                                  "overrides": {}}
    assert asym["syre"]["kappa"] == 1.0
    assert asym["fixed_bias"]["k"] == 1.0
    assert set(spec.asymmetry_methods) == {"w_asym", "sigma_asym", "syre", "fixed_bias"}


def test_asymmetry_mapping_without_methods_is_valid() -> None:
    spec = load(MLP + "asymmetry: {seed: 5}\n")
    assert spec.data["asymmetry"] == {"seed": 5, "w_asym": None, "sigma_asym": None,
                                      "syre": None, "fixed_bias": None}
    assert spec.asymmetry_methods == {}


def test_override_entries_are_not_filled_with_defaults() -> None:
    spec = load(MLP + "asymmetry:\n  w_asym:\n    nfix: 2\n    overrides: {'fc*': {kappa: 2}}\n")
    assert spec.data["asymmetry"]["w_asym"]["overrides"] == {"fc*": {"kappa": 2.0}}


@pytest.mark.parametrize("name", sorted(BASE_SPECS))
def test_filled_data_is_still_valid_and_idempotent(name: str) -> None:
    spec = load_spec_text(BASE_SPECS[name], f"{name}.yaml")
    assert validator().is_valid(spec.data)
    again = load_spec(spec.data)
    assert again.data == spec.data
    assert again.content_hash() == spec.content_hash()


def test_expect_values() -> None:
    assert load(MLP + "expect: symmetric\n").data["expect"] == "symmetric"
    assert load(MLP + "expect: null\n").data["expect"] is None
    assert "asymmetric" in str(error_of(MLP + "expect: yes please\n"))


# --------------------------------------------------------------------------- line numbers
LINES = """\
# a comment line
name: lines

model:
  family: mlp
  input_dim: 784
  widths: [512, 256]
  output_dim: 10
asymmetry:
  w_asym:
    nfix: 8
"""


def test_locations_of_values_and_keys() -> None:
    spec = load(LINES)
    assert spec.locations[("name",)] == (2, 7)
    assert spec.key_locations[("name",)] == (2, 1)
    assert spec.locations[("model", "input_dim")] == (6, 14)
    assert spec.key_locations[("model", "input_dim")] == (6, 3)
    assert spec.locations[("model", "widths", 1)] == (7, 17)
    assert spec.locations[("asymmetry", "w_asym", "nfix")] == (11, 11)
    assert spec.text == LINES and spec.file == "spec.yaml"


def test_locate_falls_back_to_the_nearest_written_ancestor() -> None:
    spec = load(LINES)
    assert spec.locate(("model", "input_dim")) == (6, 14)
    # `activation` was defaulted: point at the `model:` key
    assert spec.locate(("model", "activation")) == (4, 1)
    assert spec.locate(("asymmetry", "w_asym", "kappa")) == (10, 3)
    assert spec.locate(("model", "widths", 7)) == (7, 3)
    assert spec.locate(()) == (2, 1)
    err = spec.error(("model", "widths", 1), "too wide")
    assert (err.file, err.line, err.column) == ("spec.yaml", 7, 17)
    assert err.field_path == ("model", "widths", 1)
    assert str(err) == "spec.yaml:7:17: field 'model.widths[1]': too wide"


@pytest.mark.parametrize(("old", "new", "line", "column", "field", "words"), [
    ("input_dim: 784", "input_dim: abc", 6, 14, "model.input_dim",
     "expected integer, got string 'abc'"),
    ("input_dim: 784", "widht: 784", 6, 3, "model.widht",
     "unknown key 'widht' for family 'mlp' (did you mean 'widths'?)"),
    ("input_dim: 784", "inputdim: 784", 6, 3, "model.inputdim", "did you mean 'input_dim'?"),
    ("  input_dim: 784\n", "", 4, 1, "model.input_dim",
     "missing required field 'input_dim' (required for family 'mlp')"),
    ("[512, 256]", "[512, -2]", 7, 17, "model.widths[1]", "must be >= 1, got -2"),
    ("family: mlp", "family: mpl", 5, 11, "model.family", "did you mean 'mlp'?"),
    ("nfix: 8", "nfix: 8.0", 11, 11, "asymmetry.w_asym.nfix", "expected integer, got number 8.0"),
    ("nfix: 8", "nfix: 8\n    mode: rows", 12, 11, "asymmetry.w_asym.mode",
     "must be one of entries, filters"),
    ("name: lines", "name: lines\nname: again", 3, 1, "name",
     "duplicate key 'name' (first defined at line 2)"),
    ("w_asym:\n    nfix: 8", "w_asym:\n    kappa: 1", 10, 3, "asymmetry.w_asym.nfix",
     "missing required field 'nfix'"),
])
def test_error_positions(old: str, new: str, line: int, column: int, field: str,
                         words: str) -> None:
    assert old in LINES
    err = error_of(LINES.replace(old, new, 1))
    assert (err.line, err.column) == (line, column), str(err)
    assert str(err).startswith(f"spec.yaml:{line}:{column}: field '{field}': ")
    assert words in err.message


def test_error_positions_in_block_lists() -> None:
    text = """\
        name: dag
        model:
          family: layers
          inputs:
            x: {shape: [4]}
          layers:
            - name: fc
              op: linear
              in: x
              out_features: 2
            - name: c
              op: conv2d
              in: fc
              out_features: 3
        """
    err = error_of(text)
    assert (err.line, err.column) == (14, 7)
    assert err.field_path == ("model", "layers", 1, "out_features")
    assert "unknown key 'out_features' for op 'conv2d' (did you mean 'out_channels'?)" in str(err)
    fixed = text.replace("out_features: 3", "out_channels: 3")
    err = error_of(fixed.replace("              out_features: 2\n", ""))
    assert (err.line, err.column) == (7, 7)  # the list item that lacks the field
    assert "missing required field 'out_features' (required for op 'linear')" in str(err)


def test_yaml_syntax_error_line() -> None:
    err = error_of("name: x\nmodel:\n  family: mlp\n  widths: [1, 2\n  output_dim: 3\n")
    assert err.line == 5 and "invalid YAML" in err.message
    err = error_of("name: x\nmodel:\n\tfamily: mlp\n")
    assert err.line == 3


def test_semantic_errors_are_located() -> None:
    err = error_of("name: r\nmodel:\n  family: resnet\n  depth: 21\n")
    assert (err.line, err.column, err.field_path) == (4, 10, ("model", "depth"))
    assert "6n+2" in err.message and "20 and 26" in err.message
    err = error_of("name: c\nmodel:\n  family: cnn\n  channels: [4, 8]\n  strides: [2]\n")
    assert (err.line, err.field_path) == (5, ("model", "strides"))
    err = error_of("name: t\nmodel: {family: transformer, input_dim: 3, num_classes: 2,\n"
                   "  d_model: 30}\n")
    assert err.line == 3 and "heads" in err.message  # heads was defaulted: point at d_model


def test_merge_keys_and_anchors() -> None:
    spec = load("""\
        name: merged
        model:
          family: layers
          inputs: {x: {shape: [4]}}
          layers:
            - &fc {name: fc1, op: linear, in: x, out_features: 4, bias: false}
            - {<<: *fc, name: fc2, in: fc1}
        """)
    fc1, fc2 = spec.model["layers"]
    assert fc2 == {**fc1, "name": "fc2", "in": "fc1"}
    assert spec.locations[("model", "layers", 1, "name")] == (7, 23)
    assert spec.locations[("model", "layers", 1, "out_features")] == (6, 56)  # at the anchor
    spec = load("name: m\nmodel:\n  <<: {family: mlp, input_dim: 4, output_dim: 9}\n"
                "  output_dim: 2\n")
    assert spec.model["output_dim"] == 2 and spec.model["input_dim"] == 4
    assert spec.locations[("model", "output_dim")] == (4, 15)


# --------------------------------------------------------------------------- overrides
def test_overrides() -> None:
    spec = load(MLP, ["model.widths=[256,256]", "asymmetry.w_asym.nfix=8", "seed=4",
                      "model.activation=gelu"])
    assert spec.model["widths"] == [256, 256]
    assert spec.data["asymmetry"]["w_asym"]["nfix"] == 8  # created from asymmetry: none
    assert spec.data["asymmetry"]["w_asym"]["kappa"] == 1.0
    assert spec.seed == 4 and spec.model["activation"] == "gelu"


def test_override_syntax_forms() -> None:
    spec = load(LINES, ["model.widths.1=7", "model.widths[0]=3",
                        'asymmetry.w_asym.overrides."block1.*".nfix=2',
                        "asymmetry.w_asym.layers=['fc*']", " seed = 9 "])
    assert spec.model["widths"] == [3, 7]
    assert spec.data["asymmetry"]["w_asym"]["overrides"] == {"block1.*": {"nfix": 2}}
    assert spec.data["asymmetry"]["w_asym"]["layers"] == ["fc*"]
    assert spec.seed == 9


def test_later_overrides_win_and_none_is_replaced() -> None:
    spec = load(MLP + "asymmetry: none\n", ["seed=1", "seed=2", "asymmetry.syre.kappa=0.5"])
    assert spec.seed == 2
    assert spec.data["asymmetry"]["syre"]["kappa"] == 0.5


def test_overridden_values_are_located_at_the_override() -> None:
    spec = load(LINES, ["model.widths=[64, 32]"])
    assert ("model", "widths") not in spec.locations  # the file's value is gone
    err = spec.error(("model", "widths", 1), "too narrow")
    assert (err.file, err.line, err.column) == ("<override #1>", 1, 14)
    assert "from override 'model.widths=[64, 32]'" in err.message
    # untouched fields are still located in the file
    assert spec.error(("model", "input_dim"), "x").line == 6


@pytest.mark.parametrize(("override", "words"), [
    ("model.widths", "missing '='"),
    ("=1", "expected a key before '='"),
    ("model..widths=1", "unexpected '.'"),
    ("model.widths[a]=1", "unexpected '['"),
    ("model.widths=", "missing value"),
    ("model.widths=[1,", "cannot parse the value as YAML"),
    ("model.widths.5=1", "index 5 is out of range"),
    ("model.widths.x=1", "is a list; use an index"),
    ("name.x=1", "'name' is a string"),
])
def test_bad_override_syntax(override: str, words: str) -> None:
    err = error_of(MLP.replace("output_dim: 2", "output_dim: 2\n  widths: [1, 2]"),
                   ["seed=1", override])
    assert err.file == "<override #2>" and err.line == 1 and err.column >= 1
    assert f"bad override {override!r}" in err.message
    assert words in err.message


def test_override_values_are_validated() -> None:
    err = error_of(MLP, ["model.input_dim=abc"])
    assert str(err) == ("<override #1>:1:17: field 'model.input_dim': expected integer, got "
                        "string 'abc' (from override 'model.input_dim=abc')")
    err = error_of(MLP, ["model.colour=red"])
    assert err.file == "<override #1>" and "unknown key 'colour'" in err.message


def test_with_overrides_keeps_line_numbers() -> None:
    spec = load(LINES, ["seed=3"])
    again = spec.with_overrides(["model.output_dim=5"])
    assert again.seed == 3 and again.model["output_dim"] == 5
    assert again.locate(("model", "input_dim")) == (6, 14)
    assert load_spec(spec.data).with_overrides(["seed=8"]).seed == 8


# --------------------------------------------------------------------------- dict and file input
def test_dict_input() -> None:
    source = {"name": "d", "model": {"family": "mlp", "input_dim": 3, "output_dim": 1,
                                     "widths": (4, 4)}}
    spec = load_spec(source)
    assert spec.model["widths"] == [4, 4] and spec.file is None and spec.text is None
    assert "activation" not in source["model"]  # the input is not modified
    assert spec.locate(("model", "widths")) == (None, None)
    with pytest.raises(SpecError) as info:
        load_spec({"name": "d", "model": {"family": "mlp", "input_dim": "3", "output_dim": 1}})
    assert info.value.line is None and info.value.field_path == ("model", "input_dim")
    with pytest.raises(SpecError, match="finite"):
        load_spec({"name": "d", "model": {"family": "mlp", "input_dim": 3, "output_dim": 1},
                   "asymmetry": {"syre": {"kappa": float("nan")}}})
    with pytest.raises(SpecError, match="keys must be strings"):
        load_spec({"name": "d", "model": {1: 2}})
    spec = load_spec(source, overrides=["model.input_dim=9"])
    assert spec.model["input_dim"] == 9


def test_file_input(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("\ufeff" + LINES, encoding="utf-8")
    spec = load_spec(path)
    assert spec.file == str(path) and spec.locations[("name",)] == (2, 7)
    assert load_spec(str(path)).data == spec.data
    path.write_text(LINES.replace("784", "abc"), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}:6:14: field 'model.input_dim'")
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SpecError, match="UTF-8"):
        load_spec(tmp_path / "bin.yaml")


# --------------------------------------------------------------------------- hashing and yaml
def test_content_hash_is_canonical() -> None:
    a = load(MLP)
    b = load("model: {output_dim: 2, input_dim: 4, family: mlp, activation: relu}\nname: tiny\n")
    assert a.content_hash() == b.content_hash()  # key order and explicit defaults do not matter
    assert len(a.content_hash()) == 64
    c = load(MLP.replace("output_dim: 2", "output_dim: 3"))
    assert c.content_hash() != a.content_hash()
    one = load(MLP + "asymmetry: {syre: {kappa: 1}}\n")
    one_float = load(MLP + "asymmetry: {syre: {kappa: 1.0}}\n")
    assert one.content_hash() == one_float.content_hash()


def test_content_hash_is_stable_across_processes() -> None:
    code = ("import sys; from asymspec.spec import load_spec_text; "
            "print(load_spec_text(sys.stdin.read()).content_hash())")
    text = BASE_SPECS["layers_image"]
    # A fixed hash seed in the child; this process has a random one (or another fixed one).
    seed = "4242" if os.environ.get("PYTHONHASHSEED") != "4242" else "4243"
    env = {**os.environ, "PYTHONHASHSEED": seed,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True,
                         text=True, env=env, check=True, cwd=REPO)
    assert out.stdout.strip() == load_spec_text(text).content_hash()


def test_to_yaml_round_trips() -> None:
    for text in BASE_SPECS.values():
        spec = load_spec_text(text)
        again = load_spec_text(spec.to_yaml())
        assert again.data == spec.data
        assert json.loads(spec.canonical_json()) == spec.data


# --------------------------------------------------------------------------- the schema itself
def _walk_schemas(node, where=()):
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from _walk_schemas(value, (*where, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk_schemas(value, (*where, i))


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema_path() == REPO / "schemas" / "model.schema.json" or \
        schema_path().parent.name == "_schemas"


def test_every_property_has_a_description_and_optional_ones_a_default() -> None:
    for where, node in _walk_schemas(load_schema()):
        if "if" in where or "overrides" in where:  # override entries are partial: no defaults
            continue
        props = node.get("properties")
        if not isinstance(props, dict) or "properties" in where[-1:]:
            continue
        for name, prop in props.items():
            assert "description" in prop, (where, name)
            shared = str(prop.get("$ref", "")).startswith("#/$defs/layer/properties/")
            if name not in node.get("required", []) and "const" not in prop and not shared:
                assert "default" in prop, (where, name)


def test_every_closed_object_rejects_unknown_keys() -> None:
    for where, node in _walk_schemas(load_schema()):
        if "if" in where or not isinstance(node.get("properties"), dict):
            continue
        if "properties" in where[-1:]:
            continue
        if "$comment" in node and "Open base" in node["$comment"]:
            assert "allOf" in node  # closed by the branch its discriminator selects
            continue
        assert node.get("additionalProperties") is False, where


def test_schema_lookup_prefers_package_data(tmp_path: Path, monkeypatch) -> None:
    packaged = tmp_path / "_schemas"
    packaged.mkdir()
    (packaged / "model.schema.json").write_text("{}")
    monkeypatch.setattr(schema_module, "SCHEMA_DIRS", (packaged, REPO / "schemas"))
    assert schema_path() == packaged / "model.schema.json"
    monkeypatch.setattr(schema_module, "SCHEMA_DIRS", (tmp_path / "nope", REPO / "schemas"))
    assert schema_path() == REPO / "schemas" / "model.schema.json"
    monkeypatch.setattr(schema_module, "SCHEMA_DIRS", (tmp_path / "nope",))
    with pytest.raises(FileNotFoundError):
        schema_path()
