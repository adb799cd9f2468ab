"""asymspec.run: barrier math, experiment specs and profiles, the run store (resume after
kill -9), executors (local vs Ray), third-party runners and the digits LMC end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from asymspec.cli import main
from asymspec.errors import SpecError, UserError
from asymspec.run import load_experiment, register, run_experiment
from asymspec.run.barrier import grid, max_barrier, mean_std, midpoint_barrier
from asymspec.run.evaluator import evaluate_states, interpolate_state

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "ASYMSPEC_THREADS": "1", "PYTHONUNBUFFERED": "1"}

TINY = """\
name: tiny
kind: lmc
dataset: {name: digits}
model_overrides: [model.input_dim=64, "model.widths=[32, 32, 32]"]
variants:
  standard: {model: mlp_mnist.yaml}
  w_asym:
    model: mlp_mnist_wasym.yaml
    overrides: [asymmetry.w_asym.nfix=8, asymmetry.w_asym.overrides.fc4.nfix=8]
pairs: 1
train: {epochs: EPOCHS, batch_size: 64, lr: 0.002}
eval: {points: 5}
profiles:
  cpu: {train: {epochs: 1}}
"""


def tiny_spec(tmp_path: Path, epochs: int = 2, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(TINY.replace("EPOCHS", str(epochs)))
    return path


# -- barrier math ------------------------------------------------------------------------------


def test_grid_contains_endpoints_and_midpoint():
    g = grid(25)
    assert len(g) == 25 and g[0] == 0.0 and g[-1] == 1.0 and g[12] == 0.5
    g4 = grid(4)
    assert 0.5 in g4 and len(g4) == 5
    with pytest.raises(ValueError):
        grid(2)


def test_barriers_on_synthetic_curves():
    t = grid(11)
    linear = [2.0 + 3.0 * x for x in t]  # no barrier at all
    assert midpoint_barrier(t, linear) == pytest.approx(0.0, abs=1e-12)
    assert max_barrier(t, linear) == pytest.approx(0.0, abs=1e-12)
    bump = [1.0 + 4 * x * (1 - x) for x in t]  # parabola, height 1 at t = 0.5
    assert midpoint_barrier(t, bump) == pytest.approx(1.0)
    assert max_barrier(t, bump) == pytest.approx(1.0)
    skew = [1.0 + (0.8 if abs(x - 0.2) < 1e-9 else 0.0) + x for x in t]  # peak off the middle
    assert midpoint_barrier(t, skew) == pytest.approx(0.0)
    assert max_barrier(t, skew) == pytest.approx(0.8)
    dip = [1.0 - 4 * x * (1 - x) * 0.1 for x in t]  # convex: negative midpoint barrier
    assert midpoint_barrier(t, dip) == pytest.approx(-0.1)
    assert max_barrier(t, dip) == pytest.approx(0.0)  # the endpoints themselves give 0
    s = mean_std([1.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(2 ** 0.5)
    assert mean_std([5.0])["std"] == 0.0


def test_interpolation_and_vmap_evaluation_agree():
    import asymspec

    spec = ROOT / "specs" / "mlp_mnist_wasym.yaml"
    over = ["model.input_dim=64", "model.widths=[32,32,32]", "asymmetry.w_asym.nfix=8",
            "asymmetry.w_asym.overrides.fc4.nfix=8"]
    a, b = asymspec.build(spec, over, init_seed=1), asymspec.build(spec, over, init_seed=2)
    sa, sb = a.state_dict(), b.state_dict()
    mid = interpolate_state(sa, sb, 0.5)
    for k in sa:
        if sa[k].is_floating_point():
            assert torch.allclose(mid[k], (sa[k] + sb[k]) / 2)
        else:
            assert torch.equal(mid[k], sa[k])
    states = [interpolate_state(sa, sb, t) for t in (0.0, 0.5, 1.0)]
    x, y = torch.randn(50, 1, 8, 8), torch.randint(0, 10, (50,))
    batches = [((x[:30],), y[:30], None), ((x[30:],), y[30:], None)]
    lv, av = evaluate_states(a, states, batches, use_vmap=True)
    ll, al = evaluate_states(a, states, batches, use_vmap=False)
    assert lv == pytest.approx(ll, rel=1e-5) and av == al
    ref = torch.nn.functional.cross_entropy(b(x.flatten(1)), y).item()
    assert lv[2] == pytest.approx(ref, rel=1e-5)


# -- experiment specs --------------------------------------------------------------------------


def test_profiles_overrides_defaults_and_hash(tmp_path):
    path = tiny_spec(tmp_path)
    base = load_experiment(path)
    assert base.data["train"]["epochs"] == 2 and base.data["train"]["optimizer"] == "adam"
    assert base.data["eval"]["batch_size"] == 1024 and base.profile is None
    cpu = load_experiment(path, "cpu")
    assert cpu.data["train"]["epochs"] == 1 and cpu.data["train"]["lr"] == 0.002
    assert cpu.profile == "cpu" and cpu.run_name().startswith("tiny-cpu-")
    over = load_experiment(path, "cpu", ["train.epochs=3", "variants.w_asym.train.lr=0.01"])
    assert over.recipe("w_asym")["lr"] == 0.01 and over.recipe("standard")["lr"] == 0.002
    assert len({base.content_hash(), cpu.content_hash(), over.content_hash()}) == 3
    assert load_experiment(path, "paper").data["train"]["epochs"] == 2  # implicit paper
    assert load_experiment(path).content_hash() == base.content_hash()
    assert base.models["w_asym"].data["model"]["widths"] == [32, 32, 32]


@pytest.mark.parametrize("text, overrides, profile, fragment", [
    ("train: {epochs: 0}", [], None, "field 'train.epochs'"),
    ("train: {optimiser: adam}", [], None, "optimiser"),
    ("", ["train.lr=-1"], None, "<override #1>"),
    ("", [], "gpu", "no profile 'gpu'"),
    ("profiles: {cpu: {train: {epochs: x}}}", [], "cpu", "field 'train.epochs'"),
])
def test_spec_errors_are_located(tmp_path, text, overrides, profile, fragment):
    src = TINY.replace("EPOCHS", "2")
    if text:
        key = text.split(":")[0]
        src = "\n".join(line for line in src.splitlines()
                        if not line.startswith(key + ":") and not (
                            key == "profiles" and line.startswith("  cpu"))) + "\n" + text + "\n"
    path = tmp_path / "bad.yaml"
    path.write_text(src)
    with pytest.raises(SpecError) as err:
        load_experiment(path, profile, overrides)
    assert fragment in str(err.value)
    if not overrides:
        assert str(err.value).startswith(f"{path}:")


def test_variant_errors(tmp_path):
    src = TINY.replace("EPOCHS", "1")
    (tmp_path / "a.yaml").write_text(src.replace("  w_asym:\n",
                                                 "  rb: {from: nope, align: weight_matching}\n"
                                                 "  w_asym:\n"))
    with pytest.raises(SpecError, match="unknown variant 'nope'"):
        load_experiment(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text(src.replace("mlp_mnist.yaml", "nothere.yaml"))
    with pytest.raises(SpecError, match="model spec 'nothere.yaml' not found"):
        load_experiment(tmp_path / "b.yaml")


def test_cli_spec_errors_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("EPOCHS", "-3"))
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(bad), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "train.epochs" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["run", str(tiny_spec(tmp_path)), "--set", "pairs=zero",
                               "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "<override #1>" in res.output
    res = runner.invoke(main, ["run", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2
    res = runner.invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "not a run directory" in res.output
    res = runner.invoke(main, ["run", str(tiny_spec(tmp_path)), "--set", "kind=nokind",
                               "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "no runner for experiment kind 'nokind'" in res.output


# -- running -----------------------------------------------------------------------------------


def _unit_files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()
            and p.parent.parent.name in ("members", "pairs")}


def test_resume_after_kill_9(tmp_path):
    spec = tiny_spec(tmp_path, epochs=10)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-c", "from asymspec.cli import main; main()", "run", str(spec),
           "--runs-dir", str(runs)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    first = None
    while time.time() < deadline and proc.poll() is None:
        done = list(runs.glob("tiny-*/members/*/metrics.json"))
        if done:
            first = done[0]
            break
        time.sleep(0.05)
    if first is None:
        proc.kill()
        raise AssertionError(f"no member finished: {proc.communicate()[0].decode()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = first.parents[2]
    assert not (run_dir / "results.json").exists()
    before = _unit_files(run_dir)
    members_done = {p.parent.name for p in run_dir.glob("members/*/metrics.json")}
    assert 1 <= len(members_done) < 4
    for p in run_dir.rglob("*.json"):
        json.loads(p.read_text())  # nothing half-written
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "already complete, skipped" in out.stderr
    assert out.stdout.strip() == str(run_dir)
    after = _unit_files(run_dir)
    for name, content in before.items():  # completed units untouched
        if any(f"members/{m}/" in name for m in members_done):
            assert after[name] == content
    assert not list(run_dir.rglob("*.tmp"))
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["variants"]) == {"standard", "w_asym"}
    for m in members_done:
        rec = json.loads((run_dir / "members" / m / "metrics.json").read_text())
        assert rec["wall_s"] > 0 and rec["seed"] > 0
        ck = torch.load(run_dir / "members" / m / "checkpoint.pt", weights_only=True)
        assert "state_dict" in ck


def test_changed_spec_goes_to_new_run_dir_and_report(tmp_path):
    spec = tiny_spec(tmp_path, epochs=1)
    runs = tmp_path / "runs"
    d1 = run_experiment(str(spec), quiet=True, runs_dir=runs,
                        overrides=["variants.w_asym.overrides=[asymmetry.w_asym.nfix=8, "
                                   "asymmetry.w_asym.overrides.fc4.nfix=8]"])
    d2 = run_experiment(str(spec), quiet=True, runs_dir=runs, overrides=["eval.points=7"])
    assert d1 != d2
    r2 = json.loads((d2 / "results.json").read_text())
    assert len(r2["t"]) == 7
    assert (runs / "tiny").resolve() == d2.resolve()  # latest-run link
    res = CliRunner().invoke(main, ["report", str(runs / "tiny")])
    assert res.exit_code == 0, res.output
    assert (d2 / "report.md").read_text().count("|") > 10 and (d2 / "lmc_test_loss.png").is_file()


INIT_STATS = """\
name: init_demo
kind: init_stats
dataset: {name: digits}
model_overrides: [model.input_dim=64, "model.widths=[32, 32, 32]"]
variants:
  standard: {model: mlp_mnist.yaml}
  w_asym:
    model: mlp_mnist_wasym.yaml
    overrides: [asymmetry.w_asym.nfix=8, asymmetry.w_asym.overrides.fc4.nfix=8]
