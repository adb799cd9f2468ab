"""The ``asymspec`` command line.

Exit codes: 0 success; 1 the check found residual symmetries (``check``/``audit``); 2 invalid
input (bad spec, bad file, bad option, a model too large to build) — always a one-paragraph
message, never a traceback; 3 an internal error (a bug in asymspec: the message says so and the
traceback follows), so a crash can never read as "symmetric".

Startup is kept light: this module imports only click and the standard library; feature
commands (:data:`LAZY_COMMANDS`) are imported when invoked, and ``asymspec --help`` lists them
from :data:`LAZY_HELP` without importing them.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import click

from asymspec.atomic import atomic_torch_save  # noqa: F401  (re-exported for commands)
from asymspec.errors import UserError

# torch-geometric scripts a few helpers with torch.jit.script at import time; torch 2.x warns
# that it is deprecated on every CLI invocation that touches PyG.  The warning is about PyG's
# code, not the user's, so the command line hides it.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*is deprecated",
                        category=FutureWarning)

EXIT_INTERNAL = 3


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Spec warnings read like the errors (``warning: file:line:col: field ...``)."""
    from asymspec.errors import SpecWarning

    if issubclass(category, SpecWarning):
        return f"warning: {message}\n"
    return _default_format(message, category, filename, lineno, line)


_default_format = warnings.formatwarning
warnings.formatwarning = _format_warning


class _Group(click.Group):
    """Turns :class:`UserError` into a message on stderr and exit code 2, running out of memory
    into exit 2 naming the limits, and any other exception into exit 3 (internal error); loads
    feature commands lazily (:data:`LAZY_COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str):
        if name not in self.commands and name in LAZY_COMMANDS:
            import importlib

            importlib.import_module(LAZY_COMMANDS[name])
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list without importing the lazy commands' modules."""
        rows = []
        limit = formatter.width - 6 - max(len(n) for n in self.list_commands(ctx))
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name)
            if cmd is not None:
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, click.Command(name, help=LAZY_HELP.get(name, ""))
                             .get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except MemoryError:
            click.echo("error: out of memory while building or checking the model; lower its "
                       "sizes, or lower ASYMSPEC_MAX_PARAMS so such specs are refused early",
                       err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit,
                KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: say so, never exit 1 ("symmetric")
            import traceback

            traceback.print_exc()
            click.echo(f"internal error (a bug in asymspec, please report it): "
                       f"{type(exc).__name__}: {exc}", err=True)
            ctx.exit(EXIT_INTERNAL)


def _threads() -> None:
    # One intra-op thread: on small CPUs OpenMP spinning makes 2 threads far slower than 1
    # when another process is busy.  ASYMSPEC_THREADS overrides.
    import torch

    torch.set_num_threads(int(os.environ.get("ASYMSPEC_THREADS", "1")))


def check_output_path(path: str, option: str) -> None:
    """Fail before any work when ``path`` cannot be written: its directory is missing, is a
    file, or is not writable, or ``path`` itself is a directory."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    problem = None
    if target.is_dir():
        problem = "is a directory"
    elif not parent.exists():
        problem = f"directory '{parent}' does not exist"
    elif not parent.is_dir():
        problem = f"'{parent}' is not a directory"
    elif not os.access(parent, os.W_OK | os.X_OK):
        problem = f"directory '{parent}' is not writable"
    if problem:
        raise UserError(f"{option} {path}: cannot write there ({problem})")


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a spec field, e.g. --set model.widths=[256,256] (repeatable).",
)


@click.group(cls=_Group)
@click.version_option(package_name="asymspec")
def main() -> None:
    """Compile, verify and study neural networks without parameter symmetries."""


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@set_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(spec: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Print the layers of SPEC with trainable / fixed / buffer counts per layer.

    Counts come from the IR's shapes and the passes' decisions, compiled without drawing any
    mask, fixed value or weight (and without importing torch): exactly the counts of the built
    model.  Conditions on drawn values (FiGLU's F) are checked by `check` and `compile`.
    """
    from asymspec.compiler import compile_ir
    from asymspec.paramtable import format_table, ir_parameter_table, totals

    ir = compile_ir(spec, overrides, draw=False)
    rows = ir_parameter_table(ir)
    if as_json:
        click.echo(json.dumps({"layers": [r.as_dict() for r in rows], "totals": totals(rows)},
                              indent=2))
        return
    s = ir.g.graph["spec"]
    passes = ", ".join(p["pass"] for p in ir.g.graph["passes"]) or "none"
    click.echo(f"{s.data['name']}  (family {s.data['model']['family']}, asymmetry: {passes})")
    click.echo(format_table(rows))


@main.command(name="compile")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the checkpoint (.pt).")
@set_option
@click.option("--seed", type=int, default=None, help="Initialisation seed (default: spec's).")
@click.option("--force", is_flag=True,
              help="Write the model even if the spec's `expect: asymmetric` check fails.")
def compile_cmd(spec: str, output: str, overrides: tuple[str, ...], seed: int | None,
                force: bool) -> None:
    """Compile SPEC and write state_dict + resolved spec + parameter table to OUTPUT."""
    from asymspec.compiler import build
    from asymspec.paramtable import parameter_table, totals

    _threads()
    check_output_path(output, "-o/--output")
    model = build(spec, overrides, init_seed=seed)
    s = model.ir.g.graph["spec"]
    verdict = None
    if s.data.get("expect") == "asymmetric":
        from asymspec.check import check_ir

        report = check_ir(model.ir)
        verdict = report.verdict
        if not report.ok and not force:
            raise UserError(
                f"{spec}: the spec says `expect: asymmetric` but the check found residual "
                f"symmetries (log10 |Aut| = {report.log10_order:.2f}); run `asymspec check "
                f"{spec}` for details, or pass --force to write the model anyway"
            )
    rows = parameter_table(model)
    payload = {
        "format": "asymspec-checkpoint/1",
        "spec": s.to_yaml(),
        "spec_hash": s.content_hash(),
        "init_seed": s.data.get("seed", 0) if seed is None else seed,
        "state_dict": model.state_dict(),
        "param_table": [r.as_dict() for r in rows],
        "check": verdict,
    }
    try:
        atomic_torch_save(payload, Path(output))
    except OSError as exc:
        raise UserError(f"{output}: cannot write the checkpoint: {exc.strerror or exc}") \
            from None
    t = totals(rows)
    click.echo(f"wrote {output}: {t['trainable']:,} trainable, {t['fixed']:,} fixed, "
               f"{t['buffers']:,} buffer entries")


@main.command(name="check")
@click.argument("spec", type=click.Path(dir_okay=False))
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--max-generators", type=int, default=None,
              help="Limit the generators listed in --json output.")
