"""Step (flash) response: ON/OFF polarity, latency and transience of each cell.

Protocol
--------
``history + 5`` frames of background (the training mean), then a bright full-field step of
``+contrast`` for ``duration``, background for ``duration``, a dark step of ``-contrast`` for
``duration``, background for ``duration``. Four transitions: bright onset and dark offset are
light increments; bright offset and dark onset are decrements.

Measures (per cell)
-------------------
- baseline: mean rate over the background bins before the first step;
- for each transition at frame ``e``: the peak rise in bins ``e + 1 .. e + duration`` above the
  rate in bin ``e`` (the last bin the transition cannot reach yet, so a sustained response to
  the previous step is not counted as a response to this one) and its latency ``(peak bin - e)
  * frame_dt`` (bin resolution);
- ON strength = the larger rise to the two increments, OFF strength = the larger rise to the
  two decrements (negative rises count as 0); polarity index ``PI = (ON - OFF) / (ON + OFF)``;
- class: ``none`` when neither strength reaches ``min_rise`` Hz, else ``ON`` if ``PI >
  pi_threshold``, ``OFF`` if ``PI < -pi_threshold``, otherwise ``ON-OFF``;
- latency: from the onset of the preferred step (bright for ON, dark for OFF, the larger for
  ON-OFF) to the peak; sustained index: (mean rate over the last half of that step - baseline)
  / peak rise (near 0 transient, near 1 sustained).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .analysis import peak_in
from .base import Param, model_rates, seconds_to_frames, stimulus_levels
from .stimuli import to_raw

NAME = "step"
DESCRIPTION = "full-field bright and dark steps from the mean: ON/OFF polarity index and class, response latency and transience per cell"
PARAMS = (
    Param("duration", 0.5, "float", "s", "duration of each step and of each background gap", low=0.0, high=60.0),
    Param("contrast", 1.0, "float", "", "step contrast magnitude (1 = the largest excursion from the mean inside the training range)", low=0.0, high=1.0, nonzero=True),
    Param("min_rise", 1.0, "float", "Hz", "a cell needs a peak rise of at least this to be classed ON/OFF/ON-OFF", low=0.0, high=1e6),
    Param("pi_threshold", 0.33, "float", "", "|polarity index| above this is ON or OFF, below it ON-OFF", low=0.0, high=1.0),
)

EVENTS = ("bright_on", "bright_off", "dark_on", "dark_off")


def classify(on: float, off: float, min_rise: float, threshold: float) -> tuple[str, float | None]:
    """Class and polarity index from ON and OFF strengths (see module docstring)."""
    on, off = max(on, 0.0), max(off, 0.0)
    pi = (on - off) / (on + off) if on + off > 0 else None
    if max(on, off) < min_rise or pi is None:
        return "none", pi
    if pi > threshold:
        return "ON", pi
    if pi < -threshold:
        return "OFF", pi
    return "ON-OFF", pi


def analyse_steps(rate: np.ndarray, events: dict[str, int], baseline_bins: tuple[int, int], duration: int, frame_dt: float, min_rise: float, pi_threshold: float) -> dict[str, Any]:
    """Step measures of one trace ``(T,)`` in Hz given the event frames (see module docstring)."""
    base = float(np.mean(rate[baseline_bins[0] : baseline_bins[1]]))
    ev = {}
    for name, e in events.items():
        peak, b = peak_in(rate, e + 1, e + duration + 1)
        before = float(rate[e])  # the last bin the transition cannot reach yet
        ev[name] = {"frame": e, "before_hz": before, "peak_hz": peak, "rise_hz": peak - before, "latency_s": (b - e) * frame_dt}
    on = max(ev["bright_on"]["rise_hz"], ev["dark_off"]["rise_hz"])
    off = max(ev["bright_off"]["rise_hz"], ev["dark_on"]["rise_hz"])
    cls, pi = classify(on, off, min_rise, pi_threshold)
    pref = "bright_on" if cls == "ON" or (cls in ("ON-OFF", "none") and ev["bright_on"]["rise_hz"] >= ev["dark_on"]["rise_hz"]) else "dark_on"
    e = events[pref]
    rise = ev[pref]["rise_hz"]
    late = float(np.mean(rate[e + 1 + duration // 2 : e + duration + 1]))
    return {
        "baseline_hz": base, "events": ev, "on_strength_hz": on, "off_strength_hz": off, "polarity_index": pi, "class": cls,
        "preferred_step": pref.split("_")[0], "latency_s": ev[pref]["latency_s"] if cls != "none" else None,
        "sustained_index": (late - base) / rise if cls != "none" and rise > 0 else None,
    }


def run(fitted: Any, params: dict[str, Any], out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Show bright and dark steps and classify each cell (see module docstring)."""
    dt, H = fitted.frame_dt, fitted.history
    levels = stimulus_levels(fitted)
    D = seconds_to_frames(params["duration"], dt, "duration", NAME, minimum=2)
    c = float(params["contrast"])
    lead = H + 5
    events = {"bright_on": lead, "bright_off": lead + D, "dark_on": lead + 2 * D, "dark_off": lead + 3 * D}
    contrast = np.zeros(lead + 4 * D + 1)
    contrast[lead : lead + D] = c
    contrast[lead + 2 * D : lead + 3 * D] = -c
    (rate,) = model_rates(fitted, [to_raw(contrast, levels, fitted.frame_shape)], desc="step", progress=progress)
    cells = [{"id": cid, **analyse_steps(rate[:, k], events, (H, lead + 1), D, dt, float(params["min_rise"]), float(params["pi_threshold"]))}
             for k, cid in enumerate(fitted.cell_ids)]
    counts = {k: sum(1 for x in cells if x["class"] == k) for k in ("ON", "OFF", "ON-OFF", "none")}
    result: dict[str, Any] = {
        "levels": levels.as_dict(), "duration_frames": D, "events": events, "classes": counts, "cells": cells,
        "trace": {"time_s": ((np.arange(H, rate.shape[0]) - lead) * dt).tolist(), "contrast": contrast[H:].tolist(), "rates_hz": rate[H:].T.tolist()},
    }
    result["figures"] = [_figure(result, fitted.cell_ids, out_dir)]
    return result


