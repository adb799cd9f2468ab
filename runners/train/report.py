"""Train-accuracy curves and a summary table for ``kind: train`` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asymspec.run.report import figure, markdown_table, plot_curves, pm, save_figure, write_report

FIGURE = "train_acc.png"


def render(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    files = []
    variants = results["variants"]
    if any(e["epochs"] for e in variants.values()):
        fig, ax = figure(5.0, 3.6)
        for e in variants.values():
            if e["epochs"]:
                plot_curves(ax, e["epochs"], {e["label"]: [c[:len(e["epochs"])]
                                                           for c in e["train_acc_curves"]]})
        for t in results["thresholds"]:
            ax.axhline(t, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("epoch")
        ax.set_ylabel("train accuracy")
        ax.set_title(f"{results['name']}: {results['dataset']}", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        files.append(save_figure(fig, run_dir / FIGURE))
    headers = ["variant", "final train acc", "max train acc", "test acc", "max train − test"]
    headers += [f"epochs to {t:g}" for t in results["thresholds"]]
    rows = []
    for e in variants.values():
        row = [e["label"], pm(e["final_train_acc"]), pm(e["max_train_acc"]), pm(e["test_acc"]),
               pm(e["train_test_gap"])]
        for t in results["thresholds"]:
            s = e["epochs_to"][str(t)]
            row.append(f"{pm(s, 2)} ({s['reached']}/{s['of']} reached)")
        rows.append(row)
    text = [f"# {results['name']}: training curves", "",
            f"Dataset `{results['dataset']}`, profile `{results.get('profile') or 'none'}`, "
            f"{results['seeds']} seed(s) per variant; mean ± std (ddof 1) over seeds; "
            "train accuracy on a fixed non-augmented subset; epochs-to-threshold interpolated "
            "linearly between evaluations.", "", markdown_table(headers, rows), ""]
    if files:
        text += [f"![train accuracy]({FIGURE})", ""]
    files.append(write_report(run_dir, "\n".join(text)))
    return files
