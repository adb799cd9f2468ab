"""The ``bnn`` runner: located errors for bad settings, a tiny end-to-end run that resumes, and
the shipped experiment specs loading under every profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from asymspec.cli import main
from asymspec.run import load_experiment, run_experiment

SPECS = Path(__file__).resolve().parents[1] / "specs"

TINY = """\
name: bnn_tiny
kind: bnn
seed: 0
dataset: {name: digits}
variants:
  standard:
    model: {name: s, model: {family: mlp, input_dim: 64, widths: [12, 12], output_dim: 10,
            norm: layernorm}}
    label: Standard
    panel: MLP
    paper: {acc_final: [50.0, 1.0], params: 123}
  w_asym:
    model: {name: w, model: {family: mlp, input_dim: 64, widths: [12, 12], output_dim: 10,
            norm: layernorm}, asymmetry: {w_asym: {nfix: 3, kappa: 0.5}}}
    label: W-Asym
    panel: MLP
seeds: 2
train: {epochs: 2, batch_size: 128, lr: 0.003}
bnn:
  rank: RANK
  prior_precision: PRECISION
eval: {samples: 3, epochs: [1]}
"""


def _spec(tmp_path: Path, rank: str = "2", precision: str = "0.01") -> Path:
    path = tmp_path / "bnn_tiny.yaml"
    path.write_text(TINY.replace("RANK", rank).replace("PRECISION", precision))
    return path


@pytest.mark.parametrize("rank,precision,field,line", [("0", "0.01", "bnn.rank", 20),
                                                       ("2", "-1.0", "bnn.prior_precision", 21),
                                                       ("2", "0", "bnn.prior_precision", 21)])
def test_bad_settings_exit_2_located(tmp_path, rank, precision, field, line) -> None:
    spec = _spec(tmp_path, rank, precision)
    res = CliRunner().invoke(main, ["run", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    assert f"{spec}:{line}" in res.output and field in res.output
    assert "Traceback" not in res.output


def test_tiny_run_results_report_and_resume(tmp_path) -> None:
    runs = tmp_path / "runs"
    run_dir = run_experiment(str(_spec(tmp_path)), quiet=True, runs_dir=runs)
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["variants"]) == {"standard", "w_asym"}
    for entry in results["variants"].values():
        assert len(entry["runs"]) == 2 and entry["mid_epoch"] == 1
        for run in entry["runs"]:
            assert len(run["train_nll_history"]) == 2 and len(run["neg_elbo_history"]) == 2
            assert 0.0 <= run["acc_final"] <= 1.0 and 0.0 <= run["ece"] <= 1.0
            assert [e["epoch"] for e in run["evals"]] == [1, 2]
        assert entry["stats"]["acc_final"]["n"] == 2
    # W-Asym has fewer random entries: fewer parameters (Table 5's counting)
    v = results["variants"]
    assert v["w_asym"]["num_parameters"] < v["standard"]["num_parameters"]
    report = (run_dir / "report.md").read_text()
    assert "| Standard |" in report and "50.00 ± 1.00" in report and "123" in report
    assert (run_dir / "bnn_train_loss.png").is_file()
    first = {p: p.read_bytes() for p in run_dir.glob("members/*/metrics.json")}
    assert len(first) == 4
    (run_dir / "results.json").unlink()
    again = run_experiment(str(_spec(tmp_path)), quiet=True, runs_dir=runs)
    assert again == run_dir  # the same run, resumed: no unit re-run
    assert {p: p.read_bytes() for p in run_dir.glob("members/*/metrics.json")} == first
    assert json.loads((run_dir / "results.json").read_text()) == results


@pytest.mark.parametrize("name", ["bnn_mlp", "bnn_resnet20", "bnn_resnet20_c100"])
@pytest.mark.parametrize("profile", [None, "paper", "cpu"])
def test_shipped_specs_load(name: str, profile: str | None) -> None:
    exp = load_experiment(SPECS / f"{name}.yaml", profile=profile)
    assert exp.kind == "bnn" and exp.data["bnn"]["rank"] == 4
    assert set(exp.models) == set(exp.data["variants"])