def _figure(result: dict[str, Any], ids: list[int], out_dir: Path) -> str:
    from .plots import panel_grid, panel_labels, save

    labels = panel_labels(ids, with_population=False)
    fig, axes = panel_grid(len(labels))
    t = np.asarray(result["trace"]["time_s"])
    c = np.asarray(result["trace"]["contrast"])
    for j, ax in enumerate(axes):
        y = np.asarray(result["trace"]["rates_hz"][j])
        ax.plot(t, y, color="k", lw=1)
        lo, hi = np.nanmin(y), np.nanmax(y)
        ax.fill_between(t, lo, hi, where=c > 0, color="gold", alpha=0.25, step="post", lw=0)
        ax.fill_between(t, lo, hi, where=c < 0, color="0.5", alpha=0.25, step="post", lw=0)
        cell = result["cells"][j]
        pi = "-" if cell["polarity_index"] is None else f"{cell['polarity_index']:+.2f}"
        ax.set_title(f"{labels[j]}: {cell['class']} (PI {pi})", fontsize=9)
        ax.set_xlabel("time from bright step (s)", fontsize=8)
        ax.set_ylabel("rate (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
    return save(fig, out_dir, "step_responses.png")


def format_summary(result: dict[str, Any]) -> str:
    """One screen: class, polarity index, latency and sustained index per cell."""
    p = result["params"]
    cl = result["classes"]
    lines = [f"Step response: bright and dark full-field steps of contrast {p['contrast']:g}, {p['duration']:g} s each "
             f"({cl['ON']} ON, {cl['OFF']} OFF, {cl['ON-OFF']} ON-OFF, {cl['none']} unresponsive)", "",
             f"{'cell':>6} {'class':>7} {'PI':>6} {'ON Hz':>7} {'OFF Hz':>7} {'latency':>9} {'sustained':>9}"]
    for c in result["cells"]:
        pi = "-" if c["polarity_index"] is None else f"{c['polarity_index']:+.2f}"
        lat = "-" if c["latency_s"] is None else f"{c['latency_s'] * 1000:.0f} ms"
        sus = "-" if c["sustained_index"] is None else f"{c['sustained_index']:.2f}"
        lines.append(f"{c['id']:>6} {c['class']:>7} {pi:>6} {c['on_strength_hz']:>7.1f} {c['off_strength_hz']:>7.1f} {lat:>9} {sus:>9}")
    lines.append("PI = (ON - OFF) / (ON + OFF) of the peak rises to light increments vs decrements; latency to the peak after the preferred step")
    return "\n".join(lines)


def cell_readout(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per cell, the numbers `probe --compare` sets side by side."""
    return {int(c["id"]): {"class": c["class"], "PI": None if c["polarity_index"] is None else round(c["polarity_index"], 2),
                           "latency ms": None if c["latency_s"] is None else round(c["latency_s"] * 1000),
                           "sustained": None if c["sustained_index"] is None else round(c["sustained_index"], 2)} for c in result["cells"]}
