"""Omitted stimulus response (Schwartz et al., Nat Neurosci 2007; Tanaka et al., NeurIPS 2019).

Protocol
--------
For each flash period ``P`` (whole frames; by default every period whose flash rate lies in
6-20 Hz), the model sees ``history + 5`` frames of background (the training mean), then
``n_flashes`` full-field flashes of ``flash`` frames every ``P`` frames, then background: the
flash due at ``t_O = t_L + P`` (``t_L``: last flash onset) is omitted and the train stops. By
default ``n_flashes = ceil(history / P) + ref_flashes``, so the reference flashes are in
periodic steady state (the model's whole window holds the train). Flashes are bright or dark
(``polarity``); with ``auto`` each cell is analysed with the polarity whose single flash drives
it more (ON cells: bright, OFF cells: dark), since the OSR is a burst of a cell that follows the
flashes, not the rebound of a cell the flashes suppress.

Measures (per period, per cell and for the population = the mean rate over the cells' traces)
--------------------------------------------------------------------------------------------
- baseline: mean rate over the background bins before the train;
- flash peak: the largest rate in the cycles of the last ``ref_flashes`` flashes
  (flash ``k``'s cycle is bins ``t_k + 1 .. t_k + P``);
- omission peak: the largest rate in bins ``t_O + 1 .. t_O + window`` and its bin ``t*``;
- **burst** when the flashes drive the cell (``flash peak - baseline >= min_rise`` Hz) and
  ``peak - baseline > (1 + criterion) * (flash peak - baseline)``: the response after the
  omission exceeds the response to the flashes before it by the stated margin;
- latency from the last flash ``(t* - t_L) * frame_dt`` and from the expected flash
  ``(t* - t_O) * frame_dt`` (bin resolution).

Across periods, a least-squares line of latency-from-last-flash against period (slope,
intercept, Pearson r) over the periods with a burst (at least 3 needed), per cell, for the
population trace, and pooled over every (cell, period) burst. The OSR of real cells has a slope
near 1 (a fixed delay after the expected flash). An LN model with a biphasic filter cannot
produce the burst in its preferred polarity: after the train stops its drive is a tail of the
periodic sum, which never exceeds the periodic peak.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .analysis import linear_fit, omission_response
from .base import AUTO, Param, model_rates, seconds_to_frames, stimulus_levels
from .stimuli import flash_train, pulses, to_raw

NAME = "osr"
DESCRIPTION = "omitted stimulus response: periodic full-field flash trains with the last flash omitted; burst after the omission and its latency vs period"
PARAMS = (
    Param("periods", AUTO, "floats", "s", "flash periods to sweep, rounded to whole frames; auto = every whole-frame period with a flash rate of 6-20 Hz", low=0.0, high=10.0),
    Param("flash", 0.02, "float", "s", "flash duration (at least 1 frame, shorter than the period)", low=0.0, high=10.0),
    Param("contrast", 1.0, "float", "", "flash contrast magnitude (1 = the largest excursion from the mean inside the training range)", low=0.0, high=1.0, nonzero=True),
    Param("polarity", "auto", "choice", "", "flash polarity; auto = per cell, the one whose single flash drives it more", choices=("auto", "bright", "dark")),
    Param("n_flashes", AUTO, "int", "", "flashes before the omission; auto = ceil(history/period) + ref_flashes (steady state)", low=2, high=1000),
    Param("ref_flashes", 3, "int", "", "last flashes whose response is the reference for the burst criterion", low=1, high=100),
    Param("window", 0.3, "float", "s", "search window for the burst after the expected (omitted) flash", low=0.0, high=10.0),
    Param("criterion", 0.2, "float", "", "burst if peak rise > (1 + criterion) x the flash-response rise", low=0.0, high=100.0),
    Param("min_rise", 1.0, "float", "Hz", "the flashes must raise the rate by at least this above baseline for a burst to count (a cell they do not drive has no OSR)", low=0.0, high=1e6),
)

OSR_RATES_HZ = (6.0, 20.0)
SIGN = {"bright": 1.0, "dark": -1.0}


def default_periods(frame_dt: float) -> list[int]:
    """Every whole-frame period whose flash rate is within 6-20 Hz (at least 2 frames)."""
    lo = max(2, math.ceil(1.0 / (OSR_RATES_HZ[1] * frame_dt) - 1e-9))
    hi = math.floor(1.0 / (OSR_RATES_HZ[0] * frame_dt) + 1e-9)
    return list(range(lo, hi + 1))


def _periods(params: dict[str, Any], dt: float, flash: int) -> list[int]:
    if params["periods"] == AUTO:
        periods = default_periods(dt)
    else:
        periods = sorted({seconds_to_frames(p, dt, "periods", NAME, minimum=2) for p in params["periods"]})
    too_short = [p for p in periods if p <= flash]
    if too_short:
        raise ConfigError(f"period(s) of {', '.join(str(p) for p in too_short)} frames are not longer than the {flash}-frame flash", f"--param periods of probe '{NAME}'",
                          "use longer periods or a shorter flash")
    if not periods:
        raise ConfigError(f"no whole-frame period gives a 6-20 Hz flash rate at {dt * 1000:g} ms frames", f"--param periods of probe '{NAME}'", "give periods explicitly")
    return periods


def preferred_polarity(fitted: Any, levels: Any, flash: int, contrast: float, progress: bool = False) -> tuple[list[str], dict[str, list[float]]]:
    """Per cell, the flash polarity ("bright" or "dark") whose single flash evokes the larger peak rise.

    The flash comes after ``history + 5`` background frames; the rise is the peak over the
    ``history`` bins after it minus the background rate. Ties go to "bright".
    """
    H = fitted.history
    onset = H + 5
    stims = [to_raw(pulses(onset + H + 1, [onset], flash, sign * contrast), levels, fitted.frame_shape) for sign in (1.0, -1.0)]
    rises = {}
    for name, r in zip(("bright", "dark"), model_rates(fitted, stims, desc="osr polarity", progress=progress)):
        base = r[H : onset + 1].mean(0)
        rises[name] = (r[onset + 1 : onset + H + 1].max(0) - base).tolist()
    pref = ["bright" if b >= d else "dark" for b, d in zip(rises["bright"], rises["dark"])]
    return pref, rises


def run(fitted: Any, params: dict[str, Any], out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Sweep flash periods, measure the omission burst and fit latency vs period (see module docstring)."""
    dt, H = fitted.frame_dt, fitted.history
    levels = stimulus_levels(fitted)
    flash = seconds_to_frames(params["flash"], dt, "flash", NAME)
    window = seconds_to_frames(params["window"], dt, "window", NAME)
    periods = _periods(params, dt, flash)
    n_ref = int(params["ref_flashes"])
    contrast = float(params["contrast"])
    ids = fitted.cell_ids
    if params["polarity"] == "auto":
        polarity, single_rises = preferred_polarity(fitted, levels, flash, contrast, progress=False)
    else:
        polarity, single_rises = [params["polarity"]] * len(ids), None
    used = [p for p in ("bright", "dark") if p in polarity]

    stims, designs = [], []
    for P in periods:
        n = int(params["n_flashes"]) if params["n_flashes"] != AUTO else math.ceil(H / P) + n_ref
        for pol in used:
            c, onsets, info = flash_train(H, P, flash, n, contrast * SIGN[pol], post=window + 1)
            stims.append(to_raw(c, levels, fitted.frame_shape))
        designs.append((P, n, onsets, info))
    rates = iter(model_rates(fitted, stims, desc="osr", progress=progress))

    kw = dict(window=window, frame_dt=dt, n_ref=n_ref, criterion=float(params["criterion"]), min_rise=float(params["min_rise"]))
    per_period = []
    for P, n, onsets, info in designs:
        by_pol = {pol: next(rates) for pol in used}
        r = np.stack([by_pol[polarity[k]][:, k] for k in range(len(ids))], 1)  # each cell's own polarity
        pop = r.mean(1)
        cells = [{"id": cid, "polarity": polarity[k], **omission_response(r[:, k], onsets, P, info["baseline_bins"], **kw)} for k, cid in enumerate(ids)]
        t0 = max(H, onsets[-1] - P)
        seg = slice(t0, info["expected_frame"] + window + 1)
        steady = onsets[-min(n_ref, n)] + 1 - H >= onsets[0]
        per_period.append({
            "period_s": P * dt, "period_frames": P, "flash_rate_hz": 1.0 / (P * dt), "n_flashes": n, "steady_state": bool(steady),
            "onsets": onsets, "last_flash_frame": onsets[-1], "expected_frame": info["expected_frame"],
            "cells": cells,
            "population": omission_response(pop, onsets, P, info["baseline_bins"], **kw),
            "trace": {"time_from_expected_s": ((np.arange(seg.start, seg.stop) - info["expected_frame"]) * dt).tolist(),
                      "rates_hz": r[seg].T.tolist(), "population_hz": pop[seg].tolist()},
        })

    def fit(points: list[tuple[float, float]]) -> dict[str, Any]:
        return {**linear_fit([p for p, _ in points], [lat for _, lat in points]), "periods_s": [p for p, _ in points]}

    cell_summ, pooled = [], []
    for k, cid in enumerate(ids):
        pts = [(pp["period_s"], pp["cells"][k]["latency_from_last_s"]) for pp in per_period if pp["cells"][k]["burst"]]
        pooled += pts
        summ = {"id": cid, "polarity": polarity[k], "bursts": len(pts), "n_periods": len(per_period), "fit": fit(pts)}
        if single_rises is not None:
            summ["single_flash_rise_hz"] = {"bright": single_rises["bright"][k], "dark": single_rises["dark"][k]}
        cell_summ.append(summ)
    pop_pts = [(pp["period_s"], pp["population"]["latency_from_last_s"]) for pp in per_period if pp["population"]["burst"]]

    result: dict[str, Any] = {
        "levels": levels.as_dict(),
        "flash_frames": flash, "window_frames": window, "ref_flashes": n_ref,
        "criterion_text": f"burst if the flashes drive the cell (flash peak - baseline >= {kw['min_rise']:g} Hz) and "
                          f"(omission peak - baseline) > {1 + kw['criterion']:g} x (flash peak - baseline); "
                          "latency = (peak bin - flash onset frame) x frame_dt; fit: latency from last flash vs period over periods with a burst",
        "periods": per_period,
        "cells": cell_summ,
        "population": {"bursts": len(pop_pts), "n_periods": len(per_period), "fit": fit(pop_pts)},
        "pooled": {"bursts": len(pooled), "fit": fit(pooled)},
    }
    result["figures"] = _figures(result, ids, out_dir)
    return result


