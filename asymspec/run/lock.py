"""One ``asymspec run`` per run directory at a time.

``asymspec run`` takes an exclusive ``flock`` on ``<run dir>/.lock`` before it touches the
directory's units (cleaning partial files, training, evaluating).  A second ``asymspec run`` of
the same spec and profile in the same ``--runs-dir`` does not wait: it exits with code 2 and a
message naming the process that holds the directory (pid, host, start time), because waiting
would only redo nothing after a long delay and hide a mistake; run it again once the first has
finished (it then resumes, skipping the finished units).

Stale locks cannot happen: the lock is the kernel's ``flock`` on an open file, released by the
operating system when the holding process exits for any reason (including ``kill -9`` or a
crash); the pid written into the file is only there to make the message useful, and a leftover
``.lock`` file of a dead process is simply re-locked.  (On network file systems without
``flock`` support the lock degrades to the NFS lock manager's semantics.)

Within one process the lock is re-entrant (a run that failed and is retried in the same
process, e.g. in tests, takes it again).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from asymspec.errors import UserError

LOCK_NAME = ".lock"

# run directory (resolved) -> [fd, depth]: the locks this process holds
_HELD: dict[Path, list[int]] = {}


class RunDirectoryBusy(UserError):
    """Another process is running in this run directory (exit code 2)."""


def acquire(root: str | os.PathLike[str]) -> Path:
    """Lock run directory ``root`` for this process; raises :class:`RunDirectoryBusy`."""
    root = Path(root).resolve()
    held = _HELD.get(root)
    if held is not None:
        held[1] += 1
        return root
    try:
        import fcntl
    except ImportError:  # no flock (Windows): runs are not protected from each other there
        _HELD[root] = [-1, 1]
        return root
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe(path)
        os.close(fd)
        raise RunDirectoryBusy(
            f"{root} is in use by another `asymspec run` ({holder}); a second run of the same "
            "experiment would redo its work. Wait until it finishes, then run again: the run "
            "resumes and skips finished units") from None
    except OSError as exc:
        os.close(fd)
        raise UserError(f"{path}: cannot lock the run directory ({exc.strerror or exc})") \
            from None
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    _HELD[root] = [fd, 1]
    return root


def release(root: str | os.PathLike[str]) -> None:
    """Undo one :func:`acquire` of ``root`` by this process (the last one unlocks)."""
    root = Path(root).resolve()
    held = _HELD.get(root)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    del _HELD[root]
    fd = held[0]
    if fd < 0:
        return
    import fcntl

    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked_here(root: str | os.PathLike[str]) -> bool:
    """Whether this process holds the lock of ``root``."""
    return Path(root).resolve() in _HELD


def _describe(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its pid yet"
