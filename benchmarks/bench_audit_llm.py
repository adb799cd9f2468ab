"""Full-size language-model configs audited at neuron level on the meta device.

    python benchmarks/bench_audit_llm.py                      # GPT-2 small, BERT-base, Llama-3-8B
    python benchmarks/bench_audit_llm.py --only llama3_8b --layers 4

Each config runs in a fresh process (so peak RSS is its own): the model is built with its
parameters on the meta device (no parameter memory), traced, lowered and verified; the numeric
check runs on a width-reduced twin with float64 weights (:mod:`asymspec.audit.meta`).  Printed per
config: the time of each phase (construction on meta, trace, lowering, verifier, twin: build +
audit + numeric check), peak RSS, units, log10 |Aut|, verdict and unsupported ops.  As a
baseline measured in the same run, GPT-2 small is also audited the ordinary way (float32
weights allocated) and its peak RSS and time are printed beside the meta run.

Wall times are upper bounds on a shared machine; targets for the 8B config: <= 60 s, <= 8 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "gpt2_small": ("transformers:GPT2LMHeadModel", {}, "1,16:long"),
    "bert_base": ("transformers:BertModel", {}, "1,16:long"),
    "llama3_8b": ("transformers:LlamaForCausalLM",
                  json.loads((ROOT / "specs/audit/llama3_8b.json").read_text()), "1,16:long"),
}


def _child(name: str, layers: int | None, baseline: bool) -> dict:
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    from asymspec.audit import audit
    from asymspec.audit.cli import _inputs, build_from_config
    from asymspec.audit.meta import audit_meta, config_defaults, parameter_count
    from asymspec.targets import load_attr

    target, cfg, shape = CONFIGS[name]
    cfg = dict(cfg)
    if layers is not None:
        for k in ("num_hidden_layers", "n_layer"):
            if k in cfg or (k == "n_layer" and "GPT2" in target):
                cfg[k] = layers
        if "Bert" in target:
            cfg["num_hidden_layers"] = layers
    inputs = _inputs((shape,))
    import transformers  # noqa: F401  (import time is not part of any phase)

    imports = time.perf_counter() - t_start
    if baseline:
        t0 = time.perf_counter()
        model = build_from_config(target, cfg)
        t1 = time.perf_counter()
        rep = audit(model, inputs, numeric=False)
        return {"name": name + " (weights allocated)", "parameters": parameter_count(model),
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                "verdict": rep.verdict, "log10_order": rep.log10_order,
                "units": sum(r.units for r in rep.layers), "unsupported": len(rep.unsupported),
                "timings": {"build_s": t1 - t0, "lower_s": rep.timings["lower_s"],
                            "verify_s": rep.timings["check_s"],
                            "total_s": time.perf_counter() - t0}}
    rep = audit_meta(lambda c: build_from_config(target, c), cfg, inputs, name=name,
                     defaults=config_defaults(load_attr(target)))
    tw = rep.meta["twin"]
    verifier = {k: rep.timings[k] for k in ("expand_s", "refine", "reduce", "bliss_build",
                                            "bliss", "verify", "orbits") if k in rep.timings}
    return {"name": name, "imports_s": imports, "parameters": rep.meta["parameters"],
            "verifier": verifier,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "timings": rep.meta["timings"], "verdict": rep.verdict,
            "log10_order": rep.log10_order, "units": sum(r.units for r in rep.layers),
            "unsupported": len(rep.unsupported),
            "twin": {k: tw[k] for k in ("structure", "verdict", "log10_order",
                                        "numeric_check")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(CONFIGS), action="append")
    ap.add_argument("--layers", type=int, default=None, help="override the layer count")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.layers, args.baseline)))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = [(n, False) for n in (args.only or list(CONFIGS))]
    if not args.only or "gpt2_small" in args.only:
        runs.insert(1, ("gpt2_small", True))
    print("phase times in s (upper bounds: shared machine); peak RSS of the whole process")
    for name, baseline in runs:
        cmd = [sys.executable, __file__, "--child", name] + \
            (["--layers", str(args.layers)] if args.layers else []) + \
            (["--baseline"] if baseline else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"{name}: failed (exit {proc.returncode}): {proc.stderr.strip()[-600:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        t = r["timings"]
        phases = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in t.items())
        print(f"\n{r['name']}: {r.get('parameters', 0):,} parameters; process wall {wall:.1f} s "
              f"(incl. imports {r.get('imports_s', 0):.1f})")
        print(f"  phases: {phases}")
        print(f"  peak RSS {r['peak_rss_gb']:.2f} GiB; units {r['units']:,}; "
              f"log10|Aut| {r['log10_order']:.2f}; verdict {r['verdict']}"
              + (f" ({r['unsupported']} unsupported ops: lower bound)" if r["unsupported"]
                 else ""))
        if r.get("verifier"):
            print("  verifier: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}"
                                             for k, v in r["verifier"].items()))
        if "twin" in r:
            tw = r["twin"]
            num = tw["numeric_check"] or {}
            print(f"  twin ({tw['structure']}): {tw['verdict']}, log10|Aut| "
                  f"{tw['log10_order']:.2f}, {num.get('generators', 0)} generators verified "
                  f"numerically in {num.get('forward_passes', 0)} passes")


if __name__ == "__main__":
    main()
