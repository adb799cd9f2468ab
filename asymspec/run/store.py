"""The run store: ``runs/<name>-<profile>-<hash>/`` with atomic writes.

Layout::

    experiment.json      everything needed to rebuild the experiment (resolved spec + models)
    spec.yaml            the resolved experiment spec, for people
    members/<id>/        one directory per trained member: checkpoint.pt, metrics.json
    pairs/<id>/          one directory per evaluated pair (lmc): metrics.json
    results.json         aggregated results;  <figure>.png  report.md

A unit (member, pair, ...) is complete exactly when its ``metrics.json`` exists: it is written
last, atomically (temp file + ``os.replace``), after everything else the unit writes.  A
``kill -9`` therefore leaves at worst stray ``.*.tmp`` files, removed on the next start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from asymspec.atomic import atomic_write_bytes
from asymspec.errors import UserError


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


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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
    def is_done(self, group: str, unit_id: str) -> bool:
        return self.metrics_path(group, unit_id).is_file()

    def load_metrics(self, group: str, unit_id: str) -> dict[str, Any]:
        return read_json(self.metrics_path(group, unit_id))

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
