"""The stimuli `retinakit reduce` attributes over: one probe protocol each, or the test movie.

Each is built from the probe stimulus builders (:mod:`retinakit.probes.stimuli`) in the model's
own frame rate, geometry and units, as a single movie with one **event** (the frame the figures
centre on): the omitted flash (``osr``), the step onset (``step``), the second flash
(``paired-flash``), a reversal in steady state (``reversing-grating``), the bar crossing the
cell's receptive field (``motion``), the switch to high contrast (``contrast``), or the largest
response of the full model (``natural``: a stretch of the recording's repeated test movie).

Flash and bar polarity ``auto`` follows the cell: bright for an ON cell, dark for an OFF cell (see
:func:`retinakit.mechanisms.reduce.cell_polarity`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelError
from ..probes.base import AUTO, Param, resolve_params, seconds_to_frames, stimulus_levels
from ..probes.stimuli import bar_coverage, contrast_switch_noise, flash_train, pulses, reversing_grating, to_raw

STIMULI = ("osr", "step", "paired-flash", "reversing-grating", "motion", "contrast", "natural")
SPATIAL = ("reversing-grating", "motion")

PARAMS = (
    Param("period", 0.1, "float", "s", "osr: flash period; reversing-grating: reversal period", low=0.0, high=10.0, nonzero=True),
    Param("flash", 0.02, "float", "s", "osr / paired-flash: flash duration", low=0.0, high=10.0, nonzero=True),
    Param("interval", 0.15, "float", "s", "paired-flash: onset-to-onset interval", low=0.0, high=10.0, nonzero=True),
    Param("duration", 0.5, "float", "s", "step: step duration", low=0.0, high=10.0, nonzero=True),
    Param("contrast", 1.0, "float", "", "stimulus contrast magnitude (1 = the largest excursion from the mean inside the training range)", low=0.0, high=1.0, nonzero=True),
    Param("polarity", AUTO, "choice", "", "flash / step / bar polarity; auto = the cell's (bright for ON, dark for OFF)", choices=(AUTO, "bright", "dark")),
    Param("width", AUTO, "float", "px", "reversing-grating / motion: bar width; auto = a quarter (grating) or an eighth (bar) of the frame width", low=0.0, high=1e4, nonzero=True),
    Param("speed", AUTO, "float", "px/s", "motion: bar speed; auto = the frame width in 1.6 s", low=0.0, high=1e6, nonzero=True),
    Param("low", 0.1, "float", "", "contrast: s.d. of the low-contrast flicker", low=0.0, high=1.0),
    Param("high", 0.35, "float", "", "contrast: s.d. of the high-contrast flicker", low=0.0, high=1.0),
    Param("start", 0.0, "float", "s", "natural: start of the stretch in the test movie", low=0.0, high=1e6),
    Param("seconds", 4.0, "float", "s", "natural: length of the stretch of the test movie (after the model's history; cut at the movie's end)", low=0.0, high=1e5, nonzero=True),
    Param("seed", 0, "int", "", "contrast: seed of the flicker", low=0, high=2**31 - 1),
)

SIGN = {"bright": 1.0, "dark": -1.0}


@dataclass
class Stimulus:
    """A raw stimulus movie, its event frame and a description of the protocol."""

    name: str
    raw: np.ndarray
    event: int
    event_label: str
    info: dict[str, Any]
    contrast: np.ndarray | None = None  # full-field contrast trace (for figures), when the stimulus is full-field


def resolve(given: dict[str, Any] | None) -> dict[str, Any]:
    """Stimulus parameters: defaults overlaid with ``given`` (validated; ConfigError naming the key)."""
    return resolve_params("reduce", PARAMS, given)


def check_name(name: str) -> str:
    """``name`` when it is one of :data:`STIMULI`; ConfigError with a suggestion otherwise."""
    if name not in STIMULI:
        import difflib

        near = difflib.get_close_matches(name, STIMULI, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ConfigError(f"unknown stimulus '{name}'", "--stimulus", f"{hint}choose one of {', '.join(STIMULI)}")
    return name


def build(name: str, fitted: Any, params: dict[str, Any], polarity: str, rf_center: tuple[float, float] | None, test_movie: np.ndarray | None = None) -> Stimulus:
    """The stimulus ``name`` for ``fitted`` (see module docstring); ``polarity`` is the cell's
    (``ON``/``OFF``) for ``auto``; ``rf_center`` (row, col) places the moving bar's event;
    ``test_movie`` (raw, ``(T, ...)``) is needed for ``natural``."""
    check_name(name)
    dt, H = fitted.frame_dt, fitted.history
    fs = fitted.frame_shape
    if name in SPATIAL and len(fs) != 2:
        raise ModelError(f"stimulus '{name}' needs a model with spatial frames, but this model was fit on a full-field stimulus", "--stimulus",
                         "use osr, step, paired-flash, contrast or natural on full-field models")
    if name == "natural":
        if test_movie is None:
            raise ConfigError("stimulus 'natural' needs the recording's test movie, but the run's recording is not available", "--stimulus natural",
                              "pass the recording with --data, or choose a synthetic stimulus")
        start = int(round(float(params["start"]) / dt))
        n = seconds_to_frames(params["seconds"], dt, "seconds", "reduce")
        n = min(n, int(test_movie.shape[0]) - start - H)  # a stretch running past the movie's end is cut there
        if n < 3:
            raise ConfigError(f"the stretch from {params['start']:g} s leaves {max(n, 0)} bins of the {test_movie.shape[0] * dt:g}-s test movie "
                              f"after the model's {H}-frame history", "--param start", "use an earlier start")
        raw = np.asarray(test_movie[start : start + H + n], dtype=np.float32)
        return Stimulus(name, raw, -1, "largest response", {"start_frame": start, "frames": int(raw.shape[0]), "source": "test movie"})
    levels = stimulus_levels(fitted)
    pol = params["polarity"]
    if pol == AUTO:
        pol = "dark" if polarity == "OFF" else "bright"
    c = float(params["contrast"]) * SIGN[pol]
    lead = H + 5
    info: dict[str, Any] = {"polarity": pol, "contrast": c, "levels": levels.as_dict()}
    if name == "osr":
        P = seconds_to_frames(params["period"], dt, "period", "reduce", minimum=2)
        fl = seconds_to_frames(params["flash"], dt, "flash", "reduce")
        if P <= fl:
            raise ConfigError(f"the {P}-frame period is not longer than the {fl}-frame flash", "--param period", "use a longer period or a shorter flash")
        n_fl = math.ceil(H / P) + 3
        trace, onsets, tl = flash_train(H, P, fl, n_fl, c, post=H)
        info.update(period_frames=P, flash_frames=fl, onsets=onsets, **tl)
        return Stimulus(name, to_raw(trace, levels, fs), int(tl["expected_frame"]), "omitted flash", info, trace)
    if name == "step":
        D = seconds_to_frames(params["duration"], dt, "duration", "reduce", minimum=2)
        trace = pulses(lead + D + H, [lead], D, c)
        info.update(duration_frames=D, onset=lead)
        return Stimulus(name, to_raw(trace, levels, fs), lead, "step onset", info, trace)
    if name == "paired-flash":
        fl = seconds_to_frames(params["flash"], dt, "flash", "reduce")
        iv = seconds_to_frames(params["interval"], dt, "interval", "reduce")
        if iv <= fl:
            raise ConfigError(f"the {iv}-frame interval does not exceed the {fl}-frame flash", "--param interval", "use a longer interval or a shorter flash")
        trace = pulses(lead + iv + H, [lead, lead + iv], fl, c)
        info.update(flash_frames=fl, interval_frames=iv, onsets=[lead, lead + iv])
        return Stimulus(name, to_raw(trace, levels, fs), lead + iv, "second flash", info, trace)
    if name == "contrast":
        lo, hi = float(params["low"]), float(params["high"])
        if not hi > lo:
            raise ConfigError(f"high ({hi:g}) must exceed low ({lo:g})", "--param high", "e.g. low=0.1 high=0.35")
        block = max(int(round(1.0 / dt)), 2 * H)
        rng = np.random.default_rng(int(params["seed"]))
        trace, _sd, switches = contrast_switch_noise(rng, block, 1, H + block, lo, hi, antithetic=False)
        info.update(block_frames=block, switches=switches)
        return Stimulus(name, to_raw(trace, levels, fs), int(switches[0]), "switch to high contrast", info, trace)
    Hh, W = int(fs[0]), int(fs[1])
    if name == "reversing-grating":
        N = seconds_to_frames(params["period"], dt, "period", "reduce", minimum=2)
        N += N % 2
        width = max(1.0, W / 4) if params["width"] == AUTO else float(params["width"])
        cycles = math.ceil(H / N) + 2
        movie = np.concatenate([np.zeros((lead, Hh, W)), reversing_grating((Hh, W), width, 0.0, N, cycles, abs(c))])
        event = lead + (cycles - 1) * N
        info.update(period_frames=N, width_px=width, cycles=cycles)
        return Stimulus(name, to_raw(movie, levels, fs), event, "grating reversal (steady state)", info)
    # motion: a bar sweeping left to right across the frame
    width = max(1.0, W / 8) if params["width"] == AUTO else float(params["width"])
    speed = W / 1.6 if params["speed"] == AUTO else float(params["speed"])
    v = speed * dt
    n_move = int(math.ceil((W + 2 * width) / v)) + 1
    centers = np.r_[np.full(lead, np.nan), -width + v * np.arange(n_move), np.full(H, np.nan)]
    movie = c * bar_coverage((Hh, W), np.nan_to_num(centers, nan=-1e6), width)
    x0 = (W / 2.0) if rf_center is None else float(rf_center[1]) + 0.5
    event = lead + int(round((x0 + width) / v))
    info.update(width_px=width, speed_px_s=speed, rf_column=x0 - 0.5)
    return Stimulus(name, to_raw(movie, levels, fs), event, "bar at the receptive field", info)
