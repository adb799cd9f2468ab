"""MLI aggregation (per-variant statistics, t-tests against the baseline), Figure 5 and the
Table-4-style ``report.md`` beside the paper's numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asymspec.run.barrier import mean_std
from asymspec.run.report import (
    DASH,
    figure,
    json_safe,
    markdown_table,
    paper,
    pm,
    save_figure,
    write_report,
)
from asymspec.run.spec import Experiment
from runners.mli.metrics import ttest

FIGURE = "mli_fig5.png"
STATS = ("delta", "lucas_bump", "local_convexity", "global_convexity",
         "global_convexity_reference")
TESTED = ("delta", "monotonic", "lucas_bump", "local_convexity", "global_convexity",
          "global_convexity_reference")


def _values(members: list[dict], key: str) -> list[float]:
    return [float(m["metrics"][key]) for m in members]


def aggregate(settings: dict[str, Any], per_variant: dict[str, list[dict]],
              diverged: dict[str, list[str]], alphas: list[float],
              meta: dict[str, Any]) -> dict[str, Any]:
    """results.json: per variant the statistics (mean ± std, ddof 1), % monotonic, counts,
    t-tests against the baseline, the curves and Figure 5's selection."""
    welch = settings["metrics"]["ttest"] == "welch"
    chord = settings["metrics"]["chord"]
    k = settings["figure"]["trajectories"]
    used: dict[str, list[dict]] = {v: [m for m in ms if m["metrics"]["finite"]]
                                   for v, ms in per_variant.items()}
    base = settings["baseline"]
    out: dict[str, Any] = {"format": "asymspec-results/1", "kind": "mli", **meta,
                           "alphas": alphas, "baseline": base, "chord": chord,
                           "ttest": settings["metrics"]["ttest"],
                           "eval_mode": settings["eval"]["mode"], "variants": {}}
    for v, members in used.items():
        row = settings["rows"].get(v) or {}
        entry: dict[str, Any] = {
            "label": row.get("label") or v, "paper": row.get("paper"),
            "selected": len(per_variant[v]) + len(diverged.get(v, [])),
            "diverged": len(diverged.get(v, [])), "diverged_ids": diverged.get(v, []),
            "nonfinite": len(per_variant[v]) - len(members),
            "nonfinite_ids": [m["id"] for m in per_variant[v] if not m["metrics"]["finite"]],
            "n": len(members)}
        for key in STATS:
            entry[key] = mean_std(_values(members, key))
        mono = [1.0 if m["metrics"]["monotonic"] else 0.0 for m in members]
        entry["monotonic"] = mean_std(mono)
        entry["table_global_convexity"] = entry["global_convexity" if chord == "true"
                                                else "global_convexity_reference"]
        if v != base and base in used:
            tests = {}
            for key in TESTED:
                a = mono if key == "monotonic" else _values(members, key)
                b = ([1.0 if m["metrics"]["monotonic"] else 0.0 for m in used[base]]
                     if key == "monotonic" else _values(used[base], key))
                tests[key] = ttest(a, b, welch)
            entry["ttest_vs_baseline"] = tests
        best = sorted(members, key=lambda m: m["curves"]["train_loss"][-1])[:k]
        entry["fig5_ids"] = [m["id"] for m in best]
        entry["members"] = [{"id": m["id"], "index": m["index"], "hparams": m["hparams"],
                             "metrics": m["metrics"], "curves": m["curves"]}
                            for m in members]
        out["variants"][v] = entry
    return json_safe(out)


def plot(results: dict[str, Any], path: Path) -> Path:
    variants = results["variants"]
    n = max(1, len(variants))
    fig, axes = figure(3.4 * n, 3.0, ncols=n, squeeze=False)
    alphas = results["alphas"]
    for ax, (_v, e) in zip(axes[0], variants.items()):
        chosen = set(e["fig5_ids"])
        for m in e["members"]:
            if m["id"] in chosen:
                ax.plot(alphas, m["curves"]["train_loss"], lw=0.9, alpha=0.8)
        ax.set_title(f"{e['label']} ({len(chosen)} lowest final train loss)", fontsize=8)
        ax.set_xlabel("α")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("train loss (with label smoothing)")
    return save_figure(fig, path)


def _paper_row(p: dict | None) -> dict[str, str]:
    p = p or {}
    mono = p.get("monotonic")
    return {"delta": paper(p.get("delta")), "monotonic": DASH if mono is None else f"{mono:g}%",
            "local": paper(p.get("local_convexity")), "global": paper(p.get("global_convexity"))}


def _mark(entry: dict, key: str, threshold: float) -> str:
    t = (entry.get("ttest_vs_baseline") or {}).get(key)
    if not t or t["p"] is None:
        return ""
    return "*" if t["p"] < threshold else ""


