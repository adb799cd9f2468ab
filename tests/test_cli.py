"""The command line: outputs, exit codes, and clean failures (exit 2, located, no traceback)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from asymspec.cli import main
from tests.conftest import SPECS
from tests.malformed_cases import malformed_cases

BUILD_CASES = [c for c in malformed_cases() if c.stage == "build"]


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_show_prints_table5_counts() -> None:
    res = run("show", str(SPECS / "mlp_mnist_wasym.yaml"))
    assert res.exit_code == 0
    assert "834,570" in res.output and "fc4" in res.output
    res = run("show", str(SPECS / "mlp_mnist.yaml"), "--json")
    assert json.loads(res.output)["totals"]["trainable"] == 935_434


def test_compile_writes_checkpoint(tmp_path) -> None:
    out = tmp_path / "m.pt"
    res = run("compile", str(SPECS / "mlp_mnist_wasym.yaml"), "-o", str(out))
    assert res.exit_code == 0, res.output
    payload = torch.load(out, weights_only=False)
    assert payload["check"] == "asymmetric"
    assert "fc1.weight_mask" in payload["state_dict"]
    assert "name: mlp_mnist_wasym" in payload["spec"]
    assert sum(r["trainable"] for r in payload["param_table"]) == 834_570


def test_compile_refuses_unproven_expectation(tmp_path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nexpect: asymmetric\nmodel:\n  family: mlp\n  input_dim: 4\n"
                    "  widths: [3]\n  output_dim: 2\n")
    res = run("compile", str(spec), "-o", str(tmp_path / "x.pt"))
    assert res.exit_code == 2 and "expect: asymmetric" in res.output
    assert not (tmp_path / "x.pt").exists()
    res = run("compile", str(spec), "-o", str(tmp_path / "x.pt"), "--force")
    assert res.exit_code == 0 and (tmp_path / "x.pt").exists()


def test_check_exit_codes_and_json() -> None:
    assert run("check", str(SPECS / "resnet20_wasym.yaml")).exit_code == 0
    res = run("check", str(SPECS / "resnet20.yaml"), "--json", "--max-generators", "2")
    assert res.exit_code == 1
    report = json.loads(res.output)
    assert report["verdict"] == "symmetric" and report["log10_order"] > 551
    assert len(report["generators"]) == 2 and report["num_generators"] > 2
    for key in ("name", "ok", "expect", "order", "certificate", "layers", "continuous"):
        assert key in report


def test_missing_file_is_exit_2() -> None:
    res = run("show", "no/such/spec.yaml")
    assert res.exit_code == 2


@pytest.mark.parametrize("case", BUILD_CASES, ids=[c.id for c in BUILD_CASES])
def test_build_stage_errors_exit_2_with_location(case, tmp_path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(case.text)
    res = CliRunner().invoke(main, ["show", str(path), *[f"--set={o}" for o in case.overrides]])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert f"{path}:" in res.output  # file:line:col
    assert case.field in res.output
