"""Issue 11, the run store defends itself: damaged units are retrained (checksums), damaged
run files give located exit-2 errors, one process per run directory (a lock), clean failures
when data is missing, output permissions; and a hypothesis fuzz over damaged run directories
(``report`` / ``run`` end with exit 0 or 2, never a traceback, within bounded time)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from asymspec.cli import main
from asymspec.run import run_experiment
from asymspec.run.store import RunStore
from tests import test_fuzz_hardening as fuzz
from tests.test_run import INIT_STATS, _example_runner

ROOT = Path(__file__).resolve().parents[1]


def _spec(tmp_path: Path, models: int = 1) -> Path:
    _example_runner()
    spec = tmp_path / "init.yaml"
    spec.write_text(INIT_STATS.replace("models: 2", f"models: {models}")
                    .replace("variants:", "examples: 32\nvariants:"))
    return spec


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run (the example runner: fast), copied by tests that damage it."""
    tmp = tmp_path_factory.mktemp("finished")
    run_dir = run_experiment(str(_spec(tmp)), quiet=True, runs_dir=tmp / "runs")
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, dst)
    return dst


def _units(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in run_dir.glob("*/*/metrics.json"))


# -- 5. units carry checksums; damaged ones are retrained ----------------------------------------

def test_units_store_checksums(finished):
    for unit in _units(finished):
        record = json.loads((unit / "metrics.json").read_text())
        assert set(record["files"]) == {"note.txt"} and len(record["checksum"]) == 64
        assert RunStore(finished).verify_unit(unit.parent.name, unit.name) is None


@pytest.mark.parametrize("damage", ["garble_metrics", "truncate_file", "edit_metrics",
                                    "delete_file", "non_utf8_metrics"])
def test_damaged_unit_is_retrained_with_a_warning(tmp_path, finished, damage, capsys):
    spec = _spec(tmp_path)
    run_dir = _copy(finished, tmp_path)
    unit = _units(run_dir)[0]
    before = json.loads((run_dir / "results.json").read_text())
    if damage == "garble_metrics":
        (unit / "metrics.json").write_text('{"metrics": {"logit_std": 1.0')
    elif damage == "truncate_file":
        (unit / "note.txt").write_bytes((unit / "note.txt").read_bytes()[:3])
    elif damage == "edit_metrics":
        rec = json.loads((unit / "metrics.json").read_text())
        rec["metrics"]["logit_std"] = 123.0
        (unit / "metrics.json").write_text(json.dumps(rec))
    elif damage == "delete_file":
        (unit / "note.txt").unlink()
    else:
        (unit / "metrics.json").write_bytes(b"\xff\xfe\x00garbage")
    out = run_experiment(str(spec), quiet=True, runs_dir=tmp_path / "runs")
    assert out.resolve() == run_dir.resolve()
    err = capsys.readouterr().err
    assert f"warning: members/{unit.name}:" in err and "run again" in err
    assert (unit.parent / f".{unit.name}.corrupt").is_dir()
    assert json.loads((run_dir / "results.json").read_text()) == before  # retrained identically
    assert RunStore(run_dir).verify_unit("members", unit.name) is None


# -- 4. report on damaged runs -------------------------------------------------------------------

@pytest.mark.parametrize("name, content, fragment", [
    ("results.json", b"", "file is empty"),
    ("results.json", b'{"summary": {"standard": [0.1', "not valid JSON"),
    ("results.json", b"\xff\xfe{}", "not UTF-8"),
    ("results.json", b"[1, 2]", "expected a JSON object, found an array"),
    ("results.json", b'{"kind": "init_stats"}', "missing key 'summary'"),
    ("results.json", b'{"summary": {"a": "x"}, "test_loss": {}}', "report needs"),
    ("experiment.json", b"{", "not valid JSON"),
    ("experiment.json", b'{"experiment": {}}', "no 'models' object"),
    ("experiment.json", b'{"experiment": {"kind": "init_stats"}, "models": {"a": 1}}',
     "experiment.json"),
])
def test_report_on_damaged_run_is_exit_2(tmp_path, finished, name, content, fragment):
    run_dir = _copy(finished, tmp_path)
    (run_dir / name).write_bytes(content)
    res = CliRunner().invoke(main, ["report", str(run_dir)])
    assert res.exit_code == 2, res.output
    assert str(run_dir / name) in res.output and fragment in res.output, res.output
    assert "Traceback" not in res.output


# -- 6. one run per directory --------------------------------------------------------------------

