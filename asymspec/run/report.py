"""Report helpers shared by runners: numbers beside the paper's, markdown tables, figures.

* :func:`pm` / :func:`fmt` format ``{"mean", "std"}`` statistics and plain numbers; :func:`paper`
  formats a paper value (``[mean, std]``, a number, a string such as ``"26.3%"``, or ``None``).
* :func:`markdown_table` builds a GitHub-markdown table from headers and rows; :func:`
  comparison_table` the common "ours | paper" layout: for each metric one column with our value
  and one with the paper's.
* :func:`figure` opens a matplotlib figure on the non-interactive Agg backend and
  :func:`save_figure` writes it atomically as PNG and closes it; :func:`plot_curves` draws
  mean curves with a min-max (or chosen) band per group, the shape of most of the papers'
  interpolation figures.
* :func:`write_report` writes ``report.md`` atomically; :func:`json_safe` turns NaN / inf into
  ``null`` for ``results.json``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from asymspec.run.store import atomic_write_bytes, atomic_write_text

DASH = "–"


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN / ±inf float replaced by ``None`` (results.json is strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals (``–`` for ``None`` / NaN); other values as text."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return DASH
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def pm(stat: Mapping[str, Any] | None, digits: int = 3, percent: bool = False) -> str:
    """``mean ± std`` of a :func:`~asymspec.run.barrier.mean_std` dict (``–`` when empty)."""
    if not stat or stat.get("mean") is None or (isinstance(stat["mean"], float)
                                                and math.isnan(stat["mean"])):
        return DASH
    scale, unit = (100.0, "%") if percent else (1.0, "")
    mean = stat["mean"] * scale
    std = stat.get("std")
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}{unit}"
    return f"{mean:.{digits}f}{unit} ± {std * scale:.{digits}f}"


def paper(value: Any, digits: int = 3) -> str:
    """A paper number: ``[mean, std]`` -> ``mean ± std``; a number; a string verbatim."""
    if value is None:
        return DASH
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"
    return fmt(value, digits)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: Sequence[str] | None = None) -> str:
    """A markdown table; cells are formatted with :func:`fmt`; ``align`` per column is
    ``"l"``, ``"r"`` or ``"c"``."""
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    sep = [marks.get(a, "---") for a in (align or ["l"] + ["r"] * (len(headers) - 1))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    for row in rows:
        cells = [fmt(c) for c in row]
        if len(cells) != len(headers):
            raise ValueError(f"row has {len(cells)} cells, table has {len(headers)} columns")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_table(row_labels: Sequence[str], metrics: Sequence[str],
                     ours: Mapping[str, Mapping[str, str]],
                     theirs: Mapping[str, Mapping[str, str]] | None = None,
                     first: str = "variant", paper_name: str = "paper") -> str:
    """Rows = variants; for each metric a column ``metric`` (ours, preformatted text) and,
    when ``theirs`` is given, ``metric (paper)`` beside it."""
    headers = [first]
    for m in metrics:
        headers.append(m)
        if theirs is not None:
            headers.append(f"{m} ({paper_name})")
    rows = []
    for label in row_labels:
        row = [label]
        for m in metrics:
            row.append(ours.get(label, {}).get(m, DASH))
            if theirs is not None:
                row.append((theirs.get(label) or {}).get(m, DASH))
        rows.append(row)
    return markdown_table(headers, rows)


def figure(width: float = 5.0, height: float = 3.6, ncols: int = 1, nrows: int = 1,
           **kwargs: Any):
    """``(fig, axes)`` on the Agg backend (safe without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height), dpi=150, **kwargs)


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def plot_curves(ax: Any, x: Sequence[float], curves: Mapping[str, Sequence[Sequence[float]]],
                band: str = "minmax", individual: bool = False, alpha: float = 0.2) -> None:
    """Per group: the mean curve and a band (``minmax``, ``std`` or ``none``); with
    ``individual`` every curve is drawn thinly instead of the band."""
    import numpy as np

    xs = np.asarray(x)
    for label, group in curves.items():
        arr = np.asarray(group, dtype=float)
        if arr.size == 0:
            continue
        if individual:
            lines = ax.plot(xs, arr.T, lw=0.8, alpha=0.6)
            color = lines[0].get_color()
            for ln in lines[1:]:
                ln.set_color(color)
            lines[0].set_label(label)
            continue
        line, = ax.plot(xs, np.nanmean(arr, 0), label=label, lw=1.8)
        if len(arr) > 1 and band != "none":
            if band == "std":
                m, s = np.nanmean(arr, 0), np.nanstd(arr, 0, ddof=1)
                lo, hi = m - s, m + s
            else:
                lo, hi = np.nanmin(arr, 0), np.nanmax(arr, 0)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=alpha, lw=0)


def write_report(run_dir: Path, text: str, name: str = "report.md") -> Path:
    path = Path(run_dir) / name
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    return path
