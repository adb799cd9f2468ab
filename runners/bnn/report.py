"""Table 2-style ``report.md`` and Figure 4-style training curves for BNN results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asymspec.run.report import (
    DASH,
    figure,
    markdown_table,
    paper,
    plot_curves,
    pm,
    save_figure,
    write_report,
)

FIGURE = "bnn_train_loss.png"
COLUMNS = (("train_loss", "train loss", 3, False), ("test_loss", "test loss", 3, False),
           ("ece", "ECE", 3, False), ("acc_final", "acc (final)", 2, True),
           ("acc_mid", "acc (mid)", 2, True))


def plot(results: dict[str, Any], path: Path) -> Path:
    """One panel per ``panel`` group: mean train NLL per epoch with a min-max band over
    seeds, log scale as in Figure 4."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    variants = results["variants"]
    panels: dict[str, dict[str, Any]] = {}
    for entry in variants.values():
        panels.setdefault(entry.get("panel") or results["name"], {})[entry["label"]] = entry
    fig, axes = figure(4.2 * len(panels), 3.4, ncols=len(panels), squeeze=False)
    for ax, (title, entries) in zip(axes[0], panels.items()):
        longest = max(len(c) for e in entries.values() for c in e["curves"]["train_nll"])
        plot_curves(ax, list(range(1, longest + 1)),
                    {label: e["curves"]["train_nll"] for label, e in entries.items()})
        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("train loss (NLL)")
        ax.set_title(f"{title} — {results['dataset']}", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def _ours(stat: dict[str, Any] | None, digits: int, percent: bool) -> str:
    """``mean ± std`` over seeds; the mean alone for a single seed (no spread measured)."""
    if not stat:
        return DASH
    if stat.get("n") == 1:
        stat = {**stat, "std": None}
    return pm(stat, digits, percent=percent)


def _theirs(value: Any, digits: int) -> str:
    return DASH if value is None else paper(value, digits)


def markdown(results: dict[str, Any]) -> str:
    v = results["variants"]
    first = next(iter(v.values()))
    mid = first.get("mid_epoch")
    ev, b = results["eval"], results["bnn"]
    lines = [f"# {results['name']}: variational Bayesian networks (ELRG)", "",
             f"Dataset `{results['dataset']}`, profile `{results.get('profile') or 'none'}`, "
             f"{results['seeds']} seed(s) per variant, {first['epochs']} epochs; mean ± std "
             f"(ddof 1) over seeds.  Posterior: diagonal (log-variance {b['q_init_logvar']}, "
             f"{'learnt' if b['learn_diag'] else 'fixed'}) + rank {b['rank']}; prior "
             f"precision {b['prior_precision']} (fan rule `{b['prior_fan']}`).  Test metrics "
             f"are of the Bayesian model average over {ev['samples']} samples; ECE with "
             f"{ev['ece_bins']} bins.  Train loss = mean one-sample NLL over the last epoch's "
             f"batches.  acc (final) is after epoch {first['epochs']}, acc (mid) after epoch "
             f"{mid if mid is not None else DASH} (the paper: 50 and 25).  Columns marked "
             "(paper): Table 2 (CIFAR; Table 7 for the smaller standard net).", ""]
    if not results["dataset"].startswith("cifar"):
        lines += [f"**Not comparable to the paper columns:** this run used "
                  f"`{results['dataset']}`, the paper CIFAR-10/100.", ""]
    headers = ["variant"]
    for _, name, _, _ in COLUMNS:
        headers += [name, f"{name} (paper)"]
    headers += ["parameters", "Table 5"]
    rows = []
    for entry in v.values():
        row = [entry["label"]]
        theirs = entry.get("paper") or {}
        for key, _, digits, percent in COLUMNS:
            stat = entry["stats"].get(key)
            if percent and stat:
                stat = {k: (x * 100 if k in ("mean", "std") else x) for k, x in stat.items()}
            row += [_ours(stat, digits, False), _theirs(theirs.get(key), digits)]
        row += [f"{entry['num_parameters']:,}",
                f"{theirs['params']:,}" if theirs.get("params") else DASH]
        rows.append(row)
    lines.append(markdown_table(headers, rows))
    lines += ["Accuracies in %.  `parameters`: mean network (free entries) + rank-r factors "
              "of every random weight and bias, the way Table 5 counts (see "
              "specs/bnn_models/ for the rows where Table 5 is inconsistent).", "",
              f"![training curves]({FIGURE})", ""]
    return "\n".join(lines)


def render(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    fig = plot(results, run_dir / FIGURE)
    return [fig, write_report(run_dir, markdown(results))]