HOLD = """\
import sys, time
from asymspec.run.lock import acquire
acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def _holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_exits_2_and_dead_holders_do_not_block(tmp_path, finished):
    spec = _spec(tmp_path)
    run_dir = _copy(finished, tmp_path)
    (run_dir / "results.json").unlink()
    proc = _holder(run_dir)
    try:
        res = CliRunner().invoke(main, ["run", str(spec), "--quiet", "--runs-dir",
                                        str(tmp_path / "runs")])
        assert res.exit_code == 2, res.output
        assert f"pid {proc.pid}" in res.output and "in use" in res.output
        assert not (run_dir / "results.json").exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # a crashed holder: its lock must not be stale
        proc.wait()
    res = CliRunner().invoke(main, ["run", str(spec), "--quiet", "--runs-dir",
                                    str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert (run_dir / "results.json").is_file()


# -- 7. missing data: nothing downloaded, nothing left behind; permissions -----------------------

def test_missing_data_leaves_no_run_directory(tmp_path, monkeypatch):
    import asymspec.data.vision as vision
    import asymspec.run.tasks as tasks

    monkeypatch.setattr(vision, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    monkeypatch.setattr(tasks, "_CACHE", {})
    monkeypatch.setenv("ASYMSPEC_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("ASYMSPEC_DOWNLOAD", raising=False)
    res = CliRunner().invoke(main, ["run", str(ROOT / "specs" / "lmc_mlp.yaml"), "--profile",
                                    "cpu", "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    assert "nothing is downloaded unless ASYMSPEC_DOWNLOAD=1" in res.output
    assert not (tmp_path / "data").exists()
    runs = tmp_path / "runs"
    assert not runs.exists() or list(runs.iterdir()) == [], list(runs.rglob("*"))


def test_failed_download_removes_the_directories_it_made(tmp_path, monkeypatch):
    import types

    import asymspec.data.vision as vision

    def offline(root, train, download):
        (Path(root) / "FashionMNIST" / "raw").mkdir(parents=True)
        raise OSError("network is unreachable")

    # a stand-in torchvision whose download fails the way an offline one does
    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(FashionMNIST=offline))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setattr(vision, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    monkeypatch.setenv("ASYMSPEC_DOWNLOAD", "1")
    root = tmp_path / "cache" / "asymspec"
    with pytest.raises(Exception, match="download failed"):
        vision.load_idx_dataset("fashion-mnist", "train", root)
    assert not root.exists()


def test_run_outputs_have_normal_permissions(finished):
    files = [p for p in finished.rglob("*") if p.is_file() and p.name != ".lock"]
    assert files
    umask = os.umask(0)
    os.umask(umask)
    # written under the test process's umask: a plain open() would give 0o666 & ~umask
    want = 0o666 & ~umask
    bad = [(str(p), oct(p.stat().st_mode & 0o777)) for p in files
           if p.stat().st_mode & 0o777 != want]
    assert not bad


def test_unknown_kind_in_file_is_located(tmp_path):
    spec = tmp_path / "k.yaml"
    spec.write_text("name: k\nkind: nokind\ndataset: {name: digits}\n"
                    "variants:\n  standard: {model: mlp_mnist.yaml}\n")
    (tmp_path / "mlp_mnist.yaml").write_text((ROOT / "specs" / "mlp_mnist.yaml").read_text())
    res = CliRunner().invoke(main, ["run", str(spec), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2 and f"{spec}:2:" in res.output and "nokind" in res.output


# -- damaged run directories -------------------------------------------------------------------

DAMAGES = ["empty", "truncate", "garbage", "flip", "json", "delete", "non_utf8"]


def _damage(path: Path, how: str, draw) -> None:
    raw = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncate":
        path.write_bytes(raw[:draw(st.integers(0, max(len(raw) - 1, 0)))])
    elif how == "garbage":
        path.write_bytes(draw(st.binary(max_size=40)))
    elif how == "flip":
        if raw:
            i = draw(st.integers(0, len(raw) - 1))
            path.write_bytes(raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1:])
    elif how == "non_utf8":
        path.write_bytes(b"\xff\xfe" + raw)
    elif how == "delete":
        path.unlink()
    else:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        paths = list(fuzz._paths(data))
        path_in = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "insert"]))
        value = draw(st.one_of(st.integers(-2, 5), st.text(max_size=4), st.none(),
                               st.lists(st.integers(), max_size=2), st.just({})))
        path.write_text(json.dumps(fuzz._mutate(data, path_in, op, value)))


@fuzz.FUZZ
@given(data=st.data())
def test_fuzz_damaged_run_directories(finished, data):
    d = Path(tempfile.mkdtemp(prefix="fuzzrun"))
    try:
        spec = _spec(d)
        run_dir = d / "runs" / finished.name
        shutil.copytree(finished, run_dir)
        files = sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock")
        for _ in range(data.draw(st.integers(1, 2))):
            target = data.draw(st.sampled_from([p for p in files if p.exists()]))
            _damage(target, data.draw(st.sampled_from(DAMAGES)), data.draw)
        res = fuzz._invoke(["report", str(run_dir)])
        fuzz._assert_documented(res, (0, 2))
        res = fuzz._invoke(["run", str(spec), "--quiet", "--runs-dir", str(d / "runs")])
        fuzz._assert_documented(res, (0, 2))
        if res.exit_code == 0:  # resumed: every unit verifies and the report renders
            assert fuzz._invoke(["report", str(run_dir)]).exit_code == 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_ogbn_arxiv_is_not_downloaded_unless_asked(tmp_path, monkeypatch):
    import types

    from asymspec.data import graphs
    from asymspec.errors import UserError

    calls = []
    fake = types.ModuleType("ogb.nodeproppred")
    fake.PygNodePropPredDataset = lambda *a, **k: calls.append((a, k))  # would download
    monkeypatch.setitem(sys.modules, "ogb", types.ModuleType("ogb"))
    monkeypatch.setitem(sys.modules, "ogb.nodeproppred", fake)
    monkeypatch.delenv("ASYMSPEC_DOWNLOAD", raising=False)
    with pytest.raises(UserError, match="nothing is downloaded unless ASYMSPEC_DOWNLOAD=1"):
        graphs.ogbn_arxiv(tmp_path)
    assert calls == [] and list(tmp_path.iterdir()) == []
