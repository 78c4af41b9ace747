"""Stimuli as retina labs show them, generated on the machine (no image database needed).

All generators are deterministic for a given :class:`numpy.random.Generator` and return arrays
with time on axis 0 in the compact dtypes retinakit stores:

* :func:`white_noise`: binary checkerboards, ``int8`` in {-1, +1} (100 % contrast);
* :func:`fullfield_flicker`: one value per frame, Gaussian (``float16`` contrast) or binary (``int8``);
* :func:`natural_scenes`: ``uint8`` intensities; dead-leaves images (occluding discs with a
  power-law size distribution, which gives the ~1/f amplitude spectrum of natural images), each
  held for about a second and moved by small fixational jitter (a random walk of whole pixels);
  optionally some fixations are instead a train of brief flashes of the image at a 6-20 Hz rhythm
  on mid-grey (``flash_trains``), as in flashed-natural-image experiments;
* :func:`reversing_grating`: a contrast-reversing square-wave grating in contrast units (float32),
  for frequency-doubling tests and probes.

:func:`to_contrast` maps any of these to the contrast the model retina sees: ``uint8`` ->
``(x - 127.5) / 127.5``, integers as they are (white noise is +/-1), floats as they are.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

STIMULI = ("whitenoise", "naturalscene", "fullfield")
FLICKERS = ("gaussian", "binary", "contrast-steps")
#: contrast-steps flicker: each step lasts a uniform 2-8 s, its s.d. log-uniform in this range
STEP_SECONDS = (2.0, 8.0)
STEP_CONTRASTS = (0.1, 0.45)
MID_GREY = 127.5


def to_contrast(stimulus: np.ndarray) -> np.ndarray:
    """The stimulus as contrast (float32): ``uint8`` around mid-grey 127.5, others as they are."""
    x = np.asarray(stimulus)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - MID_GREY) / MID_GREY
    return x.astype(np.float32)


def contrast_affine(dtype: np.dtype) -> tuple[float, float]:
    """``(scale, offset)`` with ``to_contrast(x) == x * scale + offset`` for stimuli of ``dtype``."""
    if np.dtype(dtype) == np.uint8:
        return 1.0 / MID_GREY, -1.0
    return 1.0, 0.0


def white_noise(n_frames: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Binary white-noise checkerboard, ``(n_frames, H, W)`` int8 in {-1, +1}, one checker per pixel."""
    bits = rng.integers(0, 2, size=(int(n_frames),) + tuple(shape), dtype=np.int8)
    return (2 * bits - 1).astype(np.int8)


def fullfield_flicker(n_frames: int, rng: np.random.Generator, flicker: str = "gaussian", contrast: float = 0.35, frame_rate: float = 100.0) -> np.ndarray:
    """Full-field flicker, ``(n_frames,)``.

    ``gaussian``: float16 contrast values with standard deviation ``contrast`` (clipped to +/-1);
    ``binary``: int8 in {-1, +1} (100 % contrast); ``contrast-steps``: Gaussian flicker whose
    standard deviation steps to a new value every :data:`STEP_SECONDS` (uniform, at ``frame_rate``),
    log-uniform in :data:`STEP_CONTRASTS`: the stimulus that shows slow contrast adaptation.
    """
    if flicker == "gaussian":
        x = np.clip(rng.standard_normal(int(n_frames)) * float(contrast), -1.0, 1.0)
        return x.astype(np.float16)
    if flicker == "contrast-steps":
        sd = np.empty(int(n_frames))
        t = 0
        lo, hi = np.log(STEP_CONTRASTS[0]), np.log(STEP_CONTRASTS[1])
        while t < sd.size:
            n = max(1, int(round(rng.uniform(*STEP_SECONDS) * float(frame_rate))))
            sd[t : t + n] = np.exp(rng.uniform(lo, hi))
            t += n
        return np.clip(rng.standard_normal(sd.size) * sd, -1.0, 1.0).astype(np.float16)
    if flicker == "binary":
        return (2 * rng.integers(0, 2, size=int(n_frames), dtype=np.int8) - 1).astype(np.int8)
    raise ConfigError(f"unknown full-field flicker '{flicker}'", fix=f"use one of {', '.join(FLICKERS)}")


def _disc_radii(n: int, r_min: float, r_max: float, rng: np.random.Generator) -> np.ndarray:
    """Radii with density proportional to r^-3 on [r_min, r_max] (scale invariance)."""
    u = rng.random(n)
    a, b = r_min ** -2.0, r_max ** -2.0
    return (a - u * (a - b)) ** -0.5