def check_cmd(spec: str, overrides: tuple[str, ...], as_json: bool,
              max_generators: int | None) -> None:
    """Prove SPEC has no parameter symmetries, or list those that remain.

    Exit 0: no nontrivial neural-DAG automorphism (or only what `expect:` allows);
    1: residual symmetries; 2: invalid input or a model over the size limits; 3: internal
    error (a bug).
    """
    from asymspec.check import check_ir
    from asymspec.compiler import compile_ir

    _threads()
    report = check_ir(compile_ir(spec, overrides))
    if as_json:
        click.echo(json.dumps(report.to_json(max_generators), indent=2))
    else:
        click.echo(report.format_text())
    sys.exit(0 if report.ok else 1)


# Commands that live with their feature (audit, alignment, experiment runs) are imported only
# when invoked (or listed), so `asymspec check` does not pay for torch-geometric or Ray imports.
# Their modules attach the commands to `main` with `@main.command`.
# First help lines of the lazy commands (``asymspec --help`` shows them without importing the
# commands' modules; a test keeps them equal to the commands' own docstrings).
LAZY_HELP = {
    "align": "Permute network B.pt to align it with A.pt (Git Re-Basin / activation "
             "matching).",
    "audit": "Audit TARGET (any PyTorch model) for residual parameter symmetries.",
    "canonicalize": "Put every permutation group of A.pt in canonical (NodeSort) order.",
    "perm-spec": "Derive TARGET's permutation spec: which parameter axes permute together "
                 "(JSON).",
    "report": "Re-render the figures and report.md of RUN_DIR from its results.json.",
    "run": "Run (or resume) the experiment SPEC; prints the run directory.",
}

LAZY_COMMANDS = {
    "audit": "asymspec.audit.cli",
    "perm-spec": "asymspec.audit.cli",
    "align": "asymspec.align.cli",
    "canonicalize": "asymspec.align.cli",
    "run": "asymspec.run.cli",
    "report": "asymspec.run.cli",
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
