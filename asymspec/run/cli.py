"""``asymspec run`` and ``asymspec report`` (attached to the main CLI group on import)."""

from __future__ import annotations

import click

from asymspec.cli import main, set_option


@main.command(name="run")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--profile", default=None, metavar="NAME",
              help="Apply the spec's named profile (e.g. cpu, paper) before --set overrides.")
@set_option
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Run units in this process or as Ray tasks.")
@click.option("--address", default=None, help="Ray cluster address (default: start one).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where run directories are created.")
@click.option("--sweep", "sweeps", multiple=True, metavar="PATH=V1,V2,...",
              help="Run SPEC once per value (several --sweep: every combination) as a "
                   "resumable sweep; PATH is any field --set accepts.")
def run_cmd(spec: str, profile: str | None, overrides: tuple[str, ...], executor: str,
            address: str | None, quiet: bool, runs_dir: str, sweeps: tuple[str, ...]) -> None:
    """Run (or resume) the experiment SPEC; prints the run directory."""
    from asymspec.run.engine import run_experiment

    if sweeps:
        from asymspec.sweep.adhoc import write_sweep_spec

        spec = str(write_sweep_spec(spec, profile, overrides, sweeps, runs_dir))
        profile, overrides = None, ()
    run_dir = run_experiment(spec, profile, overrides, executor, address, quiet, runs_dir)
    click.echo(str(run_dir))


@main.command(name="report")
@click.argument("run_dir", type=click.Path(file_okay=False))
def report_cmd(run_dir: str) -> None:
    """Re-render the figures and report.md of RUN_DIR from its results.json."""
    from asymspec.run.engine import report

    for path in report(run_dir):
        click.echo(str(path))
