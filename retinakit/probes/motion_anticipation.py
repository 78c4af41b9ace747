"""Motion anticipation: does the response to a moving bar peak before the bar reaches the receptive field?

Protocol (Berry, Brivanlou, Jordan & Meister, Nature 1999)
----------------------------------------------------------
1. Receptive-field map along x: a vertical bar ``width`` pixels wide, full frame height, at
   ``+-contrast`` (bright or dark), flashed for ``flash`` seconds centred on each pixel column
   in turn, after ``history + 5`` background frames. Per cell: the peak rise over the following
   ``history`` bins at each position; the RF centre is the position of the largest rise
   (parabolic interpolation between columns, in pixels, 0 = left edge of the frame); the flash
   latency is the time from flash onset to the peak at the best column (parabolic, sub-bin).
2. The same bar moving at ``speed`` px/s across the whole frame, entering from outside,
   rightwards and leftwards. The bar centre reaches the RF centre at a known (fractional)
   frame ``t_arr``; the response peak time ``t_peak`` (parabolic, sub-bin) is read from the
   whole sweep.

Measures (per cell, per direction and averaged over the two directions)
-------------------------------------------------------------------------
- ``lag_s = (t_peak - t_arr) * frame_dt``: negative when the response peaks *before* the bar's
  centre arrives at the RF centre (**anticipation**; ``leads`` = mean lag < 0);
- ``anticipation_s = flash latency - lag``: how much earlier the moving-bar response peaks
  than a cell that simply responds with its flash latency would (positive = anticipates);
- ``bar_offset_at_peak_px``: where the bar centre is at the peak, relative to the RF centre, in
  the direction of motion (negative = still approaching).
- **against the linear prediction**: the moving bar is a sequence of one-frame bars; the sum of
  the responses to one-frame bars flashed at pixel-aligned positions (sub-pixel positions
  interpolated between neighbours, exact for a linear system and whole-pixel widths), delayed
  to when the moving bar passes, is what a linear cell would do. ``linear_lag_s`` is the lag of
  that prediction's peak, and ``anticipation_beyond_linear_s = linear_lag_s - lag_s``: a
  biphasic linear filter with an extended receptive field already peaks early, so only this
  difference is anticipation the linear receptive field does not explain (``leads_beyond_linear``
  when it exceeds one frame in the mean over directions).
Averaging the two directions cancels an error in the estimated RF centre. Polarity ``auto``
analyses each cell with the bar polarity that drives it more in the flash map. Cells whose best
flash rise is below ``min_rise`` Hz are reported as unresponsive.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import parabolic_peak
from .base import AUTO, Param, model_rates, require_spatial, seconds_to_frames, stimulus_levels
from .stimuli import bar_coverage, to_raw

NAME = "motion-anticipation"
DESCRIPTION = "a bar moving across the frame in both directions vs the same bar flashed at each position: does the peak response lead the bar's arrival at the receptive field?"
PARAMS = (
    Param("width", AUTO, "float", "px", "bar width; auto = max(1, frame width / 8)", low=0.0, high=1e5),
    Param("speed", AUTO, "float", "px/s", "bar speed; auto = frame width / 1.6 s", low=0.0, high=1e7, nonzero=True),
    Param("contrast", 1.0, "float", "", "bar contrast magnitude (1 = the largest excursion from the mean inside the training range)", low=0.0, high=1.0, nonzero=True),
    Param("polarity", "auto", "choice", "", "bar polarity; auto = per cell, the one that drives it more in the flash map", choices=("auto", "bright", "dark")),
    Param("flash", 0.03, "float", "s", "duration of the flashed bars that map the receptive field", low=0.0, high=10.0),
    Param("min_rise", 1.0, "float", "Hz", "cells whose best flash rise is below this are unresponsive", low=0.0, high=1e6),
)

SIGN = {"bright": 1.0, "dark": -1.0}
DIRECTIONS = {"right": 1.0, "left": -1.0}


def run(fitted: Any, params: dict[str, Any], out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Map RFs with flashed bars, then sweep a moving bar both ways (see module docstring)."""
    shape = require_spatial(fitted, NAME)
    Hh, W = shape
    dt, H = fitted.frame_dt, fitted.history
    levels = stimulus_levels(fitted)
    width = max(1.0, W / 8) if params["width"] == AUTO else float(params["width"])
    speed = W / 1.6 if params["speed"] == AUTO else float(params["speed"])
    v = speed * dt  # px per frame
    flash = seconds_to_frames(params["flash"], dt, "flash", NAME)
    contrast = float(params["contrast"])
    pols = ["bright", "dark"] if params["polarity"] == "auto" else [params["polarity"]]
    onset = H + 5
    n_move = int(math.ceil((W + width) / v)) + 1
    T_move = onset + n_move + H

    stims = []
    for pol in pols:
        c = contrast * SIGN[pol]
        for x in range(W):
            cen = np.full(onset + H + 1, np.nan)
            cen[onset : onset + flash] = x + 0.5
            stims.append(to_raw(c * _coverage(shape, cen, width), levels, fitted.frame_shape))
        for d in DIRECTIONS.values():
            stims.append(to_raw(c * _coverage(shape, _moving_centers(T_move, onset, W, width, v, d), width), levels, fitted.frame_shape))
    lin_T = onset + 2 * H + 1
    lin_pos = np.arange(int(math.floor(-width / 2 - 1)), int(math.ceil(W + width / 2 + 1)) + 1)  # bar centres j + 0.5
    for pol in pols:
        c = contrast * SIGN[pol]
        for j in lin_pos:
            cen = np.full(lin_T, np.nan)
            cen[onset] = j + 0.5
            stims.append(to_raw(c * _coverage(shape, cen, width), levels, fitted.frame_shape))
    rates = iter(model_rates(fitted, stims, desc="motion-anticipation", progress=progress))
    flash_r = {pol: None for pol in pols}
    move_r: dict[str, dict[str, np.ndarray]] = {}
    for pol in pols:
        flash_r[pol] = np.stack([next(rates) for _ in range(W)])  # (W, T, cells)
        move_r[pol] = {name: next(rates) for name in DIRECTIONS}
    one_frame = {pol: np.stack([next(rates) for _ in lin_pos]) for pol in pols}  # (positions, lin_T, cells)
    linear_r = {pol: {name: _linear_prediction(one_frame[pol], lin_pos, onset, H, _moving_centers(T_move, onset, W, width, v, d)) for name, d in DIRECTIONS.items()}
                for pol in pols}

    min_rise = float(params["min_rise"])
    cells = []
    for k, cid in enumerate(fitted.cell_ids):
        rises = {pol: _flash_rises(flash_r[pol][:, :, k], H, onset) for pol in pols}
        pol = max(pols, key=lambda p: rises[p].max())
        prof = rises[pol]
        best = int(np.argmax(prof))
        center = 0.5 + parabolic_peak(prof, best)
        tr = flash_r[pol][best, :, k]
        seg = tr[onset + 1 : onset + H + 1]
        flash_latency = (1 + parabolic_peak(seg, int(np.argmax(seg)))) * dt
        cell: dict[str, Any] = {"id": cid, "polarity": pol, "responsive": bool(prof.max() >= min_rise), "rf_center_px": float(center),
                                "flash_rise_hz": prof.tolist(), "flash_latency_s": float(flash_latency), "directions": {}}
        for name, d in DIRECTIONS.items():
            r = move_r[pol][name][:, k]
            i = onset + 1 + int(np.argmax(r[onset + 1 :]))
            t_peak = parabolic_peak(r, i)
            start = -width / 2 if d > 0 else W + width / 2
            t_arr = onset + (center - start) / (v * d)
            lag = (t_peak - t_arr) * dt
            rl = linear_r[pol][name][:, k]
            il = onset + 1 + int(np.nanargmax(rl[onset + 1 :]))
            lin_lag = (parabolic_peak(rl, il) - t_arr) * dt
            cell["directions"][name] = {"arrival_frame": float(t_arr), "peak_bin": float(t_peak), "peak_hz": float(r[i]), "lag_s": float(lag),
                                        "anticipation_s": float(flash_latency - lag), "bar_offset_at_peak_px": float((t_peak - t_arr) * v),
                                        "linear_lag_s": float(lin_lag), "anticipation_beyond_linear_s": float(lin_lag - lag)}
        lags = [x["lag_s"] for x in cell["directions"].values()]
        cell["mean_lag_s"] = float(np.mean(lags))
        cell["mean_anticipation_s"] = float(flash_latency - np.mean(lags))
        cell["leads"] = bool(cell["responsive"] and cell["mean_lag_s"] < 0)
        cell["mean_linear_lag_s"] = float(np.mean([x["linear_lag_s"] for x in cell["directions"].values()]))
        cell["mean_anticipation_beyond_linear_s"] = float(cell["mean_linear_lag_s"] - cell["mean_lag_s"])
        cell["leads_beyond_linear"] = bool(cell["responsive"] and cell["mean_anticipation_beyond_linear_s"] > dt)
        if not cell["responsive"]:
            cell["note"] = f"best flash rise {prof.max():.2f} Hz < min_rise: numbers are not meaningful"
        cells.append(cell)
    result: dict[str, Any] = {
        "levels": levels.as_dict(), "width_px": width, "speed_px_per_s": speed, "speed_px_per_frame": v, "flash_frames": flash,
        "onset_frame": onset, "cells": cells,
        "n_leading": sum(c["leads"] for c in cells), "n_responsive": sum(c["responsive"] for c in cells),
        "n_leading_beyond_linear": sum(c["leads_beyond_linear"] for c in cells),
        "traces": {name: {"time_s": ((np.arange(onset, T_move) - onset) * dt).tolist(),
                          "rates_hz": [move_r[c["polarity"]][name][onset:, k].tolist() for k, c in enumerate(cells)]} for name in DIRECTIONS},
    }
    result["figures"] = [_figure(result, fitted.cell_ids, out_dir)]
    return result