models: 2
"""


def _example_runner():
    spec_mod = importlib.util.spec_from_file_location("example_runner",
                                                      ROOT / "runners" / "example_runner.py")
    mod = importlib.util.module_from_spec(spec_mod)
    spec_mod.loader.exec_module(mod)
    register("init_stats", mod.InitStatsRunner)
    return mod


def test_third_party_runner(tmp_path):
    _example_runner()
    spec = tmp_path / "init.yaml"
    spec.write_text(INIT_STATS)
    run_dir = run_experiment(str(spec), quiet=True, runs_dir=tmp_path / "runs")
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["summary"]) == {"standard", "w_asym"}
    assert len(results["variants"]["standard"]) == 2
    assert "logit std" in (run_dir / "report.md").read_text()
    # the kind's own settings are validated with located errors (exit 2 from the CLI)
    bad = tmp_path / "bad.yaml"
    bad.write_text(INIT_STATS.replace("models: 2", "models: 2\npairs: 3"))
    res = CliRunner().invoke(main, ["run", str(bad), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and f"{bad}:11:1" in res.output and "pairs" in res.output
    res = CliRunner().invoke(main, ["run", str(spec), "--set", "models=0",
                                    "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and "<override #1>" in res.output and "models" in res.output


def test_digits_quickstart_end_to_end(tmp_path):
    """The README quickstart: specs/lmc_digits.yaml (well under a minute on CPU)."""
    pytest.importorskip("asymspec.align")
    t0 = time.time()
    run_dir = run_experiment(str(ROOT / "specs" / "lmc_digits.yaml"), quiet=True,
                             runs_dir=tmp_path / "runs")
    wall = time.time() - t0
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["variants"]) == ["standard", "rebasin", "sigma_asym", "w_asym"]
    assert len(results["t"]) == 25
    mid = {k: v["barrier"]["test_barrier_mid"]["mean"] for k, v in results["variants"].items()}
    assert mid["standard"] > 0.2  # clearly positive
    assert mid["w_asym"] < 0.05 and mid["rebasin"] < mid["standard"]
    assert (run_dir / "lmc_test_loss.png").stat().st_size > 10_000
    assert "Git-ReBasin" in (run_dir / "report.md").read_text()
    assert wall < 180


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path):
    pytest.importorskip("ray", reason="ray not installed (pip install 'asymspec[ray]')")
    import ray

    spec = tiny_spec(tmp_path, epochs=1)
    local = run_experiment(str(spec), quiet=True, runs_dir=tmp_path / "local")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"ASYMSPEC_THREADS": "1"}})
        remote = run_experiment(str(spec), executor="ray", quiet=True,
                                runs_dir=tmp_path / "ray")
    finally:
        ray.shutdown()
    a = json.loads((local / "results.json").read_text())
    b = json.loads((remote / "results.json").read_text())
    for v in a["variants"]:
        assert a["variants"][v]["curves"] == b["variants"][v]["curves"]
        assert a["variants"][v]["barrier"]["test_barrier_mid"]["values"] == \
            b["variants"][v]["barrier"]["test_barrier_mid"]["values"]
    for p in (local / "members").iterdir():
        sa = torch.load(p / "checkpoint.pt", weights_only=True)["state_dict"]
        sb = torch.load(remote / "members" / p.name / "checkpoint.pt",
                        weights_only=True)["state_dict"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cpu_profile_without_fashion_mnist_fails_clearly(tmp_path, monkeypatch):
    import asymspec.data.vision as vision
    import asymspec.run.tasks as tasks

    monkeypatch.setattr(vision, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    monkeypatch.setattr(tasks, "_CACHE", {})
    monkeypatch.setenv("ASYMSPEC_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ASYMSPEC_DOWNLOAD", "0")
    res = CliRunner().invoke(main, ["run", str(ROOT / "specs" / "lmc_mlp.yaml"), "--profile",
                                    "cpu", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    assert "dataset 'fashion-mnist' not found" in res.output
    assert "ASYMSPEC_DATA" in res.output and str(tmp_path / "data") in res.output
    assert not list((tmp_path / "runs").glob("*/members/*"))


def test_executor_errors(tmp_path):
    spec = tiny_spec(tmp_path)
    with pytest.raises(UserError, match="unknown executor"):
        run_experiment(str(spec), executor="slurm", quiet=True, runs_dir=tmp_path)
    with pytest.raises(UserError, match="--address"):
        run_experiment(str(spec), address="x:1", quiet=True, runs_dir=tmp_path)
