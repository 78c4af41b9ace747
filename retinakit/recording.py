"""The recording: one validated in-memory object for what a lab records.

Conventions (used everywhere in retinakit):

* time is axis 0; a stimulus is ``(T,)`` (full-field) or ``(T, H, W)``;
* responses are ``(T, n_cells)`` spike counts per bin (bins equal frames);
  smoothed rates are ``(T, n_cells)`` in Hz; repeats are ``(n_repeats, T, n_cells)``;
* ``time`` holds frame onset times in seconds, strictly increasing;
* cells are identified by integer ids (``cell07`` in a file is id 7), never by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataError

STIMULUS_KINDS = ("whitenoise", "naturalscene", "fullfield", "unknown")


def compact_stimulus(stimulus: np.ndarray) -> np.ndarray:
    """Return ``stimulus`` in the smallest dtype that holds it exactly (uint8, int8, float16, float32)."""
    x = np.asarray(stimulus)
    if x.size == 0:
        return x.astype(np.float32)
    if x.dtype in (np.uint8, np.int8, np.float16):
        return x
    lo, hi = float(np.min(x)), float(np.max(x))
    if np.issubdtype(x.dtype, np.integer) or np.array_equal(x, np.round(x)):
        if lo >= 0 and hi <= 255:
            return x.astype(np.uint8)
        if lo >= -128 and hi <= 127:
            return x.astype(np.int8)
    if np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer):
        half = x.astype(np.float16)
        if np.all(np.isfinite(half)) and np.array_equal(half.astype(x.dtype), x):
            return half
    return x.astype(np.float32)


def _numeric(name: str, arr: object, where: str, dtype: type) -> np.ndarray:
    """Convert to ``dtype`` after checking the values are numbers (not strings or objects)."""
    a = np.asarray(arr)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or np.iscomplexobj(a):
        raise DataError(f"{name} must be real numbers, got dtype {a.dtype}", where, "store real numbers, not text, objects or complex values")
    with np.errstate(over="ignore"):
        return a.astype(dtype)


def _check_finite(name: str, arr: np.ndarray, where: str) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise DataError(f"{name} has {bad} NaN or infinite values", where, "clean or drop those bins before loading")


@dataclass
class Split:
    """One part of a recording (``train`` or the repeated ``test`` segment).

    Attributes
    ----------
    stimulus : (T,) or (T, H, W) array, one value/frame per bin.
    time : (T,) frame onset times in seconds.
    counts : (T, n_cells) spike counts per bin (for ``test``: the mean over repeats).
    rates : mapping like ``{"firing_rate_10ms": (T, n_cells)}``, Gaussian-smoothed rates in Hz.
    repeats : (n_repeats, T, n_cells) spike counts per repeat (test only).
    true_rate : (T, n_cells) expected spike count per bin, when known (simulations).
    """

    stimulus: np.ndarray
    time: np.ndarray
    counts: np.ndarray
    rates: dict[str, np.ndarray] = field(default_factory=dict)
    repeats: np.ndarray | None = None
    true_rate: np.ndarray | None = None

    @property
    def n_bins(self) -> int:
        """Number of bins (frames)."""
        return int(self.time.shape[0])

    @property
    def duration(self) -> float:
        """Duration in seconds (number of bins times the bin width)."""
        if self.n_bins < 2:
            return 0.0
        return float(self.n_bins * np.median(np.diff(self.time)))

    @property
    def n_repeats(self) -> int:
        """Number of repeats (0 when none)."""
        return 0 if self.repeats is None else int(self.repeats.shape[0])

    def validate(self, name: str, where: str) -> None:
        """Check shapes, finiteness and time order; raise :class:`DataError` naming the field."""
        w = f"{where} ({name})"
        self.time = _numeric(f"'{name}/time'", self.time, w, np.float64)
        if self.time.ndim != 1 or self.time.size == 0:
            raise DataError(f"'{name}/time' must be a non-empty 1-D array, got shape {self.time.shape}", w, "store one onset time per frame")
        _check_finite(f"'{name}/time'", self.time, w)
        if self.time.size > 1 and not np.all(np.diff(self.time) > 0):
            i = int(np.argmin(np.diff(self.time) > 0))
            raise DataError(f"'{name}/time' is not strictly increasing (time[{i + 1}]={self.time[i + 1]:.6g} <= time[{i}]={self.time[i]:.6g})", w, "sort the frames or fix the frame-time export")
        T = self.time.size
        self.stimulus = np.asarray(self.stimulus)
        if self.stimulus.ndim not in (1, 3) or self.stimulus.shape[0] != T:
            raise DataError(f"'{name}/stimulus' must be (T,) or (T, H, W) with T={T} frames, got shape {self.stimulus.shape}", w, "the stimulus needs one frame per time bin")
        if self.stimulus.ndim == 3 and min(self.stimulus.shape[1:]) < 1:
            raise DataError(f"'{name}/stimulus' has an empty frame shape {self.stimulus.shape[1:]}", w, "store frames of at least 1x1")
        if not (np.issubdtype(self.stimulus.dtype, np.number)) or np.iscomplexobj(self.stimulus):
            raise DataError(f"'{name}/stimulus' must be real numbers, got dtype {self.stimulus.dtype}", w, "store the stimulus as real numbers")
        _check_finite(f"'{name}/stimulus'", self.stimulus, w)
        self.stimulus = compact_stimulus(self.stimulus)
        if np.issubdtype(self.stimulus.dtype, np.floating) and not np.all(np.isfinite(self.stimulus)):
            raise DataError(f"'{name}/stimulus' has values beyond the float32 range", w, "rescale the stimulus (e.g. to contrast units)")
        self.counts = _numeric(f"'{name}' spike counts", self.counts, w, np.float32)
        if self.counts.ndim != 2 or self.counts.shape[0] != T:
            raise DataError(f"'{name}' spike counts must be (T={T}, n_cells), got shape {self.counts.shape}", w, "bin the responses on the stimulus frames")
        if self.counts.shape[1] < 1:
            raise DataError(f"'{name}' has zero cells", w, "select at least one cell")
        _check_finite(f"'{name}' spike counts", self.counts, w)
        if np.any(self.counts < 0):
            raise DataError(f"'{name}' spike counts has negative values", w, "counts must be >= 0")
        n = self.counts.shape[1]
        for key, rate in list(self.rates.items()):
            rate = _numeric(f"'{name}/response/{key}'", rate, w, np.float32)
            if rate.shape != (T, n):
                raise DataError(f"'{name}/response/{key}' must be (T={T}, n_cells={n}), got {rate.shape}", w, "rates and counts must cover the same bins and cells")
            _check_finite(f"'{name}/response/{key}'", rate, w)
            self.rates[key] = rate
        if self.repeats is not None:
            self.repeats = _numeric(f"'{name}/repeats'", self.repeats, w, np.float32)
            if self.repeats.ndim != 3 or self.repeats.shape[1:] != (T, n):
                raise DataError(f"'{name}/repeats' must be (n_repeats, T={T}, n_cells={n}), got {self.repeats.shape}", w, "every cell needs the same number of repeats over the test bins")
            if self.repeats.shape[0] < 1:
                raise DataError(f"'{name}/repeats' has no repeats", w, "store at least one repeat")
            _check_finite(f"'{name}/repeats'", self.repeats, w)
            if np.any(self.repeats < 0):
                raise DataError(f"'{name}/repeats' has negative spike counts", w, "counts must be >= 0")
        if self.true_rate is not None:
            self.true_rate = _numeric(f"'{name}' true rate", self.true_rate, w, np.float32)
            if self.true_rate.shape != (T, n):
                raise DataError(f"'{name}' true rate must be (T={T}, n_cells={n}), got {self.true_rate.shape}", w)
            _check_finite(f"'{name}' true rate", self.true_rate, w)

    def select(self, idx: np.ndarray) -> "Split":
        """A copy restricted to cell columns ``idx``."""
        return Split(
            stimulus=self.stimulus,
            time=self.time,
            counts=self.counts[:, idx],
            rates={k: v[:, idx] for k, v in self.rates.items()},
            repeats=None if self.repeats is None else self.repeats[:, :, idx],
            true_rate=None if self.true_rate is None else self.true_rate[:, idx],
        )


@dataclass
class Recording:
    """A validated recording: train part, repeated test part, cell ids, bin width, provenance.

    ``provenance`` holds at least ``source`` (file), ``sha256`` (content hash) and free-form
    notes; ``stimulus_kind`` is one of :data:`STIMULUS_KINDS`.
    """

    train: Split
    test: Split | None
    cell_ids: np.ndarray
    frame_dt: float | None = None
    stimulus_kind: str = "unknown"
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = str(self.provenance.get("source", "<memory>"))
        self.train.validate("train", where)
        if self.test is not None:
            self.test.validate("test", where)
        self.cell_ids = np.asarray(self.cell_ids)
        n = self.train.counts.shape[1]
        if self.cell_ids.ndim != 1 or self.cell_ids.size != n:
            raise DataError(f"there are {self.cell_ids.size} cell ids for {n} response columns", where, "give one id per cell")
        if not np.issubdtype(self.cell_ids.dtype, np.integer):
            raise DataError(f"cell ids must be integers, got dtype {self.cell_ids.dtype}", where)
        self.cell_ids = self.cell_ids.astype(np.int64)
        if np.any(self.cell_ids < 0):
            raise DataError(f"cell ids must be >= 0 (files name cells cellNN), got {sorted(int(i) for i in self.cell_ids[self.cell_ids < 0])[:5]}", where, "renumber the units")
        if len(set(self.cell_ids.tolist())) != n:
            raise DataError("cell ids are not unique", where, "each cell needs its own id")
        if self.test is not None:
            if self.test.counts.shape[1] != n:
                raise DataError(f"train has {n} cells but test has {self.test.counts.shape[1]}", where, "both parts must hold the same cells")
            if self.test.stimulus.shape[1:] != self.train.stimulus.shape[1:]:
                raise DataError(f"train frames are {self.train.stimulus.shape[1:]} but test frames are {self.test.stimulus.shape[1:]}", where, "both parts must use the same stimulus geometry")
        if self.frame_dt is None:
            if self.train.n_bins < 2:
                raise DataError("cannot infer the frame interval from a single frame", where, "give frame_dt")
            self.frame_dt = float(np.median(np.diff(self.train.time)))
        self.frame_dt = float(self.frame_dt)
        if not (np.isfinite(self.frame_dt) and self.frame_dt > 0):
            raise DataError(f"frame interval must be positive, got {self.frame_dt}", where)
        if self.stimulus_kind not in STIMULUS_KINDS:
            raise DataError(f"unknown stimulus kind '{self.stimulus_kind}'", where, f"use one of {', '.join(STIMULUS_KINDS)}")

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return int(self.cell_ids.size)

    @property
    def frame_rate(self) -> float:
        """Frames (bins) per second."""
        return 1.0 / float(self.frame_dt)  # type: ignore[arg-type]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Spatial shape of one frame: ``()`` for full-field, ``(H, W)`` otherwise."""
        return tuple(self.train.stimulus.shape[1:])

    @property
    def is_fullfield(self) -> bool:
        """True when the stimulus is one value per frame."""
        return self.train.stimulus.ndim == 1

    def select_cells(self, ids: list[int] | np.ndarray) -> "Recording":
        """A new recording holding only the cells with these ids (in the given order)."""
        ids = [int(i) for i in ids]
        lookup = {int(c): k for k, c in enumerate(self.cell_ids)}
        missing = [i for i in ids if i not in lookup]
        if missing:
            raise DataError(f"cells {missing} are not in the recording", str(self.provenance.get("source", "<memory>")), f"available cells: {self.cell_ids.tolist()}")
        idx = np.array([lookup[i] for i in ids], dtype=np.int64)
        return Recording(
            train=self.train.select(idx),
            test=None if self.test is None else self.test.select(idx),
            cell_ids=self.cell_ids[idx],
            frame_dt=self.frame_dt,
            stimulus_kind=self.stimulus_kind,
            provenance=dict(self.provenance),
        )
