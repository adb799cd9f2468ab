"""Executors: run a stage's units one after another (``local``) or as Ray tasks (``ray``).

Ray tasks rebuild the runner from the run directory's ``experiment.json`` and write their
files into the run directory, so the workers must share the driver's file system (true for a
local Ray instance; for a cluster, put ``--runs-dir`` on a shared volume).  Each task asks for
the unit's resources (:meth:`Runner.unit_resources`: ``threads`` CPUs, and a ``gpus`` fraction
of a GPU when the driver sees CUDA).  The unit itself travels with the task and each worker
process keeps the runner it rebuilt, so no stage is re-enumerated per unit.  Seeds come from the
units, so results are the same under both executors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asymspec.errors import UserError
from asymspec.run.base import Runner, Unit, execute_unit

EXECUTORS = ("local", "ray")


def run_local(runner: Runner, units: list[Unit], done: Callable[[Unit, dict], None]) -> None:
    from asymspec.run.base import set_threads

    for unit in units:
        set_threads(runner.unit_resources(unit).threads)
        done(unit, execute_unit(runner, unit))


_WORKER_RUNNERS: dict[tuple[str, str], Runner] = {}


def _ray_unit(run_dir: str, unit: Unit, device: str, threads: int) -> dict[str, Any]:
    """A Ray task: rebuild (once per worker process) the runner of ``run_dir``, run ``unit``."""
    import os

    os.environ["ASYMSPEC_THREADS"] = str(threads)
    from asymspec.run.base import set_threads
    from asymspec.run.progress import Progress
    from asymspec.run.registry import get_runner
    from asymspec.run.spec import Experiment
    from asymspec.run.store import RunStore, read_json

    set_threads(threads)
    runner = _WORKER_RUNNERS.get((run_dir, device))
    if runner is None:
        store = RunStore(run_dir)
        experiment = Experiment.from_json(read_json(store.experiment_path))
        runner = get_runner(experiment.kind)(experiment, store, device, Progress(quiet=True))
        _WORKER_RUNNERS[(run_dir, device)] = runner
    return execute_unit(runner, unit)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def run_ray(runner: Runner, units: list[Unit], done: Callable[[Unit, dict], None],
            address: str | None = None) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'asymspec[ray]'") from None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "ignore_reinit_error": True}
        if address:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except Exception as exc:
            raise UserError(f"cannot start or reach Ray ({address or 'local'}): "
                            f"{type(exc).__name__}: {exc}") from None
    cuda = runner.device.startswith("cuda")
    remote = ray.remote(max_retries=0)(_ray_unit)
    run_dir = str(runner.store.root.resolve())
    pending = {}
    for u in units:
        res = runner.unit_resources(u)
        task = remote.options(num_cpus=res.threads, num_gpus=res.gpus if cuda else 0)
        pending[task.remote(run_dir, u, runner.device, res.threads)] = u
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            unit = pending.pop(ref)
            try:
                record = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, UserError):
                    raise UserError(f"{unit.group}/{unit.id}: {cause}") from None
                raise
            done(unit, record)
