"""Plumbing shared by every probe: parameters, model responses, the result header.

A probe module defines ``NAME``, ``DESCRIPTION``, ``PARAMS`` (a tuple of :class:`Param`),
``run(fitted, params, out_dir, progress) -> dict`` (``params`` already validated by
:func:`resolve_params`; writes its figures into ``out_dir`` and returns the JSON-ready result) and
``format_summary(result) -> str`` (one screen of text). :mod:`retinakit.probes` holds the registry.

Durations are given in seconds and rounded to whole frames of the model (the frames actually
used are reported); rates are in Hz (the model's expected count per bin divided by ``frame_dt``).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, ModelError

AUTO = "auto"


@dataclass(frozen=True)
class Param:
    """One probe parameter: name, default, type, unit, help text and allowed range.

    ``kind`` is ``"float"``, ``"int"``, ``"floats"`` (comma-separated list) or ``"choice"``.
    A default of ``"auto"`` means the probe derives the value from the model (documented in
    ``help``); the user may also pass ``auto`` explicitly.
    """

    name: str
    default: Any
    kind: str
    unit: str = ""
    help: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    nonzero: bool = False

    def describe(self) -> str:
        """``name=default [unit]: help`` on one line."""
        unit = f" [{self.unit}]" if self.unit else ""
        default = ",".join(_fmt(v) for v in self.default) if isinstance(self.default, (list, tuple)) else _fmt(self.default)
        rng = ""
        if self.choices:
            rng = f" (one of {', '.join(self.choices)})"
        elif self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else _fmt(self.low)
            hi = "inf" if self.high is None else _fmt(self.high)
            rng = f" (range {lo}..{hi}{', not 0' if self.nonzero else ''})"
        return f"{self.name}={default}{unit}: {self.help}{rng}"

    def parse(self, value: Any, probe: str) -> Any:
        """Convert and validate ``value`` (a string from the command line or a Python value)."""
        where = f"--param {self.name} of probe '{probe}'"
        if isinstance(value, str) and value.strip().lower() == AUTO and (self.default == AUTO):
            return AUTO
        if self.kind == "choice":
            v = str(value).strip()
            if v not in self.choices:
                near = difflib.get_close_matches(v, self.choices, n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                raise ConfigError(f"'{v}' is not a valid value", where, f"{hint}use one of {', '.join(self.choices)}")
            return v
        if self.kind == "floats":
            items = [s for s in value.replace(";", ",").split(",") if s.strip()] if isinstance(value, str) else list(np.atleast_1d(value))
            if not items:
                raise ConfigError("an empty list was given", where, "give comma-separated numbers, e.g. 0.05,0.1,0.15")
            return [self._number(v, where, float) for v in items]
        return self._number(value, where, int if self.kind == "int" else float)

    def _number(self, value: Any, where: str, cast: type) -> Any:
        try:
            if isinstance(value, str):
                v = float(value.strip())
            elif isinstance(value, bool):
                raise TypeError
            else:
                v = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"expected a {'whole number' if cast is int else 'number'}, got '{value}'", where,
                              f"e.g. --param {self.name}={_fmt(self.default) if not isinstance(self.default, (list, tuple)) else _fmt(self.default[0])}") from None
        if not math.isfinite(v):
            raise ConfigError(f"expected a finite number, got '{value}'", where)
        if cast is int:
            if v != int(v):
                raise ConfigError(f"expected a whole number, got '{value}'", where)
            v = int(v)
        if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
            lo = "-inf" if self.low is None else _fmt(self.low)
            hi = "inf" if self.high is None else _fmt(self.high)
            raise ConfigError(f"{_fmt(v)}{' ' + self.unit if self.unit else ''} is out of range {lo}..{hi}", where, self.help)
        if self.nonzero and v == 0:
            raise ConfigError("0 is not allowed", where, self.help)
        return v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def resolve_params(probe: str, specs: Sequence[Param], given: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``given``, each value parsed and validated.

    Raises :class:`~retinakit.errors.ConfigError` naming the key for an unknown parameter (with
    a "did you mean") or a bad value.
    """
    by_name = {p.name: p for p in specs}
    out = {p.name: (list(p.default) if isinstance(p.default, (list, tuple)) else p.default) for p in specs}
    for key, value in (given or {}).items():
        if key not in by_name:
            near = difflib.get_close_matches(key, list(by_name), n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ConfigError(f"unknown parameter '{key}' for probe '{probe}'", "--param",
                              f"{hint}parameters of '{probe}': {', '.join(by_name) or 'none'} (see `retinakit probe --list`)")
        out[key] = by_name[key].parse(value, probe)
    return out


def parse_param_args(items: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` from the command line as a dict; a key given twice is an error."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"'{item}' is not KEY=VALUE", "--param", "e.g. --param contrast=-1")
        if key in out:
            raise ConfigError(f"parameter '{key}' is given twice", "--param", "give each parameter once")
        out[key] = value.strip()
    return out


# ----------------------------------------------------------------------------- model geometry and units
@dataclass(frozen=True)
class Levels:
    """Stimulus intensities in the model's raw units.

    Contrast ``c`` maps to ``mean + c * amplitude`` where ``amplitude = min(max - mean, mean - min)``
    of the training stimulus: +-1 is the largest excursion around the mean that stays inside
    the range the model was trained on.
    """

    mean: float
    amplitude: float
    low: float
    high: float
    source: str

    def intensity(self, contrast: Any) -> Any:
        """Raw intensity for a contrast (scalar or array)."""
        return self.mean + np.asarray(contrast, dtype=np.float64) * self.amplitude

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "amplitude": self.amplitude, "min": self.low, "max": self.high, "source": self.source}


def stimulus_levels(fitted: Any) -> Levels:
    """Background and contrast amplitude from the model's metadata (``stim_mean``, ``stim_min``, ``stim_max``).

    Falls back to ``stim_mean +- stim_std`` when the range was not recorded (said in ``source``).
    """
    meta = fitted.meta
    if "stim_mean" not in meta:
        raise ModelError("the model's metadata has no stim_mean", "model meta", "the checkpoint was not written by `retinakit fit`; refit")
    mean = float(meta["stim_mean"])
    if meta.get("stim_min") is not None and meta.get("stim_max") is not None:
        lo, hi = float(meta["stim_min"]), float(meta["stim_max"])
        source = "training stimulus range (stim_min, stim_max) around stim_mean"
    elif meta.get("stim_std") is not None:
        sd = float(meta["stim_std"])
        lo, hi = mean - sd, mean + sd
        source = "stim_mean +- stim_std (the checkpoint has no stim_min/stim_max)"
    else:
        raise ModelError("the model's metadata has neither stim_min/stim_max nor stim_std", "model meta", "refit the model with this retinakit")
    amp = min(hi - mean, mean - lo)
    if not (math.isfinite(amp) and amp > 0):
        raise ModelError(f"the training stimulus has no range around its mean (min {lo:g}, mean {mean:g}, max {hi:g})", "model meta",
                         "the model was fit on a constant stimulus; probes need contrast")
    return Levels(mean=mean, amplitude=float(amp), low=lo, high=hi, source=source)


def seconds_to_frames(seconds: float, frame_dt: float, name: str, probe: str, minimum: int = 1) -> int:
    """Round a duration to whole frames (at least ``minimum``); error when it is too short."""
    n = int(round(float(seconds) / frame_dt))
    if n < minimum:
        raise ConfigError(f"{seconds:g} s is {seconds / frame_dt:.2f} frames at this model's {frame_dt * 1000:g} ms frames; at least {minimum} needed",
                          f"--param {name} of probe '{probe}'", f"use at least {minimum * frame_dt:g} s")
    return n


def require_spatial(fitted: Any, probe: str) -> tuple[int, int]:
    """``(H, W)`` of a model with spatial frames; :class:`ModelError` for a full-field model."""
    fs = fitted.frame_shape
    if len(fs) != 2:
        raise ModelError(f"probe '{probe}' needs a model with spatial frames, but this model was fit on a full-field stimulus", None,
                         "use a temporal probe (osr, step, paired-flash, contrast-adaptation) on full-field models")
    return int(fs[0]), int(fs[1])


def frames_of(values: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """Full-field values ``(T,)`` as movie frames in the model's geometry (``(T,)`` or ``(T, H, W)``)."""
    v = np.asarray(values, dtype=np.float32)
    if len(frame_shape) == 0:
        return v
    return np.ascontiguousarray(np.broadcast_to(v[:, None, None], (v.shape[0],) + tuple(frame_shape)))


def model_rates(fitted: Any, stimuli: Sequence[np.ndarray], desc: str = "probe", progress: bool = True) -> list[np.ndarray]:
    """The model's response in Hz, ``(T, n_cells)`` each, to a list of raw stimulus movies.

    Bins before the model has a full history are NaN (see :mod:`retinakit.alignment`). A tqdm
    bar (stderr, frames as units) shows progress for long sets of stimuli.
    """
    from tqdm import tqdm

    total = int(sum(s.shape[0] for s in stimuli))
    dt = fitted.frame_dt
    out = []
    with tqdm(total=total, desc=desc, unit="frame", disable=(None if progress else True), leave=False, file=None) as bar:
        for s in stimuli:
            out.append(fitted.predict(s).astype(np.float64) / dt)
            bar.update(s.shape[0])
    return out


def model_info(fitted: Any) -> dict[str, Any]:
    """What identifies the probed model in a result file."""
    meta = fitted.meta
    return {
        "kind": meta.get("kind") or (meta.get("model") or {}).get("family"),
        "history_frames": fitted.history,
        "frame_dt_s": fitted.frame_dt,
        "frame_shape": list(fitted.frame_shape),
        "cell_ids": fitted.cell_ids,
        "data_sha256": meta.get("data_sha256"),
        "data_source": meta.get("data_source"),
        "stimulus_kind": meta.get("stimulus_kind"),
    }


def finite_or_none(x: Any) -> float | None:
    """A float, or None for NaN/inf (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ----------------------------------------------------------------------------- the training range
_RANGE_CACHE: dict[tuple[str, str], dict[str, Any]] = {}
RATE_MARGIN = 1.5  # a probe rate above this x the cell's largest training rate is outside the training range


class RangeWatch:
    """Wraps a model for one probe run and records what its stimuli and responses span:
    the full-field luminance (frame mean, in contrast units) and each cell's largest rate (Hz)."""

    def __init__(self, fitted: Any) -> None:
        self.fitted = fitted
        self.levels = stimulus_levels(fitted)
        self.lum = [math.inf, -math.inf]
        self.max_rate: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fitted, name)

    def predict(self, stimulus: np.ndarray, *args: Any, **kw: Any) -> np.ndarray:
        s = np.asarray(stimulus, dtype=np.float64)
        m = (s.reshape(s.shape[0], -1).mean(1) - self.levels.mean) / self.levels.amplitude
        self.lum = [min(self.lum[0], float(m.min())), max(self.lum[1], float(m.max()))]
        out = self.fitted.predict(stimulus, *args, **kw)
        peak = np.nanmax(np.where(np.isfinite(out), out, -np.inf), axis=0) / self.fitted.frame_dt
        self.max_rate = peak if self.max_rate is None else np.maximum(self.max_rate, peak)
        return out


def training_range(meta: dict[str, Any], cell_ids: list[int]) -> dict[str, Any] | None:
    """What the training data spanned, from the recording the model was fit on (None when it cannot be read).

    ``luminance``: 0.1 and 99.9 percentiles of the frame-mean stimulus in contrast units;
    ``max_rate_hz``: each cell's largest 10-ms-smoothed training rate (the truth: its largest true rate).
    """
    import os

    src = meta.get("data_source")
    if not src or not os.path.isfile(str(src)) or "stim_mean" not in meta:
        return None
    key = (str(src), str(meta.get("data_sha256")))
    if key not in _RANGE_CACHE:
        from ..errors import RetinakitError
        from ..io import load_recording

        try:
            rec = load_recording(src)
        except (RetinakitError, OSError):
            return None
        s = rec.train.stimulus
        means = np.concatenate([s[a : a + 4096].reshape(min(4096, s.shape[0] - a), -1).astype(np.float64).mean(1) for a in range(0, s.shape[0], 4096)])
        if rec.train.true_rate is not None:
            rate = np.asarray(rec.train.true_rate, dtype=np.float64) / float(rec.frame_dt)
        elif "firing_rate_10ms" in rec.train.rates:
            rate = np.asarray(rec.train.rates["firing_rate_10ms"], dtype=np.float64)
        else:
            rate = np.asarray(rec.train.counts, dtype=np.float64) / float(rec.frame_dt)
        _RANGE_CACHE[key] = {"frame_means": np.percentile(means, [0.1, 99.9]), "rate": {int(c): float(rate[:, k].max()) for k, c in enumerate(rec.cell_ids)}}
    cached = _RANGE_CACHE[key]
    lv = stimulus_levels_from(meta)
    lum = [(float(v) - lv.mean) / lv.amplitude for v in cached["frame_means"]]
    return {"luminance": lum, "max_rate_hz": [cached["rate"].get(int(c)) for c in cell_ids]}


def stimulus_levels_from(meta: dict[str, Any]) -> Levels:
    """:func:`stimulus_levels` for bare metadata."""

    class _M:
        pass

    m = _M()
    m.meta = meta  # type: ignore[attr-defined]
    return stimulus_levels(m)


def range_warnings(watch: RangeWatch, fitted: Any) -> tuple[list[str], dict[str, Any]]:
    """Warnings when a probe drove the model outside what it saw in training, and the numbers behind them."""
    rng = training_range(fitted.meta, fitted.cell_ids)
    info: dict[str, Any] = {"probe_luminance": watch.lum, "probe_max_rate_hz": None if watch.max_rate is None else [finite_or_none(v) for v in watch.max_rate]}
    if rng is None:
        return [f"training range unknown: the recording '{fitted.meta.get('data_source')}' cannot be read, so the probe could not check that it stays inside it"], info
    info.update({"training_luminance": rng["luminance"], "training_max_rate_hz": rng["max_rate_hz"]})
    out = []
    lo, hi = rng["luminance"]
    if watch.lum[0] < lo - 1e-6 or watch.lum[1] > hi + 1e-6:
        out.append(f"the probe's full-field luminance spans {watch.lum[0]:+.2f}..{watch.lum[1]:+.2f} (contrast units), the training frames' means "
                   f"only {lo:+.2f}..{hi:+.2f}: the model is extrapolating (a lower contrast stays closer to its training data)")
    if watch.max_rate is not None:
        over = [(c, float(r), m) for c, r, m in zip(fitted.cell_ids, watch.max_rate, rng["max_rate_hz"]) if m is not None and np.isfinite(r) and r > RATE_MARGIN * m]
        if over:
            out.append("rates above " + f"{RATE_MARGIN:g}x the largest training rate in cell(s) " + ", ".join(f"{c} ({r:.0f} vs {m:.0f} Hz)" for c, r, m in over))
    return out, info
