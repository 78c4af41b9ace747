"""`retinakit data inspect`: what is in a recording, as numbers and STA figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .alignment import lag_of_position
from .recording import Recording
from .spikes import spike_triggered_average


STA_FALSE_ALARM = 0.01  # chance that a cell ignoring the stimulus still gets a "clear" STA peak


def sta_peak(sta: np.ndarray, history: int, noise_sd: float | None = None) -> dict[str, Any]:
    """Locate the strongest STA element of one cell: lag (frames before the bin), row, col, polarity.

    With ``noise_sd`` (the s.d. of one STA element for a cell that ignores the stimulus, see
    :func:`sta_noise_sd`) the peak also gets ``z`` = |peak| / noise_sd and ``clear``: whether it
    stands above the largest of the ``sta.size`` noise elements expected by chance (two-sided,
    Bonferroni, false-alarm rate ``STA_FALSE_ALARM``). An ON-OFF or strongly nonlinear cell has
    no clear STA: its ON and OFF parts cancel, so its peak and polarity mean nothing.
    """
    flat_idx = int(np.argmax(np.abs(sta)))
    pos = np.unravel_index(flat_idx, sta.shape)
    value = float(sta[pos])
    out: dict[str, Any] = {"lag_frames": int(lag_of_position(int(pos[0]), history)), "polarity": "ON" if value > 0 else "OFF", "value": value}
    if sta.ndim == 3:
        out["row"], out["col"] = int(pos[1]), int(pos[2])
    if noise_sd is not None and np.isfinite(noise_sd) and noise_sd > 0:
        from scipy.stats import norm

        out["z"] = abs(value) / float(noise_sd)
        out["z_threshold"] = float(norm.isf(STA_FALSE_ALARM / (2 * sta.size)))
        out["clear"] = bool(out["z"] > out["z_threshold"])
    return out


def sta_noise_sd(stimulus: np.ndarray, counts: np.ndarray, history: int, max_frames: int = 20000) -> np.ndarray:
    """Per cell, the s.d. of one STA element when spikes are unrelated to the stimulus:
    ``sigma_stim * sqrt(sum c^2) / sum c`` (independent frames; ``sigma_stim`` = mean per-pixel
    s.d., from at most ``max_frames`` evenly spaced frames)."""
    T = stimulus.shape[0]
    sub = np.asarray(stimulus[:: max(1, T // max_frames)], dtype=np.float64).reshape(-1 if T else 0, int(np.prod(stimulus.shape[1:], dtype=int)))
    sigma = float(np.sqrt(sub.var(axis=0).mean())) if sub.size else float("nan")
    c = np.asarray(counts, dtype=np.float64).reshape(T, -1)[history:]
    total = c.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, sigma * np.sqrt((c ** 2).sum(axis=0)) / total, np.nan)


def summarize(rec: Recording, sta_history: int = 40, with_sta: bool | None = None) -> tuple[dict[str, Any], np.ndarray | None]:
    """A JSON-ready summary of a recording, and the STAs ``(n_cells, H, ...)`` when computed.

    STAs are computed for white-noise recordings (``with_sta=None``) or when asked. Rates are
    labelled by split (``rate_hz_train``, ``rate_hz_test``, as in a run's ``cells.csv``); the
    split-half reliability and ceiling are those :func:`retinakit.pipeline.run_fit` reports for a
    model with ``sta_history`` frames (:func:`retinakit.evaluation.metrics.scored_reliability`:
    same function, same test bins ``t >= history``, same splits).
    """
    from .evaluation.metrics import scored_reliability

    dt = float(rec.frame_dt)  # type: ignore[arg-type]
    test = rec.test
    rel = scored_reliability(test.repeats, sta_history) if test is not None and test.repeats is not None else None
    do_sta = rec.stimulus_kind in ("whitenoise", "fullfield") if with_sta is None else with_sta
    history = int(min(sta_history, max(1, rec.train.n_bins - 1)))
    stas = spike_triggered_average(rec.train.stimulus, rec.train.counts, history) if do_sta else None
    noise = sta_noise_sd(rec.train.stimulus, rec.train.counts, history) if do_sta else None
    cells = []
    for k, cid in enumerate(rec.cell_ids):
        cell: dict[str, Any] = {
            "id": int(cid),
            "rate_hz_train": float(rec.train.counts[:, k].mean() / dt),
            "spikes_train": int(round(float(rec.train.counts[:, k].sum()))),
        }
        if test is not None:
            cell["rate_hz_test"] = float(test.counts[:, k].mean() / dt)
        if rel is not None:
            cell["split_half_r"] = _f(rel["r_half"][k])
            cell["reliability"] = _f(rel["reliability"][k])
            cell["ceiling"] = _f(rel["ceiling"][k])
        if stas is not None:
            cell["sta_peak"] = sta_peak(stas[k], history, noise_sd=float(noise[k]))
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
        "ceiling_first_bin": None if rel is None else rel["first_bin"],
        "cells": cells,
    }
    if rec.provenance.get("blocks"):  # imported from a mapping with [[blocks]]
        summary["blocks"] = rec.provenance["blocks"]
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
    ]
    if s.get("blocks"):
        from .io.importer import block_text

        lines += [f"block {b['name']:<10} {block_text(b)}" for b in s["blocks"]]
    lines.append("")
    head = f"{'cell':>6} {'train Hz':>8} {'test Hz':>8} {'split-half r':>13} {'ceiling':>8}"
    if s["sta_history_frames"]:
        head += f"  {'STA peak (lag, row, col, polarity)':<36}"
    lines.append(head)
    for c in s["cells"]:
        r = c.get("split_half_r")
        ceil = c.get("ceiling")
        test_hz = c.get("rate_hz_test")
        row = (f"{c['id']:>6} {c['rate_hz_train']:>8.2f} {('%.2f' % test_hz) if test_hz is not None else '-':>8} "
               f"{('%.3f' % r) if r is not None else '-':>13} {('%.3f' % ceil) if ceil is not None else '-':>8}")
        if "sta_peak" in c:
            p = c["sta_peak"]
            loc = f"{p['lag_frames']} fr" + (f", ({p['row']}, {p['col']})" if "row" in p else "")
            if p.get("clear", True):
                row += f"  {loc + ', ' + p['polarity']:<36}"
            else:
                row += f"  {'none clear (peak at noise level)':<36}"
        lines.append(row)
    unclear = [str(c["id"]) for c in s["cells"] if "sta_peak" in c and not c["sta_peak"].get("clear", True)]
    if unclear:
        z = next(c["sta_peak"]["z_threshold"] for c in s["cells"] if "sta_peak" in c and "z_threshold" in c["sta_peak"])
        lines.append(f"warning: no clear STA for cell{'s' if len(unclear) > 1 else ''} {', '.join(unclear)}: the largest element is below "
                     f"the chance level ({z:.1f} s.d. of an STA of unrelated spikes), so its peak and polarity mean nothing; "
                     "typical of ON-OFF or strongly nonlinear cells (fit a CNN to model them)")
    if s.get("ceiling_first_bin") is not None:
        lines.append(f"train/test Hz: mean rate on the training part / on the test repeats; ceiling: sqrt(split-half reliability) over "
                     f"test bins t >= {s['ceiling_first_bin']} (the bins `fit` scores with the same --history)")
    return "\n".join(lines)


def write_sta_figures(stas: np.ndarray, rec: Recording, out_dir: Path) -> list[Path]:
    """One PNG per cell: the STA frame at the peak lag (colour bar in stimulus units) and the
    temporal profile at the peak pixel with the chance band; the title says when the STA is at
    noise level (no clear peak: an ON-OFF or nonlinear cell), and the footer names the recording."""
    from .atomic import ensure_dir, save_figure
    from .figures import new_figure
    from .sample import data_label

    ensure_dir(out_dir)
    history = stas.shape[1]
    dt_ms = 1000.0 * float(rec.frame_dt)  # type: ignore[arg-type]
    lags_ms = np.array([lag_of_position(j, history) for j in range(history)]) * dt_ms
    noise = sta_noise_sd(rec.train.stimulus, rec.train.counts, history)
    src = str(rec.provenance.get("source") or "")
    name = data_label(src) if src and not src.startswith("<") else "an in-memory recording"
    paths = []
    for k, cid in enumerate(rec.cell_ids):
        sta = stas[k]
        peak = sta_peak(sta, history, noise_sd=float(noise[k]))
        j = history - peak["lag_frames"]
        verdict = ("" if peak.get("clear", True) else
                   f"  NO CLEAR STA: peak {peak['z']:.1f} s.d. < chance level {peak['z_threshold']:.1f} (ON-OFF or nonlinear cell?)")
        if sta.ndim == 3:
            fig, (a1, a2) = new_figure(1, 2, size=(9.5, 3.8), gridspec_kw={"width_ratios": [1, 1.15], "wspace": 0.45})
            lim = float(np.abs(sta[j]).max()) or 1.0
            im = a1.imshow(sta[j], cmap="RdBu_r", vmin=-lim, vmax=lim)
            a1.plot(peak["col"], peak["row"], "k+", ms=10)
            a1.set_title(f"space, {peak['lag_frames'] * dt_ms:.0f} ms before the spike", fontsize=9)
            a1.set_xlabel("column (pixels)", fontsize=8)
            a1.set_ylabel("row (pixels)", fontsize=8)
            cb = fig.colorbar(im, ax=a1, shrink=0.85, pad=0.03)
            cb.set_label("STA (stimulus units)\nred: brighter before a spike", fontsize=7)
            cb.ax.tick_params(labelsize=7)
            a2.plot(-lags_ms, sta[:, peak["row"], peak["col"]], "k.-")
            a2.set_title(f"time at pixel (row {peak['row']}, col {peak['col']}): {peak['polarity'] if peak.get('clear', True) else 'no clear polarity'}", fontsize=9)
        else:
            fig, a2 = new_figure(1, 1, size=(5.5, 3.6))
            a2.plot(-lags_ms, sta, "k.-")
            a2.set_title(f"full-field STA: {peak['polarity'] if peak.get('clear', True) else 'no clear polarity'}", fontsize=9)
        a2.axhline(0, color="0.7", lw=0.8)
        if "z_threshold" in peak:
            band = peak["z_threshold"] * float(noise[k])
            a2.axhspan(-band, band, color="0.85", zorder=0, label="chance level (1% false alarms)")
            a2.legend(frameon=False, fontsize=7, loc="lower left")
        a2.set_xlabel("time before spike (ms)")
        a2.set_ylabel("STA (stimulus units)")
        fig.suptitle(f"cell {cid}: spike-triggered average" + verdict, fontsize=10, color="C3" if verdict else "black")
        fig.text(0.01, 0.0, f"{name}: {rec.train.n_bins} training bins, {int(round(float(rec.train.counts[:, k].sum())))} spikes",
                 fontsize=7, color="0.35", ha="left", va="top")
        path = out_dir / f"sta_cell{int(cid):02d}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths
