"""Per-cell tables of a run's scores: the CSV written as ``cells.csv`` and the one-screen table."""

from __future__ import annotations

import csv
import io
from typing import Any


def cells_csv(rows: list[dict[str, Any]]) -> str:
    """The per-cell table as CSV text (empty cells for undefined values)."""
    buf = io.StringIO()
    keys = list(rows[0].keys()) if rows else ["cell"]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    return buf.getvalue()


def format_cell_table(metrics: dict[str, Any], max_rows: int = 40) -> str:
    """A one-screen per-cell table of a run's scores plus the summary line."""
    rows = metrics["cells"]
    lines = [f"{'cell':>6} {'r':>7} {'ceiling':>8} {'r/ceil':>7} {'FEVE':>7} {'CCnorm':>7} {'train Hz':>8} {'test Hz':>8}  reliable"]

    def f(v: Any, w: int = 7) -> str:
        return f"{v:>{w}.3f}" if isinstance(v, (int, float)) and v is not None else f"{'-':>{w}}"

    def hz(v: Any) -> str:  # mean rates as in `data inspect` (train / test repeats)
        return f"{v:>8.2f}" if isinstance(v, (int, float)) else f"{'-':>8}"

    for row in rows[:max_rows]:
        lines.append(f"{row['cell']:>6} {f(row['r'])} {f(row['ceiling'], 8)} {f(row['r_norm'])} {f(row['feve'])} {f(row['cc_norm'])} "
                     f"{hz(row.get('rate_hz_train'))} {hz(row.get('rate_hz_test'))}  {'yes' if row['reliable'] else 'NO'}")
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more cells in cells.csv")
    s = metrics["summary"]
    lines.append(f"mean over {s['n_reliable']}/{s['n_cells']} reliable cells: r {f(s['mean_r'], 0)}, ceiling {f(s['mean_ceiling'], 0)}, "
                 f"r/ceiling {f(s['mean_r_norm'], 0)}, FEVE {f(s['mean_feve'], 0)}")
    return "\n".join(lines)
