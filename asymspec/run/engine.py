"""``run_experiment``: load a spec, create or resume its run directory, execute, report."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asymspec.errors import UserError
from asymspec.run.base import default_device, set_threads
from asymspec.run.executors import EXECUTORS, run_local, run_ray
from asymspec.run.progress import Progress
from asymspec.run.registry import get_runner
from asymspec.run.spec import Experiment, load_experiment
from asymspec.run.store import RunStore, atomic_write_json, atomic_write_text, read_json


def prepare(spec_path: str, profile: str | None, overrides: Sequence[str],
            runs_dir: str | os.PathLike[str],
            upstream_runner: Callable[[Any], Path] | None = None,
            log: Callable[[str], None] | None = None) -> tuple[Experiment, RunStore]:
    """Load the experiment, resolve its upstream runs (``upstream_runner(ref)`` runs a missing
    one) and create (or find) its run directory."""
    experiment = load_experiment(spec_path, profile, overrides)
    get_runner(experiment.kind)  # the loader already located an unknown kind
    if experiment.upstreams:
        from asymspec.run.upstream import ensure_upstreams

        def refuse(ref: Any) -> Path:
            raise UserError(f"upstream {ref.name!r} ({ref.spec_path}) has no finished run "
                            f"under {runs_dir}; run it first")

        ensure_upstreams(experiment, Path(runs_dir), upstream_runner or refuse,
                         log or (lambda msg: None))
    from asymspec.compiler import compile_ir

    for model in experiment.models.values():  # fail early on models that do not compile
        compile_ir(model)
    store = RunStore(Path(runs_dir) / experiment.run_name())
    payload = experiment.to_json()
    if store.experiment_path.is_file():
        old = read_json(store.experiment_path, dict)  # damaged: exit 2 naming it
        same = (_without_resources(old.get("experiment")) ==
                _without_resources(payload["experiment"]) and
                old.get("models") == payload["models"])
        if not same:
            raise UserError(f"{store.root} holds a different experiment (hash collision?); "
                            "move it away")
    else:
        store.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(store.root / "spec.yaml", experiment.spec.to_yaml())
        atomic_write_json(store.experiment_path, payload)
    if store.experiment_path.is_file() and payload.get("upstreams") and \
            read_json(store.experiment_path, dict).get("upstreams") != payload["upstreams"]:
        atomic_write_json(store.experiment_path, payload)  # upstream directories moved
    _link_latest(Path(runs_dir), experiment.name, store.root)
    return experiment, store


def _without_resources(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k != "resources"}
    return data


def _link_latest(runs_dir: Path, name: str, target: Path) -> None:
    """``runs/<name>`` -> the latest run of ``name`` (a symlink; never replaces a real dir)."""
    link = runs_dir / name
    if link.exists() and not link.is_symlink():
        return
    tmp = runs_dir / f".{name}.link.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.name)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


def run_experiment(spec_path: str, profile: str | None = None, overrides: Sequence[str] = (),
                   executor: str = "local", address: str | None = None, quiet: bool = False,
                   runs_dir: str | os.PathLike[str] = "runs",
                   progress: Progress | None = None) -> Path:
    """Run (or resume) an experiment; returns the run directory."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if address and executor != "ray":
        raise UserError("--address only makes sense with --executor ray")
    set_threads()
    progress = progress or Progress(quiet=quiet)

    def run_upstream(ref: Any) -> Path:
        return run_experiment(ref.spec_path, ref.profile, ref.overrides, executor, address,
                              quiet, runs_dir, progress)

    experiment, store = prepare(spec_path, profile, overrides, runs_dir, run_upstream,
                                progress.log)
    store.lock()  # one process per run directory (asymspec.run.lock): a second run exits 2
    removed = store.clean_temporaries()
    device = default_device()
    runner = get_runner(experiment.kind)(experiment, store, device, progress)
    set_threads(runner.unit_resources().threads)
    try:
        runner.check()
    except UserError:  # e.g. missing data: leave no run directory with nothing in it
        store.discard_if_unused()
        raise
    progress.log(f"run {store.root} (kind {experiment.kind}, device {device}, executor "
                 f"{executor}){f'; removed {removed} partial files' if removed else ''}")
    for stage in runner.stages():
        if not stage:
            continue
        group = stage[0].group
        todo = [u for u in stage if not store.is_done(u.group, u.id)]
        skipped = len(stage) - len(todo)
        if skipped:
            progress.log(f"{group}: {skipped}/{len(stage)} already complete, skipped")
        if not todo:
            continue
        with progress.bar(len(stage), group) as bar:
            bar.update(skipped)

            def done(unit, record, bar=bar):
                bar.update(1)
                progress.log(f"{unit.group}/{unit.id} done in {record['wall_s']:.1f} s")

            if executor == "local":
                run_local(runner, todo, done)
            else:
                run_ray(runner, todo, done, address)
    results = runner.finalize()
    atomic_write_json(store.results_path, results)
    files = type(runner).render(store.root, results, experiment)
    progress.log(f"wrote {store.results_path}" + "".join(f", {f}" for f in files))
    store.unlock()
    return store.root


def report(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Re-render figures and ``report.md`` of a finished run from its ``results.json``."""
    store = RunStore.open_existing(run_dir)
    if not store.results_path.is_file():
        raise UserError(f"{store.root} has no results.json yet; finish the run with "
                        "`asymspec run SPEC` (same spec and options) first")
    # every damaged file (experiment.json, results.json) is a UserError naming it
    return store.render_report(Experiment.from_json, get_runner)
