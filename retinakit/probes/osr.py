"""Omitted stimulus response (Schwartz et al., Nat Neurosci 2007; Tanaka et al., NeurIPS 2019).

Protocol
--------
For each flash period ``P``, the system sees ``history + 5`` frames of background (the
training mean), then ``n_flashes`` full-field flashes of ``flash`` s every ``P``, then
background: the flash due at ``t_O = t_L + P`` (``t_L``: last flash onset) is omitted. Two
controls share every frame up to ``t_O``: the same train **continued** without the omission
(same phase), and a **single flash**. By default ``n_flashes = ceil(history / P) +
ref_flashes`` (the window of a fitted model holds the train: periodic steady state). Flashes
are bright or dark (``polarity``; ``auto``: per cell the polarity whose single flash drives it
more, since the OSR is a burst of a cell that follows the flashes).

Periods: ``auto`` = every whole-frame period with a flash rate of 6-20 Hz when that gives at
least :data:`MIN_WHOLE_FRAME_PERIODS` periods (100 Hz models: 5..16 frames); otherwise (e.g. a
30 Hz recording, which has only 4 whole-frame periods in that range) 10 periods evenly spaced
over 50-167 ms with **sub-frame flash timing**: a flash from ``t0`` to ``t0 + flash`` shows in
each frame as its time-average over the frame (the flash is at least one frame long), so flash
onsets lie at exact times. The result says which timing was used and its resolution.

Null: a static LN model of each cell (:mod:`retinakit.probes.lnnull`), fitted to the system's
own response to full-field Gaussian flicker, is run through the identical stimuli.

Measures (per period, per cell, and for the population = the mean over the cells' traces)
----------------------------------------------------------------------------------------
- ``S``: the single-flash rise (peak - baseline, Hz); the cell is **driven** when ``S >=
  min_drive`` x the s.d. of its response to the flicker;
- omission peak: the largest rate in bins ``t_O + 1 .. t_O + window`` of the omitted train, and
  the continued train's largest rate in the same bins; ``excess = omission peak - continued
  peak`` (Hz): what the omission adds over the train going on, at the same phase;
- the null's ``excess`` for the same stimuli;
- **burst** when the cell is driven, ``excess > criterion x S`` and ``excess - null excess >
  criterion x S``: the omission response beats the continued train by a margin of the
  single-flash response, and a static LN model of the cell does not do the same; and the
  omission peak is a peak (the rate falls in the bin after it): a rate still rising at the end
  of the window is a slow ramp after the train, not a burst, and its "latency" would be the
  window's end (period + window: slope 1 for any ramp);
- latency from the last flash: peak position (parabola through the peak bin and its
  neighbours) minus the last onset, in s; and from the expected flash.

Per cell: **OSR present** when bursts occur at ``>= max(3, half of the periods)`` periods; the
line ``latency = slope x period + intercept`` over the burst periods with a ``confidence``
interval on the slope (Student t, n - 2 degrees of freedom) and Pearson r. The OSR of real cells
has a slope near 1 (a fixed delay after the expected flash). Population: counts and the
population trace's own fit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .analysis import linear_fit, parabolic_peak, peak_in
from .base import AUTO, Param, model_rates, seconds_to_frames, stimulus_levels
from .stimuli import pulses, to_raw

NAME = "osr"
DESCRIPTION = "omitted stimulus response: periodic full-field flash trains with one flash omitted, against the same train continued and a static-LN null; per-cell verdict and latency-vs-period slope with a confidence interval"
PARAMS = (
    Param("periods", AUTO, "floats", "s", "flash periods to sweep; auto = every whole-frame period with a flash rate of 6-20 Hz, or 10 periods of 50-167 ms with sub-frame timing when there are fewer than 8 such periods", low=0.0, high=10.0),
    Param("timing", "auto", "choice", "", "flash timing: frames (periods and flashes rounded to whole frames), subframe (exact onsets, frames show the time-averaged flash), auto (see periods)", choices=("auto", "frames", "subframe")),
    Param("flash", 0.02, "float", "s", "flash duration (rounded to whole frames with frames timing; at least 1 frame)", low=0.0, high=10.0),
    Param("contrast", 1.0, "float", "", "flash contrast magnitude (1 = the largest excursion from the mean inside the training range)", low=0.0, high=1.0, nonzero=True),
    Param("polarity", "auto", "choice", "", "flash polarity; auto = per cell, the one whose single flash drives it more", choices=("auto", "bright", "dark")),
    Param("n_flashes", AUTO, "int", "", "flashes before the omission; auto = ceil(history/period) + ref_flashes (steady state)", low=2, high=1000),
    Param("ref_flashes", 3, "int", "", "flashes added to fill the history (auto n_flashes); their cycles give the reported flash peak", low=1, high=100),
    Param("window", 0.3, "float", "s", "search window for the burst after the expected (omitted) flash", low=0.0, high=10.0),
    Param("criterion", 0.25, "float", "", "burst if the omission peak beats the continued train's peak, and the null's excess, by more than this x the single-flash rise", low=0.0, high=100.0),
    Param("min_drive", 0.25, "float", "", "a cell is driven when its single-flash rise is at least this x the s.d. of its response to flicker", low=0.0, high=1e6),
    Param("null", "flicker", "choice", "", "static-LN null fitted to the response to full-field flicker, or none", choices=("flicker", "none")),
    Param("confidence", 0.95, "float", "", "confidence level of the slope interval", low=0.5, high=0.999),
)

OSR_RATES_HZ = (6.0, 20.0)
SUBFRAME_PERIODS_S = (0.05, 1.0 / 6.0)
N_SUBFRAME_PERIODS = 10
MIN_WHOLE_FRAME_PERIODS = 8
SIGN = {"bright": 1.0, "dark": -1.0}


def default_periods(frame_dt: float) -> list[int]:
    """Every whole-frame period whose flash rate is within 6-20 Hz (at least 2 frames)."""
    lo = max(2, math.ceil(1.0 / (OSR_RATES_HZ[1] * frame_dt) - 1e-9))
    hi = math.floor(1.0 / (OSR_RATES_HZ[0] * frame_dt) + 1e-9)
    return list(range(lo, hi + 1))


def sweep(params: dict[str, Any], dt: float) -> tuple[list[float], float, str]:
    """Periods (in frames, fractional with sub-frame timing), flash length (frames) and the timing used."""
    timing = params["timing"]
    whole = default_periods(dt)
    if timing == AUTO:
        timing = "frames" if (params["periods"] != AUTO or len(whole) >= MIN_WHOLE_FRAME_PERIODS) else "subframe"
    if timing == "frames":
        flash = float(seconds_to_frames(params["flash"], dt, "flash", NAME))
        if params["periods"] == AUTO:
            periods = [float(p) for p in whole]
        else:
            periods = sorted({float(seconds_to_frames(p, dt, "periods", NAME, minimum=2)) for p in params["periods"]})
    else:
        flash = max(1.0, float(params["flash"]) / dt)
        secs = np.linspace(*SUBFRAME_PERIODS_S, N_SUBFRAME_PERIODS) if params["periods"] == AUTO else sorted(set(float(p) for p in params["periods"]))
        periods = [float(p) / dt for p in secs]
    too_short = [p for p in periods if p <= flash]
    if too_short:
        raise ConfigError(f"period(s) of {', '.join(f'{p * dt * 1000:g} ms' for p in too_short)} are not longer than the {flash * dt * 1000:g}-ms flash", f"--param periods of probe '{NAME}'",
                          "use longer periods or a shorter flash")
    if not periods:
        raise ConfigError(f"no whole-frame period gives a 6-20 Hz flash rate at {dt * 1000:g} ms frames", f"--param periods of probe '{NAME}'", "give periods explicitly or use timing=subframe")
    return periods, flash, timing


def flash_trace(n_frames: int, onsets: list[float], duration: float, contrast: float) -> np.ndarray:
    """Full-field contrast per frame for flashes ``[onset, onset + duration)`` (in frames, fractional):
    each frame shows the time-average of the flashes over it (whole-frame onsets give exact pulses)."""
    edges = np.arange(int(n_frames) + 1, dtype=np.float64)
    c = np.zeros(int(n_frames))
    for o in onsets:
        c += np.clip(np.minimum(edges[1:], o + duration) - np.maximum(edges[:-1], o), 0.0, 1.0)
    return contrast * np.clip(c, 0.0, 1.0)


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


def _omission(r_o: np.ndarray, r_c: np.ndarray, n_o: np.ndarray | None, n_c: np.ndarray | None, s_rise: float, driven: bool, base_bins: tuple[int, int],
              onsets: list[float], P: float, window: int, dt: float, criterion: float, ref: int) -> dict[str, Any]:
    """Omission measures of one trace against its continued-train control and null (see module docstring)."""
    last = onsets[-1]
    expected = last + P
    b0 = int(math.floor(expected)) + 1
    base = float(np.nanmean(r_o[base_bins[0] : base_bins[1]]))
    peak, pbin = peak_in(r_o, b0, b0 + window)
    cont, _ = peak_in(r_c, b0, b0 + window)
    excess = peak - cont
    null_excess = None
    if n_o is not None and n_c is not None:
        null_excess = peak_in(n_o, b0, b0 + window)[0] - peak_in(n_c, b0, b0 + window)[0]
    margin = criterion * s_rise
    falls = bool(pbin >= 0 and pbin + 1 < r_o.shape[0] and r_o[pbin + 1] < peak)  # a peak, not a ramp cut off by the window
    burst = bool(driven and falls and np.isfinite(excess) and excess > margin and (null_excess is None or excess - null_excess > margin))
    refs = onsets[-max(1, min(ref, len(onsets))) :]
    flash_peak = max(peak_in(r_o, int(math.floor(o)) + 1, int(math.floor(o + P)) + 1)[0] for o in refs)
    pos = parabolic_peak(r_o, pbin) if pbin >= 0 else float("nan")
    return {
        "baseline_hz": base, "flash_peak_hz": flash_peak, "single_flash_rise_hz": s_rise, "driven": bool(driven),
        "omission_peak_hz": peak, "continued_peak_hz": cont, "excess_hz": excess, "null_excess_hz": null_excess,
        "peak_falls": falls, "burst": burst, "ratio": (peak - base) / s_rise if s_rise > 0 else None, "peak_bin": pbin,
        "latency_from_last_s": (pos - last) * dt, "latency_from_expected_s": (pos - expected) * dt,
    }


def slope_fit(points: list[tuple[float, float]], confidence: float) -> dict[str, Any]:
    """Latency-vs-period line with a Student-t confidence interval on the slope."""
    from scipy import stats

    out = {**linear_fit([p for p, _ in points], [lat for _, lat in points]), "periods_s": [p for p, _ in points], "slope_ci": None}
    n = len(points)
    if out["slope"] is not None and n >= 3:
        x = np.array([p for p, _ in points])
        y = np.array([lat for _, lat in points])
        resid = y - (out["slope"] * x + out["intercept"])
        sxx = float(((x - x.mean()) ** 2).sum())
        se = math.sqrt(float((resid**2).sum()) / max(n - 2, 1) / sxx) if sxx > 0 else float("nan")
        half = float(stats.t.ppf(0.5 + confidence / 2, max(n - 2, 1))) * se
        out["slope_ci"] = [out["slope"] - half, out["slope"] + half]
        out["slope_se"] = se
    return out


def run(fitted: Any, params: dict[str, Any], out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Sweep flash periods against the continued train and the static-LN null (see module docstring)."""
    dt, H = fitted.frame_dt, fitted.history
    levels = stimulus_levels(fitted)
    periods, flash, timing = sweep(params, dt)
    window = seconds_to_frames(params["window"], dt, "window", NAME)
    n_ref = int(params["ref_flashes"])
    contrast = float(params["contrast"])
    ids = fitted.cell_ids
    if params["polarity"] == "auto":
        polarity, _ = preferred_polarity(fitted, levels, max(1, int(round(flash))), contrast, progress=False)
    else:
        polarity = [params["polarity"]] * len(ids)
    used = [p for p in ("bright", "dark") if p in polarity]
    nulls, flicker_sd = (None, None)
    if params["null"] == "flicker":
        from .lnnull import flicker_nulls

        nulls, flicker_sd = flicker_nulls(fitted, levels, progress=False)

    lead = H + 5
    contrasts, designs = [], []
    for pol in used:  # the single flash
        contrasts.append(flash_trace(lead + H + window + 1, [float(lead)], flash, contrast * SIGN[pol]))
    for P in periods:
        n = int(params["n_flashes"]) if params["n_flashes"] != AUTO else math.ceil(H / P) + n_ref
        onsets = [lead + k * P for k in range(n)]
        expected = onsets[-1] + P
        T = int(math.floor(expected)) + window + 2
        more = [expected + k * P for k in range(int(math.ceil((window + 2) / P)) + 1)]
        for pol in used:
            contrasts.append(flash_trace(T, onsets, flash, contrast * SIGN[pol]))
            contrasts.append(flash_trace(T, onsets + more, flash, contrast * SIGN[pol]))
        designs.append((P, n, onsets))
    rates = model_rates(fitted, [to_raw(c, levels, fitted.frame_shape) for c in contrasts], desc="osr", progress=progress)
    null_r = [np.stack([nl.rate(c) for nl in nulls], 1) for c in contrasts] if nulls is not None else [None] * len(contrasts)
    it = iter(zip(rates, null_r))
    single = {pol: next(it) for pol in used}
    min_drive = float(params["min_drive"])
    crit = float(params["criterion"])
    s_rise, driven = [], []
    for k in range(len(ids)):
        r = single[polarity[k]][0][:, k]
        rise = float(np.nanmax(r[lead + 1 : lead + H + 1]) - np.nanmean(r[H : lead + 1]))
        s_rise.append(rise)
        scale = float(flicker_sd[k]) if flicker_sd is not None else 0.0
        driven.append(bool(rise > 0 and rise >= min_drive * scale))
    pop_single = np.stack([single[polarity[k]][0][:, k] for k in range(len(ids))], 1).mean(1)
    pop_rise = float(np.nanmax(pop_single[lead + 1 : lead + H + 1]) - np.nanmean(pop_single[H : lead + 1]))

    per_period = []
    for P, n, onsets in designs:
        by_pol = {pol: (next(it), next(it)) for pol in used}  # ((omitted, null), (continued, null))
        pick = lambda j: np.stack([by_pol[polarity[k]][j][0][:, k] for k in range(len(ids))], 1)  # noqa: E731
        r_o, r_c = pick(0), pick(1)
        if nulls is not None:
            pickn = lambda j: np.stack([by_pol[polarity[k]][j][1][:, k] for k in range(len(ids))], 1)  # noqa: E731
            n_o, n_c = pickn(0), pickn(1)
        else:
            n_o = n_c = None
        base_bins = (H, lead + 1)
        args = dict(base_bins=base_bins, onsets=onsets, P=P, window=window, dt=dt, criterion=crit, ref=n_ref)
        cells = [{"id": cid, "polarity": polarity[k], **_omission(r_o[:, k], r_c[:, k], None if n_o is None else n_o[:, k], None if n_c is None else n_c[:, k],
                                                                   s_rise[k], driven[k], **args)} for k, cid in enumerate(ids)]
        pop = _omission(r_o.mean(1), r_c.mean(1), None if n_o is None else n_o.mean(1), None if n_c is None else n_c.mean(1), pop_rise, pop_rise > 0, **args)
        expected = onsets[-1] + P
        t0 = max(H, int(math.floor(onsets[-1] - 2 * P)))
        seg = slice(t0, int(math.floor(expected)) + window + 1)
        tt = ((np.arange(seg.start, seg.stop) - expected) * dt).tolist()
        per_period.append({
            "period_s": P * dt, "period_frames": P, "flash_rate_hz": 1.0 / (P * dt), "n_flashes": n, "steady_state": bool(onsets[0] <= onsets[-1] + 1 - H),
            "onsets": onsets, "last_flash_frame": onsets[-1], "expected_frame": expected, "cells": cells, "population": pop,
            "trace": {"time_from_expected_s": tt, "rates_hz": r_o[seg].T.tolist(), "continued_hz": r_c[seg].T.tolist(), "population_hz": r_o[seg].mean(1).tolist(),
                      "flash_times_s": [(o - expected) * dt for o in onsets if o >= seg.start - flash]},
        })

    conf = float(params["confidence"])
    need = max(3, math.ceil(len(per_period) / 2))
    cell_summ = []
    for k, cid in enumerate(ids):
        pts = [(pp["period_s"], pp["cells"][k]["latency_from_last_s"]) for pp in per_period if pp["cells"][k]["burst"]]
        fit = slope_fit(pts, conf)
        summ = {"id": cid, "polarity": polarity[k], "bursts": len(pts), "n_periods": len(per_period), "osr": len(pts) >= need, "fit": fit,
                "driven": driven[k], "single_flash_rise_hz": s_rise[k], "flicker_sd_hz": None if flicker_sd is None else float(flicker_sd[k]),
                "null_r2": None if nulls is None else nulls[k].r2}
        cell_summ.append(summ)
    pop_pts = [(pp["period_s"], pp["population"]["latency_from_last_s"]) for pp in per_period if pp["population"]["burst"]]
    pooled = [(pp["period_s"], pp["cells"][k]["latency_from_last_s"]) for k, cs in enumerate(cell_summ) if cs["osr"] for pp in per_period if pp["cells"][k]["burst"]]
    notes = []
    if timing == "frames":
        notes.append(f"whole-frame timing: periods and flashes are multiples of the {dt * 1000:g}-ms frame ({len(periods)} periods)")
    else:
        notes.append(f"sub-frame timing: exact flash onsets, each {dt * 1000:g}-ms frame shows the time-averaged flash")
    if len(periods) < 6:
        notes.append(f"only {len(periods)} periods: slopes are coarse")
    nulls_bad = [cs["id"] for cs in cell_summ if cs["null_r2"] is not None and cs["null_r2"] < 0.5]
    if nulls_bad:
        notes.append(f"the static-LN null explains < 50 % of the flicker response of cell(s) {', '.join(map(str, nulls_bad))}: for them the null is weak")
    result: dict[str, Any] = {
        "levels": levels.as_dict(), "timing": timing, "flash_frames": flash, "window_frames": window, "ref_flashes": n_ref,
        "criterion_text": f"burst if driven (single-flash rise >= {min_drive:g} x flicker response s.d.), omission peak - continued-train peak (same bins) > "
                          f"{crit:g} x single-flash rise, that excess beats the static-LN null's by the same margin, and the rate falls after the peak; OSR present at >= {need}/{len(per_period)} periods",
        "periods": per_period, "cells": cell_summ,
        "population": {"bursts": len(pop_pts), "n_periods": len(per_period), "fit": slope_fit(pop_pts, conf),
                       "n_osr": sum(c["osr"] for c in cell_summ), "n_cells": len(cell_summ), "n_driven": sum(c["driven"] for c in cell_summ)},
        "pooled": {"bursts": len(pooled), "fit": slope_fit(pooled, conf), "over": "cells with an OSR"},
        "notes": notes,
    }
    result["figures"] = _figures(result, ids, out_dir)
    return result


