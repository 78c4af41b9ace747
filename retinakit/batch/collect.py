"""Collect a sweep: one table of every finished point's metrics and config, and a figure.

Only points whose run folder holds ``DONE`` are collected; unfinished ones (running, failed,
never run) are listed by id in the JSON and never mixed into the table or the figure.

Columns: ``point``, the swept parameters, the test-set summary of the run (``mean_r``,
``mean_ceiling``, ``mean_r_norm`` = r/ceiling, ``mean_feve``, ``mean_cc_norm`` and medians, all over
the cells flagged reliable; ``n_cells``, ``n_reliable``), the fit's own numbers (``fit_epochs``,
``fit_best_val_corr``, ...), ``wall_seconds``, every resolved fit option as ``config.<key>``, and
``run_dir``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..atomic import save_figure, write_json, write_text
from ..errors import DataError
from .state import is_done
from .sweep import Point, Sweep, format_value

FIGURE = "r_norm.png"
TABLE_CSV = "results.csv"
TABLE_JSON = "results.json"


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def point_row(sweep: Sweep, point: Point) -> dict[str, Any]:
    """The table row of one finished point (reads its metrics.json and config.json)."""
    run = point.run_dir
    metrics = _read(run / "metrics.json")
    config = _read(run / "config.json")
    row: dict[str, Any] = {"point": point.id, "label": point.label(sweep.swept_keys)}
    for key in sweep.swept_keys:
        row[key] = point.params.get(key)
    row["model"] = metrics.get("model", config.get("config", {}).get("model"))
    for key, v in (metrics.get("summary") or {}).items():
        if _scalar(v):
            row[key] = v
    for key, v in (metrics.get("fit") or {}).items():
        if _scalar(v):
            row[key if key.startswith("fit_") else f"fit_{key}"] = v
    if "wall_seconds" in metrics:
        row["wall_seconds"] = metrics["wall_seconds"]
    for key, v in (config.get("config") or {}).items():
        row[f"config.{key}"] = v
    row["data"] = (config.get("data") or {}).get("source", None if point.data is None else str(point.data))
    row["run_dir"] = str(run)
    return row


def _read(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read '{path}' of a finished run ({exc})", str(path.parent), fix="the run folder was changed after it finished; rerun that point after deleting its DONE") from None
    return out if isinstance(out, dict) else {}


def per_cell_r_norm(point: Point, reliable_only: bool = True) -> list[float]:
    """r/ceiling of each (reliable) cell of a finished point, from its metrics.json."""
    metrics = _read(point.run_dir / "metrics.json")
    vals = []
    for row in metrics.get("cells") or []:
        v = row.get("r_norm")
        if v is None or (reliable_only and not row.get("reliable", True)):
            continue
        vals.append(float(v))
    return vals


def collect_sweep(sweep: Sweep, out_dir: Path | None = None, figure: bool = True) -> dict[str, Any]:
    """Write ``results.csv``, ``results.json`` and ``r_norm.png`` for the finished points.

    Returns the JSON document (``rows``, ``not_finished``, the paths written).

    Raises
    ------
    DataError
        when no point has finished yet.
    """
    finished = [p for p in sweep.points if is_done(p.run_dir)]
    missing = [p.id for p in sweep.points if p not in finished]
    if not finished:
        raise DataError(f"no point of sweep '{sweep.name}' has finished yet (0 of {len(sweep.points)} have DONE)", str(sweep.out),
                        fix=f"see `retinakit batch status {sweep.path}`")
    out_dir = Path(out_dir) if out_dir is not None else sweep.out / "collect"
    rows = [point_row(sweep, p) for p in finished]
    doc: dict[str, Any] = {"sweep": str(sweep.path), "name": sweep.name, "swept": sweep.swept_keys, "n_points": len(sweep.points),
                           "n_finished": len(finished), "not_finished": missing, "rows": rows}
    write_text(out_dir / TABLE_CSV, rows_csv(rows))
    doc["csv"] = str(out_dir / TABLE_CSV)
    if figure:
        plot_r_norm(sweep, finished, out_dir / FIGURE)
        doc["figure"] = str(out_dir / FIGURE)
    doc["json"] = str(out_dir / TABLE_JSON)
    write_json(out_dir / TABLE_JSON, doc)
    return doc


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text; the columns are the union of the rows' keys in first-seen order."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _csv_value(row.get(k)) for k in keys})
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return format_value(v)
    return v


def plot_r_norm(sweep: Sweep, points: list[Point], path: Path) -> Path:
    """Per configuration: r/ceiling of every reliable cell (dots) and their mean (bar)."""
    import numpy as np

    from ..figures import new_figure

    n = len(points)
    fig, ax = new_figure(size=(max(5.0, 0.6 * n + 2.5), 4.2))
    rng = np.random.default_rng(0)
    for i, p in enumerate(points):
        vals = np.asarray(per_cell_r_norm(p), dtype=float)
        if vals.size:
            ax.bar(i, float(vals.mean()), width=0.6, color="#9ecae1", edgecolor="#3182bd", zorder=1)
            ax.scatter(i + rng.uniform(-0.18, 0.18, vals.size), vals, s=12, color="#08306b", zorder=2)
        else:
            ax.text(i, 0.02, "no reliable\ncells", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.axhline(1.0, color="0.4", lw=1, ls="--", zorder=0)
    ax.text(-0.55, 1.0, "ceiling (r of a perfect model)", va="bottom", ha="left", fontsize=8, color="0.3")
    ax.set_xticks(range(n))
    labels = [p.label(sweep.swept_keys) if sweep.swept_keys else p.id for p in points]
    ax.set_xticklabels([lab.replace(" ", "\n") for lab in labels], fontsize=7, rotation=0 if n <= 8 else 60, ha="center" if n <= 8 else "right")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("r / ceiling (reliable cells)")
    ax.set_title(f"sweep '{sweep.name}': {n} finished configurations (bar = mean)")
    save_figure(fig, path)
    return path


def format_table(doc: dict[str, Any], max_rows: int = 50) -> str:
    """The collected rows as a short text table (point, swept values, main scores)."""
    swept = doc["swept"]
    cols = ["point"] + swept + ["n_reliable", "mean_r", "mean_ceiling", "mean_r_norm", "mean_feve"]
    rows = doc["rows"][:max_rows]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return "-" if v is None else format_value(v)

    table = [cols] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
    lines = ["  ".join(t[i].ljust(widths[i]) for i in range(len(cols))) for t in table]
    if len(doc["rows"]) > max_rows:
        lines.append(f"... {len(doc['rows']) - max_rows} more rows in {doc['csv']}")
    return "\n".join(lines)
