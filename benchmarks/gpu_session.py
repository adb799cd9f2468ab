"""One short GPU session: every speed number the CPU machine cannot measure, in <= 8 minutes.

Written for a session that is lent one GPU (an H200) for a few minutes: it runs, in order of
importance and each in its own process with a time cap (a step that overruns is killed and the
next one starts; what it measured so far is kept, every benchmark rewrites its JSON per row):

1. ``bench_layers``  masked / syre / FiGLU layers against dense ``nn.Linear`` / ``nn.Conv2d`` on
   CUDA fp32 and bf16 autocast, every shipped shape, batch 64 and 256 (issue 12).
2. ``bench_models``  full training steps (MLP, ResNet20, ResNet20 x8, GPT-2-small-sized) on CUDA
   fp32 and bf16, without compile (issue 12's table).
3. ``bench_zoo``     batched vs per-member loop at batch 128 and 512 and the projected
   paper-scale zoo GPU-hours (issue 9).
4. ``bench_models --compile-only``  the ``torch.compile`` speed-up and compile time for
   ResNet20 and GPT-2-small-sized (8 x 512 tokens), fp32 and bf16 (issue 12).

Everything goes to ``$OUT`` (or ``--out``): ``<step>.txt`` (the benchmark's own table),
``<step>.json`` (its rows), ``summary.json`` (per step: command, exit code, seconds, whether it
was cut by its cap) and ``summary.md`` (all tables).  Nothing asserts; a failing step is
recorded and the session goes on.

    python benchmarks/gpu_session.py                 # on the GPU machine, writes to $OUT
    python benchmarks/gpu_session.py --smoke --out /tmp/gs   # CPU, tiny sizes, ~2-3 minutes

``--smoke`` runs the same four steps on the CPU with tiny sizes and the ``aot_eager`` backend
for the compile step, so the script is known to work end to end before a GPU is spent on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, cap in seconds, arguments) on the GPU; the caps add up to 7.8 minutes, and --total
# (8 minutes) cuts the last step short if the others overran
GPU_STEPS = [
    ("bench_layers", 100, ["bench_layers.py", "--threads", "--budget", "0.6",
                           "--figures", "fwd+bwd", "+AdamW"]),
    ("bench_models", 80, ["bench_models.py", "--threads", "--heavy", "--budget", "2",
                          "--no-compile"]),
    ("bench_zoo", 90, ["bench_zoo.py", "--device", "cuda", "--batch", "128", "512"]),
    ("bench_compile", 200, ["bench_models.py", "--threads", "--heavy", "--budget", "2",
                            "--compile-only", "ResNet20 128", "8x512 tok",
                            "--compile-rows-only"]),
]

SMOKE_STEPS = [
    ("bench_layers", 120, ["bench_layers.py", "--threads", "1", "--only", "MLP 784",
                           "ResNet20 64ch", "--batches", "8", "--budget", "0.05"]),
    ("bench_models", 120, ["bench_models.py", "--threads", "1", "--only", "MLP",
                           "--budget", "0.2", "--no-compile"]),
    ("bench_zoo", 150, ["bench_zoo.py", "--device", "cpu", "--batch", "16", "--members", "2",
                        "--steps", "2"]),
    ("bench_compile", 150, ["bench_models.py", "--threads", "1", "--only", "MLP",
                            "--budget", "0.2", "--compile-cpu", "--compile-backend",
                            "aot_eager", "--compile-only", "MLP", "--compile-rows-only"]),
]


def run_step(name: str, cap: float, argv: list[str], out: Path, env: dict) -> dict:
    """One benchmark in its own process, stdout+stderr to ``<name>.txt``, killed at ``cap``."""
    cmd = [sys.executable, str(HERE / argv[0]), *argv[1:], "--json", str(out / f"{name}.json")]
    t0 = time.perf_counter()
    with open(out / f"{name}.txt", "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=HERE.parent)
        try:
            rc = proc.wait(timeout=cap)
            cut = False
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            cut = True
            log.write(f"\n[gpu_session: killed at its {cap:.0f} s cap]\n")
    return {"step": name, "command": cmd[1:], "exit_code": rc, "seconds": round(
        time.perf_counter() - t0, 1), "cut_by_cap": cut, "cap_s": cap}


def environment() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory
                                       / 2 ** 30, 1)
    try:
        info["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="default: $OUT")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (checks the script)")
    ap.add_argument("--total", type=float, default=480.0,
                    help="seconds for the whole session (steps are cut to fit)")
    ap.add_argument("--only", nargs="*", default=None, help="step names to run")
    args = ap.parse_args()
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out is None:
        ap.error("give --out or set $OUT")
    out.mkdir(parents=True, exist_ok=True)
    steps = SMOKE_STEPS if args.smoke else GPU_STEPS
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH")
                              else []))}
    if args.smoke:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ASYMSPEC_DEVICE="cpu")
    summary = {"smoke": args.smoke, "environment": environment(), "steps": []}
    if not args.smoke and not summary["environment"]["cuda"]:
        print("gpu_session: no CUDA device; use --smoke on a CPU", file=sys.stderr)
    start = time.perf_counter()
    for name, cap, argv in steps:
        if args.only and name not in args.only:
            continue
        left = args.total - (time.perf_counter() - start)
        if left < 20:
            summary["steps"].append({"step": name, "skipped": "session time spent"})
            continue
        print(f"[{time.perf_counter() - start:5.0f} s] {name} (cap {min(cap, left):.0f} s)",
              flush=True)
        summary["steps"].append(run_step(name, min(cap, left), argv, out, env))
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    summary["total_s"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = [f"# GPU session{' (smoke, CPU)' if args.smoke else ''}", "",
             "```", json.dumps(summary["environment"]), "```", ""]
    for step in summary["steps"]:
        lines += [f"## {step['step']}", ""]
        if "skipped" in step:
            lines += [f"skipped: {step['skipped']}", ""]
            continue
        lines += [f"exit {step['exit_code']}, {step['seconds']} s"
                  + (" (cut by its cap)" if step["cut_by_cap"] else ""), "", "```",
                  (out / f"{step['step']}.txt").read_text().rstrip(), "```", ""]
    (out / "summary.md").write_text("\n".join(lines))
    print(f"done in {summary['total_s']} s; see {out / 'summary.md'}")


if __name__ == "__main__":
    main()
