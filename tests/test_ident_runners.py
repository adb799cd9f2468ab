"""The identifiability and coherence runners end to end on tiny settings (digits, a k-NN
Fashion-MNIST graph, the synthetic coherence data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asymspec.errors import SpecError
from asymspec.run import load_experiment, run_experiment
from asymspec.run.engine import report
from tests.conftest import SPECS

torch.set_num_threads(1)

DIGITS = """
name: ident_tiny
kind: identifiability
dataset: {name: digits}
model_overrides: [model.input_dim=64, "model.widths=[24, 24, 24]", model.activation=gelu]
variants:
  standard: {model: mlp_mnist.yaml, label: Standard}
  w_asym:
    model: mlp_mnist_wasym.yaml
    overrides: [asymmetry.w_asym.nfix=6, asymmetry.w_asym.overrides.fc3.kappa=1.0,
                asymmetry.w_asym.overrides.fc4.nfix=12, asymmetry.w_asym.overrides.fc4.kappa=1.0]
    label: W-Asym
models: 2
train: {optimizer: adamw, lr: 0.003, weight_decay: 0.01, batch_size: 64, epochs: 3}
checkpoints: [1]
recording: {examples: 400, batch_size: 200}
lmc: {points: 5}
realization: {ridge: {enabled: true, neurons: 6, betas: [0.01, 1.0]}}
"""


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_identifiability_runner_on_digits(tmp_path) -> None:
    spec = _write(tmp_path, DIGITS)
    run_dir = run_experiment(str(spec), quiet=True, runs_dir=tmp_path / "runs")
    res = json.loads((run_dir / "results.json").read_text())
    assert set(res["variants"]) == {"standard", "w_asym"}
    std, wa = res["variants"]["standard"], res["variants"]["w_asym"]
    assert std["layers"] == ["fc1", "fc2", "fc3", "fc4"] and std["checkpoints"] == [0, 1, 3]
    for e in (std, wa):
        assert set(e["lmc_unaligned"]["splits"]) == {"train", "val", "test"}
        assert set(e["lmc_aligned"]) == {"activation_matching", "weight_matching"}
        assert set(e["am_objective"]) == {"fc1", "fc2", "fc3"}
        assert set(e["am_objective"]["fc1"]["epochs"]) == {"0", "1", "3"}
        assert set(e["coherence"]) == {"fc1", "fc2", "fc3", "fc4"}
    # standard swaps are free; W-Asym ones are not
    assert max(abs(s["T"]["max"]) for s in std["realization"]["layers"].values()) < 1e-6
    assert min(s["T"]["mean"] for s in wa["realization"]["layers"].values()) > 0
    ridge = wa["realization"]["layers"]["fc2"]["ridge"]
    assert ridge["norm"].startswith("none") and set(ridge["betas"]) == {"0.01", "1.0"}
    # the optimal assignment is at least as good as the identity
    for g in std["am_objective"].values():
        for st in g["epochs"].values():
            assert st["optimal"]["mean"] >= st["identity"]["mean"] - 1e-9
    # activation matching never worsens the standard pair's test barrier much
    un = std["lmc_unaligned"]["splits"]["test"]["loss_barrier_mid"]["mean"]
    al = std["lmc_aligned"]["activation_matching"]["splits"]["test"]["loss_barrier_mid"]["mean"]
    assert al < un
    text = (run_dir / "report.md").read_text()
    assert "Layers analysed" in text and "1 − |ρ|" in text
    for fig in ("lmc_curves.png", "am_objective.png", "swap_cost_heatmaps.png",
                "coherence.png"):
        assert (run_dir / fig).is_file()
    assert report(run_dir)  # re-render from results.json


def test_analyses_are_selectable_with_set(tmp_path) -> None:
    spec = _write(tmp_path, DIGITS)
    exp = load_experiment(spec, overrides=["analyses=[lmc_aligned,am_objective]"])
    assert exp.data["analyses"] == ["lmc_aligned", "am_objective"]
    from runners.identifiability import IdentifiabilityRunner

    runner = IdentifiabilityRunner(exp, store=None)
    groups = {u.group for stage in runner.stages() for u in stage}
    assert groups == {"members", "lmc_aligned", "am_objective"}
    with pytest.raises(SpecError):
        load_experiment(spec, overrides=["analyses=[lmc,nonsense]"])


def test_identifiability_spec_errors(tmp_path) -> None:
    spec = _write(tmp_path, DIGITS + "coherence: {epochs: [2]}\n")
    exp = load_experiment(spec)
    from runners.identifiability import IdentifiabilityRunner

    with pytest.raises(SpecError, match="checkpoint epochs"):
        IdentifiabilityRunner(exp, store=None).check()
    exp = load_experiment(_write(tmp_path, DIGITS, "b.yaml"), overrides=["pairs=2"])
    with pytest.raises(SpecError, match="pairs need 4 members"):
        IdentifiabilityRunner(exp, store=None).check()


@pytest.mark.slow
def test_identifiability_runner_on_a_gnn(tmp_path) -> None:
    text = """
