"""Sweep figures: an annotated heatmap for 2-D grids (Fig 6 style) and line plots for 1-D grids.

Cells without a value (invalid, failed, threshold never reached) are drawn hatched grey and
annotated (``invalid`` / ``—``) rather than silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def heatmap(path: Path, rows: Sequence[Any], cols: Sequence[Any],
            values: Sequence[Sequence[float | None]], row_label: str, col_label: str,
            title: str, notes: Sequence[Sequence[str]] | None = None,
            col_ticks: Sequence[str] | None = None, fmt: str = "{:.1f}") -> Path:
    """Write an annotated heatmap; ``values[i][j]`` belongs to ``rows[i]`` × ``cols[j]``
    (None = missing; ``notes[i][j]`` replaces the annotation of a missing cell)."""
    import numpy as np

    plt = _plt()
    data = np.array([[np.nan if v is None else float(v) for v in row] for row in values],
                    dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2.2, 0.8 * len(rows) + 1.6))
    finite = data[np.isfinite(data)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    masked = np.ma.masked_invalid(data)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    im = ax.imshow(masked, cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1,
                   aspect="auto", origin="lower")
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = data[i, j]
            if math.isfinite(v):
                text = fmt.format(v)
                light = (v - vmin) / ((vmax - vmin) or 1) < 0.5
                color = "white" if light else "black"
            else:
                text = notes[i][j] if notes and notes[i][j] else "—"
                color = "black"
                ax.add_patch(_plt().Rectangle((j - .5, i - .5), 1, 1, fill=False, hatch="//",
                                              edgecolor="#999999", linewidth=0))
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(len(cols)), col_ticks or [f"{c:g}" if isinstance(c, float) else str(c)
                                                  for c in cols])
    ax.set_yticks(range(len(rows)), [f"{r:g}" if isinstance(r, float) else str(r)
                                     for r in rows])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    from asymspec.run.report import save_figure  # atomic write

    return save_figure(fig, Path(path))


def lines(path: Path, xs: Sequence[Any], series: dict[str, Sequence[float | None]],
          x_label: str, y_label: str, title: str) -> Path:
    """One line per series over the 1-D grid ``xs`` (missing values leave gaps)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    pos = list(xs) if numeric else list(range(len(xs)))
    for name, ys in series.items():
        ax.plot(pos, [math.nan if y is None else float(y) for y in ys], marker="o", label=name)
    if not numeric:
        ax.set_xticks(pos, [str(x) for x in xs])
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=.3)
    return _save(fig, path)
