"""Figures and ``report.md`` of an identifiability run (from ``results.json`` alone).

* ``lmc_curves.png`` — mean test loss along the path per kind: unaligned, activation-matched
  (Pearson, maximised) and weight-matched (the paper's Figure: mean train accuracy; both are in
  results.json);
* ``am_objective.png`` — optimal vs identity vs random matched correlation over epochs;
* ``swap_cost_heatmaps.png`` — ``T_ij`` of the first neurons of every analysed layer;
* ``coherence.png`` — coherence ν(U) and mean anisotropy over epochs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from asymspec.run.report import figure, fmt, markdown_table, pm, save_figure, write_report

METHOD_LABELS = {"activation_matching": "AM (Pearson max)", "weight_matching": "WM"}


def _ncols(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return cols, math.ceil(n / cols)


def _panels(n: int) -> tuple[Any, list[Any]]:
    """A figure with one panel per variant, at most four per row."""
    cols, rows = _ncols(n)
    fig, axes = figure(3.4 * cols, 2.8 * rows, ncols=cols, nrows=rows, squeeze=False)
    return fig, list(axes.flat)


def _save_panels(fig: Any, axes: list[Any], used: int, path: Path) -> Path:
    """Hide the unused panels and write the figure."""
    for ax in axes[used:]:
        ax.set_visible(False)
    return save_figure(fig, path)


def plot_lmc(results: dict[str, Any], path: Path) -> Path | None:
    vs = [(v, e) for v, e in results["variants"].items() if "lmc_unaligned" in e
          or "lmc_aligned" in e]
    if not vs:
        return None
    fig, axes = _panels(len(vs))
    for ax, (_v, e) in zip(axes, vs):
        curves = []
        if "lmc_unaligned" in e:
            curves.append(("unaligned", e["lmc_unaligned"]))
        for m, s in e.get("lmc_aligned", {}).items():
            curves.append((METHOD_LABELS.get(m, m), s))
        for label, s in curves:
            split = "test" if "test" in s["splits"] else next(iter(s["splits"]))
            losses = s["splits"][split]["loss"]
            mean = [sum(c[i] for c in losses) / len(losses) for i in range(len(s["t"]))]
            ax.plot(s["t"], mean, marker=".", label=label)
        ax.set_title(e["label"], fontsize=9)
        ax.set_xlabel("λ")
        ax.set_ylabel("test loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save_panels(fig, axes, len(vs), path)


def plot_am(results: dict[str, Any], path: Path) -> Path | None:
    vs = [(v, e) for v, e in results["variants"].items() if "am_objective" in e]
    if not vs:
        return None
    fig, axes = _panels(len(vs))
    for ax, (_v, e) in zip(axes, vs):
        for i, (g, s) in enumerate(e["am_objective"].items()):
            epochs = sorted(s["epochs"], key=int)
            x = [int(ep) for ep in epochs]
            colour = f"C{i % 10}"
            ax.plot(x, [s["epochs"][ep]["optimal"]["mean"] for ep in epochs], "-o", ms=3,
                    color=colour, label=f"{g} optimal")
            ax.plot(x, [s["epochs"][ep]["identity"]["mean"] for ep in epochs], "--", ms=3,
                    color=colour, label=f"{g} identity")
            ax.plot(x, [s["epochs"][ep]["random_mean"]["mean"] for ep in epochs], ":",
                    color=colour)
        ax.set_title(f"{e['label']} (dotted: random)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean matched correlation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return _save_panels(fig, axes, len(vs), path)


def plot_heatmaps(results: dict[str, Any], path: Path) -> Path | None:
    vs = [(v, e) for v, e in results["variants"].items() if "realization" in e]
    if not vs:
        return None
    nl = max(len(e["realization"]["layers"]) for _, e in vs)
    fig, axes = figure(2.6 * nl, 2.4 * len(vs), ncols=nl, nrows=len(vs), squeeze=False)
    for r, (_v, e) in enumerate(vs):
        row = list(axes[r])
        for c, (layer, s) in enumerate(e["realization"]["layers"].items()):
            im = row[c].imshow(s["heatmap"], cmap="viridis")
            row[c].set_title(f"{e['label']}: {layer}", fontsize=7)
            row[c].set_xticks([])
            row[c].set_yticks([])
            fig.colorbar(im, ax=row[c], fraction=0.046)
        for ax in row[len(e["realization"]["layers"]):]:
            ax.set_visible(False)
    return save_figure(fig, path)


def plot_coherence(results: dict[str, Any], path: Path) -> Path | None:
    vs = [(v, e) for v, e in results["variants"].items() if "coherence" in e]
    if not vs:
        return None
    fig, (ax1, ax2) = figure(9.0, 3.4, ncols=2)
    for i, (_v, e) in enumerate(vs):
        for j, (layer, per_epoch) in enumerate(e["coherence"].items()):
            epochs = sorted(per_epoch, key=int)
            x = [int(ep) for ep in epochs]
            style = ["-", "--", ":", "-."][j % 4]
            label = f"{e['label']} {layer}"
            ax1.plot(x, [per_epoch[ep]["nu"]["mean"] for ep in epochs], style,
                     color=f"C{i}", label=label)
            ax2.plot(x, [per_epoch[ep]["anisotropy_mean"]["mean"] for ep in epochs], style,
                     color=f"C{i}", label=label)
    ax1.set_ylabel("coherence ν(U)")
    ax2.set_ylabel("mean anisotropy ‖S_i − pI‖₂")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=5, ncol=2)
    return save_figure(fig, path)


def _lmc_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for e in results["variants"].values():
        paths = []
        if "lmc_unaligned" in e:
            paths.append(("unaligned", e["lmc_unaligned"]))
        for m, s in e.get("lmc_aligned", {}).items():
            paths.append((METHOD_LABELS.get(m, m), s))
        for label, s in paths:
            sp = s["splits"]
            row = [e["label"], label]
            for split in ("train", "val", "test"):
                row.append(pm(sp[split]["loss_barrier_mid"], 4) if split in sp else "–")
            test = sp.get("test") or next(iter(sp.values()))
            row += [pm(test["loss_barrier_max"], 4), pm(test["acc_barrier_rel"], 2),
                    pm(s["distance"], 2), pm(s["normalized_distance"], 4)]
            rows.append(row)
    return rows


def markdown(results: dict[str, Any], figures: list[Path]) -> str:
    vs = results["variants"]
    pairs = ", ".join(f"({a}, {b})" for a, b in results["pairs"])
    lines = [f"# {results['name']}: neuron identifiability", "",
             f"Dataset `{results['dataset']}`, profile `{results.get('profile') or 'none'}`, "
             f"{results['models']} members per kind, pairs {pairs}. Analyses: "
             f"{', '.join(results['analyses'])}.", "",
             "Members:", "",
             markdown_table(["kind", "test acc", "val acc", "checkpoints"],
                            [[e["label"], pm(e["test_acc"], 4), pm(e.get("val_acc"), 4),
                              ", ".join(map(str, e["checkpoints"]))] for e in vs.values()]),
             "", "Layers analysed (the input of every trainable linear / conv layer, from the "
             "IR):", ""]
    for e in vs.values():
        lines.append(f"- {e['label']}: {', '.join(e['layers'])}")
    lines.append("")
    if any("lmc_unaligned" in e or "lmc_aligned" in e for e in vs.values()):
        lines += ["## Linear mode connectivity, unaligned vs aligned", "",
                  "Loss barrier L(½) − ½(L(0)+L(1)) per split, the max-over-path loss barrier and "
                  "the reference's relative accuracy barrier 100·(min acc − max endpoint acc) / "
                  "max endpoint acc (test split), mean ± std over pairs; distance between the "
                  "endpoints as plain networks of effective weights (what is interpolated) "
                  "and distance / √(#parameters), as the reference computes them.",
                  "Activation matching maximises Pearson correlation at the recording points "
                  f"(similarity `{results['similarity']}`); the reference's latest script "
                  "maximises 1 − |ρ| instead, i.e. picks the least-correlated pairing — a bug "
                  "we do not reproduce unless `lmc.similarity: uncorrelatedness` is set.", "",
                  markdown_table(["kind", "path", "train barrier", "val barrier",
                                  "test barrier", "test max barrier", "test acc barrier %",
                                  "distance", "norm. distance"], _lmc_rows(results)), ""]
    if any("am_objective" in e for e in vs.values()):
        rows = []
        for e in vs.values():
            for g, s in e.get("am_objective", {}).items():
                last = max(s["epochs"], key=int)
                first = min(s["epochs"], key=int)
                st = s["epochs"][last]
                rows.append([e["label"], g, last, pm(st["optimal"], 3), pm(st["identity"], 3),
                             f"{fmt(st['random_mean']['mean'], 3)} ± "
                             f"{fmt(st['random_std']['mean'], 3)}",
                             fmt(st["optimal"]["mean"] - st["identity"]["mean"], 3),
                             fmt(s["epochs"][first]["optimal"]["mean"]
                                 - s["epochs"][first]["identity"]["mean"], 3)])
        lines += ["## Activation-matching objective", "",
                  "Mean Pearson correlation of matched units at the recording points: optimal "
                  "assignment, identity, and seeded random permutations (mean ± std, ddof 1); "
                  "gap = optimal − identity at the last and the first checkpoint.", "",
                  markdown_table(["kind", "group", "epoch", "optimal", "identity", "random",
                                  "gap", "gap at epoch 0"], rows), ""]
    if any("realization" in e for e in vs.values()):
        rows = []
        for e in vs.values():
            r = e.get("realization")
            if not r:
                continue
            for layer, s in r["layers"].items():
                rows.append([e["label"], layer, s["d"], s["k"], fmt(s["nu"], 3),
                             fmt(s["trainable_fraction"], 3), fmt(s["m_diag_mean"], 3),
                             fmt(s["T"]["mean"], 3), fmt(s["T"]["median"], 3),
                             fmt(s["T"]["min"], 3)])
        lines += ["## Realization and swap costs", "",
                  "Mahalanobis estimate on the 90 % PCA basis of each layer's inputs (model in "
                  "eval mode), member 0 at the last epoch: m_ii mean, and the off-diagonal swap "
                  "costs T_ij = m_ij + m_ji − m_ii − m_jj (0 for standard layers: swaps are free).",
                  "", markdown_table(["kind", "layer", "d", "k", "ν", "p", "mean m_ii",
                                      "mean T", "median T", "min T"], rows), ""]
        ridge = [(e, layer, s["ridge"]) for e in vs.values() if e.get("realization")
                 for layer, s in e["realization"]["layers"].items() if "ridge" in s]
        if ridge:
            rrows = [[e["label"], layer, r["norm"], beta, fmt(b["T"]["mean"], 4),
                      fmt(b["r_diag_mean"], 4)]
                     for e, layer, r in ridge for beta, b in r["betas"].items()]
            lines += ["Ridge estimate (exact closed form):", "",
                      markdown_table(["kind", "layer", "norm", "β", "mean T", "mean r_ii"],
                                     rrows), ""]
    if any("coherence" in e for e in vs.values()):
        rows = []
        for e in vs.values():
            for layer, per_epoch in e.get("coherence", {}).items():
                last = max(per_epoch, key=int)
                s = per_epoch[last]
                b = s["bound"].get("0.05") or next(iter(s["bound"].values()))
                rows.append([e["label"], layer, last, s["d"], fmt(s["k"]["mean"], 1),
                             pm(s["nu"], 3), fmt(s["p"], 3), pm(s["anisotropy_mean"], 3),
                             fmt(b["mean"], 3) + ("" if s["bound_valid"] else " (p < ½)")])
        lines += ["## Subspace coherence and anisotropy", "",
                  "ν(U) = max row leverage of the 90 % PCA basis (minimum k/d); anisotropy "
                  "‖S_i − p·I‖₂ averaged over neurons; matrix-Bernstein bound at δ = 0.05 "
                  "(all δ in results.json; b = p bounds |d − p| only for p ≥ ½, flagged "
                  "otherwise). "
                  "Last checkpoint shown; the figure has all epochs. The reference also records "
                  "the network output; we analyse the inputs of dense layers only.",
                  "", markdown_table(["kind", "layer", "epoch", "d", "k", "ν", "p",
                                      "anisotropy", "bound δ=.05"], rows), ""]
    lines += ["The paper reports these analyses as figures; our notes hold no numbers from "
              "them to put beside ours.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def render(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    figs = [f for f in (plot_lmc(results, run_dir / "lmc_curves.png"),
                        plot_am(results, run_dir / "am_objective.png"),
                        plot_heatmaps(results, run_dir / "swap_cost_heatmaps.png"),
                        plot_coherence(results, run_dir / "coherence.png")) if f is not None]
    return figs + [write_report(run_dir, markdown(results, figs))]
