"""Contrast adaptation: gain and kinetics before and after a switch of stimulus contrast.

Protocol (Smirnakis et al. 1997; Baccus & Meister 2002)
-------------------------------------------------------
Gaussian flicker (contrast units, clipped to +-1) whose standard deviation alternates between
``low`` and ``high`` every ``block`` seconds, ``cycles`` times, after a lead-in of ``history``
frames plus one block of low contrast. The flicker modulates a spatial ``pattern``: the whole
field (``fullfield``), or fixed natural-like images (``image``: :data:`N_IMAGES` dead-leaves
images, each with its spatial mean removed and scaled to a largest value of 1, each shown in
its own run of the protocol), so that every frame keeps the mean luminance of the training data
and local contrasts look like natural scenes. A receptive field on an edge or on mid-grey sees
little of one image: a cell's gain ratio is the median over the images that drive it, its
filters and time course those of the image that drives it most. ``auto`` uses the images for
models of spatial stimuli (a full field swinging the mean luminance by +-1 is far outside what
a model of natural scenes or white noise saw) and the full field otherwise. Noise (and images)
from ``seed``; every second
cycle repeats the previous one with the sign flipped (antithetic pairs), so the cycle average
cancels the linear part of the stimulus-driven fluctuations and the adaptation time course
stands out.

Measures (per cell)
-------------------
- linear filter at each contrast: least-squares regression of the rate on the ``history``
  preceding frames (plus a constant), using only steady-state bins (the model's whole window
  lies in one contrast block), pooled over cycles; reported in Hz per unit contrast,
  oldest lag first as in :mod:`retinakit.alignment`;
- **gain ratio** (Chander and Chichilnisky 2001; Baccus and Meister 2002): at each contrast
  the filter is scaled to unit norm and a binned nonlinearity is fitted to the rate against
  that filter's output (in stimulus contrast units); the gain ratio is the horizontal scale
  ``alpha`` that maps the low-contrast nonlinearity onto the high-contrast one
  (``N_lo(x) = N_hi(x / alpha)``, :func:`retinakit.probes.lnnull.align_gain`). A static LN model
  gives 1 whatever its nonlinearity; below 1 the system turns its gain down at high contrast,
  as retinal cells do. Not reported for cells whose rate s.d. at high contrast is below
  ``min_sd`` Hz. ``filter_norm_ratio`` (the ratio of the least-squares filters' norms) is also
  given, but it is NOT a measure of adaptation: a static expansive or saturating nonlinearity
  alone changes it (Bussgang);
- kinetics of the filter: the lag (s) of its largest absolute value at each contrast (real
  cells respond faster at high contrast);
- slow kinetics: the rate averaged over cycles and aligned to the switches, with an
  exponential ``offset + amp * exp(-t / tau)`` fit from the switch to the end of the block
  after the switch to high (``tau_high_s``) and to low (``tau_low_s``); ``amp_hz`` > 0 after the
  switch to high is the classic transient increase that then adapts.

A model with a history of ``history`` frames can only adapt within that window: a time
constant longer than the history is not something the model can express.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..alignment import lag_of_position, window_frames
from ..errors import ConfigError
from .analysis import fit_exponential
from .base import AUTO, Param, model_rates, seconds_to_frames, stimulus_levels
from .stimuli import contrast_switch_noise, to_raw

NAME = "contrast-adaptation"
DESCRIPTION = "Gaussian flicker of the whole field, or for spatial models of a zero-mean natural-like image, switching between low and high contrast: linear gain and filter kinetics at each contrast, time course after the switch"
PARAMS = (
    Param("low", 0.1, "float", "", "s.d. of the low-contrast flicker (contrast units; 1 = the largest excursion inside the training range)", low=0.0, high=1.0, nonzero=True),
    Param("high", 0.35, "float", "", "s.d. of the high-contrast flicker", low=0.0, high=1.0, nonzero=True),
    Param("block", AUTO, "float", "s", "duration of each contrast block; auto = max(1 s, 3 x history)", low=0.0, high=600.0),
    Param("cycles", 20, "int", "", "high/low cycles, in sign-flipped pairs (averaged for the time course, pooled for the filters)", low=1, high=10000),
    Param("seed", 0, "int", "", "noise seed", low=0, high=2**31 - 1),
    Param("pattern", "auto", "choice", "", "what the flicker modulates: fullfield, or image (zero-mean natural-like images, one run each, so frames keep the mean luminance of training; per cell the median gain ratio over the images that drive it); auto = image for spatial models, fullfield otherwise", choices=("auto", "fullfield", "image")),
    Param("min_sd", 0.5, "float", "Hz", "cells whose rate s.d. at high contrast is below this are unresponsive (no gain ratio)", low=0.0, high=1e6),
)


def linear_filter(stim: np.ndarray, rate: np.ndarray, bins: np.ndarray, history: int) -> tuple[np.ndarray, float]:
    """Least-squares filter ``(history,)`` (oldest lag first) and offset predicting ``rate[bins]``
    from the ``history`` frames before each bin of the full-field contrast trace ``stim``."""
    X = stim[np.asarray(bins)[:, None] + window_frames(0, history)[None, :]]
    A = np.concatenate([X, np.ones((X.shape[0], 1))], 1)
    coef, *_ = np.linalg.lstsq(A, rate[bins], rcond=None)
    return coef[:-1], float(coef[-1])


def choose_pattern(requested: str, frame_shape: tuple[int, ...]) -> str:
    """The pattern the flicker modulates: ``image`` for spatial models under ``auto``, never for full-field ones."""
    if requested == AUTO:
        return "image" if len(frame_shape) == 2 else "fullfield"
    if requested == "image" and len(frame_shape) != 2:
        raise ConfigError("a full-field model has no space for an image pattern", f"--param pattern of probe '{NAME}'", "use pattern=fullfield")
    return requested


#: images of the ``image`` pattern; a cell's gain ratio is the median over those that drive it
N_IMAGES = 3


def image_pattern(frame_shape: tuple[int, ...], seed: int, index: int = 0) -> np.ndarray:
    """Dead-leaves image ``index`` ``(H, W)`` (the simulator's natural-scene images) with its spatial
    mean removed and scaled so that its largest absolute value is 1 (deterministic for ``seed``)."""
    from ..simulate.stimuli import dead_leaves
    from ..simulate.stimuli import to_contrast as image_contrast

    img = image_contrast(dead_leaves((int(frame_shape[0]), int(frame_shape[1])), np.random.default_rng([int(seed), 1, int(index)]))).astype(np.float64)
    img -= img.mean()
    top = float(np.abs(img).max())
    return img / top if top > 0 else img


GAIN_TOLERANCE = 0.1  # a static LN model gives 1 +- this (estimation error): only a lower ratio counts as adaptation


def _cell_gain(x: np.ndarray, rate: np.ndarray, lo_bins: np.ndarray, hi_bins: np.ndarray, H: int, min_sd: float) -> tuple[np.ndarray, np.ndarray, float, float, float, bool, dict[str, Any]]:
    """One cell's filters at each contrast, their norms, rate s.d. at high contrast, whether it
    responds, and the normalised gain (:func:`_normalised_gain`, ``alpha`` None when it does not)."""
    f_lo, _ = linear_filter(x, rate, lo_bins, H)
    f_hi, _ = linear_filter(x, rate, hi_bins, H)
    g_lo, g_hi = float(np.linalg.norm(f_lo)), float(np.linalg.norm(f_hi))
    sd_hi = float(rate[hi_bins].std())
    responsive = sd_hi >= min_sd and g_lo > 0 and g_hi > 0
    norm = _normalised_gain(x, rate, lo_bins, hi_bins, f_lo, f_hi, H) if responsive else {"alpha": None, "misfit": None, "n_bins": 0, "nl_low": None, "nl_high": None}
    return f_lo, f_hi, g_lo, g_hi, sd_hi, responsive, norm


def _normalised_gain(x: np.ndarray, rate: np.ndarray, lo_bins: np.ndarray, hi_bins: np.ndarray, f_lo: np.ndarray, f_hi: np.ndarray, H: int) -> dict[str, Any]:
    """Gain ratio from nonlinearities on unit-norm filters (see module docstring)."""
    from .lnnull import align_gain, binned_nonlinearity

    u_lo = f_lo / np.linalg.norm(f_lo)
    u_hi = f_hi / np.linalg.norm(f_hi) * (1.0 if float(f_hi @ f_lo) >= 0 else -1.0)
    curves = []
    for bins, u in ((lo_bins, u_lo), (hi_bins, u_hi)):
        X = x[np.asarray(bins)[:, None] + window_frames(0, H)[None, :]]
        curves.append(binned_nonlinearity(X @ u, rate[bins], 20))
    (xl, yl), (xh, yh) = curves
    out = align_gain(xl, yl, xh, yh)
    out["nl_low"] = {"x": xl.tolist(), "rate_hz": yl.tolist()}
    out["nl_high"] = {"x": xh.tolist(), "rate_hz": yh.tolist()}
    return out


def run(fitted: Any, params: dict[str, Any], out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Alternate low and high contrast and compare gain and kinetics (see module docstring)."""
    dt, H = fitted.frame_dt, fitted.history
    levels = stimulus_levels(fitted)
    low, high = float(params["low"]), float(params["high"])
    if not high > low:
        raise ConfigError(f"high ({high:g}) must exceed low ({low:g})", f"--param high of probe '{NAME}'", "e.g. low=0.1 high=0.35")
    block = max(int(round(1.0 / dt)), 3 * H) if params["block"] == AUTO else seconds_to_frames(params["block"], dt, "block", NAME)
    if block < H + 10:
        raise ConfigError(f"a block of {block} frames leaves fewer than 10 steady-state bins after the {H}-frame history", f"--param block of probe '{NAME}'",
                          f"use at least {(H + 10) * dt:g} s")
    n_cyc = int(params["cycles"])
    rng = np.random.default_rng(int(params["seed"]))
    lead = H + block
    x, sd, switches = contrast_switch_noise(rng, block, n_cyc, lead, low, high)
    x = np.r_[x, np.clip(rng.standard_normal(1) * low, -1, 1)]  # one more frame so the last low block's final bin exists
    pattern = choose_pattern(params["pattern"], fitted.frame_shape)
    if pattern == "fullfield":
        movies = [x]
    else:
        movies = [x[:, None, None] * image_pattern(fitted.frame_shape, int(params["seed"]), k)[None] for k in range(N_IMAGES)]
    rates = model_rates(fitted, [to_raw(m, levels, fitted.frame_shape) for m in movies], desc="contrast-adaptation", progress=progress)

    hi_bins = np.concatenate([np.arange(s + H, s + block + 1) for s in switches])
    # per cell, the image that drives it most (largest rate s.d. at high contrast)
    image_of = np.argmax(np.stack([r[hi_bins].std(0) for r in rates]), axis=0)
    rate = np.stack([rates[int(image_of[k])][:, k] for k in range(rates[0].shape[1])], 1)
    lo_bins = np.concatenate([np.arange(s + block + H, min(s + 2 * block + 1, len(x))) for s in switches] + [np.arange(H, lead + 1)])
    # time course: bins from one block before each switch to high, to the end of the low block after it
    aligned = np.stack([rate[s - block + 1 : s + 2 * block + 1] for s in switches if s - block + 1 >= H and s + 2 * block + 1 <= rate.shape[0]]).mean(0)
    t_al = np.arange(-block + 1, 2 * block + 1)
    after_hi = (t_al >= 1) & (t_al <= block)
    after_lo = t_al >= block + 1
    lags_s = lag_of_position(np.arange(H), H) * dt
    cells = []
    min_sd = float(params["min_sd"])
    for k, cid in enumerate(fitted.cell_ids):
        gains = [_cell_gain(x, r[:, k], lo_bins, hi_bins, H, min_sd) for r in rates]  # one per image (one for the full field)
        f_lo, f_hi, g_lo, g_hi, sd_hi, responsive, norm = gains[int(image_of[k])]
        per_image = [g[6]["alpha"] for g in gains]
        measured = [a for a in per_image if a is not None]
        fit_hi = fit_exponential((t_al[after_hi] - 1) * dt, aligned[after_hi, k], (dt, block * dt))
        fit_lo = fit_exponential((t_al[after_lo] - block - 1) * dt, aligned[after_lo, k], (dt, block * dt))
        cells.append({
            "id": cid, "image": int(image_of[k]) if pattern == "image" else None,
            "mean_rate_low_hz": float(rate[lo_bins, k].mean()), "mean_rate_high_hz": float(rate[hi_bins, k].mean()),
            "rate_sd_high_hz": sd_hi, "responsive": responsive,
            "gain_low": g_lo, "gain_high": g_hi, "filter_norm_ratio": g_hi / g_lo if g_lo > 0 and responsive else None,
            "gain_ratio": float(np.median(measured)) if measured else None, "gain_ratio_per_image": per_image if pattern == "image" else None,
            "gain_ratio_driving_image": norm["alpha"], "nl_misfit": norm["misfit"], "nl_bins_compared": norm["n_bins"],
            "nonlinearity_low": norm["nl_low"], "nonlinearity_high": norm["nl_high"],
            "peak_lag_low_s": float(lags_s[int(np.argmax(np.abs(f_lo)))]), "peak_lag_high_s": float(lags_s[int(np.argmax(np.abs(f_hi)))]),
            "filter_low": f_lo.tolist(), "filter_high": f_hi.tolist(),
            "tau_high_s": fit_hi["tau_s"], "amp_high_hz": fit_hi["amp_hz"], "r2_high": fit_hi["r2"],
            "tau_low_s": fit_lo["tau_s"], "amp_low_hz": fit_lo["amp_hz"], "r2_low": fit_lo["r2"],
        })
    ratios = [c["gain_ratio"] for c in cells if c["gain_ratio"] is not None]
    result: dict[str, Any] = {
        "levels": levels.as_dict(), "pattern": pattern, "block_frames": block, "cycles": n_cyc, "steady_bins": {"low": int(lo_bins.size), "high": int(hi_bins.size)},
        "filter_lags_s": lags_s.tolist(), "cells": cells,
        "median_gain_ratio": float(np.median(ratios)) if ratios else None,
        "n_gain_reduced": sum(1 for r in ratios if r < 1.0 - GAIN_TOLERANCE),
        "gain_tolerance": GAIN_TOLERANCE,
        "time_course": {"time_from_switch_s": (t_al * dt).tolist(), "rates_hz": aligned.T.tolist()},
    }
    result["figures"] = _figures(result, fitted.cell_ids, out_dir)
    return result


def _figures(result: dict[str, Any], ids: list[int], out_dir: Path) -> list[str]:
    from .plots import panel_grid, panel_labels, save

    labels = panel_labels(ids, with_population=False)
    fig, axes = panel_grid(len(labels))
    lags = np.asarray(result["filter_lags_s"]) * 1000
    for j, ax in enumerate(axes):
        c = result["cells"][j]
        ax.plot(lags, c["filter_low"], label="low contrast")
        ax.plot(lags, c["filter_high"], label="high contrast")
        ax.axhline(0, color="0.7", lw=0.6)
        g = "-" if c["gain_ratio"] is None else f"{c['gain_ratio']:.2f}"
        ax.set_title(f"{labels[j]}: gain ratio {g}", fontsize=9)
        ax.set_xlabel("lag (ms)", fontsize=8)
        ax.set_ylabel("Hz / unit contrast", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6)
    names = [save(fig, out_dir, "contrast_filters.png")]

    fig, axes = panel_grid(len(labels))
    tc = result["time_course"]
    t = np.asarray(tc["time_from_switch_s"])
    block_s = result["block_frames"] * (t[1] - t[0])
    for j, ax in enumerate(axes):
        ax.plot(t, tc["rates_hz"][j], color="k", lw=0.8)
        ax.axvspan(0, block_s, color="tab:orange", alpha=0.15, lw=0)
        c = result["cells"][j]
        tau = "-" if c["tau_high_s"] is None else f"{c['tau_high_s'] * 1000:.0f} ms"
        ax.set_title(f"{labels[j]}: tau after high {tau}", fontsize=9)
        ax.set_xlabel("time from switch to high contrast (s)", fontsize=8)
        ax.set_ylabel("rate (Hz)", fontsize=8)
        ax.tick_params(labelsize=7)
    names.append(save(fig, out_dir, "contrast_time_course.png"))
    return names


def format_summary(result: dict[str, Any]) -> str:
    """One screen: gain ratio, filter peak lags and adaptation time constants per cell."""
    p = result["params"]
    mg = result["median_gain_ratio"]
    what = f"flicker of {N_IMAGES} zero-mean images" if result.get("pattern") == "image" else "full-field flicker"
    lines = [f"Contrast adaptation: {what}, s.d. {p['low']:g} <-> {p['high']:g}, {result['block_frames']}-frame blocks x {result['cycles']} cycles; "
             f"gain reduced at high contrast (ratio < {1 - result['gain_tolerance']:g}) in {result['n_gain_reduced']}/{len(result['cells'])} cells (median ratio {'-' if mg is None else f'{mg:.2f}'})", "",
             f"{'cell':>6} {'gain hi/lo':>10} {'peak lag lo':>12} {'peak lag hi':>12} {'tau hi':>8} {'r2':>5} {'tau lo':>8} {'r2':>5} {'rate lo':>8} {'rate hi':>8}"]
    f = lambda v: "-" if v is None else f"{v * 1000:.0f} ms"  # noqa: E731
    r2 = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for c in result["cells"]:
        g = "-" if c["gain_ratio"] is None else f"{c['gain_ratio']:.2f}"
        lines.append(f"{c['id']:>6} {g:>10} {f(c['peak_lag_low_s']):>12} {f(c['peak_lag_high_s']):>12} {f(c['tau_high_s']):>8} {r2(c['r2_high']):>5} "
                     f"{f(c['tau_low_s']):>8} {r2(c['r2_low']):>5} "
                     f"{c['mean_rate_low_hz']:>8.1f} {c['mean_rate_high_hz']:>8.1f}")
    lines.append("gain hi/lo = horizontal scale between the nonlinearities fitted at each contrast on unit-norm filters (a static LN model gives 1; "
                 "Chander and Chichilnisky 2001); tau from an exponential fit to the cycle-averaged rate after each switch (r2: variance it explains; low r2 = no clear adaptation)")
    return "\n".join(lines)


def cell_readout(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per cell, the numbers `probe --compare` sets side by side."""
    out = {}
    for c in result["cells"]:
        g = c["gain_ratio"]
        out[int(c["id"])] = {"gain hi/lo": None if g is None else round(g, 2),
                             "adapts": None if g is None else ("yes" if g < 1 - result["gain_tolerance"] else "no"),
                             "peak lag lo/hi ms": f"{c['peak_lag_low_s'] * 1000:.0f}/{c['peak_lag_high_s'] * 1000:.0f}"}
    return out
