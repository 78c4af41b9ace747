"""Spike utilities: binning, Gaussian smoothing, the spike-triggered average, repeat reliability.

Arrays follow the recording conventions: time on axis 0, responses ``(T, n_cells)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .alignment import LAG_OF_NEWEST
from .errors import DataError


def bin_spikes(spike_times: Sequence[np.ndarray], frame_times: np.ndarray, frame_dt: float | None = None) -> np.ndarray:
    """Count each unit's spikes in the bins ``[frame_times[t], frame_times[t+1])``.

    The last bin ends at ``frame_times[-1] + frame_dt`` (default: the median frame interval).
    ``spike_times`` holds one array of times (same unit as ``frame_times``) per unit. Returns
    ``(T, n_units)`` float32 counts; spikes outside the frames are ignored.
    """
    ft = np.asarray(frame_times, dtype=np.float64)
    if ft.ndim != 1 or ft.size < 1:
        raise DataError("frame times must be a non-empty 1-D array", fix="give one onset time per frame")
    if ft.size > 1 and not np.all(np.diff(ft) > 0):
        raise DataError("frame times are not strictly increasing", fix="sort or fix the frame times")
    if frame_dt is None:
        if ft.size < 2:
            raise DataError("cannot infer the frame interval from one frame", fix="give frame_dt")
        frame_dt = float(np.median(np.diff(ft)))
    edges = np.append(ft, ft[-1] + frame_dt)
    out = np.zeros((ft.size, len(spike_times)), dtype=np.float32)
    for k, st in enumerate(spike_times):
        st = np.asarray(st, dtype=np.float64).ravel()
        idx = np.searchsorted(edges, st, side="right") - 1
        ok = (idx >= 0) & (idx < ft.size)
        out[:, k] = np.bincount(idx[ok], minlength=ft.size)[: ft.size]
    return out


def gaussian_kernel(sigma_bins: float, truncate: float = 4.0) -> np.ndarray:
    """A normalised (sums to 1) Gaussian kernel of standard deviation ``sigma_bins``."""
    radius = max(1, int(np.ceil(truncate * sigma_bins)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_bins) ** 2)
    return k / k.sum()


def smooth_rates(counts: np.ndarray, frame_dt: float, sigma_s: float = 0.010) -> np.ndarray:
    """Firing rate in Hz: counts per bin convolved with a Gaussian of s.d. ``sigma_s``, divided by the bin width.

    This is what ``response/firing_rate_10ms`` means in the Baccus-lab files (``sigma_s=0.010``).
    The kernel sums to one, so the mean rate equals ``mean(counts) / frame_dt`` away from the edges.
    """
    from scipy.ndimage import convolve1d

    c = np.asarray(counts, dtype=np.float64)
    k = gaussian_kernel(sigma_s / frame_dt)
    return (convolve1d(c, k, axis=0, mode="constant") / frame_dt).astype(np.float32)


def spike_triggered_average(stimulus: np.ndarray, counts: np.ndarray, history: int, chunk: int = 20000) -> np.ndarray:
    """The spike-triggered average of each cell over ``history`` frames.

    Returns ``(n_cells, history, *frame_shape)``, position 0 the oldest frame and position
    ``history - 1`` the frame one bin before the spike (see :mod:`retinakit.alignment`). The
    stimulus mean is removed first, so a cell that ignores the stimulus has an STA near zero.
    """
    stim = np.asarray(stimulus, dtype=np.float32)
    T = stim.shape[0]
    frame_shape = stim.shape[1:]
    flat = stim.reshape(T, -1)
    flat = flat - flat.mean(axis=0, keepdims=True)
    c = np.asarray(counts, dtype=np.float32)
    if c.ndim == 1:
        c = c[:, None]
    n = c.shape[1]
    sta = np.zeros((n, history, flat.shape[1]), dtype=np.float64)
    for j in range(history):
        lag = history - 1 - j + LAG_OF_NEWEST
        if lag >= T:
            continue
        for s in range(lag, T, chunk):
            e = min(T, s + chunk)
            sta[:, j] += c[s:e].T.astype(np.float64) @ flat[s - lag : e - lag].astype(np.float64)
    total = c[history:].sum(axis=0).astype(np.float64)
    total[total == 0] = np.nan
    sta /= total[:, None, None]
    return np.nan_to_num(sta).astype(np.float32).reshape((n, history) + frame_shape)


def spearman_brown(r: np.ndarray | float, factor: float) -> np.ndarray:
    """Spearman-Brown prophecy: reliability of a measure ``factor`` times longer than one with reliability ``r``."""
    r = np.asarray(r, dtype=np.float64)
    return factor * r / (1.0 + (factor - 1.0) * r)


def reliability_from_split_half(r_half: np.ndarray | float, n_a: int, n_b: int) -> np.ndarray:
    """Reliability of the ``n_a + n_b``-repeat average from the correlation of an ``n_a``- and an ``n_b``-repeat average.

    With a per-trial signal-to-noise ratio ``s`` (signal variance over noise variance), the mean
    of ``n`` trials has squared correlation ``rho(n) = n s / (n s + 1)`` with the true rate, and
    two independent means of ``a`` and ``b`` trials correlate at ``r = sqrt(rho(a) rho(b))``.
    Solving for ``s`` gives the quadratic ``a b (1 - r^2) s^2 - r^2 (a + b) s - r^2 = 0``, whose
    root with the sign of ``r`` is taken; the result is ``rho(a + b)``. For ``a == b`` this is
    exactly the Spearman-Brown ``2 r / (1 + r)`` (for any ``r`` in (-1, 1)); for ``a != b`` the
    2-half factor would overstate the reliability (3 repeats: 1 vs 2 trials). ``r >= 1`` gives 1.
    """
    r = np.asarray(r_half, dtype=np.float64)
    a, b = float(n_a), float(n_b)
    if a < 1 or b < 1:
        raise ValueError(f"both halves need at least one repeat, got {n_a} and {n_b}")
    r2 = r * r
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        disc = np.sqrt(r2 * r2 * (a + b) ** 2 + 4.0 * a * b * (1.0 - r2) * r2)
        s = (r2 * (a + b) + np.sign(r) * disc) / (2.0 * a * b * (1.0 - r2))
        rel = (a + b) * s / ((a + b) * s + 1.0)
    return np.where(r >= 1.0, 1.0, rel)


def _half_splits(n_repeats: int, n_splits: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index sets of the first half (``n_repeats // 2`` repeats): every distinct split when there
    are at most ``n_splits`` of them (then the result does not depend on the order of the repeats),
    else ``n_splits`` random ones."""
    from itertools import combinations
    from math import comb

    R, a = n_repeats, n_repeats // 2
    distinct = comb(R - 1, a - 1) if 2 * a == R else comb(R, a)  # an even split and its mirror are one split
    if distinct <= n_splits:
        combos = combinations(range(R), a)
        return [np.array(c) for c in combos if 2 * a != R or c[0] == 0]
    return [np.sort(rng.permutation(R)[:a]) for _ in range(n_splits)]