def _figures(result: dict[str, Any], ids: list[int], out_dir: Path) -> list[str]:
    import matplotlib

    from .plots import new_figure, panel_grid, panel_labels, save

    labels = panel_labels(ids)
    fig, axes = panel_grid(len(labels))
    periods = result["periods"]
    cmap = matplotlib.colormaps["viridis"]
    for j, (ax, label) in enumerate(zip(axes, labels)):
        is_pop = label == "population"
        for i, pp in enumerate(periods):
            col = cmap(i / max(1, len(periods) - 1))
            t = np.asarray(pp["trace"]["time_from_expected_s"]) * 1000
            y = pp["trace"]["population_hz"] if is_pop else pp["trace"]["rates_hz"][j]
            ax.plot(t, y, color=col, lw=1, label=f"{pp['period_s'] * 1000:.0f} ms" if j == 0 else None)
            res = pp["population"] if is_pop else pp["cells"][j]
            if res["burst"]:
                ax.plot([res["latency_from_expected_s"] * 1000], [res["omission_peak_hz"]], "v", color=col, ms=4)
        ax.axvline(0, color="k", ls="--", lw=0.8)
        ax.set_title(label if is_pop else f"{label} ({result['cells'][j]['polarity']})", fontsize=9)
        ax.set_xlabel("time from omitted flash (ms)", fontsize=8)
        ax.set_ylabel("rate (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, title="period", title_fontsize=6, ncol=2)
    names = [save(fig, out_dir, "osr_responses.png")]

    fig, ax = new_figure(size=(5.5, 4.2))
    cols = matplotlib.colormaps["tab10"]
    xs = np.array([pp["period_s"] for pp in periods]) * 1000
    for k, cs in enumerate(result["cells"]):
        pts = [(pp["period_s"] * 1000, pp["cells"][k]["latency_from_last_s"] * 1000) for pp in periods if pp["cells"][k]["burst"]]
        if not pts:
            continue
        col = cols(k % 10)
        ax.plot(*zip(*pts), "o", color=col, ms=4, label=f"cell {cs['id']}" + (f" (slope {cs['fit']['slope']:.2f})" if cs["fit"]["slope"] is not None else ""))
        if cs["fit"]["slope"] is not None:
            ax.plot(xs, cs["fit"]["slope"] * xs + cs["fit"]["intercept"] * 1000, color=col, lw=0.8)
    pf = result["population"]["fit"]
    pts = [(pp["period_s"] * 1000, pp["population"]["latency_from_last_s"] * 1000) for pp in periods if pp["population"]["burst"]]
    if pts:
        ax.plot(*zip(*pts), "s", color="k", ms=5, label="population" + (f" (slope {pf['slope']:.2f}, r {pf['r']:.2f})" if pf["slope"] is not None and pf["r"] is not None else ""))
        if pf["slope"] is not None:
            ax.plot(xs, pf["slope"] * xs + pf["intercept"] * 1000, color="k", lw=1.5)
    ax.plot(xs, xs, color="0.6", ls=":", lw=1, label="latency = period")
    if not pts and not any(c["bursts"] for c in result["cells"]):
        ax.text(0.5, 0.5, "no omission burst at any period", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel("flash period (ms)")
    ax.set_ylabel("burst latency from last flash (ms)")
    ax.legend(fontsize=7)
    names.append(save(fig, out_dir, "osr_latency.png"))
    return names


def format_summary(result: dict[str, Any]) -> str:
    """One screen: the sweep, bursts per cell, and the latency-vs-period fits."""
    pp = result["periods"]
    dt = pp[0]["period_s"] / pp[0]["period_frames"]
    lines = [
        f"Omitted stimulus response: {len(pp)} periods {pp[0]['period_s'] * 1000:.0f}-{pp[-1]['period_s'] * 1000:.0f} ms "
        f"({pp[-1]['flash_rate_hz']:.1f}-{pp[0]['flash_rate_hz']:.1f} Hz), {result['flash_frames']}-frame flashes ({result['flash_frames'] * dt * 1000:g} ms), "
        f"contrast {result['params']['contrast']:g}, polarity {result['params']['polarity']}",
        f"criterion: {result['criterion_text']}",
        "",
        f"{'cell':>10} {'bursts':>8} {'slope':>7} {'intercept':>10} {'r':>6}   latency from last flash (ms) per period",
    ]

    def row(name: str, summ: dict[str, Any], per: list[dict[str, Any]]) -> str:
        f = summ["fit"]
        s = "-" if f["slope"] is None else f"{f['slope']:.2f}"
        b = "-" if f["intercept"] is None else f"{f['intercept'] * 1000:.0f} ms"
        r = "-" if f["r"] is None else f"{f['r']:.2f}"
        lats = " ".join(f"{x['latency_from_last_s'] * 1000:.0f}" if x["burst"] else "." for x in per)
        return f"{name:>10} {summ['bursts']:>4}/{summ['n_periods']:<3} {s:>7} {b:>10} {r:>6}   {lats}"

    for k, cs in enumerate(result["cells"]):
        lines.append(row(f"{cs['id']} {cs['polarity'][0].upper()}", cs, [p["cells"][k] for p in pp]))
    lines.append(row("population", result["population"], [p["population"] for p in pp]))
    f = result["pooled"]["fit"]
    if f["slope"] is not None:
        lines.append(f"pooled over {result['pooled']['bursts']} cell bursts: slope {f['slope']:.2f}, intercept {f['intercept'] * 1000:.0f} ms, r {f['r'] if f['r'] is None else round(f['r'], 2)}")
    else:
        lines.append(f"pooled: {result['pooled']['bursts']} cell bursts, too few for a fit")
    lines.append("('.' = no burst at that period; B/D = bright/dark flashes)")
    return "\n".join(lines)
