"""The ``zoo`` runner through ``asymspec run``: shards as units, resume, report, load()."""

from __future__ import annotations

import json

import pytest

from asymspec.errors import SpecError
from asymspec.run.engine import run_experiment
from asymspec.zoo import load

SPEC = """
name: zoo_tiny
kind: zoo
seed: 1
dataset: {name: digits, train_subset: 256, test_subset: 128}
model_overrides: [model.in_channels=1, model.input_size=8, model.base_width=4]
variants:
  standard: {model: resnet8_zoo.yaml, label: Standard}
  sigma_asym: {model: resnet8_zoo_sigma.yaml, members: 1}
members: 2
shard_size: 1
hparams:
  epochs: 2
  lr: {dist: choice, values: [0.01, 0.003]}
train: {batch_size: 64, peak_epoch: 1, augment: {translate: 1, cutout: 2}}
"""


@pytest.fixture()
def spec_file(tmp_path):
    path = tmp_path / "zoo_tiny.yaml"
    path.write_text(SPEC)
    return path


def test_zoo_runner_end_to_end(spec_file, tmp_path):
    runs = tmp_path / "runs"
    run_dir = run_experiment(str(spec_file), runs_dir=runs, quiet=True)
    assert (run_dir / "report.md").is_file() and (run_dir / "zoo_accuracy.png").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["variants"]["standard"]["members"] == 2
    assert results["variants"]["sigma_asym"]["members"] == 1
    assert results["variants"]["standard"]["distance"]["pairs"] == 1
    zoo = load(run_dir)
    assert zoo.variants == ["standard", "sigma_asym"]
    assert zoo.dataset["name"] == "digits" and zoo.identity == results["identity"]
    assert [m["hparams"]["epochs"] for m in zoo.members("standard")] == [2, 2]
    # member 0 is the same recipe in both variants
    assert zoo.members("standard")[0]["hparams"] == zoo.members("sigma_asym")[0]["hparams"]
    assert zoo.verify_initial("standard") and zoo.verify_initial("sigma_asym")
    flat, ids = zoo.flat("standard")
    assert flat.shape[0] == 2 and ids == ["m00000", "m00001"]
    # a second run finds everything done and changes nothing
    stamp = (run_dir / "shards" / "standard-s0000" / "members.safetensors").stat().st_mtime_ns
    again = run_experiment(str(spec_file), runs_dir=runs, quiet=True)
    assert again == run_dir
    assert (run_dir / "shards" / "standard-s0000" / "members.safetensors").stat(
    ).st_mtime_ns == stamp


def test_zoo_runner_settings_errors_are_located(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("train: {batch_size: 64,", "train: {bogus: 3, batch_size: 64,"))
    with pytest.raises(SpecError) as err:
        run_experiment(str(bad), runs_dir=tmp_path / "runs", quiet=True)
    assert "bogus" in str(err.value) and ":15:" in str(err.value)
    bad.write_text(SPEC.replace("epochs: 2", "epochs: {dist: randint, low: 3}"))
    with pytest.raises(SpecError) as err:
        run_experiment(str(bad), runs_dir=tmp_path / "runs", quiet=True)
    assert "hparams" in str(err.value)
