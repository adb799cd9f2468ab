"""report.md and figures of a zoo run: per-variant accuracy / loss / distance statistics
beside Lim et al. 2024 App. A (CIFAR-10, 10,000 ResNet8s per variant)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asymspec.run.report import figure, fmt, markdown_table, paper, pm, save_figure, write_report
from asymspec.run.spec import Experiment

# App. A (P:747-758): train / test accuracy and distance per parameter (20,000 pairs).
PAPER = {"standard": {"train_acc": 0.748, "test_acc": 0.738, "distance": 0.0034},
         "w_asym": {"train_acc": 0.640, "test_acc": 0.640, "distance": 0.0051}}


def _pct(stat: dict | None) -> str:
    return pm(stat, 1, percent=True)


def render(run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
    files = []
    variants = results["variants"]
    labels = results.get("labels", {})
    rows = []
    for v, s in variants.items():
        ref = PAPER.get(v, {})
        d = s["distance"]
        rows.append([labels.get(v, v), s["members"], s["diverged"], s["trainable_params"],
                     _pct(s["train_acc"]), paper(f"{100 * ref['train_acc']:.1f}%")
                     if ref else paper(None),
                     _pct(s["test_acc"]), paper(f"{100 * ref['test_acc']:.1f}%")
                     if ref else paper(None),
                     pm(s["test_loss"]), fmt(d["l2_per_param"], 5),
                     paper(ref.get("distance"), 4), d["pairs"]])
    table = markdown_table(
        ["variant", "members", "diverged", "trainable", "train acc", "(paper)", "test acc",
         "(paper)", "test loss", "distance / param", "(paper)", "pairs"], rows)
    walls = results.get("train_wall_s", {})
    wall_rows = [[labels.get(v, v), fmt(walls.get(v), 1)] for v in variants]
    ds = results.get("dataset", {})
    title = experiment.name + (f" ({experiment.profile})" if experiment.profile else "")
    text = f"""# Model zoo: {title}

Zoo identity `{results['identity'][:16]}…`; data set `{ds.get('name')}` (train subset
{ds.get('train_subset')}, test subset {ds.get('test_subset')}); device
`{results.get('device')}`.  Load it with
`asymspec.zoo.load("{run_dir}")`.

{table}

Accuracy and loss: mean ± std over the non-diverged members, evaluated after training on the
non-augmented train data and on the test data.  Distance / param: mean over pairs of
‖θᵢ − θⱼ‖₂ / D over the D trainable entries (the paper does not define it; this is our reading,
`results.json` also has the RMS and mean absolute difference).  Paper columns: Lim et al. 2024
App. A, 10,000 ResNet8s per variant on CIFAR-10 with the full Table 13 epochs — compare only
with the `paper` profile.

Training time per variant (sum of shard wall times; upper bounds on a shared machine):

{markdown_table(['variant', 'seconds'], wall_rows)}

![test accuracy](zoo_accuracy.png)
"""
    fig, axes = figure(9, 3.4, ncols=2)
    ax_hist, ax_lr = axes
    for v, members in results.get("members", {}).items():
        ok = [m for m in members if m["diverged"] is None and m["metrics"]["test_acc"] is not None]
        accs = [100 * m["metrics"]["test_acc"] for m in ok]
        if not accs:
            continue
        ax_hist.hist(accs, bins=20, alpha=0.5, label=labels.get(v, v))
        ax_lr.scatter([m["hparams"]["lr"] for m in ok], accs, s=10, label=labels.get(v, v))
    ax_hist.set_xlabel("test accuracy (%)")
    ax_hist.set_ylabel("members")
    ax_hist.legend()
    ax_lr.set_xscale("log")
    ax_lr.set_xlabel("peak lr")
    ax_lr.set_ylabel("test accuracy (%)")
    files.append(save_figure(fig, run_dir / "zoo_accuracy.png"))
    files.append(write_report(run_dir, text))
    return files
