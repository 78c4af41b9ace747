"""Contrast-reversing gratings: first and second harmonic vs bar width (frequency doubling).

Protocol (Hochstein & Shapley 1976; Enroth-Cugell & Robson 1966)
----------------------------------------------------------------
A square-wave grating of vertical bars ``width`` pixels wide (bright/dark at ``+-contrast``)
whose contrast reverses as a square wave with period ``period`` (sign +1 for the first half,
-1 for the second), at ``phases`` spatial phases evenly spaced over one spatial period (``2 *
width``; pixels show the exact area average, so sub-pixel phases are rendered). Each condition
runs ``ceil(history / period) + cycles`` cycles; the first ones, while the model's window
still reaches before the grating appeared, are discarded and the last ``cycles`` are averaged.

Measures (per cell, per width)
------------------------------
- F1 and F2: the amplitude (Hz) of the response at the reversal frequency and at twice it
  (``2/N |sum r(t) exp(-2 pi i k t / N)|`` over the averaged cycle of ``N`` frames);
- per width: ``F1`` = max over phases (F1 has null positions), ``F2`` = mean over phases;
  the ratio ``F2 / F1``;
- **frequency doubling** at a width when ``F2 > F1`` and ``F2 >= min_amp`` Hz (the signature of
  rectified subunits, as in Y cells); nonlinearity index = max over widths of F2 / max over
  widths of F1. A linear cell gives no F2 at all, whatever the width. Ratios are None where
  both harmonics are below ``min_amp`` (no measurable response).
- **against a static-LN null**: a rank-1 static LN model of the cell (temporal filter from
  full-field flicker, spatial weights from pixel noise, binned nonlinearity; see
  :mod:`retinakit.probes.lnnull`) shown the same gratings. A static nonlinearity after linear
  spatial summation also makes F2 (a U-shaped one at every width), but only where the linear
  drive is not zero; nonlinear spatial summation makes F2 the null cannot. **Doubling beyond
  the null** at a width with frequency doubling where also ``F2 - null F2 > max(min_amp, null_margin x F2)``
  (the null's F2 is the mean over the same phases). Not judged (None) when the null explains less
  than half of the variance of its held-out noise response.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .analysis import harmonic_amplitudes
from .base import AUTO, Param, model_rates, require_spatial, seconds_to_frames, stimulus_levels
from .stimuli import reversing_grating, to_raw

NAME = "reversing-grating"
DESCRIPTION = "contrast-reversing square-wave gratings over a sweep of bar widths and spatial phases: F1 and F2 harmonics, frequency doubling"
PARAMS = (
    Param("widths", AUTO, "floats", "px", "bar widths in pixels (fractions allowed); auto = 1, 2, 4, ... below the frame width, plus the frame width", low=0.0, high=1e5),
    Param("phases", 4, "int", "", "spatial phases per width, evenly spaced over one spatial period", low=1, high=64),
    Param("period", 0.5, "float", "s", "contrast-reversal period (one full cycle), an even number of frames >= 6", low=0.0, high=60.0),
    Param("cycles", 3, "int", "", "cycles averaged after the model's window is filled with the grating", low=1, high=1000),
    Param("contrast", 1.0, "float", "", "grating contrast (1 = the largest excursion from the mean inside the training range)", low=0.0, high=1.0, nonzero=True),
    Param("min_amp", 1.0, "float", "Hz", "F2 must reach this for frequency doubling to count; ratios are not reported where F1 and F2 are both below it", low=0.0, high=1e6),
    Param("null", "noise", "choice", "", "static-LN null fitted to flicker and pixel noise, or none", choices=("noise", "none")),
    Param("null_margin", 0.5, "float", "", "doubling beyond the null needs F2 - null F2 > this x F2", low=0.0, high=1.0),
)


NULL_MIN_R2 = 0.5  # a null that explains less of the held-out noise response is too poor to judge doubling


def default_widths(W: int) -> list[float]:
    """1, 2, 4, ... below ``W``, then ``W`` itself (the whole frame)."""
    ws = [float(2**k) for k in range(int(math.log2(max(W, 1))) + 1) if 2**k < W]
    return ws + [float(W)]


def run(fitted: Any, params: dict[str, Any], out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Sweep grating widths and phases; measure F1/F2 (see module docstring)."""
    shape = require_spatial(fitted, NAME)
    dt, H = fitted.frame_dt, fitted.history
    levels = stimulus_levels(fitted)
    N = seconds_to_frames(params["period"], dt, "period", NAME, minimum=6)
    if N % 2:
        raise ConfigError(f"a reversal period of {N} frames is odd: the two half cycles would differ", f"--param period of probe '{NAME}'",
                          f"use {(N - 1) * dt:g} or {(N + 1) * dt:g} s")
    widths = default_widths(shape[1]) if params["widths"] == AUTO else sorted(set(float(w) for w in params["widths"]))
    if any(w <= 0 for w in widths):
        raise ConfigError("bar widths must be positive", f"--param widths of probe '{NAME}'")
    n_phase = int(params["phases"])
    skip = math.ceil(H / N)
    total = skip + int(params["cycles"])
    movies, conds = [], []
    for w in widths:
        for i in range(n_phase):
            ph = 2 * w * i / n_phase
            movies.append(reversing_grating(shape, w, ph, N, total, float(params["contrast"])))
            conds.append((w, ph))
    rates = model_rates(fitted, [to_raw(m, levels, fitted.frame_shape) for m in movies], desc="reversing-grating", progress=progress)
    null_F2 = None
    nulls = None
    if params["null"] == "noise":
        from .lnnull import flicker_nulls, spatial_nulls

        nulls = spatial_nulls(fitted, levels, flicker_nulls(fitted, levels)[0])
        ncyc = np.stack([np.stack([n.rate(m) for n in nulls], 1)[skip * N :].reshape(int(params["cycles"]), N, -1).mean(0) for m in movies])
        null_F2 = harmonic_amplitudes(np.moveaxis(ncyc, 1, 0), (2,))[0].reshape(len(widths), n_phase, -1).mean(1)  # (widths, cells)
    margin = float(params["null_margin"])
    cyc = np.stack([r[skip * N :].reshape(int(params["cycles"]), N, -1).mean(0) for r in rates])  # (cond, N, cells)
    amps = harmonic_amplitudes(np.moveaxis(cyc, 1, 0), (1, 2))  # (2, cond, cells)
    F1 = amps[0].reshape(len(widths), n_phase, -1)
    F2 = amps[1].reshape(len(widths), n_phase, -1)
    mean_rate = cyc.mean(1).reshape(len(widths), n_phase, -1).mean(1)
    min_amp = float(params["min_amp"])
    cells = []
    for k, cid in enumerate(fitted.cell_ids):
        f1, f2 = F1[:, :, k].max(1), F2[:, :, k].mean(1)
        doubling = [w for w, a, b in zip(widths, f1, f2) if b > a and b >= min_amp]
        nf2 = None if null_F2 is None else null_F2[:, k]
        null_ok = nulls is not None and nulls[k].r2 is not None and nulls[k].r2 >= NULL_MIN_R2
        beyond = [] if nf2 is None else [w for w, a, b, n in zip(widths, f1, f2, nf2) if w in doubling and b - n > max(min_amp, margin * b)]
        cells.append({
            "id": cid, "widths_px": widths,
            "f1_hz": f1.tolist(), "f2_hz": f2.tolist(),
            "ratio_f2_f1": [float(b / a) if a > 0 and max(a, b) >= min_amp else None for a, b in zip(f1, f2)],
            "f1_by_phase_hz": F1[:, :, k].tolist(), "f2_by_phase_hz": F2[:, :, k].tolist(),
            "mean_rate_hz": mean_rate[:, k].tolist(),
            "doubling_widths_px": doubling, "frequency_doubling": bool(doubling),
            "null_f2_hz": None if nf2 is None else nf2.tolist(), "null_r2": None if nulls is None else nulls[k].r2,
            "beyond_null_widths_px": beyond, "doubling_beyond_null": bool(beyond) if nf2 is not None and null_ok else None,
            "responsive": bool(max(f1.max(), f2.max()) >= min_amp),
            "nonlinearity_index": float(f2.max() / f1.max()) if f1.max() > 0 and max(f1.max(), f2.max()) >= min_amp else None,
        })
    result: dict[str, Any] = {
        "levels": levels.as_dict(), "period_frames": N, "reversal_hz": 1.0 / (N * dt), "phases_px": [[2 * w * i / n_phase for i in range(n_phase)] for w in widths],
        "discarded_cycles": skip, "cells": cells,
        "n_doubling": sum(c["frequency_doubling"] for c in cells),
        "n_beyond_null": sum(bool(c["doubling_beyond_null"]) for c in cells),
        "cycle_finest": {"time_s": (np.arange(N) * dt).tolist(), "width_px": widths[0], "rates_hz": np.moveaxis(cyc[:n_phase], 2, 0).tolist()},
    }
    result["figures"] = _figures(result, fitted.cell_ids, out_dir)
    return result


