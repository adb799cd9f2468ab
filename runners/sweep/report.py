"""Sweep report: a table of every cell (values, status, fixed counts, metrics beside the
paper's), a heatmap per metric for 2-D product grids (Fig 6 style) and line plots for 1-D ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asymspec.run.report import fmt, markdown_table, write_report
from asymspec.sweep.grid import axis_label
from asymspec.sweep.plots import heatmap, lines


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()[:60] or "metric"


def _paper_by_cell(paper: Any, n: int) -> list[Any]:
    if not paper:
        return [None] * n
    flat = [x for row in paper for x in row] if isinstance(paper[0], list) else list(paper)
    return (flat + [None] * n)[:n]


def _fixed_text(cell: dict[str, Any]) -> str:
    fixed = cell.get("fixed") or {}
    if not fixed:
        return "–"
    if len(fixed) == 1:
        return f"{next(iter(fixed.values())):,}"
    return ", ".join(f"{v}: {n:,}" for v, n in fixed.items())


def render(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    cells = results["cells"]
    axes = results["axes"]
    names = results["metrics"]
    files: list[Path] = []
    product = [c for c in cells if set(c["values"]) == set(axes)] if axes else []
    if len(axes) == 2 and product:
        (ra, rows), (ca, cols) = list(axes.items())
        by = {(json_key(c["values"][ra]), json_key(c["values"][ca])): c for c in product}
        col_ticks = []
        for col in cols:
            fixed = next((c.get("fixed") for r in rows
                          if (c := by.get((json_key(r), json_key(col)))) and c.get("fixed")),
                         None)
            tick = f"{col:g}" if isinstance(col, float) else str(col)
            if ca == "nfix_scale" and fixed:
                tick += f"\n({sum(fixed.values()):,} fixed)"
            col_ticks.append(tick)
        for name in names:
            values, notes = [], []
            for r in rows:
                vrow, nrow = [], []
                for col in cols:
                    c = by.get((json_key(r), json_key(col)))
                    v = (c.get("metrics") or {}).get(name) if c else None
                    vrow.append(v)
                    nrow.append("" if c is None or c["status"] == "ok" else c["status"])
                values.append(vrow)
                notes.append([n or ("not reached" if "epochs to" in name else "") for n in nrow])
            files.append(heatmap(run_dir / f"heatmap_{_slug(name)}.png", rows, cols, values,
                                 axis_label(ra), axis_label(ca), name, notes, col_ticks))
    elif len(axes) == 1 and product:
        (ax, xs), = axes.items()
        by = {json_key(c["values"][ax]): c for c in product}
        series = {name: [(by[json_key(x)].get("metrics") or {}).get(name)
                         if json_key(x) in by else None for x in xs] for name in names}
        if series:
            files.append(lines(run_dir / "sweep.png", xs, series, axis_label(ax), "value",
                               results["name"]))
    headers = [axis_label(a) for a in _all_axes(cells)] + ["status", "W-Asym fixed"]
    paper = results.get("paper") or {}
    paper_cells = {n: _paper_by_cell(paper.get(n), len(cells)) for n in names}
    for n in names:
        headers.append(n)
        if n in paper:
            headers.append(f"{n} (paper)")
    rows_md = []
    for i, c in enumerate(cells):
        row = [fmt(c["values"].get(a)) for a in _all_axes(cells)]
        row += [c["status"] if c["status"] == "ok" else f"{c['status']}: {c.get('message', '')}"
                .replace("|", "/").replace("\n", " ")[:160], _fixed_text(c)]
        for n in names:
            row.append(fmt((c.get("metrics") or {}).get(n), 3))
            if n in paper:
                row.append(fmt(paper_cells[n][i], 3))
        rows_md.append(row)
    text = [f"# {results['name']}: sweep over {results['base']}", "",
            f"Profile `{results.get('profile') or 'none'}`, {len(cells)} cell(s) "
            f"({sum(c['status'] == 'ok' for c in cells)} ok). Each cell is its own run (see "
            "`results.json` → `cells[].run_dir`); `W-Asym fixed` is the number of frozen weight "
            "entries counted on the cell's compiled IR; `–` means no value (invalid cell, "
            "failed run, or threshold never reached).", "",
            markdown_table(headers, rows_md), ""]
    if results.get("paper_note"):
        text += [results["paper_note"], ""]
    text += [f"![{f.stem}]({f.name})" for f in files] + [""]
    files.append(write_report(run_dir, "\n".join(text)))
    return files


def json_key(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _all_axes(cells: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for c in cells:
        for a in c["values"]:
            if a not in out:
                out.append(a)
    return out
