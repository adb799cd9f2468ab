"""Upstream runs: an experiment that reads another run's results (MLI and metanetworks read a
model zoo) names it under ``upstream:``::

    upstream:
      zoo: {spec: zoo_resnet8.yaml, profile: cpu}     # found as runs/<zoo run name>/
      # or: zoo: {run: runs/zoo_resnet8-cpu-1a2b3c4d5e}  (a finished run directory)

Each upstream has an *identity*: the content hash of its resolved experiment (spec, models and,
recursively, its own upstreams).  The identity is part of the downstream's hash
(:meth:`Experiment.content_hash`), so a changed zoo spec gives a new downstream run directory
instead of silently feeding old results.  For a ``run:`` reference the identity is read from
that directory's ``experiment.json``.

``asymspec run`` resolves each upstream to a directory (:func:`ensure_upstreams`): a ``spec``
upstream whose run is missing or unfinished is run first, with the same runs directory and
executor; a ``run`` upstream must be finished.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asymspec.errors import UserError
from asymspec.spec import Spec


@dataclass
class UpstreamRef:
    """One resolved upstream reference."""

    name: str
    identity: str  # content hash of the upstream experiment
    run_name: str  # its run directory's name
    kind: str
    spec_path: str | None = None
    profile: str | None = None
    overrides: tuple[str, ...] = ()
    run_dir: str | None = None  # set once resolved (pinned by `run:` or found / run)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["overrides"] = list(self.overrides)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpstreamRef:
        return cls(**{**data, "overrides": tuple(data.get("overrides") or ())})


def _identity_of_run(run_dir: Path) -> tuple[str, str]:
    """``(identity, kind)`` of a run directory from its ``experiment.json``."""
    from asymspec.run.spec import Experiment
    from asymspec.run.store import read_json

    path = run_dir / "experiment.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no experiment.json)")
    try:
        payload = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    identity = payload.get("content_hash")
    if not identity:  # written before identities were stored: recompute
        identity = Experiment.from_json(payload).content_hash()
    return identity, payload["experiment"].get("kind", "lmc")


def resolve_upstreams(spec: Spec, seen: tuple[str, ...] = ()) -> dict[str, UpstreamRef]:
    """Identities of the upstreams ``spec`` names (loading their specs recursively)."""
    from asymspec.run.spec import find_spec_file, load_experiment

    out: dict[str, UpstreamRef] = {}
    ups = spec.data.get("upstream") or {}
    base = Path(spec.file).resolve().parent if spec.file else None
    for name, ref in ups.items():
        where = ("upstream", name)
        if ref.get("run"):
            run_dir = Path(ref["run"]).expanduser()
            if not run_dir.is_absolute() and base is not None and (base / run_dir).is_dir():
                run_dir = base / run_dir
            if not run_dir.is_dir():
                raise spec.error(where + ("run",), f"upstream run directory {ref['run']!r} "
                                 "not found")
            try:
                identity, kind = _identity_of_run(run_dir)
            except UserError as exc:
                raise spec.error(where + ("run",), str(exc)) from None
            out[name] = UpstreamRef(name, identity, run_dir.resolve().name, kind,
                                    run_dir=str(run_dir.resolve()))
            continue
        if not ref.get("spec"):
            raise spec.error(where, "an upstream needs `spec` (an experiment spec) or `run` "
                             "(a finished run directory)")
        path = find_spec_file(ref["spec"], base)
        if path is None:
            raise spec.error(where + ("spec",), f"upstream spec {ref['spec']!r} not found "
                             f"(looked next to {spec.file or 'the spec'}, in the current "
                             "directory and in the shipped specs/)")
        key = str(path.resolve())
        if key in seen or (spec.file and key == str(Path(spec.file).resolve())):
            raise spec.error(where + ("spec",), "upstream runs form a cycle")
        try:
            up = load_experiment(path, ref.get("profile"), list(ref.get("overrides") or ()),
                                 _seen=seen + (key,))
        except UserError as exc:
            raise spec.error(where, f"upstream {name!r}: {exc}") from None
        out[name] = UpstreamRef(name, up.content_hash(), up.run_name(), up.kind, str(path),
                                ref.get("profile"), tuple(ref.get("overrides") or ()))
    return out


def ensure_upstreams(experiment: Any, runs_dir: Path, run_missing: Any, log: Any) -> None:
    """Point every upstream of ``experiment`` at a finished run directory.

    ``run_missing(ref)`` runs a spec upstream and returns its run directory; ``log(msg)``
    reports what happens.
    """
    for ref in experiment.upstreams.values():
        if ref.run_dir is None:
            candidate = runs_dir / ref.run_name
            if not (candidate / "results.json").is_file():
                log(f"upstream {ref.name!r}: {candidate} is not finished; running "
                    f"{ref.spec_path}{' --profile ' + ref.profile if ref.profile else ''} first")
                candidate = Path(run_missing(ref))
            ref.run_dir = str(candidate.resolve())
        run_dir = Path(ref.run_dir)
        if not (run_dir / "results.json").is_file():
            raise UserError(f"upstream {ref.name!r}: {run_dir} has no results.json; finish "
                            "that run first")
        identity, _ = _identity_of_run(run_dir)
        if identity != ref.identity:
            raise UserError(f"upstream {ref.name!r}: {run_dir} holds a different experiment "
                            "than the spec names (its identity changed); re-run the upstream")
