"""Fuzzing (hypothesis) what users feed asymspec: mutated specs (``check`` / ``show``) here,
damaged run directories (``report`` / ``run``) in ``test_hardening_run.py`` (sharing its run).

Every case must end with an exit code the CLI documents — 0, 1 (``check`` found symmetries) or 2
(located user error) — never a traceback or an internal error (exit 3), and within a bounded
time (an alarm fails a case that runs over :data:`CASE_SECONDS`).  The size limits are lowered
(they are configurable for exactly this) so every mutated spec is cheap to build or refused.
Examples are derandomized and few, so the default suite stays fast and reproducible.
"""

from __future__ import annotations

import copy
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from asymspec.cli import main
from tests.malformed_cases import BASE_SPECS

CASE_SECONDS = 120
# no shrinking phase: a failure is reported as generated, and time stays bounded
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
# layers_tokens (attention reading one input three times) is checked by
# test_layers_tokens_base_checks below and kept out of the fuzz.
FUZZ_BASES = sorted(k for k in BASE_SPECS if k != "layers_tokens")


@pytest.fixture(autouse=True)
def _small_limits(monkeypatch):
    monkeypatch.setenv("ASYMSPEC_MAX_PARAMS", "1000000")
    monkeypatch.setenv("ASYMSPEC_MAX_DIM", "50000")
    monkeypatch.setenv("ASYMSPEC_MAX_DEPTH", "100")


@contextmanager
def _time_limit(seconds: int):
    def fail(signum, frame):
        raise TimeoutError(f"case ran over {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _invoke(args: list[str]):
    with _time_limit(CASE_SECONDS):
        res = CliRunner().invoke(main, args)
    if isinstance(res.exception, TimeoutError):
        pytest.fail(f"{args}: {res.exception}")
    return res


def _assert_documented(res, allowed=(0, 1, 2)) -> None:
    assert res.exit_code in allowed, (res.exit_code, res.output[-2000:])
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    if res.exit_code == 2:
        assert res.output.startswith("error: ") or "Error:" in res.output, res.output


# -- spec mutations ----------------------------------------------------------------------------

SCALARS = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([0, -1, 2**31, 10**12, 2**63, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([1.0e308, 1.0e-320, 0.0, -0.0, 0.5]),
    st.text(alphabet="ab*?.[]01 :{}", max_size=6),
    st.none(), st.booleans(),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(st.sampled_from(["a", "nfix", "kappa", "layers", "in"]),
                                   SCALARS, max_size=2))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutate(data, path, op, value):
    data = copy.deepcopy(data)
    if not path:
        return value if op == "replace" else data
    parent = data
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    if op == "replace":
        parent[key] = value
    elif op == "delete":
        del parent[key]
    elif isinstance(parent, dict):
        parent[f"x{len(parent)}"] = value
    else:
        parent.insert(key, value)
    return data


@st.composite
def mutated_specs(draw):
    base = draw(st.sampled_from(FUZZ_BASES))
    text = BASE_SPECS[base]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["tree", "tree", "tree", "text"]))
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
        if kind == "tree" and isinstance(data, (dict, list)):
            paths = list(_paths(data))
            path = draw(st.sampled_from(paths))
            op = draw(st.sampled_from(["replace", "delete", "insert"]))
            text = yaml.safe_dump(_mutate(data, path, op, draw(VALUES)), sort_keys=False)
        else:
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.sampled_from(["", ":", "- ", "\t", "{", "&a *a", "\x00",
                                                    "\n  - 1\n", "!!python/object:os.system"]))
    return text


@settings(FUZZ, max_examples=60)
@given(text=mutated_specs(), cmd=st.sampled_from(["check", "show"]))
def test_fuzz_spec_mutations(text, cmd):
    d = Path(tempfile.mkdtemp(prefix="fuzzspec"))
    try:
        spec = d / "s.yaml"
        spec.write_text(text, encoding="utf-8", errors="surrogatepass")
        res = _invoke([cmd, str(spec)])
        _assert_documented(res, (0, 1, 2) if cmd == "check" else (0, 2))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_layers_tokens_base_checks(tmp_path):
    """Attention reading one input three times (q, k, v) gave parallel unit-graph edges and
    crashed the verifier; they are merged into one edge coloured by the multiset of colours."""
    spec = tmp_path / "s.yaml"
    spec.write_text(BASE_SPECS["layers_tokens"])
    _assert_documented(_invoke(["check", str(spec)]))