def dead_leaves(shape: tuple[int, int], rng: np.random.Generator, r_min: float = 1.5, r_max: float | None = None, coverage: float = 4.0) -> np.ndarray:
    """One dead-leaves image, ``(H, W)`` uint8.

    Opaque discs fall one on top of another (later discs occlude earlier ones). Radii follow
    ``p(r) ~ r^-3`` between ``r_min`` and ``r_max`` (default: half the larger side), which makes the
    image statistically scale invariant with a power spectrum close to ``1/f^2`` and sharp
    occluding edges, like natural images. Each disc has a uniform grey level drawn from
    Beta(2, 2) over 0..255 (mean at mid-grey). ``coverage`` is the expected number of discs over a
    pixel; pixels no disc reaches keep the background leaf's grey.
    """
    h, w = int(shape[0]), int(shape[1])
    r_max = float(r_max) if r_max is not None else 0.5 * max(h, w)
    r_max = max(r_max, r_min * 1.01)
    a, b = r_min ** -2.0, r_max ** -2.0
    mean_r2 = math.log(r_max / r_min) / (0.5 * (a - b))
    n = max(1, int(math.ceil(coverage * h * w / (math.pi * mean_r2))))
    radii = _disc_radii(n, r_min, r_max, rng).astype(np.float32)
    cy = rng.uniform(-0.5, h - 0.5, n).astype(np.float32)
    cx = rng.uniform(-0.5, w - 0.5, n).astype(np.float32)
    grey = np.round(255.0 * rng.beta(2.0, 2.0, n + 1)).astype(np.uint8)
    yy = np.arange(h, dtype=np.float32)
    xx = np.arange(w, dtype=np.float32)
    dy2 = (yy[None, :] - cy[:, None]) ** 2  # (n, h)
    dx2 = (xx[None, :] - cx[:, None]) ** 2  # (n, w)
    cover = (dy2[:, :, None] + dx2[:, None, :]) <= (radii ** 2)[:, None, None]  # (n, h, w)
    # the top-most (last drawn) disc that covers each pixel; index 0 of `grey` is the background
    rev = cover[::-1]
    hit = rev.any(axis=0)
    top = n - 1 - rev.argmax(axis=0)
    idx = np.where(hit, top + 1, 0)
    return grey[idx]


def _fold(x: np.ndarray, limit: float) -> np.ndarray:
    """Reflect a walk into [-limit, limit] (a triangle wave of period 4 * limit)."""
    if limit <= 0:
        return np.zeros_like(x)
    p = 4.0 * limit
    return limit - np.abs(np.mod(x + limit, p) - 2.0 * limit)


#: Flash rates (Hz) of the flashed-image trains, the range of the OSR probe.
FLASH_TRAIN_RATES_HZ = (6.0, 20.0)
#: Longest part of a fixation the flashes of a train may take; the rest is mid-grey (the train's end).
FLASH_TRAIN_SPAN = 0.7