name: ident_gnn
kind: identifiability
dataset: {name: fmnist-knn, options: {num_nodes: 300, k: 5, dim: 16}}
model_overrides: [model.in_dim=16, model.out_dim=10, model.hidden_dim=16]
variants:
  standard: {model: gnn.yaml}
  w_asym: {model: gnn_wasym.yaml, overrides: [asymmetry.w_asym.nfix=4]}
models: 2
train: {optimizer: adam, lr: 0.01, batch_size: null, epochs: 5}
lmc: {points: 3, methods: [activation_matching]}
"""
    from asymspec.data.vision import DEBIAN_FASHION_MNIST

    if not Path(DEBIAN_FASHION_MNIST).is_dir():
        pytest.skip("Fashion-MNIST not installed")
    run_dir = run_experiment(str(_write(tmp_path, text)), quiet=True,
                             runs_dir=tmp_path / "runs")
    res = json.loads((run_dir / "results.json").read_text())
    std = res["variants"]["standard"]
    assert std["layers"] == ["conv1.lin", "conv2.lin", "conv3.lin", "head"]
    assert set(std["am_objective"]) == {"conv1.lin", "conv2.lin", "conv3.lin"}
    assert set(std["lmc_unaligned"]["splits"]) == {"train", "val", "test"}


def test_coherence_runner_smoke(tmp_path) -> None:
    run_dir = run_experiment(str(SPECS / "coherence_synthetic.yaml"), profile="smoke",
                             overrides=["training.epochs=5"], quiet=True,
                             runs_dir=tmp_path / "runs")
    res = json.loads((run_dir / "results.json").read_text())
    assert set(res["constructions"]) == {"exact_copy", "random_tight_frame"}
    cell = res["constructions"]["exact_copy"]["10"]
    assert cell["coherence"] == 0.1 and cell["midpoint_barrier"]["n"] == 2
    assert (run_dir / "coherence_barrier.png").is_file()
    assert "coherence 1/c" in (run_dir / "report.md").read_text()


def test_coherence_runner_rejects_too_many_copies(tmp_path) -> None:
    exp = load_experiment(SPECS / "coherence_synthetic.yaml", overrides=["copies=[1, 11]"])
    from runners.coherence import CoherenceRunner

    with pytest.raises(SpecError, match="exceed"):
        CoherenceRunner(exp, store=None).check()


@pytest.mark.slow
def test_identifiability_runner_on_a_resnet(tmp_path) -> None:
    text = """
name: ident_resnet
kind: identifiability
dataset: {name: digits}
model_overrides: [model.depth=8, model.width=1, model.in_channels=1, model.input_size=8]
variants:
  standard: {model: resnet20.yaml}
  w_asym: {model: resnet20_wasym.yaml, overrides: [asymmetry.w_asym.overrides.conv1.nfix=4]}
models: 2
train: {optimizer: adamw, lr: 0.003, batch_size: 128, epochs: 2}
recording: {examples: 200, batch_size: 100, max_rows_per_batch: 2000}
lmc: {points: 3}
realization: {ridge: {enabled: true, neurons: 4, betas: [0.1]}}
"""
    run_dir = run_experiment(str(_write(tmp_path, text)), quiet=True,
                             runs_dir=tmp_path / "runs")
    res = json.loads((run_dir / "results.json").read_text())
    std, wa = res["variants"]["standard"], res["variants"]["w_asym"]
    assert std["layers"][0] == "conv1" and std["layers"][-1] == "fc"
    conv = std["realization"]["layers"]["layer1.0.conv1"]
    assert conv["op"] == "conv2d" and conv["d"] == 16 * 9
    assert abs(conv["T"]["max"]) < 1e-6
    assert wa["realization"]["layers"]["layer1.0.conv1"]["T"]["mean"] > 0
    assert set(std["lmc_aligned"]) == {"activation_matching", "weight_matching"}