def _figures(result: dict[str, Any], ids: list[int], out_dir: Path) -> list[str]:
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from .plots import new_figure, panel_grid, panel_labels, save

    labels = panel_labels(ids)
    fig, axes = panel_grid(len(labels))
    periods = result["periods"]
    cmap = matplotlib.colormaps["viridis"]
    ms = [pp["period_s"] * 1000 for pp in periods]
    norm = Normalize(min(ms), max(ms) if max(ms) > min(ms) else min(ms) + 1)
    for j, (ax, label) in enumerate(zip(axes, labels)):
        is_pop = label == "population"
        top = 0.0
        for pp in periods:
            col = cmap(norm(pp["period_s"] * 1000))
            t = np.asarray(pp["trace"]["time_from_expected_s"]) * 1000
            y = np.asarray(pp["trace"]["population_hz"] if is_pop else pp["trace"]["rates_hz"][j])
            top = max(top, float(np.nanmax(y)) if y.size else 0.0)
            ax.plot(t, y, color=col, lw=1)
            res = pp["population"] if is_pop else pp["cells"][j]
            if res["burst"]:
                ax.plot([res["latency_from_expected_s"] * 1000], [res["omission_peak_hz"]], "v", color=col, ms=4)
        for pp in periods:  # flash times of each period, as ticks under the traces
            col = cmap(norm(pp["period_s"] * 1000))
            for ft in pp["trace"]["flash_times_s"]:
                ax.plot([ft * 1000, ft * 1000], [-0.06 * max(top, 1e-9), -0.01 * max(top, 1e-9)], color=col, lw=1)
        ax.axvline(0, color="k", ls="--", lw=0.8)
        if is_pop:
            title = "population (mean rate)"
        else:
            c = result["cells"][j]
            title = f"{label} ({c['polarity']}): " + ("OSR" if c["osr"] else "no OSR") + f" {c['bursts']}/{c['n_periods']}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time from omitted flash (ms)", fontsize=8)
        ax.set_ylabel("rate (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Omitted flash: responses to the train with the omission, one colour per period (ticks: flashes, dashed: omitted flash, v: burst)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 0.96))
    cax = fig.add_axes((0.92, 0.25, 0.015, 0.5))
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, label="flash period (ms)")
    names = [save(fig, out_dir, "osr_responses.png", tight=False)]

    fig, ax = new_figure(size=(6.0, 4.6))
    cols = matplotlib.colormaps["tab10"]
    xs = np.array(ms)
    for k, cs in enumerate(result["cells"]):
        pts = [(pp["period_s"] * 1000, pp["cells"][k]["latency_from_last_s"] * 1000) for pp in periods if pp["cells"][k]["burst"]]
        if not pts:
            continue
        col = cols(k % 10)
        f = cs["fit"]
        lab = f"cell {cs['id']}" + (f" slope {f['slope']:.2f}" if f["slope"] is not None else "") + ("" if cs["osr"] else " (no OSR)")
        ax.plot(*zip(*pts), "o", color=col, ms=4, label=lab, alpha=1.0 if cs["osr"] else 0.4)
        if f["slope"] is not None:
            ax.plot(xs, f["slope"] * xs + f["intercept"] * 1000, color=col, lw=0.8)
    pf = result["pooled"]["fit"]
    if pf["slope"] is not None:
        ci = pf.get("slope_ci")
        ax.plot(xs, pf["slope"] * xs + pf["intercept"] * 1000, color="k", lw=2,
                label=f"pooled fit: slope {pf['slope']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + (f", r {pf['r']:.2f}" if pf["r"] is not None else ""))
    ax.plot(xs, xs, color="0.6", ls=":", lw=1, label="latency = period")
    if not any(c["bursts"] for c in result["cells"]):
        ax.text(0.5, 0.5, "no omission burst at any period", transform=ax.transAxes, ha="center", va="center")
    pop = result["population"]
    ax.set_title(f"OSR latency vs period: {pop['n_osr']}/{pop['n_cells']} cells with an OSR", fontsize=10)
    ax.set_xlabel("flash period (ms)")
    ax.set_ylabel("burst latency from last flash (ms)")
    ax.legend(fontsize=7)
    names.append(save(fig, out_dir, "osr_latency.png"))
    return names


def _fmt_fit(f: dict[str, Any]) -> str:
    if f["slope"] is None:
        return f"{'-':>7} {'':>15} {'-':>10} {'-':>6}"
    ci = f.get("slope_ci")
    ci_s = f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    r = "-" if f["r"] is None else f"{f['r']:.2f}"
    return f"{f['slope']:>7.2f} {ci_s:>15} {f['intercept'] * 1000:>7.0f} ms {r:>6}"


def format_summary(result: dict[str, Any]) -> str:
    """One screen: the sweep, the verdict per cell, and the latency-vs-period fits."""
    pp = result["periods"]
    dt = pp[0]["period_s"] / pp[0]["period_frames"]
    pop = result["population"]
    lines = [
        f"Omitted stimulus response: {len(pp)} periods {pp[0]['period_s'] * 1000:.0f}-{pp[-1]['period_s'] * 1000:.0f} ms "
        f"({pp[-1]['flash_rate_hz']:.1f}-{pp[0]['flash_rate_hz']:.1f} Hz), {result['flash_frames'] * dt * 1000:g}-ms flashes, "
        f"contrast {result['params']['contrast']:g}, polarity {result['params']['polarity']}, null {result['params']['null']}",
        f"criterion: {result['criterion_text']}",
        *[f"note: {n}" for n in result.get("notes", [])],
        "",
        f"{'cell':>8} {'OSR':>4} {'bursts':>7} {'slope':>7} {'CI':>15} {'intercept':>10} {'r':>6} {'null R2':>8}   latency from last flash (ms) per period",
    ]
    for k, cs in enumerate(result["cells"]):
        lats = " ".join(f"{p['cells'][k]['latency_from_last_s'] * 1000:.0f}" if p["cells"][k]["burst"] else "." for p in pp)
        r2 = "-" if cs["null_r2"] is None else f"{cs['null_r2']:.2f}"
        verdict = "yes" if cs["osr"] else ("no" if cs["driven"] else "n/d")
        lines.append(f"{str(cs['id']) + ' ' + cs['polarity'][0].upper():>8} {verdict:>4} {cs['bursts']:>3}/{cs['n_periods']:<3} {_fmt_fit(cs['fit'])} {r2:>8}   {lats}")
    lats = " ".join(f"{p['population']['latency_from_last_s'] * 1000:.0f}" if p["population"]["burst"] else "." for p in pp)
    lines.append(f"{'pop.':>8} {'':>4} {pop['bursts']:>3}/{pop['n_periods']:<3} {_fmt_fit(pop['fit'])} {'':>8}   {lats}")
    f = result["pooled"]["fit"]
    lines.append(f"{pop['n_osr']}/{pop['n_cells']} cells with an OSR ({pop['n_driven']} driven by the flashes)" +
                 (f"; pooled over their {result['pooled']['bursts']} bursts: slope {f['slope']:.2f}" + (f" [{f['slope_ci'][0]:.2f}, {f['slope_ci'][1]:.2f}]" if f.get("slope_ci") else "") +
                  f", intercept {f['intercept'] * 1000:.0f} ms" + (f", r {f['r']:.2f}" if f["r"] is not None else "") if f["slope"] is not None else ""))
    lines.append("('.' = no burst at that period; B/D = bright/dark flashes; n/d = the flashes do not drive the cell; CI = "
                 f"{result['params']['confidence'] * 100:g} % interval of the slope)")
    return "\n".join(lines)


def cell_readout(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per cell, the numbers `probe --compare` sets side by side."""
    out = {}
    for cs in result["cells"]:
        f = cs["fit"]
        out[int(cs["id"])] = {"OSR": "yes" if cs["osr"] else "no", "bursts": f"{cs['bursts']}/{cs['n_periods']}",
                              "slope": None if f["slope"] is None else round(f["slope"], 2),
                              "slope CI": None if not f.get("slope_ci") else f"[{f['slope_ci'][0]:.2f}, {f['slope_ci'][1]:.2f}]",
                              "r": None if f["r"] is None else round(f["r"], 2)}
    return out