def flashed_image_train(image: np.ndarray, n_frames: int, rng: np.random.Generator, frame_rate: float) -> np.ndarray:
    """``n_frames`` frames (uint8) of ``image`` flashed on mid-grey at a random rhythm, then mid-grey.

    The period is drawn uniformly over the whole-frame periods with a rate of
    :data:`FLASH_TRAIN_RATES_HZ` (5..16 frames at 100 Hz), each flash lasts 20-30 ms (at least one
    frame, shorter than the period), and 3 or more flashes fill up to :data:`FLASH_TRAIN_SPAN` of the
    segment: the train stops (the next flash is omitted) with time left to see what follows.
    """
    n = int(n_frames)
    dt = 1.0 / float(frame_rate)
    lo = max(2, math.ceil(1.0 / (FLASH_TRAIN_RATES_HZ[1] * dt) - 1e-9))
    hi = max(lo, math.floor(1.0 / (FLASH_TRAIN_RATES_HZ[0] * dt) + 1e-9))
    period = int(rng.integers(lo, hi + 1))
    flash = int(min(period - 1, max(1, round(float(rng.uniform(0.02, 0.03)) / dt))))
    most = max(1, int(FLASH_TRAIN_SPAN * n) // period)
    count = int(rng.integers(min(3, most), most + 1))
    out = np.full((n,) + image.shape, int(round(MID_GREY)), dtype=np.uint8)
    for k in range(count):
        out[k * period : min(n, k * period + flash)] = image
    return out


def natural_scenes(
    n_frames: int,
    shape: tuple[int, int],
    rng: np.random.Generator,
    frame_rate: float = 100.0,
    hold_s: float = 1.0,
    jitter_px_per_sqrt_s: float = 3.0,
    jitter_max_px: int = 4,
    flash_trains: float = 0.0,
) -> np.ndarray:
    """Natural-scene movie, ``(n_frames, H, W)`` uint8.

    A new dead-leaves image every ``hold_s`` seconds; during each fixation the image moves by a
    Gaussian random walk (``jitter_px_per_sqrt_s`` pixels of r.m.s. displacement after one
    second), reflected within +/-``jitter_max_px`` and rounded to whole pixels, like the fixational
    jitter of the published experiments. With ``flash_trains`` > 0 that fraction of the fixations
    (at random) is instead the image flashed on mid-grey at a 6-20 Hz rhythm (:func:`flashed_image_train`),
    the only natural-scene segments that exercise rhythm-dependent responses such as the omitted
    stimulus response. ``flash_trains=0`` draws nothing extra (the movie is as before).
    """
    H, W = int(shape[0]), int(shape[1])
    n_frames = int(n_frames)
    hold = max(1, int(round(hold_s * frame_rate)))
    M = max(0, int(jitter_max_px))
    step_sd = float(jitter_px_per_sqrt_s) / math.sqrt(float(frame_rate))
    out = np.empty((n_frames, H, W), dtype=np.uint8)
    n_images = -(-n_frames // hold)
    for i in range(n_images):
        img = dead_leaves((H + 2 * M, W + 2 * M), rng)
        n = min(hold, n_frames - i * hold)
        if flash_trains > 0 and rng.random() < flash_trains:
            out[i * hold : i * hold + n] = flashed_image_train(img[M : M + H, M : M + W], n, rng, frame_rate)
            continue
        walk = np.cumsum(rng.standard_normal((n, 2)) * step_sd, axis=0)
        walk -= walk[0]  # each fixation starts centred
        pos = np.rint(_fold(walk, M)).astype(np.int64) + M
        view = np.lib.stride_tricks.sliding_window_view(img, (H, W))  # (2M+1, 2M+1, H, W)
        out[i * hold : i * hold + n] = view[pos[:, 0], pos[:, 1]]
    return out


def reversing_grating(
    n_frames: int,
    shape: tuple[int, int],
    period_px: float,
    phase_deg: float = 0.0,
    reversal_hz: float = 2.0,
    frame_rate: float = 100.0,
    contrast: float = 1.0,
    temporal: str = "square",
) -> np.ndarray:
    """A contrast-reversing square-wave grating, ``(n_frames, H, W)`` float32 contrast.

    Vertical bars of spatial period ``period_px`` (bar width = half a period) at spatial phase
    ``phase_deg``; the contrast reverses ``reversal_hz`` full cycles per second, as a square wave
    in time (``temporal="square"``) or a sinusoid (``"sine"``). A linear cell centred on a bar
    edge (the null phase) does not respond; a cell with rectified subunits responds at twice the
    reversal frequency (frequency doubling).
    """
    H, W = int(shape[0]), int(shape[1])
    x = np.arange(W, dtype=np.float64)
    spatial = np.sign(np.cos(2 * np.pi * x / float(period_px) + np.deg2rad(phase_deg)))
    cycles = np.mod(np.arange(int(n_frames), dtype=np.float64) * float(reversal_hz) / float(frame_rate), 1.0)
    if temporal == "square":
        wave = np.where(cycles < 0.5, 1.0, -1.0)
    elif temporal == "sine":
        wave = np.sin(2 * np.pi * cycles)
    else:
        raise ConfigError(f"unknown temporal profile '{temporal}'", fix="use 'square' or 'sine'")
    frames = float(contrast) * wave[:, None, None] * np.broadcast_to(spatial[None, None, :], (1, H, W))
    return frames.astype(np.float32)


def make_stimulus(
    kind: str,
    n_frames: int,
    shape: tuple[int, int],
    rng: np.random.Generator,
    frame_rate: float = 100.0,
    flicker: str = "gaussian",
    **options: float,
) -> np.ndarray:
    """Dispatch to the generator for ``kind`` (one of :data:`STIMULI`)."""
    if kind == "whitenoise":
        return white_noise(n_frames, shape, rng)
    if kind == "naturalscene":
        return natural_scenes(n_frames, shape, rng, frame_rate=frame_rate, **options)
    if kind == "fullfield":
        return fullfield_flicker(n_frames, rng, flicker=flicker, frame_rate=frame_rate, **options)
    raise ConfigError(f"unknown stimulus '{kind}'", fix=f"use one of {', '.join(STIMULI)}")
