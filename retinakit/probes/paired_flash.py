"""Paired flashes: how the response to a second flash recovers with the interval between flashes.

Protocol
--------
``history + 5`` frames of background (the training mean), then a full-field flash of ``flash``
frames at frame ``o``; for each interval ``d`` (onset to onset, whole frames), a second
identical flash at ``o + d``; plus the single flash alone. Flash polarity per cell as in the OSR
probe (``auto``: the polarity whose single flash drives the cell more).

Measures (per cell)
-------------------
- first response ``R1``: the peak rise of the single-flash response above baseline in bins
  ``o + 1 .. o + window``;
- second response ``R2(d)``: the peak of (paired response - single-flash response) in bins
  ``o + d + 1 .. o + d + window``, i.e. what the second flash adds (the classic subtraction
  of the first flash's response, which overlaps at short intervals);
- recovery ``R2(d) / R1`` per interval; the intervals at which recovery first reaches 0.5 and
  0.9 (linear interpolation between tested intervals; None when never reached, the first
  interval when already there);
- **null recovery**: the same numbers for a static LN model of the cell (:mod:`retinakit.probes.lnnull`,
  fitted to the system's response to full-field flicker) shown the same flashes. The
  subtraction assumes linearity, so a static nonlinearity alone makes the second response
  smaller or larger than the first; only the difference ``recovery - null recovery`` is the
  system's own depression (< 0) or facilitation (> 0). A cell shows **depression** when that
  difference is below ``-tolerance`` at some interval, **facilitation** when above ``+tolerance``.

The default contrast (0.5) keeps the flash responses below saturation: at full contrast a
saturating nonlinearity makes every recovery 1.

Cells with ``R1 < min_rise`` Hz are reported as unresponsive (recovery not computed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .analysis import first_crossing, peak_in
from .base import AUTO, Param, model_rates, seconds_to_frames, stimulus_levels
from .osr import SIGN, preferred_polarity
from .stimuli import pulses, to_raw

NAME = "paired-flash"
DESCRIPTION = "two identical full-field flashes at a sweep of intervals: recovery of the second response (R2/R1) vs interval"
PARAMS = (
    Param("intervals", AUTO, "floats", "s", "onset-to-onset intervals, rounded to whole frames; auto = 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6 s (those longer than the flash)", low=0.0, high=60.0),
    Param("flash", 0.02, "float", "s", "flash duration (at least 1 frame)", low=0.0, high=10.0),
    Param("contrast", 0.5, "float", "", "flash contrast magnitude (1 = the largest excursion from the mean inside the training range; the default stays below saturation)", low=0.0, high=1.0, nonzero=True),
    Param("polarity", "auto", "choice", "", "flash polarity; auto = per cell, the one whose single flash drives it more", choices=("auto", "bright", "dark")),
    Param("window", 0.3, "float", "s", "response window after each flash", low=0.0, high=10.0),
    Param("min_rise", 1.0, "float", "Hz", "cells whose first-flash rise is below this are unresponsive", low=0.0, high=1e6),
    Param("null", "flicker", "choice", "", "static-LN null fitted to the response to full-field flicker, or none", choices=("flicker", "none")),
    Param("tolerance", 0.15, "float", "", "recovery must differ from the null's by more than this to count as depression or facilitation", low=0.0, high=10.0),
)

DEFAULT_INTERVALS_S = (0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6)


def recovery(single: np.ndarray, paired: dict[int, np.ndarray], onset: int, baseline_bins: tuple[int, int], window: int) -> dict[str, Any]:
    """R1, R2 and R2/R1 per interval for one cell (traces in Hz; see module docstring)."""
    base = float(np.mean(single[baseline_bins[0] : baseline_bins[1]]))
    r1, _ = peak_in(single, onset + 1, onset + window + 1)
    r1 -= base
    out = {"baseline_hz": base, "r1_hz": r1, "r2_hz": [], "recovery": []}
    for d, trace in paired.items():
        r2, _ = peak_in(trace - single, onset + d + 1, onset + d + window + 1)
        out["r2_hz"].append(r2)
        out["recovery"].append(r2 / r1 if r1 > 0 else None)
    return out


def run(fitted: Any, params: dict[str, Any], out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Sweep the interval between two flashes (see module docstring)."""
    dt, H = fitted.frame_dt, fitted.history
    levels = stimulus_levels(fitted)
    flash = seconds_to_frames(params["flash"], dt, "flash", NAME)
    window = seconds_to_frames(params["window"], dt, "window", NAME)
    if params["intervals"] == AUTO:
        intervals = sorted({int(round(s / dt)) for s in DEFAULT_INTERVALS_S if round(s / dt) > flash})
    else:
        intervals = sorted({seconds_to_frames(s, dt, "intervals", NAME) for s in params["intervals"]})
        if intervals[0] <= flash:
            raise ConfigError(f"an interval of {intervals[0]} frames does not exceed the {flash}-frame flash", f"--param intervals of probe '{NAME}'", "use longer intervals or a shorter flash")
    if not intervals:
        raise ConfigError(f"no default interval exceeds the {flash}-frame flash", f"--param intervals of probe '{NAME}'", "give intervals explicitly")
    contrast = float(params["contrast"])
    ids = fitted.cell_ids
    if params["polarity"] == "auto":
        polarity, _ = preferred_polarity(fitted, levels, flash, contrast)
    else:
        polarity = [params["polarity"]] * len(ids)
    used = [p for p in ("bright", "dark") if p in polarity]
    onset = H + 5
    T = onset + intervals[-1] + window + 1
    contrasts = []
    for pol in used:
        c = contrast * SIGN[pol]
        contrasts.append(pulses(T, [onset], flash, c))
        contrasts += [pulses(T, [onset, onset + d], flash, c) for d in intervals]
    rates = iter(model_rates(fitted, [to_raw(c, levels, fitted.frame_shape) for c in contrasts], desc="paired-flash", progress=progress))
    by_pol = {pol: [next(rates) for _ in range(len(intervals) + 1)] for pol in used}
    nulls = None
    if params["null"] == "flicker":
        from .lnnull import flicker_nulls, null_rates

        nulls, _ = flicker_nulls(fitted, levels, progress=False)
        nr = iter([null_rates(nulls, c) for c in contrasts])
        null_by_pol = {pol: [next(nr) for _ in range(len(intervals) + 1)] for pol in used}
    tol = float(params["tolerance"])

    cells = []
    min_rise = float(params["min_rise"])
    for k, cid in enumerate(ids):
        traces = by_pol[polarity[k]]
        rec = recovery(traces[0][:, k], {d: tr[:, k] for d, tr in zip(intervals, traces[1:])}, onset, (H, onset + 1), window)
        responsive = rec["r1_hz"] >= min_rise
        rv = rec["recovery"] if responsive else [None] * len(intervals)
        pts = [(d * dt, v) for d, v in zip(intervals, rv) if v is not None]
        cell = {
            "id": cid, "polarity": polarity[k], "responsive": bool(responsive), **rec, "recovery": rv,
            "interval_50_s": first_crossing(*zip(*pts), 0.5) if pts else None,
            "interval_90_s": first_crossing(*zip(*pts), 0.9) if pts else None,
            "null_recovery": None, "recovery_minus_null": None, "null_r2": None, "verdict": "unresponsive" if not responsive else "no null",
        }
        if nulls is not None:
            nt = null_by_pol[polarity[k]]
            nrec = recovery(nt[0][:, k], {d: tr[:, k] for d, tr in zip(intervals, nt[1:])}, onset, (H, onset + 1), window)
            nv = nrec["recovery"] if nrec["r1_hz"] > 0 else [None] * len(intervals)
            diff = [None if a is None or b is None else a - b for a, b in zip(rv, nv)]
            cell.update({"null_recovery": nv, "recovery_minus_null": diff, "null_r2": nulls[k].r2})
            if responsive:
                dd = [v for v in diff if v is not None]
                dep, fac = any(v < -tol for v in dd), any(v > tol for v in dd)
                cell["verdict"] = "depression and facilitation" if dep and fac else "depression" if dep else "facilitation" if fac else "as the static LN"
        cells.append(cell)
    result: dict[str, Any] = {
        "levels": levels.as_dict(), "flash_frames": flash, "window_frames": window, "onset_frame": onset,
        "intervals_s": [d * dt for d in intervals], "intervals_frames": intervals, "cells": cells, "contrast": contrast,
    }
    result["figures"] = [_figure(result, out_dir)]
    return result