def markdown(results: dict[str, Any], experiment: Experiment) -> str:
    s = experiment.data
    thr = s["metrics"]["significance"]
    chord_note = ("true chord r[0]→r[−1] (the paper's definition)" if results["chord"] == "true"
                  else "the reference code's line r[0]→r[1] (compatibility option; equals 1 "
                  "for every non-increasing path)")
    lines = [f"# {results['name']}: monotonic linear interpolation (Table 4, Fig 5)", "",
             f"Zoo `{results['zoo']['run']}` (identity {results['zoo']['identity'][:12]}), "
             f"dataset `{results['zoo']['dataset'].get('name')}`, profile "
             f"`{results.get('profile') or 'none'}`; {len(results['alphas'])} points "
             f"α ∈ [0, 1]; train loss with each member's label smoothing, evaluated "
             + ("on the fixed, non-augmented training set" if results["eval_mode"] == "fixed"
                else "like the reference (augmented, reshuffled, drop_last, per α)") + ". "
             f"Mean ± std (ddof 1) over members; global convexity against the {chord_note}. "
             f"`*`: two-sided {results['ttest']} t-test against "
             f"`{results['baseline']}` with p < {thr:g} (the paper marks p < .001).", ""]
    rows = []
    for e in results["variants"].values():
        p = _paper_row(e.get("paper"))
        rows.append([e["label"],
                     pm(e["delta"]) + _mark(e, "delta", thr), p["delta"],
                     pm(e["monotonic"], 1, percent=True).split(" ±")[0]
                     + _mark(e, "monotonic", thr), p["monotonic"],
                     pm(e["local_convexity"]) + _mark(e, "local_convexity", thr), p["local"],
                     pm(e["table_global_convexity"])
                     + _mark(e, "global_convexity" if results["chord"] == "true"
                             else "global_convexity_reference", thr), p["global"],
                     f"{e['n']} ({e['diverged']} diverged"
                     + (f", {e['nonfinite']} non-finite" if e["nonfinite"] else "") + ")"])
    lines.append(markdown_table(
        ["variant", "Δ", "Δ (paper)", "% monotonic", "(paper)", "local convexity", "(paper)",
         "global convexity", "(paper)", "networks used"], rows))
    lines += ["Further metrics: Lucas et al.'s bump height (max rise above the start of a bump, "
              "≥ 0) and global convexity with the other chord.", ""]
    extra = [[e["label"], pm(e["lucas_bump"]), pm(e["global_convexity"]),
              pm(e["global_convexity_reference"])] for e in results["variants"].values()]
    lines.append(markdown_table(["variant", "Lucas bump", "global convexity (true chord)",
                                 "global convexity (reference chord r[0]→r[1])"], extra))
    tests = [[e["label"]] + [_p(e, k) for k in TESTED] for e in results["variants"].values()
             if e.get("ttest_vs_baseline")]
    if tests:
        lines += [f"p-values against `{results['baseline']}`:", ""]
        lines.append(markdown_table(["variant", "Δ", "% monotonic", "Lucas bump",
                                     "local convexity", "global (true)", "global (reference)"],
                                    tests))
    lines += [_ordering(results), "", f"![Figure 5]({FIGURE})", "",
              "Diverged members (excluded): " + "; ".join(
                  f"{e['label']}: {e['diverged']}" for e in results["variants"].values()) + ".",
              "", f"Spec: `{experiment.spec.file or '<spec>'}`; per-member curves and metrics "
              "in `results.json`.", ""]
    return "\n".join(lines)


def _p(entry: dict, key: str) -> str:
    t = entry["ttest_vs_baseline"].get(key)
    if not t or t["p"] is None:
        return DASH
    return f"{t['p']:.2g}"


def _ordering(results: dict[str, Any]) -> str:
    v = results["variants"]
    mono = {k: e["monotonic"]["mean"] for k, e in v.items() if e["n"]}
    if any(m is None for m in mono.values()):
        return ""
    if not {"standard", "sigma_asym", "w_asym"} <= set(mono):
        return ""
    ok = mono["w_asym"] >= mono["sigma_asym"] >= mono["standard"]
    return (f"% monotonic: W-Asym {100 * mono['w_asym']:.1f}%, σ-Asym "
            f"{100 * mono['sigma_asym']:.1f}%, standard {100 * mono['standard']:.1f}% — the "
            f"paper's ordering W-Asym ≥ σ-Asym ≥ standard {'holds' if ok else 'does NOT hold'}"
            f"{'' if mono['w_asym'] > mono['standard'] else ' (W-Asym not above standard)'}.")


def render(run_dir: Path, results: dict[str, Any], experiment: Experiment) -> list[Path]:
    fig = plot(results, run_dir / FIGURE)
    return [fig, write_report(run_dir, markdown(results, experiment))]
