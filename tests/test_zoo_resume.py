"""A zoo killed with SIGKILL mid-run resumes at shard granularity; θ0 rebuilds across
processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from asymspec.zoo import load, store, train_zoo
from asymspec.zoo.zoo import train_shard
from tests.test_zoo import tiny_config, tiny_data

ROOT = Path(__file__).resolve().parents[1]


def _config():
    return tiny_config(members=3, shard_size=1, variants=("w_asym",))


def child(root: str, marker: str) -> None:
    """Run the zoo; after the first shard, signal the parent (which then kills us)."""
    torch.set_num_threads(1)

    def on_shard(variant, index, record):
        Path(marker).write_text(f"{variant} {index}")
        time.sleep(0.05)

    train_zoo(root, _config(), tiny_data(), on_shard=on_shard)


def test_kill9_mid_zoo_then_resume(tmp_path):
    root, marker = tmp_path / "zoo", tmp_path / "marker"
    code = f"from tests.test_zoo_resume import child; child({str(root)!r}, {str(marker)!r})"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, "child ended before finishing its first shard"
            assert time.time() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    config = _config()
    done = [k for k in range(3) if store.is_complete(root, "w_asym", k)]
    assert 0 in done and len(done) < 3, "the kill must land before the zoo is finished"
    first = store.shard_dir(root, "w_asym", 0) / "members.safetensors"
    stamp = first.stat().st_mtime_ns
    assert not store.read_json(root / "zoo.json")["complete"]
    train_zoo(root, config, tiny_data())
    assert first.stat().st_mtime_ns == stamp  # the completed shard was not redone
    zoo = load(root)
    assert [m["id"] for m in zoo.members("w_asym")] == ["m00000", "m00001", "m00002"]
    assert zoo.verify_initial("w_asym")  # θ0 hashed in the killed process, rebuilt here
    # the shard trained after the restart is what an uninterrupted run gives
    fresh = tmp_path / "fresh"
    train_shard(fresh, config, "w_asym", 2, tiny_data(), directory=fresh)
    a = store.read_shard_tensors(store.shard_dir(root, "w_asym", 2))
    b = store.read_shard_tensors(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_damaged_shard_is_retrained_and_refused_by_load(tmp_path):
    import pytest

    from asymspec.errors import UserError

    config = tiny_config(members=2, shard_size=1, variants=("standard",))
    train_zoo(tmp_path, config, tiny_data())
    path = store.shard_dir(tmp_path, "standard", 1) / "members.safetensors"
    good = store.read_shard_tensors(path.parent)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    assert store.verify_shard(path.parent).startswith("members.safetensors is unreadable")
    with pytest.raises(UserError, match="retrain"):
        load(tmp_path)
    train_zoo(tmp_path, config, tiny_data())
    again = store.read_shard_tensors(path.parent)
    assert all(torch.equal(good[k], again[k]) for k in good)  # retrained, bit-identical
    assert len(load(tmp_path).members("standard")) == 2