def _figure(result: dict[str, Any], out_dir: Path) -> str:
    import matplotlib

    from .plots import new_figure, save

    fig, ax = new_figure(size=(5.5, 4.0))
    cols = matplotlib.colormaps["tab10"]
    x = np.asarray(result["intervals_s"]) * 1000
    for k, c in enumerate(result["cells"]):
        if not c["responsive"]:
            continue
        y = np.array([np.nan if v is None else v for v in c["recovery"]])
        ax.plot(x, y, "o-", color=cols(k % 10), ms=3, lw=1, label=f"cell {c['id']} ({c['polarity']}): {c['verdict']}")
        if c.get("null_recovery") is not None:
            ax.plot(x, np.array([np.nan if v is None else v for v in c["null_recovery"]]), "--", color=cols(k % 10), lw=0.8)
    ax.axhline(1.0, color="0.6", ls=":", lw=1)
    ax.set_xlabel("interval between flash onsets (ms)")
    ax.set_ylabel("second response / first response")
    ax.set_title(f"Paired flashes, contrast {result['contrast']:g} (dashed: static-LN null)", fontsize=10)
    if any(c["responsive"] for c in result["cells"]):
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no cell responds to the flash", transform=ax.transAxes, ha="center")
    return save(fig, out_dir, "paired_flash_recovery.png")


