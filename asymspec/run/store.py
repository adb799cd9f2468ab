"""The run store: ``runs/<name>-<profile>-<hash>/`` with atomic writes.

Layout::

    experiment.json      everything needed to rebuild the experiment (resolved spec + models)
    spec.yaml            the resolved experiment spec, for people
    members/<id>/        one directory per trained member: checkpoint.pt, metrics.json
    pairs/<id>/          one directory per evaluated pair (lmc): metrics.json
    results.json         aggregated results;  <figure>.png  report.md

A unit (member, pair, ...) is complete exactly when its ``metrics.json`` exists *and
verifies*: it is written last, atomically (temp file + ``os.replace``), after everything else
the unit writes, by :meth:`RunStore.mark_done`, which records the SHA-256 of every other file of
the unit (``files``) and of the record itself (``checksum``).  A ``kill -9`` therefore leaves at
worst stray ``.*.tmp`` files, removed on the next start; a unit whose files do not verify
(garbled ``metrics.json``, a truncated checkpoint, a file edited by hand) is moved aside to
``<group>/.<id>.corrupt`` with a warning and trained again — never trusted, never fatal.

Files a run reads back (``experiment.json``, ``results.json``) go through :func:`read_json`,
whose failures are :class:`RunFileError` (a :class:`UserError`, exit 2) naming the file and what
is wrong with it.  One process at a time works in a run directory (:mod:`asymspec.run.lock`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asymspec.atomic import atomic_write_bytes
from asymspec.errors import UserError


class RunFileError(UserError, ValueError):
    """A run-directory file that is missing, unreadable or not what it should be (exit 2).

    Also a ``ValueError``, so callers that catch JSON errors keep working."""


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: Path, expect: type | None = None) -> Any:
    """The JSON in ``path``; :class:`RunFileError` names the file and the problem (missing,
    empty, not UTF-8, not JSON — with line and column —, or not of type ``expect``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RunFileError(f"{path}: file is missing") from None
    except OSError as exc:
        raise RunFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not raw.strip():
        raise RunFileError(f"{path}: file is empty (an interrupted or damaged write?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); the "
                           "file is damaged") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        where = (f" at line {exc.lineno}, column {exc.colno}"
                 if isinstance(exc, json.JSONDecodeError) else "")
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise RunFileError(f"{path}: not valid JSON ({msg}{where}); the file is truncated or "
                           "damaged") from None
    if expect is not None and not isinstance(value, expect):
        found = _json_type(type(value))
        raise RunFileError(f"{path}: expected a JSON {_json_type(expect)}, found "
                           f"{'an' if found[0] in 'aeiou' else 'a'} {found}")
    return value


def _json_type(t: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number",
            bool: "boolean", type(None): "null"}.get(t, t.__name__)


_DIGESTS: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) -> SHA-256, this process only


