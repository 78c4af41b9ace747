"""Response analyses used by the probes: pure functions on response traces, no model involved.

Traces are rates in Hz with time on axis 0, one bin per frame. Event times are frame indices:
a frame shown at index ``f`` can first change bin ``f + 1`` (see :mod:`retinakit.alignment`), so
the response to an event at frame ``f`` is read from bins ``f + 1`` onwards, and a latency is
``(peak bin - event frame) * frame_dt`` (bin resolution unless said otherwise).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def linear_fit(x: Sequence[float], y: Sequence[float], min_points: int = 3) -> dict[str, Any]:
    """Least-squares line ``y = slope * x + intercept`` and Pearson ``r``.

    Needs ``min_points`` points with at least two distinct ``x``; otherwise the numbers are None
    and ``note`` says why. ``r`` is None when ``y`` is constant.
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = int(xa.size)
    out: dict[str, Any] = {"slope": None, "intercept": None, "r": None, "n": n, "note": None}
    if n < min_points or np.unique(xa).size < 2:
        out["note"] = f"needs at least {min_points} points at 2+ distinct x, has {n}"
        return out
    xm, ym = xa.mean(), ya.mean()
    sxx, sxy, syy = ((xa - xm) ** 2).sum(), ((xa - xm) * (ya - ym)).sum(), ((ya - ym) ** 2).sum()
    slope = sxy / sxx
    out["slope"], out["intercept"] = float(slope), float(ym - slope * xm)
    if syy > 1e-12 * max(1.0, float((ya**2).sum())):
        out["r"] = float(np.clip(sxy / math.sqrt(sxx * syy), -1.0, 1.0))
    else:
        out["note"] = "y is constant: r is undefined"
    return out


def peak_in(trace: np.ndarray, start: int, stop: int) -> tuple[float, int]:
    """Largest value of ``trace[start:stop]`` and its bin (first one on ties)."""
    seg = np.asarray(trace[start:stop], dtype=np.float64)
    if seg.size == 0 or not np.isfinite(seg).any():
        return float("nan"), -1
    i = int(np.nanargmax(seg))
    return float(seg[i]), start + i


def omission_response(
    trace: np.ndarray,
    onsets: Sequence[int],
    period: int,
    baseline_bins: tuple[int, int],
    window: int,
    frame_dt: float,
    n_ref: int = 3,
    criterion: float = 0.2,
    min_rise: float = 1.0,
) -> dict[str, Any]:
    """The omitted-stimulus response of one trace to a flash train that stops after ``onsets[-1]``.

    Parameters
    ----------
    trace : (T,) rate in Hz.
    onsets : frame of each flash onset (every ``period`` frames); the omitted flash was due at
        ``onsets[-1] + period``.
    period : flash period in frames.
    baseline_bins : ``(start, stop)`` bins of steady background before the train.
    window : bins searched for the burst, starting right after the expected (omitted) flash:
        ``t_O + 1 .. t_O + window`` where ``t_O = onsets[-1] + period``.
    n_ref : how many of the last flashes (the last one included) give the reference response;
        flash ``k``'s cycle is bins ``onsets[k] + 1 .. onsets[k] + period``.
    criterion : a burst needs ``peak - baseline > (1 + criterion) * (flash peak - baseline)``.
    min_rise : and the flashes must drive the trace: ``flash peak - baseline >= min_rise`` Hz
        (a trace that the flashes do not excite can only show an offset rebound, not an OSR).

    Returns
    -------
    dict with ``baseline_hz``, ``flash_peak_hz`` (largest rate in the reference cycles),
    ``omission_peak_hz``, ``peak_bin``, ``driven`` (the flashes raise the rate by ``min_rise``),
    ``burst`` (bool), ``ratio`` ((peak - baseline) /
    (flash peak - baseline), None when the flashes evoke no rise), ``latency_from_last_s``
    (peak bin - last flash onset) and ``latency_from_expected_s`` (peak bin - expected onset).
    """
    tr = np.asarray(trace, dtype=np.float64)
    onsets = [int(o) for o in onsets]
    last = onsets[-1]
    expected = last + int(period)
    base = float(np.nanmean(tr[baseline_bins[0] : baseline_bins[1]]))
    refs = onsets[-max(1, min(n_ref, len(onsets))) :]
    flash_peak = max(peak_in(tr, o + 1, o + period + 1)[0] for o in refs)
    peak, peak_bin = peak_in(tr, expected + 1, expected + int(window) + 1)
    rise, flash_rise = peak - base, flash_peak - base
    driven = bool(np.isfinite(flash_rise) and flash_rise >= min_rise)
    burst = bool(driven and np.isfinite(rise) and rise > (1.0 + criterion) * flash_rise)
    return {
        "baseline_hz": base,
        "flash_peak_hz": flash_peak,
        "omission_peak_hz": peak,
        "peak_bin": peak_bin,
        "driven": driven,
        "burst": burst,
        "ratio": (rise / flash_rise) if flash_rise > 0 else None,
        "latency_from_last_s": (peak_bin - last) * frame_dt,
        "latency_from_expected_s": (peak_bin - expected) * frame_dt,
    }