def _figures(result: dict[str, Any], ids: list[int], out_dir: Path) -> list[str]:
    import matplotlib

    from .plots import panel_grid, panel_labels, save

    labels = panel_labels(ids, with_population=False)
    fig, axes = panel_grid(len(labels))
    for j, ax in enumerate(axes):
        c = result["cells"][j]
        ax.plot(c["widths_px"], c["f1_hz"], "o-", label="F1 (max over phase)", ms=3)
        ax.plot(c["widths_px"], c["f2_hz"], "s-", label="F2 (mean over phase)", ms=3)
        if c.get("null_f2_hz") is not None:
            ax.plot(c["widths_px"], c["null_f2_hz"], "s--", label="F2 of the static-LN null", ms=2, color="0.5")
        ax.set_xscale("log", base=2)
        ax.set_xticks(c["widths_px"], [f"{w:g}" for w in c["widths_px"]])
        ax.minorticks_off()
        ax.set_title(f"{labels[j]}" + (" - doubling beyond LN" if c.get("doubling_beyond_null") else " - doubling (LN explains it)" if c["frequency_doubling"] else ""), fontsize=9)
        ax.set_xlabel("bar width (px)", fontsize=8)
        ax.set_ylabel("amplitude (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6)
    names = [save(fig, out_dir, "grating_harmonics.png")]

    fig, axes = panel_grid(len(labels))
    cf = result["cycle_finest"]
    cmap = matplotlib.colormaps["plasma"]
    t = np.asarray(cf["time_s"]) * 1000
    for j, ax in enumerate(axes):
        traces = cf["rates_hz"][j]
        for i, y in enumerate(traces):
            ax.plot(t, y, color=cmap(i / max(1, len(traces))), lw=1, label=f"phase {result['phases_px'][0][i]:g} px")
        ax.axvline(t[-1] / 2 + t[1] / 2, color="0.6", ls=":", lw=0.8)
        ax.set_title(f"{labels[j]}, {cf['width_px']:g}-px bars", fontsize=9)
        ax.set_xlabel("time in reversal cycle (ms)", fontsize=8)
        ax.set_ylabel("rate (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6)
    names.append(save(fig, out_dir, "grating_cycles.png"))
    return names


def format_summary(result: dict[str, Any]) -> str:
    """One screen: F2/F1 per width per cell, which cells double, and which double beyond the static-LN null."""
    ws = result["cells"][0]["widths_px"]
    lines = [f"Reversing gratings: reversal {result['reversal_hz']:.2f} Hz ({result['period_frames']} frames), {result['params']['phases']} phases, "
             f"contrast {result['params']['contrast']:g}; F1 = max over phase, F2 = mean over phase; "
             f"{result['n_doubling']}/{len(result['cells'])} cells double (F2 > F1 at some width), {result['n_beyond_null']} beyond a static-LN null", "",
             f"{'cell':>6} {'NL index':>9} {'null R2':>8}   F2/F1 (null F2 / F2) at widths " + " ".join(f"{w:g}" for w in ws) + " px"]
    for c in result["cells"]:
        nl = "-" if c["nonlinearity_index"] is None else f"{c['nonlinearity_index']:.2f}"
        r2 = "-" if c.get("null_r2") is None else f"{c['null_r2']:.2f}"
        nf = c.get("null_f2_hz") or [None] * len(ws)
        rat = " ".join(("-" if v is None else f"{v:.2f}") + ("" if n is None or b < result["params"]["min_amp"] else f"({n / b:.2f})") for v, n, b in zip(c["ratio_f2_f1"], nf, c["f2_hz"]))
        poor = c.get("null_f2_hz") is not None and c.get("doubling_beyond_null") is None
        tag = "   doubling beyond LN" if c.get("doubling_beyond_null") else ("   doubling (null too poor to judge)" if c["frequency_doubling"] and poor else "   doubling, as its LN null" if c["frequency_doubling"] else "")
        lines.append(f"{c['id']:>6} {nl:>9} {r2:>8}   {rat}" + tag + ("" if c["responsive"] else "   (no response above min_amp)"))
    lines.append("NL index = max F2 / max F1 over widths (Hochstein & Shapley); a linear cell has F2 = 0; a static nonlinearity makes F2 its LN null also makes")
    return "\n".join(lines)


def cell_readout(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per cell, the numbers `probe --compare` sets side by side."""
    return {int(c["id"]): {"NL index": None if c["nonlinearity_index"] is None else round(c["nonlinearity_index"], 2),
                           "doubling": "yes" if c["frequency_doubling"] else "no",
                           "beyond LN": None if c.get("doubling_beyond_null") is None else ("yes" if c["doubling_beyond_null"] else "no")} for c in result["cells"]}
