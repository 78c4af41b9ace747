"""Synthetic probe stimuli in a model's own geometry and units.

Builders return *contrast* movies (0 = the training mean, +-1 = the largest symmetric excursion
inside the training range, see :class:`retinakit.probes.base.Levels`) together with the frame
indices of their events; :func:`to_raw` turns a contrast movie into raw intensities that
:meth:`FittedModel.predict` normalises exactly as in training. Time is on axis 0, one frame per
bin; spatial movies are ``(T, H, W)`` and full-field ones ``(T,)``. Gratings and bars vary along
the columns (x); pixel values are the exact area average of the pattern over the pixel, so
sub-pixel positions and widths are rendered without aliasing.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .base import Levels, frames_of


def to_raw(contrast: np.ndarray, levels: Levels, frame_shape: tuple[int, ...]) -> np.ndarray:
    """Raw intensities for a contrast movie; ``(T,)`` full-field values are spread over the frame."""
    c = np.asarray(contrast, dtype=np.float64)
    raw = levels.intensity(c).astype(np.float32)
    if c.ndim == 1:
        return frames_of(raw, frame_shape)
    return raw


def pulses(n_frames: int, onsets: Sequence[int], duration: int, contrast: float) -> np.ndarray:
    """Full-field contrast trace ``(n_frames,)``: background with pulses of ``contrast`` of ``duration`` frames."""
    c = np.zeros(int(n_frames))
    for o in onsets:
        c[int(o) : int(o) + int(duration)] = contrast
    return c


def flash_train(history: int, period: int, flash: int, n_flashes: int, contrast: float, post: int, lead: int = 5) -> tuple[np.ndarray, list[int], dict[str, Any]]:
    """A periodic flash train that stops: ``n_flashes`` flashes then background (the omission).

    The train starts after ``history + lead`` background frames (so bins ``history .. history +
    lead`` are a clean baseline); the omitted flash was due at ``onsets[-1] + period``; the movie
    goes on for ``post`` frames after that. Returns the contrast trace, the onsets and the timeline.
    """
    start = int(history) + int(lead)
    onsets = [start + k * int(period) for k in range(int(n_flashes))]
    expected = onsets[-1] + int(period)
    T = expected + int(post) + 1
    info = {"baseline_bins": (int(history), start + 1), "expected_frame": expected, "n_frames": T}
    return pulses(T, onsets, flash, contrast), onsets, info


def square_wave_coverage(edges: np.ndarray, width: float, phase: float) -> np.ndarray:
    """Mean of a +-1 square wave (bars of ``width``, +1 first at ``-phase``) over ``[edges[i], edges[i+1])``."""
    def integral(u: np.ndarray) -> np.ndarray:  # integral from 0 of sq(x + phase) dx, via a triangle wave
        def tri(v: np.ndarray) -> np.ndarray:
            m = np.mod(v, 2 * width)
            return np.where(m < width, m, 2 * width - m)

        return tri(u + phase) - tri(np.asarray(phase))

    e = np.asarray(edges, dtype=np.float64)
    return (integral(e[1:]) - integral(e[:-1])) / np.diff(e)


def grating(shape: tuple[int, int], width: float, phase: float) -> np.ndarray:
    """A +-1 square-wave grating of bars ``width`` pixels wide along x, shifted by ``phase`` pixels, ``(H, W)``."""
    H, W = shape
    row = square_wave_coverage(np.arange(W + 1, dtype=np.float64), width, phase)
    return np.broadcast_to(row[None, :], (H, W)).copy()


def reversing_grating(shape: tuple[int, int], width: float, phase: float, period: int, n_cycles: int, contrast: float) -> np.ndarray:
    """A contrast-reversing square-wave grating: sign +1 for the first half period, -1 for the second."""
    half = int(period) // 2
    sign = np.tile(np.r_[np.ones(half), -np.ones(int(period) - half)], int(n_cycles))
    return contrast * sign[:, None, None] * grating(shape, width, phase)[None]


def bar_coverage(shape: tuple[int, int], centers: np.ndarray, width: float) -> np.ndarray:
    """Fraction of each pixel column covered by a bar ``[c - width/2, c + width/2)`` per frame, ``(T, H, W)``.

    Pixel column ``x`` spans ``[x, x + 1)``, so a bar centred on column ``x`` has ``c = x + 0.5``.
    """
    H, W = shape
    c = np.asarray(centers, dtype=np.float64)[:, None]
    x0 = np.arange(W, dtype=np.float64)[None, :]
    cov = np.clip(np.minimum(x0 + 1, c + width / 2) - np.maximum(x0, c - width / 2), 0.0, 1.0)
    return np.broadcast_to(cov[:, None, :], (c.shape[0], H, W)).copy()


def contrast_switch_noise(rng: np.random.Generator, block: int, n_cycles: int, lead: int, low: float, high: float, antithetic: bool = True) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Full-field Gaussian flicker whose s.d. alternates low/high every ``block`` frames.

    Starts with ``lead`` frames of low contrast, then ``n_cycles`` cycles of (high, low). Values
    are clipped to +-1 (the training range). With ``antithetic``, every second cycle is the
    previous one with its sign flipped, so averages over cycles cancel the linear part of the
    stimulus-driven fluctuations (variance reduction for the time course). Returns the contrast
    trace, the s.d. per frame and the frames where high contrast starts.
    """
    sd_cycle = np.r_[np.full(block, high), np.full(block, low)]
    cycles = []
    for k in range(n_cycles):
        if antithetic and k % 2 == 1:
            cycles.append(-cycles[-1])
        else:
            cycles.append(np.clip(rng.standard_normal(2 * block) * sd_cycle, -1.0, 1.0))
    x = np.concatenate([np.clip(rng.standard_normal(lead) * low, -1.0, 1.0)] + cycles)
    sd = np.concatenate([np.full(lead, low)] + [sd_cycle] * n_cycles)
    switches = [lead + 2 * block * k for k in range(n_cycles)]
    return x, sd, switches