def sha256_file(path: Path) -> str:
    """SHA-256 of a file; remembered per (path, inode, size, mtime) so repeated verification of
    unchanged files (``is_done`` per stage, runners polling units) reads them once."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = _DIGESTS[key] = h.hexdigest()
    return digest


def _record_digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _unit_files(unit_dir: Path) -> list[Path]:
    """The files a unit wrote (not metrics.json, not temporaries or hidden files)."""
    if not unit_dir.is_dir():
        return []
    return sorted(p for p in unit_dir.rglob("*")
                  if p.is_file() and p.name != "metrics.json"
                  and not any(part.startswith(".") for part in p.relative_to(unit_dir).parts))


class RunStore:
    """Paths and completion markers of one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths -------------------------------------------------------------------------
    def unit_dir(self, group: str, unit_id: str) -> Path:
        return self.root / group / unit_id

    def metrics_path(self, group: str, unit_id: str) -> Path:
        return self.unit_dir(group, unit_id) / "metrics.json"

    @property
    def results_path(self) -> Path:
        return self.root / "results.json"

    @property
    def experiment_path(self) -> Path:
        return self.root / "experiment.json"

    # -- state -------------------------------------------------------------------------
    def mark_done(self, group: str, unit_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """Complete a unit: write ``metrics.json`` (atomically, last) holding ``record`` plus
        the SHA-256 of every file of the unit and of the record itself; returns what it wrote.
        """
        unit_dir = self.unit_dir(group, unit_id)
        out = {k: v for k, v in record.items() if k not in ("files", "checksum")}
        out["files"] = {p.relative_to(unit_dir).as_posix(): sha256_file(p)
                        for p in _unit_files(unit_dir)}
        out["checksum"] = _record_digest(out)
        atomic_write_json(self.metrics_path(group, unit_id), out)
        return out

    def verify_unit(self, group: str, unit_id: str) -> str | None:
        """``None`` when the unit is complete and its files verify, ``"missing"`` when it has
        no ``metrics.json``, else what is wrong with it."""
        path = self.metrics_path(group, unit_id)
        if not path.is_file():
            return "missing"
        try:
            record = read_json(path, dict)
        except RunFileError as exc:
            return str(exc).partition(": ")[2]
        if not isinstance(record.get("metrics"), dict):
            return "metrics.json holds no 'metrics' object"
        digest = record.get("checksum")
        if digest is None:
            return None  # written before checksums existed: the JSON parsed, trust it
        if digest != _record_digest(record):
            return "metrics.json does not match its checksum (modified or damaged)"
        files = record.get("files")
        if not isinstance(files, dict):
            return "metrics.json has no file list"
        unit_dir = self.unit_dir(group, unit_id)
        for rel, want in files.items():
            p = unit_dir / rel
            if not p.is_file():
                return f"{rel} is missing"
            if sha256_file(p) != want:
                return f"{rel} does not match its checksum (truncated or modified)"
        return None

    def is_done(self, group: str, unit_id: str, warn: Callable[[str], None] | None = None
                ) -> bool:
        """Whether the unit is complete and verifies.  A unit that does not verify is moved
        aside to ``<group>/.<id>.corrupt`` (replacing an older one) with a warning, so it is
        trained again from scratch."""
        problem = self.verify_unit(group, unit_id)
        if problem is None:
            return True
        if problem != "missing":
            self.quarantine(group, unit_id, problem, warn)
        return False

    def quarantine(self, group: str, unit_id: str, problem: str,
                   warn: Callable[[str], None] | None = None) -> Path:
        """Move a damaged unit aside (kept for inspection) and say so."""
        src = self.unit_dir(group, unit_id)
        dst = src.parent / f".{unit_id}.corrupt"
        if dst.exists():
            shutil.rmtree(dst, ignore_errors=True)
        os.replace(src, dst)
        message = (f"warning: {group}/{unit_id}: {problem}; not trusted, moved to {dst.name} "
                   "and run again")
        (warn or (lambda m: print(m, file=sys.stderr)))(message)
        return dst

    def load_metrics(self, group: str, unit_id: str) -> dict[str, Any]:
        return read_json(self.metrics_path(group, unit_id), dict)

    def lock(self) -> None:
        """Take this run directory for this process (see :mod:`asymspec.run.lock`)."""
        from asymspec.run.lock import acquire

        acquire(self.root)

    def unlock(self) -> None:
        from asymspec.run.lock import release

        release(self.root)

    def discard_if_unused(self, runs_dir: Path | None = None) -> bool:
        """Remove the run directory when it holds nothing but what ``prepare`` wrote
        (``experiment.json``, ``spec.yaml``, the lock) — e.g. a run that failed its
        ``check()`` because data is missing — and a ``runs/<name>`` link to it."""
        keep = {"experiment.json", "spec.yaml", ".lock"}
        if not self.root.is_dir() or any(p.name not in keep for p in self.root.iterdir()):
            return False
        self.unlock()
        shutil.rmtree(self.root, ignore_errors=True)
        parent = Path(runs_dir) if runs_dir is not None else self.root.parent
        for link in parent.iterdir() if parent.is_dir() else ():
            if link.is_symlink() and os.readlink(link) == self.root.name:
                link.unlink(missing_ok=True)
        return True

    # -- reading a finished run back -----------------------------------------------------
    def read_experiment_record(self) -> dict[str, Any]:
        """``experiment.json`` as a dict with ``experiment`` and ``models`` (else exit 2)."""
        record = read_json(self.experiment_path, dict)
        for key, kind in (("experiment", dict), ("models", dict)):
            if not isinstance(record.get(key), kind):
                raise RunFileError(f"{self.experiment_path}: no '{key}' object; this is not "
                                   "an experiment record written by `asymspec run`")
        return record

    def render_report(self, experiment_from_json: Callable[[dict], Any],
                      runner_for: Callable[[str], Any]) -> list[Path]:
        """``runner.render`` of this run from its files, every damage a :class:`UserError`
        naming the file: ``experiment.json`` that does not rebuild, ``results.json`` that is
        missing, unreadable, or lacks what the runner's report reads."""
        record = self.read_experiment_record()
        try:
            experiment = experiment_from_json(record)
        except UserError as exc:
            raise RunFileError(f"{self.experiment_path}: the recorded experiment is not valid "
                               f"any more: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RunFileError(f"{self.experiment_path}: damaged experiment record "
                               f"({_describe(exc)})") from None
        runner = runner_for(experiment.kind)
        if not self.results_path.is_file():
            raise UserError(f"{self.root} has no results.json yet; finish the run with "
                            "`asymspec run SPEC` (same spec and options) first")
        results = read_json(self.results_path, dict)
        try:
            return runner.render(self.root, results, experiment)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError,
                ArithmeticError) as exc:
            raise RunFileError(f"{self.results_path}: does not hold what the "
                               f"'{experiment.kind}' report needs ({_describe(exc)}); the file "
                               "is damaged or from another version — rerun `asymspec run "
                               "SPEC` to rebuild it") from None

    def clean_temporaries(self) -> int:
        """Remove ``.*.tmp`` files left by an interrupted write; returns how many."""
        n = 0
        if self.root.is_dir():
            for p in self.root.rglob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
        return n

    @classmethod
    def open_existing(cls, path: str | os.PathLike[str]) -> RunStore:
        root = Path(path)
        store = cls(root)
        if not store.experiment_path.is_file():
            raise UserError(f"{root} is not a run directory (no experiment.json); runs are made "
                            "by `asymspec run SPEC`")
        return store


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing key {exc.args[0]!r}" if exc.args else "a missing key"
    return f"{type(exc).__name__}: {str(exc)[:200]}"