def format_summary(result: dict[str, Any]) -> str:
    """One screen: recovery and the null's recovery per interval, the verdict per cell."""
    iv = result["intervals_s"]
    p = result["params"]
    lines = [f"Paired flashes: {result['flash_frames']}-frame flashes, contrast {p['contrast']:g}, polarity {p['polarity']}; "
             "recovery = R2/R1 (second response after subtracting the single-flash response); null = a static LN model of the cell fitted to flicker", "",
             f"{'cell':>6} {'R1 Hz':>7} {'50%':>8} {'90%':>8} {'verdict':>28}   recovery (null) at " + " ".join(f"{d * 1000:.0f}" for d in iv) + " ms"]
    f = lambda v: "-" if v is None else f"{v * 1000:.0f} ms"  # noqa: E731
    for c in result["cells"]:
        if not c["responsive"]:
            lines.append(f"{c['id']:>6} {c['r1_hz']:>7.1f}   unresponsive to {c['polarity']} flashes")
            continue
        nv = c.get("null_recovery") or [None] * len(iv)
        rec = " ".join(("-" if v is None else f"{v:.2f}") + ("" if n is None else f"({n:.2f})") for v, n in zip(c["recovery"], nv))
        lines.append(f"{c['id']:>6} {c['r1_hz']:>7.1f} {f(c['interval_50_s']):>8} {f(c['interval_90_s']):>8} {c['verdict']:>28}   {rec}")
    lines.append(f"verdict: recovery below (depression) or above (facilitation) the null's by more than {p['tolerance']:g} at some interval")
    return "\n".join(lines)


def cell_readout(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per cell, the numbers `probe --compare` sets side by side."""
    out = {}
    for c in result["cells"]:
        diff = [v for v in (c.get("recovery_minus_null") or []) if v is not None]
        out[int(c["id"])] = {"verdict": c["verdict"], "R1 Hz": round(c["r1_hz"], 1),
                             "50% ms": None if c["interval_50_s"] is None else round(c["interval_50_s"] * 1000),
                             "min rec-null": round(min(diff), 2) if diff else None}
    return out
