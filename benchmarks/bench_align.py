"""Benchmark weight matching (PermSpec-driven, any architecture) against a hand-written ResNet20.

The baseline is a straightforward port of Git Re-Basin's ``weight_matching`` (Ainsworth et al.
2023, ``samuela/git-re-basin``) with a hand-written ResNet20 permutation table for this
package's parameter names: every group's cost re-permutes the full tensors, the old score uses
an identity-matrix dot product, the start is the identity.  Both run in this process on the
same networks, one torch thread.  Ours differs in engineering only (cost contributions cached
while the permutations of their other axes do not change, no reshape copies) plus the optional
topological start (its default); with ``init="identity"`` it follows the same descent.

Cases:

1. two independently initialised ResNet20 x8 networks (``specs/resnet20_8x.yaml``, 17.3 M
   parameters): time and final objective ``sum <A, pi(B)>``;
2. the same network with a planted random permutation (``random_group_perms``) plus Gaussian
   noise (1% of each tensor's std): fraction of groups recovered exactly, time;
3. planted recovery for the other shipped standard specs (ours only); ResNet20 recovery as the
   noise grows (ours and baseline);
4. NodeSort and activation matching timings.

Usage: ``python benchmarks/bench_align.py [--noise 0.01] [--skip-baseline]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

import asymspec  # noqa: E402
from asymspec.align import activation_matching, canonicalize, exact_groups  # noqa: E402
from asymspec.align.weight_matching import inverse, weight_matching  # noqa: E402
from asymspec.ir.permgroups import perm_spec, plant_permutation  # noqa: E402

SPECS = Path(__file__).resolve().parents[1] / "specs"


# ----------------------------------------------------------------------------- baseline
def resnet20_table() -> dict[str, tuple[str | None, ...]]:
    """Hand-written permutation table (key -> perm per axis) for the ResNet20 family
    (GroupNorm / BatchNorm norms, 1x1-conv shortcuts), as in git-re-basin's
    ``resnet20_permutation_spec``."""
    table: dict[str, tuple[str | None, ...]] = {}

    def conv(name, p_in, p_out):
        table[f"{name}.weight"] = (p_out, p_in, None, None)

    def norm(name, p):
        table[f"{name}.weight"] = (p,)
        table[f"{name}.bias"] = (p,)

    conv("conv1", None, "P_stage1")
    norm("norm1", "P_stage1")
    for stage in (1, 2, 3):
        for block in range(3):
            prefix = f"layer{stage}.{block}"
            inner = f"P_{prefix}_inner"
            p_in = f"P_stage{stage - 1 if block == 0 and stage > 1 else stage}"
            p_out = f"P_stage{stage}"
            conv(f"{prefix}.conv1", p_in, inner)
            norm(f"{prefix}.norm1", inner)
            conv(f"{prefix}.conv2", inner, p_out)
            norm(f"{prefix}.norm2", p_out)
            if block == 0 and stage > 1:
                conv(f"{prefix}.shortcut.conv", p_in, p_out)
                norm(f"{prefix}.shortcut.norm", p_out)
    table["fc.weight"] = (None, "P_stage3")
    table["fc.bias"] = (None,)
    return table


def baseline_weight_matching(table, params_a, params_b, max_iter=100, seed=0):
    perm_to_axes: dict[str, list[tuple[str, int]]] = {}
    for key, axes in table.items():
        for axis, p in enumerate(axes):
            if p is not None:
                perm_to_axes.setdefault(p, []).append((key, axis))
    sizes = {p: params_a[axes[0][0]].shape[axes[0][1]] for p, axes in perm_to_axes.items()}
    perm = {p: torch.arange(n) for p, n in sizes.items()}
    names = list(perm)

    def permuted(key, except_axis):
        w = params_b[key]
        for axis, p in enumerate(table[key]):
            if axis != except_axis and p is not None:
                w = torch.index_select(w, axis, perm[p])
        return w

    rng = np.random.default_rng(seed)
    sweeps = 0
    for _ in range(max_iter):
        sweeps += 1
        progress = False
        for p_ix in rng.permutation(len(names)):
            p = names[p_ix]
            n = sizes[p]
            cost = torch.zeros((n, n))
            for key, axis in perm_to_axes[p]:
                w_a = torch.movedim(params_a[key], axis, 0).reshape(n, -1)
                w_b = torch.movedim(permuted(key, axis), axis, 0).reshape(n, -1)
                cost += w_a @ w_b.T
            _, ci = linear_sum_assignment(cost.numpy(), maximize=True)
            eye = torch.eye(n)
            old = torch.vdot(cost.flatten(), eye[perm[p]].flatten()).item()
            new = torch.vdot(cost.flatten(), eye[torch.as_tensor(ci)].flatten()).item()
            progress = progress or new > old + 1e-12
            perm[p] = torch.as_tensor(ci)
        if not progress:
            break
    total = sum(float((params_a[k].double() * permuted(k, None).double()).sum())
                for k in table)
    return perm, total, sweeps


def baseline_exact(perm, planted_groups, spec, ir) -> int:
    """Map baseline names to IR groups through the node each table entry's axis 0 names."""
    table = resnet20_table()
    hits = 0
    for g, planted in planted_groups.items():
        # any weight key whose axis 0 is group g tells which baseline perm corresponds to it
        key = next(k for k, ax in spec.axes.items() if ax and ax[0] == g and k in table)
        inv = perm[table[key][0]].numpy()
        hits += int(np.array_equal(inverse(inv)[planted], np.arange(len(planted))))
    return hits


