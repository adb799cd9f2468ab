"""Executors: run a stage's units one after another (``local``) or as Ray tasks (``ray``).

Ray tasks rebuild the runner from the run directory's ``experiment.json`` and write their
files into the run directory, so the workers must share the driver's file system (true for a
local Ray instance; for a cluster, put ``--runs-dir`` on a shared volume).  Each task asks for
one CPU, and one GPU when the driver sees CUDA.  Seeds come from the units, so results are the
same under both executors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asymspec.errors import UserError
from asymspec.run.base import Runner, Unit, execute_unit

EXECUTORS = ("local", "ray")


def run_local(runner: Runner, units: list[Unit], done: Callable[[Unit, dict], None]) -> None:
    for unit in units:
        done(unit, execute_unit(runner, unit))


def _ray_unit(run_dir: str, group: str, unit_id: str, device: str,
              threads: int) -> dict[str, Any]:
    import os

    os.environ["ASYMSPEC_THREADS"] = str(threads)
    from asymspec.run.base import set_threads
    from asymspec.run.progress import Progress
    from asymspec.run.registry import get_runner
    from asymspec.run.spec import Experiment
    from asymspec.run.store import RunStore, read_json

    set_threads()
    store = RunStore(run_dir)
    experiment = Experiment.from_json(read_json(store.experiment_path))
    runner = get_runner(experiment.kind)(experiment, store, device, Progress(quiet=True))
    unit = next(u for stage in runner.stages() for u in stage
                if u.group == group and u.id == unit_id)
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
    import os

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
    gpus = 1 if runner.device.startswith("cuda") else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_ray_unit)
    threads = int(os.environ.get("ASYMSPEC_THREADS", "1"))
    run_dir = str(runner.store.root.resolve())
    pending = {task.remote(run_dir, u.group, u.id, runner.device, threads): u for u in units}
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