def split_half_reliability(repeats: np.ndarray, n_splits: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """Reliability of the repeat average, per cell, for any number of repeats ``n >= 2``.

    ``repeats`` is ``(n_repeats, T, n_cells)``. The repeats are split into halves of
    ``a = n // 2`` and ``b = n - a`` repeats (every distinct split when there are at most
    ``n_splits``, else ``n_splits`` random ones, seeded); ``r_half`` is the mean over splits of
    the Pearson correlation between the two half-averages. ``reliability`` is the estimated
    squared correlation between the n-repeat average and the true rate, solved from ``r_half``
    for halves of ``a`` and ``b`` repeats (:func:`reliability_from_split_half`; the Spearman-Brown
    factor 2 when ``a == b``). Averaging ``r`` over splits and then solving is less biased than
    solving per split and averaging (checked on simulated Poisson repeats). ``ceiling`` is its
    square root: the best correlation a perfect model can expect against that average. Cells with
    no variance, or fewer than 2 repeats, get NaN.
    """
    rep = np.asarray(repeats, dtype=np.float64)
    if rep.ndim == 2:
        rep = rep[:, :, None]
    R, T, n = rep.shape
    nan = np.full(n, np.nan)
    if R < 2:
        return {"r_half": nan, "reliability": nan, "ceiling": nan}
    rng = np.random.default_rng(seed)
    rs = []
    for first in _half_splits(R, n_splits, rng):
        in_a = np.zeros(R, dtype=bool)
        in_a[first] = True
        rs.append(_pearson_columns(rep[in_a].mean(axis=0), rep[~in_a].mean(axis=0)))
    stacked = np.stack(rs)
    with np.errstate(invalid="ignore"):
        r_half = np.nanmean(stacked, axis=0) if np.any(np.isfinite(stacked)) else nan
    rel = reliability_from_split_half(r_half, R // 2, R - R // 2)
    ceiling = np.sqrt(np.clip(rel, 0, None))
    ceiling[~np.isfinite(rel)] = np.nan
    return {"r_half": r_half, "reliability": rel, "ceiling": ceiling}


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=0) / np.where(den > 0, den, 1), np.nan)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of two ``(T, n)`` arrays (NaN when a column is constant)."""
    return _pearson_columns(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