# ----------------------------------------------------------------------------- helpers
def plant(ir, state, noise, seed=0):
    return plant_permutation(ir, state, seed=seed, noise=noise)



def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    ir = asymspec.compile_ir(SPECS / "resnet20_8x.yaml")
    sa = asymspec.nn.emit(ir, 1).state_dict()
    sb = asymspec.nn.emit(ir, 2).state_dict()
    nparams = sum(v.numel() for v in sa.values())
    print(f"ResNet20 x8: {nparams:,} state entries, 1 torch thread")
    print("\n1. two independent random networks")
    r_topo, t_topo = timed(lambda: weight_matching(ir, sa, sb))
    r_id, t_id = timed(lambda: weight_matching(ir, sa, sb, init="identity"))
    print(f"  ours (topological start): {t_topo:7.2f} s  {len(r_topo.objective):3d} sweeps  "
          f"objective {r_topo.objective[-1]:.2f}")
    print(f"  ours (identity start):    {t_id:7.2f} s  {len(r_id.objective):3d} sweeps  "
          f"objective {r_id.objective[-1]:.2f}")
    table = resnet20_table()
    if not args.skip_baseline:
        (_, obj_b, sweeps_b), t_b = timed(lambda: baseline_weight_matching(table, sa, sb))
        print(f"  baseline (hand-written):  {t_b:7.2f} s  {sweeps_b:3d} sweeps  "
              f"objective {obj_b:.2f}")
        print(f"  ratio baseline / ours: {t_b / t_topo:.2f}x (topological), "
              f"{t_b / t_id:.2f}x (identity start)")

    print(f"\n2. planted permutation + {args.noise:g} relative noise")
    planted, pb = plant(ir, sa, args.noise)
    spec = perm_spec(ir, list(sa))
    r, t = timed(lambda: weight_matching(ir, sa, pb))
    print(f"  ours (topological):   {exact_groups(r.perms, planted)}/{len(planted)} groups "
          f"exact, {t:.2f} s")
    r, t2 = timed(lambda: weight_matching(ir, sa, pb, init="identity"))
    print(f"  ours (identity):      {exact_groups(r.perms, planted)}/{len(planted)} groups "
          f"exact, {t2:.2f} s")
    if not args.skip_baseline:
        (perm_b, _, _), tb = timed(lambda: baseline_weight_matching(table, sa, pb))
        hits = baseline_exact(perm_b, planted, spec, ir)
        print(f"  baseline:             {hits}/{len(planted)} groups exact, {tb:.2f} s "
              f"(ratio baseline / ours: {tb / t:.2f}x topological, {tb / t2:.2f}x identity)")

    print("\n3. other specs, planted permutation (ours)")
    for name in ("mlp_mnist", "resnet20", "gnn", "transformer_small"):
        ir2 = asymspec.compile_ir(SPECS / f"{name}.yaml")
        s2 = asymspec.nn.emit(ir2, 1).state_dict()
        pl, b2 = plant(ir2, s2, args.noise)
        line = f"  {name:18s}"
        for init in ("topological", "identity"):
            res, tt = timed(weight_matching, ir2, s2, b2, init=init)
            line += f"  {init}: {exact_groups(res.perms, pl)}/{len(pl)} in {tt:.2f} s"
        print(line)

    print("\n   ResNet20 (1x), recovered groups (of 12) as the noise grows")
    ir1 = asymspec.compile_ir(SPECS / "resnet20.yaml")
    s1 = asymspec.nn.emit(ir1, 1).state_dict()
    spec1 = perm_spec(ir1, list(s1))
    for noise in (0.3, 1.0, 3.0):
        pl, b1 = plant(ir1, s1, noise)
        line = f"  noise {noise:4.1f}:"
        for init in ("topological", "identity"):
            res = weight_matching(ir1, s1, b1, init=init)
            line += f"  ours {init} {exact_groups(res.perms, pl):2d}"
        if not args.skip_baseline:
            perm_b, _, _ = baseline_weight_matching(table, s1, b1)
            line += f"  baseline {baseline_exact(perm_b, pl, spec1, ir1):2d}"
        print(line)

    print("\n4. NodeSort and activation matching")
    (_, canon), tc = timed(lambda: canonicalize(ir, sa))
    _, moved = plant(ir, sa, 0.0, seed=5)
    (_, canon2), _ = timed(lambda: canonicalize(ir, moved))
    same = all(torch.equal(canon[k], canon2[k]) for k in canon)
    print(f"  canonicalize ResNet20 x8: {tc:.2f} s; invariant under a random permutation: {same}")
    ma = asymspec.nn.emit(ir1, 1).eval()
    pl, b1 = plant(ir1, ma.state_dict(), args.noise)
    mb = asymspec.nn.emit(ir1, 2).eval()
    mb.load_state_dict(b1)
    batches = [asymspec.example_inputs(ir1, batch=64, seed=s) for s in range(4)]
    res, ta = timed(lambda: activation_matching(ir1, ma, mb, batches))
    print(f"  activation matching ResNet20 (4 x 64 random images): "
          f"{exact_groups(res.perms, pl)}/{len(pl)} groups exact, {ta:.2f} s")


if __name__ == "__main__":
    main()
