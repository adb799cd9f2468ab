"""Malformed specs: every one must fail with a located SpecError that names the field."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asymspec.errors import SpecError
from asymspec.spec import Spec, load_spec, load_spec_text

try:
    from tests.malformed_cases import BASE_SPECS, Case, base_data, malformed_cases
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from malformed_cases import BASE_SPECS, Case, base_data, malformed_cases

LOAD_CASES = list(malformed_cases("load"))
BUILD_CASES = list(malformed_cases("build"))


def test_enough_cases_and_unique_ids() -> None:
    assert len(LOAD_CASES) >= 200
    assert len(BUILD_CASES) >= 40
    ids = [c.id for c in LOAD_CASES + BUILD_CASES]
    assert len(ids) == len(set(ids))
    assert {c.stage for c in LOAD_CASES} == {"load"}
    assert {c.stage for c in BUILD_CASES} == {"build"}


@pytest.mark.parametrize("case", LOAD_CASES, ids=[c.id for c in LOAD_CASES])
def test_loader_rejects(case: Case) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(case.text, "case.yaml", list(case.overrides))
    err = info.value
    message = str(err)
    assert case.field in message, message
    assert err.line is not None and err.line >= 1, message
    assert err.column is not None and err.column >= 1, message
    if case.overrides:
        assert err.file is not None and err.file.startswith("<override #"), message
        return
    assert err.file == "case.yaml"
    lines = case.text.splitlines()
    if case.line_text is not None:
        assert err.line <= len(lines), message
        assert case.line_text in lines[err.line - 1], (message, lines[err.line - 1])


@pytest.mark.parametrize("case", BUILD_CASES, ids=[c.id for c in BUILD_CASES])
def test_build_stage_cases_pass_the_loader(case: Case) -> None:
    """They must reach the IR builder: valid for the schema and the loader's semantic checks."""
    spec = load_spec_text(case.text, "case.yaml")
    assert isinstance(spec, Spec)


def test_case_iterates_as_tuple() -> None:
    case_id, text, field, stage = LOAD_CASES[0]
    assert (case_id, text, field, stage) == (LOAD_CASES[0].id, LOAD_CASES[0].text,
                                             LOAD_CASES[0].field, "load")


@pytest.mark.parametrize("name", sorted(BASE_SPECS))
def test_bases_are_valid(name: str) -> None:
    load_spec_text(BASE_SPECS[name], f"{name}.yaml")


# --------------------------------------------------------------------------- property tests
_CHARS = list(":-[]{}, \t\"'#&*!|>?%@`\n0123456789axz.~=") + ["\n  ", "\n- ", ": ", "null"]
_EDIT = st.tuples(st.sampled_from(["insert", "delete", "replace", "dup-line", "drop-line",
                                   "swap-lines", "indent", "dedent"]),
                  st.integers(0, 10_000), st.integers(0, 10_000), st.sampled_from(_CHARS))


def _mutate(text: str, edits: list[tuple[str, int, int, str]]) -> str:
    for kind, a, b, ch in edits:
        lines = text.split("\n")
        if kind in ("insert", "delete", "replace") and text:
            i = a % (len(text) + 1)
            j = min(len(text), i + 1 + b % 8)
            text = (text[:i] + ch + text[i:] if kind == "insert" else
                    text[:i] + text[j:] if kind == "delete" else text[:i] + ch + text[j:])
        elif kind in ("dup-line", "drop-line", "indent", "dedent"):
            i = a % len(lines)
            if kind == "dup-line":
                lines.insert(i, lines[i])
            elif kind == "drop-line":
                del lines[i]
            elif kind == "indent":
                lines[i] = " " * (1 + b % 4) + lines[i]
            else:
                lines[i] = lines[i][1 + b % 2:] if lines[i].startswith(" ") else lines[i]
            text = "\n".join(lines)
        elif kind == "swap-lines":
            i, j = a % len(lines), b % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(BASE_SPECS)), st.lists(_EDIT, min_size=1, max_size=4))
def test_random_text_mutations_give_spec_or_spec_error(name: str, edits: list) -> None:
    text = _mutate(BASE_SPECS[name], edits)
    try:
        spec = load_spec_text(text, "fuzz.yaml")
    except SpecError as err:
        assert err.line is not None, str(err)
        return
    # A valid result round-trips through its resolved YAML.
    again = load_spec_text(spec.to_yaml(), "resolved.yaml")
    assert again.data == spec.data
    assert again.content_hash() == spec.content_hash()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True)
    | st.text(max_size=8) | st.sampled_from(["relu", "none", "linear", "x", "*", "mlp"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(BASE_SPECS)), st.data())
def test_random_value_substitutions_give_spec_or_spec_error(name: str, data) -> None:
    spec_dict = base_data(name)
    paths = []

    def walk(node, path):
        paths.append(path)
        children = node.items() if isinstance(node, dict) else (
            enumerate(node) if isinstance(node, list) else ())
        for key, value in children:
            walk(value, (*path, key))

    walk(spec_dict, ())
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths[1:]))
        node = spec_dict
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = data.draw(_JSON)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier substitution removed this path
    try:
        spec = load_spec(spec_dict)
    except SpecError:
        return
    assert load_spec(spec.data).data == spec.data