def _coverage(shape: tuple[int, int], centers: np.ndarray, width: float) -> np.ndarray:
    """Bar coverage per frame; frames with a NaN centre show no bar."""
    c = np.asarray(centers, dtype=np.float64)
    cov = bar_coverage(shape, np.where(np.isfinite(c), c, -1e9), width)
    return cov


def _linear_prediction(one_frame: np.ndarray, positions: np.ndarray, onset: int, H: int, centers: np.ndarray) -> np.ndarray:
    """Rates ``(T, cells)`` a linear system would give to a bar at ``centers`` (per frame, NaN = no bar):
    the sum of its responses to one-frame bars (``one_frame``: ``(positions, T1, cells)``, flashed at
    ``onset`` centred on ``positions + 0.5``), each delayed to its frame, interpolated between positions."""
    base = np.nanmean(one_frame[:, H : onset + 1], axis=(0, 1))  # (cells,)
    dev = np.nan_to_num(one_frame[:, onset:] - base)  # response from the flash frame on, (positions, L, cells)
    L = dev.shape[1]
    T = centers.shape[0]
    out = np.zeros((T + L, dev.shape[2]))
    for f in np.flatnonzero(np.isfinite(centers)):
        u = centers[f] - 0.5 - positions[0]
        j = int(math.floor(u))
        a = u - j
        if j < 0 or j + 1 >= positions.size:
            continue
        out[f : f + L] += (1 - a) * dev[j] + a * dev[j + 1]
    r = base + out[:T]
    r[:H] = np.nan
    return r


