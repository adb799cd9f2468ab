"""``asymspec align`` and ``asymspec canonicalize`` (attached to the main command group)."""

from __future__ import annotations

import time

import click

from asymspec.cli import _threads, main, set_option
from asymspec.errors import UserError


@main.command(name="align")
@click.argument("a_path", metavar="A.pt", type=click.Path(dir_okay=False))
@click.argument("b_path", metavar="B.pt", type=click.Path(dir_okay=False))
@click.option("--spec", type=click.Path(dir_okay=False), default=None,
              help="Spec of both networks (default: the spec stored in A.pt).")
@set_option
@click.option("--module", "module_ref", default=None, metavar="PKG.MOD:FACTORY",
              help="An arbitrary torch module instead of a spec (lowered to the IR).")
@click.option("--input-shape", default=None, metavar="N,C,H,W",
              help="Example input shape for --module.")
@click.option("--method", type=click.Choice(["weight", "activation"]), default="weight",
              show_default=True)
@click.option("--data", "data_name", default=None,
              help="Training data set for --method activation (e.g. fashion-mnist).")
@click.option("--similarity", type=click.Choice(["pearson", "cross"]), default="pearson",
              show_default=True, help="Activation similarity.")
@click.option("--batches", "num_batches", type=int, default=10, show_default=True,
              help="Batches of data for activation statistics.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Weight matching seed.")
@click.option("--restarts", type=int, default=0, show_default=True,
              help="Extra weight matching runs from random permutations (best kept).")
@click.option("--max-sweeps", type=int, default=100, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write B aligned to A.")
def align_cmd(a_path: str, b_path: str, spec: str | None, overrides: tuple[str, ...],
              module_ref: str | None, input_shape: str | None, method: str,
              data_name: str | None, similarity: str, num_batches: int, batch_size: int,
              seed: int, restarts: int, max_sweeps: int, output: str) -> None:
    """Permute network B.pt to align it with A.pt (Git Re-Basin / activation matching)."""
    import numpy as np
    import torch

    from asymspec.align import io
    from asymspec.align.activation_matching import activation_matching
    from asymspec.align.weight_matching import weight_matching

    _threads()
    if method == "activation" and not data_name:
        raise UserError("--method activation needs --data NAME (a training data set)")
    if module_ref and spec:
        raise UserError("pass either --spec or --module, not both")
    if num_batches < 1 or batch_size < 1:
        raise UserError("--batches and --batch-size must be positive")
    pa, pb = io.load_checkpoint(a_path), io.load_checkpoint(b_path)
    shape = None
    if module_ref:
        if not input_shape:
            raise UserError("--module needs --input-shape (e.g. 1,3,32,32)")
        shape = io.parse_shape(input_shape)
        model_a, model_b = io.module_factory(module_ref), io.module_factory(module_ref)
        io.load_into(model_a, pa["state_dict"], a_path)
        io.load_into(model_b, pb["state_dict"], b_path)
        ir = io.lower(model_a, (torch.randn(shape),))
    else:
        ir = io.ir_from(spec, overrides, pa)
        io.check_state(ir, pa["state_dict"], a_path)
        io.check_state(ir, pb["state_dict"], b_path)
        model_a = model_b = None
    start = time.perf_counter()
    if method == "weight":
        res = weight_matching(ir, pa["state_dict"], pb["state_dict"], max_sweeps=max_sweeps,
                              seed=seed, restarts=restarts)
        summary = f"{len(res.objective)} sweeps, objective {res.objective[-1]:.6g}"
    else:
        batches = io.data_batches(data_name, None if module_ref else ir, shape, num_batches,
                                  batch_size)
        if model_a is None:
            model_a = io.model_from_state(ir, pa["state_dict"])
            model_b = io.model_from_state(ir, pb["state_dict"])
        res = activation_matching(ir, model_a, model_b, batches, method=similarity)
        vals = [v for v in res.objective if v == v]
        mean = sum(vals) / len(vals) if vals else float("nan")
        summary = f"mean matched {similarity} similarity {mean:.4f}"
    elapsed = time.perf_counter() - start
    io.save_checkpoint(pb, res.state, res.perms, output, aligned_to=str(a_path),
                       align_method=method, objective=list(res.objective))
    moved = sum(int(not np.array_equal(p, np.arange(len(p)))) for p in res.perms.values())
    click.echo(f"wrote {output}: {len(res.perms)} groups ({moved} permuted), {summary}, "
               f"{elapsed:.2f} s")


@main.command(name="canonicalize")
@click.argument("path", metavar="A.pt", type=click.Path(dir_okay=False))
@click.option("--spec", type=click.Path(dir_okay=False), default=None,
              help="Spec of the network (default: the spec stored in A.pt).")
@set_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the canonical (NodeSort) network.")
def canonicalize_cmd(path: str, spec: str | None, overrides: tuple[str, ...],
                     output: str) -> None:
    """Put every permutation group of A.pt in canonical (NodeSort) order."""
    from asymspec.align import io
    from asymspec.align.nodesort import canonicalize

    _threads()
    payload = io.load_checkpoint(path)
    ir = io.ir_from(spec, overrides, payload)
    io.check_state(ir, payload["state_dict"], path)
    perms, state = canonicalize(ir, payload["state_dict"])
    io.save_checkpoint(payload, state, perms, output, canonical="nodesort")
    click.echo(f"wrote {output}: {len(perms)} groups in canonical order")