def harmonic_amplitudes(cycle: np.ndarray, harmonics: Sequence[int] = (1, 2)) -> np.ndarray:
    """Amplitude of each harmonic of one period of a response, ``(len(harmonics), ...)``.

    ``cycle`` is ``(N, ...)`` samples of one period; the amplitude of harmonic ``k`` is
    ``2/N |sum_t cycle[t] exp(-2 pi i k t / N)|`` (for a cosine of amplitude ``a`` at ``k``
    cycles per period this returns ``a``).
    """
    c = np.asarray(cycle, dtype=np.float64)
    N = c.shape[0]
    t = np.arange(N)
    out = []
    for k in harmonics:
        w = np.exp(-2j * np.pi * k * t / N).reshape((N,) + (1,) * (c.ndim - 1))
        out.append(2.0 / N * np.abs((c * w).sum(0)))
    return np.array(out)


def parabolic_peak(y: np.ndarray, i: int) -> float:
    """Sub-bin position of the maximum at bin ``i`` from a parabola through ``i-1, i, i+1``."""
    if i <= 0 or i >= len(y) - 1:
        return float(i)
    a, b, c = float(y[i - 1]), float(y[i]), float(y[i + 1])
    denom = a - 2 * b + c
    if not np.isfinite(denom) or denom >= 0:
        return float(i)
    return float(i + 0.5 * (a - c) / denom)


def first_crossing(x: Sequence[float], y: Sequence[float], level: float) -> float | None:
    """Smallest ``x`` where ``y`` reaches ``level``, interpolating linearly between samples."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    for j in range(len(xa)):
        if np.isfinite(ya[j]) and ya[j] >= level:
            if j == 0:
                return float(xa[0])
            y0, y1 = ya[j - 1], ya[j]
            if not np.isfinite(y0):
                return float(xa[j])
            return float(xa[j - 1] + (level - y0) / (y1 - y0) * (xa[j] - xa[j - 1]))
    return None


def fit_exponential(t: np.ndarray, y: np.ndarray, tau_bounds: tuple[float, float]) -> dict[str, Any]:
    """Fit ``y = offset + amp * exp(-t / tau)``; returns tau, amp, offset and the variance explained.

    ``tau`` is searched on a log grid within ``tau_bounds`` (for each tau the line in
    ``exp(-t/tau)`` is solved exactly), then refined; None values when the fit explains nothing.
    """
    ta, ya = np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(ya)
    ta, ya = ta[keep], ya[keep]
    out: dict[str, Any] = {"tau_s": None, "amp_hz": None, "offset_hz": None, "r2": None}
    if ta.size < 4 or np.ptp(ya) <= 0:
        return out

    def solve(tau: float) -> tuple[float, float, float]:
        e = np.exp(-ta / tau)
        A = np.stack([np.ones_like(e), e], 1)
        coef, *_ = np.linalg.lstsq(A, ya, rcond=None)
        sse = float(((A @ coef - ya) ** 2).sum())
        return sse, float(coef[0]), float(coef[1])

    lo, hi = max(tau_bounds[0], 1e-9), max(tau_bounds[1], tau_bounds[0] * 1.01)
    grid = np.geomspace(lo, hi, 200)
    sses = [solve(tau)[0] for tau in grid]
    j = int(np.argmin(sses))
    fine = np.geomspace(grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)], 60)
    best = min(((solve(tau), tau) for tau in fine), key=lambda z: z[0][0])
    (sse, off, amp), tau = best
    sst = float(((ya - ya.mean()) ** 2).sum())
    r2 = 1.0 - sse / sst if sst > 0 else None
    out.update({"tau_s": float(tau), "amp_hz": amp, "offset_hz": off, "r2": r2})
    return out
