"""`retinakit data inspect`: what is in a recording, as numbers and STA figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .alignment import lag_of_position
from .recording import Recording
from .spikes import spike_triggered_average, split_half_reliability


def sta_peak(sta: np.ndarray, history: int) -> dict[str, Any]:
    """Locate the strongest STA element of one cell: lag (frames before the bin), row, col, polarity."""
    flat_idx = int(np.argmax(np.abs(sta)))
    pos = np.unravel_index(flat_idx, sta.shape)
    value = float(sta[pos])
    out: dict[str, Any] = {"lag_frames": int(lag_of_position(int(pos[0]), history)), "polarity": "ON" if value > 0 else "OFF", "value": value}
    if sta.ndim == 3:
        out["row"], out["col"] = int(pos[1]), int(pos[2])
    return out


def summarize(rec: Recording, sta_history: int = 40, with_sta: bool | None = None) -> tuple[dict[str, Any], np.ndarray | None]:
    """A JSON-ready summary of a recording, and the STAs ``(n_cells, H, ...)`` when computed.

    STAs are computed for white-noise recordings (``with_sta=None``) or when asked.
    """
    dt = float(rec.frame_dt)  # type: ignore[arg-type]
    test = rec.test
    rel = split_half_reliability(test.repeats) if test is not None and test.repeats is not None else None
    do_sta = rec.stimulus_kind in ("whitenoise", "fullfield") if with_sta is None else with_sta
    history = int(min(sta_history, max(1, rec.train.n_bins - 1)))
    stas = spike_triggered_average(rec.train.stimulus, rec.train.counts, history) if do_sta else None
    cells = []
    for k, cid in enumerate(rec.cell_ids):
        cell: dict[str, Any] = {
            "id": int(cid),
            "mean_rate_hz_train": float(rec.train.counts[:, k].mean() / dt),
            "spikes_train": int(round(float(rec.train.counts[:, k].sum()))),
        }
        if test is not None:
            cell["mean_rate_hz_test"] = float(test.counts[:, k].mean() / dt)
        if rel is not None:
            cell["split_half_r"] = _f(rel["r_half"][k])
            cell["reliability"] = _f(rel["reliability"][k])
            cell["ceiling"] = _f(rel["ceiling"][k])
        if stas is not None:
            cell["sta_peak"] = sta_peak(stas[k], history)
        cells.append(cell)
    summary = {
        "source": rec.provenance.get("source"),
        "sha256": rec.provenance.get("sha256"),
        "stimulus_kind": rec.stimulus_kind,
        "frame_shape": list(rec.frame_shape),
        "stimulus_dtype": str(rec.train.stimulus.dtype),
        "frame_rate_hz": rec.frame_rate,
        "frame_dt_s": dt,
        "train_bins": rec.train.n_bins,
        "train_duration_s": rec.train.n_bins * dt,
        "test_bins": 0 if test is None else test.n_bins,
        "test_duration_s": 0.0 if test is None else test.n_bins * dt,
        "n_repeats": 0 if test is None else test.n_repeats,
        "n_cells": rec.n_cells,
        "rate_keys": sorted(rec.train.rates),
        "sta_history_frames": history if stas is not None else None,
        "cells": cells,
    }
    return summary, stas


def _f(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def format_summary(s: dict[str, Any]) -> str:
    """The summary as a short human-readable text."""
    shape = "full-field" if not s["frame_shape"] else "x".join(str(v) for v in s["frame_shape"])
    lines = [
        f"recording   {s['source']}",
        f"stimulus    {s['stimulus_kind']}, {shape} ({s['stimulus_dtype']}), {s['frame_rate_hz']:.4g} Hz frames",
        f"train       {s['train_duration_s']:.1f} s ({s['train_bins']} bins)",
        f"test        {s['test_duration_s']:.1f} s ({s['test_bins']} bins) x {s['n_repeats']} repeats",
        f"cells       {s['n_cells']}",
        "",
    ]
    head = f"{'cell':>6} {'rate Hz':>8} {'split-half r':>13} {'ceiling':>8}"
    if s["sta_history_frames"]:
        head += f"  {'STA peak (lag, row, col, polarity)':<36}"
    lines.append(head)
    for c in s["cells"]:
        r = c.get("split_half_r")
        ceil = c.get("ceiling")
        row = f"{c['id']:>6} {c['mean_rate_hz_train']:>8.2f} {('%.3f' % r) if r is not None else '-':>13} {('%.3f' % ceil) if ceil is not None else '-':>8}"
        if "sta_peak" in c:
            p = c["sta_peak"]
            loc = f"{p['lag_frames']} fr" + (f", ({p['row']}, {p['col']})" if "row" in p else "")
            row += f"  {loc + ', ' + p['polarity']:<36}"
        lines.append(row)
    return "\n".join(lines)


def write_sta_figures(stas: np.ndarray, rec: Recording, out_dir: Path) -> list[Path]:
    """One PNG per cell: the STA frame at the peak lag and the temporal profile at the peak pixel."""
    from .atomic import ensure_dir, save_figure
    from .figures import new_figure

    ensure_dir(out_dir)
    history = stas.shape[1]
    dt_ms = 1000.0 * float(rec.frame_dt)  # type: ignore[arg-type]
    lags_ms = np.array([lag_of_position(j, history) for j in range(history)]) * dt_ms
    paths = []
    for k, cid in enumerate(rec.cell_ids):
        sta = stas[k]
        peak = sta_peak(sta, history)
        j = history - peak["lag_frames"]
        if sta.ndim == 3:
            fig, (a1, a2) = new_figure(1, 2, size=(8, 3.4))
            lim = float(np.abs(sta[j]).max()) or 1.0
            im = a1.imshow(sta[j], cmap="RdBu_r", vmin=-lim, vmax=lim)
            a1.plot(peak["col"], peak["row"], "k+", ms=10)
            a1.set_title(f"cell {cid}: STA at {peak['lag_frames'] * dt_ms:.0f} ms before spike")
            fig.colorbar(im, ax=a1, shrink=0.8)
            a2.plot(-lags_ms, sta[:, peak["row"], peak["col"]], "k.-")
            a2.set_title(f"at pixel ({peak['row']}, {peak['col']}), {peak['polarity']}")
        else:
            fig, a2 = new_figure(1, 1, size=(4.5, 3.2))
            a2.plot(-lags_ms, sta, "k.-")
            a2.set_title(f"cell {cid}: full-field STA, {peak['polarity']}")
        a2.axhline(0, color="0.7", lw=0.8)
        a2.set_xlabel("time before spike (ms)")
        a2.set_ylabel("STA (stimulus units)")
        path = out_dir / f"sta_cell{int(cid):02d}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths
