"""The ``metanet`` runner end to end on a tiny real zoo (asymspec.zoo.train_zoo), its settings
under ``metanet:``, resume, report, and the errors for a missing / unfinished zoo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from asymspec.cli import main
from asymspec.run.engine import report, run_experiment
from asymspec.run.spec import load_experiment
from asymspec.zoo import train_zoo

SPEC = """\
name: metanet_tiny
kind: metanet
seed: 1
upstream:
  zoo: {{run: {zoo}}}
metanet:
  models: [mlp, statnn]
  lr_grid: [0.001, 0.01]
  seeds: 2
  epochs: 3
  batch_size: 8
  canonicalize: true
  augment: true
"""


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory) -> Path:
    """A finished tiny zoo (standard + W-Asym ResNet8 on synthetic data), wrapped as a run
    directory (experiment.json with its identity, results.json)."""
    from tests.test_zoo import tiny_config, tiny_data

    root = tmp_path_factory.mktemp("zoo")
    config = tiny_config(members=16, shard_size=16)
    train_zoo(root, config, tiny_data())
    (root / "experiment.json").write_text(json.dumps(
        {"format": "asymspec-experiment/1", "content_hash": config.identity,
         "experiment": {"kind": "zoo", "name": "tiny_zoo"}, "models": {}}))
    (root / "results.json").write_text("{}")
    return root


def write_spec(tmp_path: Path, zoo: Path | str) -> Path:
    path = tmp_path / "metanet_tiny.yaml"
    path.write_text(SPEC.format(zoo=zoo))
    return path


def test_runner_end_to_end_resume_and_report(tmp_path, zoo_run):
    spec = write_spec(tmp_path, zoo_run)
    run_dir = run_experiment(str(spec), runs_dir=tmp_path / "runs", quiet=True)
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["variants"]) == ["standard", "w_asym"]
    std, wa = results["variants"]["standard"], results["variants"]["w_asym"]
    assert std["standard"] and not wa["standard"]
    assert wa["dim"] < wa["full_dim"] == std["full_dim"] == std["dim"]
    assert std["split"] == {"train": 8, "val": 4, "test": 4}
    rows = {(r["variant"], r["model"], r["remedy"]) for r in results["rows"]}
    assert rows == {("standard", "mlp", "plain"), ("standard", "mlp", "nodesort"),
                    ("standard", "mlp", "augment"), ("standard", "statnn", "plain"),
                    ("w_asym", "mlp", "plain"), ("w_asym", "statnn", "plain")}
    for r in results["rows"]:
        assert r["lr"] in (0.001, 0.01) and len(r["seeds"]) == 2
        assert len(r["test_pred"]) == 4 and r["test_tau"]["n"] == 2
        best = max((g for g in r["grid"] if g["val_r2"] is not None),
                   key=lambda g: g["val_r2"])
        assert r["lr"] == best["lr"]
    text = (run_dir / "report.md").read_text()
    assert "| MLP |" in text and "MLP + NodeSort" in text and "0.864 ± 0.010" in text
    assert "bug" in text and (run_dir / "scatter_standard.png").is_file()
    # resume: nothing is recomputed, results identical
    stamp = {p: p.stat().st_mtime_ns for p in run_dir.rglob("metrics.json")}
    again = run_experiment(str(spec), runs_dir=tmp_path / "runs", quiet=True)
    assert again == run_dir
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("metrics.json")} == stamp
    assert json.loads((run_dir / "results.json").read_text()) == results
    assert report(run_dir)  # re-render from results.json alone


def test_settings_overrides_and_hash(tmp_path, zoo_run):
    spec = write_spec(tmp_path, zoo_run)
    exp = load_experiment(spec, None, ["metanet.models=[statnn]", "metanet.seeds=5"])
    assert exp.data["metanet"]["models"] == ["statnn"] and exp.data["metanet"]["seeds"] == 5
    assert exp.data["metanet"]["lr_grid"] == [0.001, 0.01]
    assert exp.data["metanet"]["split"] == {"fractions": [0.5, 0.25, 0.25], "mode": "shuffled"}
    base = load_experiment(spec)
    assert base.upstreams["zoo"].identity and base.run_name() != exp.run_name()


def test_missing_or_unfinished_zoo_exit_2(tmp_path, zoo_run):
    cli = CliRunner()
    missing = tmp_path / "no_such_zoo"
    res = cli.invoke(main, ["run", str(write_spec(tmp_path, missing)), "--runs-dir",
                            str(tmp_path / "runs")])
    assert res.exit_code == 2 and "no_such_zoo" in res.output and "Traceback" not in res.output
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "experiment.json").write_text((zoo_run / "experiment.json").read_text())
    res = cli.invoke(main, ["run", str(write_spec(tmp_path, unfinished)), "--runs-dir",
                            str(tmp_path / "runs")])
    assert res.exit_code == 2 and "unfinished" in res.output and "Traceback" not in res.output
    res = cli.invoke(main, ["run", str(write_spec(tmp_path, zoo_run)), "--set",
                            "metanet.models=[nope]", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "unknown metanetwork 'nope'" in res.output


class _FakeZoo:
    """The slice of the asymspec.zoo.load contract that data preparation reads."""

    config = {"members": 12}
    variants = ["standard"]

    def __init__(self, percent: bool = False) -> None:
        from asymspec.compiler import build
        from asymspec.spec import load_spec

        self._spec = load_spec({"name": "tiny_mlp", "seed": 0, "model": {
            "family": "mlp", "input_dim": 4, "widths": [3], "output_dim": 2}})
        self._model = build(self._spec, init_seed=0)
        self.scale = 100.0 if percent else 1.0

    def spec(self, variant):
        return self._spec

    def model(self, variant):
        return self._model

    def members(self, variant):
        return [{"id": f"m{i}", "index": i, "metrics": {"test_acc": (0.1 + 0.05 * i) * self.scale},
                 "diverged": {"epoch": 1, "step": 3} if i == 3 else None} for i in range(12)]

    def state(self, variant, ids):
        import torch

        out = {}
        for k, v in self._model.state_dict().items():
            rows = torch.stack([torch.full_like(v, float(i[1:])) for i in ids])
            if k.endswith("weight"):
                rows[[n for n, i in enumerate(ids) if i == "m5"]] = float("nan")
            out[k] = rows
        return out


@pytest.mark.parametrize("percent", [False, True])
def test_prepare_excludes_diverged_and_nonfinite(tmp_path, percent):
    import torch

    from runners.metanet.prepare import load_inputs, prepare_variant
    from runners.metanet.runner import MetanetRunner

    settings = json.loads(json.dumps(MetanetRunner.settings_schema))  # defaults from the schema
    props = settings["properties"]["metanet"]["properties"]
    s = {k: v["default"] for k, v in props.items() if "default" in v}
    s["split"] = {"fractions": [0.5, 0.25, 0.25], "mode": "shuffled"}
    rec = prepare_variant(_FakeZoo(percent), "standard", 0, s, tmp_path)
    assert (rec["members"], rec["used"], rec["excluded_diverged"],
            rec["excluded_nonfinite"]) == (12, 10, 1, 1)
    assert rec["target_was_percent"] is percent and rec["standard"]
    data = load_inputs(tmp_path / "inputs.pt")
    assert "m3" not in data["ids"] and "m5" not in data["ids"]
    assert data["x"].shape == (10, 4 * 3 + 3 + 3 * 2 + 2)
    i = data["ids"].index("m7")
    assert torch.all(data["x"][i] == 7.0)
    assert data["y"][i].item() == pytest.approx(0.45)
    assert sorted(torch.cat([data["train"], data["val"], data["test"]]).tolist()) == \
        list(range(10))


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path, zoo_run):
    pytest.importorskip("ray", reason="ray not installed (pip install 'asymspec[ray]')")
    import ray

    spec = write_spec(tmp_path, zoo_run)
    sets = ["metanet.models=[statnn, mlp]", "metanet.canonicalize=false", "metanet.augment=false"]
    local = run_experiment(str(spec), overrides=sets, quiet=True, runs_dir=tmp_path / "local")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"ASYMSPEC_THREADS": "1"}})
        remote = run_experiment(str(spec), overrides=sets, executor="ray", quiet=True,
                                runs_dir=tmp_path / "ray")
    finally:
        ray.shutdown()
    a = json.loads((local / "results.json").read_text())
    b = json.loads((remote / "results.json").read_text())
    assert a["rows"] == b["rows"] and a["variants"] == b["variants"]