def _moving_centers(T: int, onset: int, W: int, width: float, v: float, direction: float) -> np.ndarray:
    """Bar centre per frame: off-screen until ``onset``, then moving ``v`` px/frame across the frame."""
    f = np.arange(T, dtype=np.float64)
    start = -width / 2 if direction > 0 else W + width / 2
    c = start + direction * v * (f - onset)
    c[f < onset] = np.nan
    return c


def _flash_rises(r: np.ndarray, H: int, onset: int) -> np.ndarray:
    """Peak rise above baseline after the flash, per position; ``r`` is ``(positions, T)``."""
    base = r[:, H : onset + 1].mean(1)
    return r[:, onset + 1 : onset + H + 1].max(1) - base


def _figure(result: dict[str, Any], ids: list[int], out_dir: Path) -> str:
    from .plots import panel_grid, panel_labels, save

    labels = panel_labels(ids, with_population=False)
    fig, axes = panel_grid(len(labels))
    for j, ax in enumerate(axes):
        c = result["cells"][j]
        for name, col in (("right", "tab:blue"), ("left", "tab:red")):
            d = c["directions"][name]
            t0 = d["arrival_frame"] - result["onset_frame"]
            t = np.asarray(result["traces"][name]["time_s"])
            dt = t[1] - t[0]
            ax.plot((t / dt - t0) * dt * 1000, result["traces"][name]["rates_hz"][j], color=col, lw=1, label=f"moving {name}")
        ax.axvline(0, color="k", ls="--", lw=0.8)
        ax.axvline(c["flash_latency_s"] * 1000, color="0.5", ls=":", lw=0.8)
        ax.set_xlim(-600, 600)
        ax.set_title(f"{labels[j]} ({c['polarity']}): lag {c['mean_lag_s'] * 1000:+.0f} ms" + ("" if c["responsive"] else ", unresponsive"), fontsize=9)
        ax.set_xlabel("time from arrival at RF centre (ms)", fontsize=8)
        ax.set_ylabel("rate (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6)
    return save(fig, out_dir, "motion_responses.png")


def format_summary(result: dict[str, Any]) -> str:
    """One screen: RF centre, flash latency, moving-bar lag, the linear prediction's lag and the anticipation beyond it."""
    lines = [f"Motion anticipation: {result['width_px']:g}-px bar at {result['speed_px_per_s']:g} px/s ({result['speed_px_per_frame']:.3g} px/frame), both directions; "
             f"{result['n_leading']}/{result['n_responsive']} responsive cells peak before the bar reaches the RF centre, "
             f"{result['n_leading_beyond_linear']} earlier than their linear prediction", "",
             f"{'cell':>6} {'pol':>6} {'RF x':>6} {'flash lat':>10} {'lag right':>10} {'lag left':>9} {'mean lag':>9} {'linear lag':>11} {'beyond lin.':>12}"]
    ms = lambda v: f"{v * 1000:+.0f} ms"  # noqa: E731
    for c in result["cells"]:
        if not c["responsive"]:
            lines.append(f"{c['id']:>6} {c['polarity']:>6}   unresponsive to flashed bars")
            continue
        lines.append(f"{c['id']:>6} {c['polarity']:>6} {c['rf_center_px']:>6.1f} {c['flash_latency_s'] * 1000:>7.0f} ms {ms(c['directions']['right']['lag_s']):>10} "
                     f"{ms(c['directions']['left']['lag_s']):>9} {ms(c['mean_lag_s']):>9} {ms(c['mean_linear_lag_s']):>11} {ms(c['mean_anticipation_beyond_linear_s']):>12}")
    lines.append("lag = response peak - arrival of the bar centre at the RF centre (negative = peaks before); linear lag = the same for the sum of "
                 "one-frame bar responses (a linear cell); beyond lin. = linear lag - lag (positive = anticipation the linear receptive field does not explain)")
    return "\n".join(lines)


def cell_readout(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per cell, the numbers `probe --compare` sets side by side."""
    out = {}
    for c in result["cells"]:
        ms = lambda v: round(v * 1000)  # noqa: E731
        out[int(c["id"])] = {"lag ms": ms(c["mean_lag_s"]) if c["responsive"] else None, "linear lag ms": ms(c["mean_linear_lag_s"]) if c["responsive"] else None,
                             "beyond linear ms": ms(c["mean_anticipation_beyond_linear_s"]) if c["responsive"] else None}
    return out
