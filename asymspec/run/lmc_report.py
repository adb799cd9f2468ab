"""Figure 3-style plot and Table 1-style ``report.md`` for LMC results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asymspec.run.spec import Experiment
from asymspec.run.store import atomic_write_bytes, atomic_write_text

FIGURE = "lmc_test_loss.png"


def _pm(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def plot(results: dict[str, Any], path: Path) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.asarray(results["t"])
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=150)
    for entry in results["variants"].values():
        curves = np.asarray(entry["curves"]["test_loss"])
        mean = curves.mean(0)
        line, = ax.plot(t, mean, label=entry["label"], lw=1.8)
        if len(curves) > 1:
            ax.fill_between(t, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2,
                            lw=0)
    ax.set_xlabel("interpolation coefficient t")
    ax.set_ylabel("test loss")
    profile = f" ({results['profile']} profile)" if results.get("profile") else ""
    ax.set_title(f"{results['name']}{profile}: {results['dataset']}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def markdown(results: dict[str, Any], experiment: Experiment) -> str:
    v = results["variants"]
    lines = [f"# {results['name']}: linear mode connectivity",
             "",
             f"Dataset `{results['dataset']}`, profile `{results.get('profile') or 'none'}`, "
             f"{results['pairs']} pair(s) per variant, {len(results['t'])} interpolation points. "
             "Barriers are test-loss barriers, mean ± std (ddof 1) over pairs: midpoint "
             "L(½θ₁+½θ₂) − ½(L(θ₁)+L(θ₂)) and the maximum over the path.",
             "",
             "| variant | test barrier (midpoint) | max over path | train barrier (midpoint) "
             "| endpoint test acc | paper (Table 1) |",
             "|---|---|---|---|---|---|"]
    for entry in v.values():
        b = entry["barrier"]
        paper = entry.get("paper")
        ptxt = f"{paper[0]:.3f} ± {paper[1]:.2f}" if paper else "–"
        lines.append(f"| {entry['label']} | {_pm(b['test_barrier_mid'])} | "
                     f"{_pm(b['test_barrier_max'])} | {_pm(b['train_barrier_mid'])} | "
                     f"{_pm(entry['endpoint_test_acc'])} | {ptxt} |")
    lines += ["", f"![test loss along the path]({FIGURE})", ""]
    mids = {k: e["barrier"]["test_barrier_mid"]["mean"] for k, e in v.items()}
    if "standard" in mids and "w_asym" in mids:
        ok = mids["w_asym"] < mids["standard"]
        lines.append(f"W-Asym midpoint barrier {mids['w_asym']:.3f} vs standard "
                     f"{mids['standard']:.3f}: {'lower' if ok else 'NOT lower'} "
                     "(the paper's ordering)." )
        lines.append("")
    wall = results.get("wall_s", {})
    lines.append(f"Wall time: training {wall.get('train', 0):.1f} s, alignment + evaluation "
                 f"{wall.get('eval', 0):.1f} s (sum over units).")
    lines += ["", "Per-pair midpoint test barriers:", ""]
    for entry in v.values():
        vals = ", ".join(f"{x:.3f}" for x in entry["barrier"]["test_barrier_mid"]["values"])
        lines.append(f"- {entry['label']}: {vals}")
    src = experiment.spec.file or "<spec>"
    lines += ["", f"Spec: `{src}`; resolved spec in `spec.yaml`; raw numbers in `results.json`.",
              ""]
    return "\n".join(lines)


def render(run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
    fig = plot(results, run_dir / FIGURE)
    report = run_dir / "report.md"
    atomic_write_text(report, markdown(results, experiment))
    return [fig, report]
