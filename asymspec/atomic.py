"""Atomic file writes: a temp file in the same directory, fsync, then ``os.replace``.

An interruption at any point (even ``kill -9``) leaves either the old file or the new one,
never a partial file — at worst a stray ``.<name>.*.tmp`` that the run store removes.

Permissions are those a plain ``open(path, "w")`` would give: an existing file keeps its mode, a
new one gets ``0o666 & ~umask`` (``tempfile.mkstemp`` alone would leave every output 0600).
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc where possible; else set-and-restore under a lock)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the permissions ``open(path, "w")`` gives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, _mode_for(path))
        except OSError:
            pass  # e.g. a file system without modes: keep what mkstemp gave
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_torch_save(obj, path: str | os.PathLike[str]) -> None:
    """``torch.save`` that never leaves a partial file."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
