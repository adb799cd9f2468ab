"""The sweep and train runners end to end on the bundled digits data (tiny MLPs, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from asymspec.cli import main
from asymspec.run.engine import run_experiment
from asymspec.sweep.adhoc import parse_sweep_option, split_values

SPECS = Path(__file__).resolve().parents[1] / "specs"

SWEEP = """\
name: tiny_sweep
kind: sweep
base: {base}
base_overrides: [model.input_dim=64, "model.widths=[16, 16, 16]", asymmetry.w_asym.nfix=8,
                 asymmetry.w_asym.overrides.fc4.nfix=4]
dataset: {{name: digits, train_subset: 300, test_subset: 200}}
train: {{optimizer: adam, lr: 0.003, epochs: 2, batch_size: 64}}
eval: {{every: 1}}
thresholds: [0.5]
grid:
  axes:
    asymmetry.w_asym.kappa: [0.0, {kappa}]
    nfix_scale: [0.5, 1.0, 3.0]
"""


def _write(tmp_path: Path, kappa: float = 2.0) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(base=SPECS / "mlp_mnist_wasym.yaml", kappa=kappa))
    return path


def _cells(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())["cells"]


def test_model_sweep_runs_cells_reports_invalid_and_reuses_unchanged_cells(tmp_path):
    runs = tmp_path / "runs"
    d1 = run_experiment(str(_write(tmp_path)), quiet=True, runs_dir=runs)
    cells = _cells(d1)
    assert [c["values"]["nfix_scale"] for c in cells] == [0.5, 1.0, 3.0] * 2
    by = {(c["values"]["asymmetry.w_asym.kappa"], c["values"]["nfix_scale"]): c for c in cells}
    # nfix 24 > fan-in 16 of the hidden layers: the cell is invalid, the sweep goes on
    assert by[(0.0, 3.0)]["status"] == "invalid" and "fan-in" in by[(0.0, 3.0)]["message"]
    ok = by[(2.0, 1.0)]
    assert ok["status"] == "ok"
    # fixed count from the IR: 8 per row of fc1..fc3 (16 rows each) + 4 per row of fc4 (10)
    assert ok["fixed"] == {"model": 3 * 16 * 8 + 10 * 4}
    assert by[(2.0, 0.5)]["fixed"] == {"model": 3 * 16 * 4 + 10 * 2}
    assert set(ok["metrics"]) == {"epochs to 0.5 train acc", "final train acc", "test acc"}
    assert 0.0 <= ok["metrics"]["final train acc"] <= 1.0
    assert (d1 / "heatmap_final_train_acc.png").stat().st_size > 1000
    report = (d1 / "report.md").read_text()
    assert "invalid" in report and "W-Asym fixed" in report
    cell_runs = {c["run_dir"] for c in cells if c["status"] == "ok"}
    assert len(cell_runs) == 4 and all(Path(r).parent == runs.resolve() for r in cell_runs)

    # change one grid value: only the cells holding it train again
    def trained_at(r: str) -> list[int]:
        return sorted(p.stat().st_mtime_ns for p in Path(r).glob("members/*/metrics.json"))

    mtimes = {r: trained_at(r) for r in cell_runs}
    d2 = run_experiment(str(_write(tmp_path, kappa=1.0)), quiet=True, runs_dir=runs)
    assert d2 != d1
    again = {c["run_dir"] for c in _cells(d2) if c["status"] == "ok"}
    reused = again & cell_runs
    assert len(reused) == 2  # the kappa = 0 cells
    assert all(trained_at(r) == mtimes[r] for r in reused)  # not trained again


def test_interrupted_sweep_resumes_without_retraining(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    spec = _write(tmp_path)
    import runners.sweep.runner as sweep_runner

    real = sweep_runner.SweepRunner.run_unit
    calls = {"n": 0}

    def flaky(self, unit, out_dir):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, unit, out_dir)

    monkeypatch.setattr(sweep_runner.SweepRunner, "run_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(str(spec), quiet=True, runs_dir=runs)
    monkeypatch.setattr(sweep_runner.SweepRunner, "run_unit", real)
    trained = []
    import runners.train.runner as train_runner

    real_train = train_runner.TrainRunner.run_unit

    def spy(self, unit, out_dir):
        trained.append(unit.id)
        return real_train(self, unit, out_dir)

    monkeypatch.setattr(train_runner.TrainRunner, "run_unit", spy)
    d = run_experiment(str(spec), quiet=True, runs_dir=runs)
    assert len(_cells(d)) == 6
    assert len(trained) == 2  # two of the four valid cells were finished before the interrupt


def test_adhoc_sweep_option_parsing():
    assert split_values("1,20") == ["1", "20"]
    assert split_values("[1,2],[3],'a,b'") == ["[1,2]", "[3]", "'a,b'"]
    assert parse_sweep_option("train.warmup_epochs=1,20", 1) == ("train.warmup_epochs", [1, 20])
    res = CliRunner().invoke(main, ["run", str(SPECS / "lmc_digits.yaml"), "--sweep", "oops"])
    assert res.exit_code == 2 and "--sweep" in res.output


def test_adhoc_sweep_over_an_experiment(tmp_path):
    runs = tmp_path / "runs"
    res = CliRunner().invoke(main, [
        "run", str(SPECS / "lmc_digits.yaml"), "--runs-dir", str(runs), "--quiet",
        "--set", "pairs=1", "--set", "train.epochs=1", "--set", "eval.points=5",
        "--set", "dataset.train_subset=300", "--set", "dataset.test_subset=200",
        "--set", "model_overrides=[model.input_dim=64, \"model.widths=[16, 16, 16]\"]",
        "--set", "variants.w_asym.overrides=[asymmetry.w_asym.nfix=8, "
                 "asymmetry.w_asym.overrides.fc4.nfix=4]",
        "--sweep", "train.lr=0.001,0.01"])
    assert res.exit_code == 0, res.output
    run_dir = Path(res.output.strip().splitlines()[-1])
    cells = _cells(run_dir)
    assert [c["values"] for c in cells] == [{"train.lr": 0.001}, {"train.lr": 0.01}]
    assert all(c["status"] == "ok" and c["kind"] == "lmc" for c in cells)
    assert "w_asym: test barrier" in cells[0]["metrics"]
    assert cells[0]["fixed"]["w_asym"] == 3 * 16 * 8 + 10 * 4
    assert cells[0]["fixed"]["sigma_asym"] == 0
    assert (run_dir / "sweep.png").is_file()
