"""From spike times, frame onsets, a stimulus and repeat starts to a validated :class:`Recording`.

The pieces come from any source format (see :mod:`retinakit.io.importer`); here they are plain
arrays in seconds. What happens, in order:

1. **Units.** :func:`to_seconds` converts times given in seconds, milliseconds or sample indices.
   :func:`check_spike_rates` and :func:`check_frame_rate` catch a wrong unit (a samples/seconds/ms
   mix-up makes rates 1000x or 10000x off), :func:`check_spikes_after_last_frame` catches spike
   and frame clocks that disagree.
2. **Frames.** :func:`check_frame_intervals` refuses frame intervals that jump (dropped frames,
   double triggers); pauses can instead be accepted as block boundaries (``frame_gaps = "split"``).
3. **Repeats.** :func:`locate_repeats` turns start times into frame indices: each repeat starts at
   the first frame whose onset is ``>=`` its start, and all repeats have the same number of frames.
   :func:`align_repeats` checks that every repeat shows the same stimulus with the same frame
   timing; a repeat whose stimulus matches only after a shift of a few frames is realigned when
   that shift is the only one that works (and the note says so), otherwise the import fails.
4. **Binning.** Bins are frames (:func:`retinakit.spikes.bin_spikes`; the last bin of each
   contiguous run of frames lasts the median frame interval). Frames inside a repeat form the test
   part; the rest, in time order, the training part (its contiguous blocks are recorded in the
   provenance as ``train_blocks``, ``[start, stop)`` in training bins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError
from ..recording import Recording, Split
from ..spikes import bin_spikes

TYPICAL_SAMPLE_RATES = (10000.0, 20000.0, 25000.0, 30000.0)


@dataclass
class SpikeTrains:
    """Spike times per unit, in seconds, with the units' own ids."""

    times: list[np.ndarray]
    ids: np.ndarray

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if len(self.times) != self.ids.size:
            raise DataError(f"{len(self.times)} spike trains but {self.ids.size} unit ids", fix="give one id per unit")
        if len(set(self.ids.tolist())) != self.ids.size:
            seen: set[int] = set()
            dup = sorted({i for i in self.ids.tolist() if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
            raise DataError(f"unit ids are not unique (repeated: {dup[:10]})", fix="each unit needs its own id (check spikes.id_field / spikes.ids_variable)")

    @property
    def n_units(self) -> int:
        """Number of units."""
        return int(self.ids.size)

    @property
    def n_spikes(self) -> int:
        """Total number of spikes."""
        return int(sum(t.size for t in self.times))

    def select(self, keep: np.ndarray) -> "SpikeTrains":
        """The units at positions ``keep`` (boolean mask or indices)."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)
        return SpikeTrains([self.times[i] for i in idx], self.ids[idx])

    def sorted_by_id(self) -> "SpikeTrains":
        """The same units ordered by id."""
        return self.select(np.argsort(self.ids, kind="stable"))


@dataclass
class Assembled:
    """The result of :func:`assemble_recording`: the recording and what was done to get it."""

    recording: Recording
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- units
def unit_label(unit: str, sample_rate: float | None) -> str:
    """Human wording of a time unit: ``seconds``, ``ms``, ``samples at 10000 Hz``."""
    return f"samples at {sample_rate:g} Hz" if unit == "samples" else unit


def unit_factor(unit: str, sample_rate: float | None) -> float:
    """Seconds per raw unit."""
    if unit == "seconds":
        return 1.0
    if unit == "ms":
        return 1e-3
    if unit == "samples":
        if not sample_rate or sample_rate <= 0:
            raise DataError("sample indices need a positive sample rate", fix="give the acquisition rate in Hz (sample_rate)")
        return 1.0 / float(sample_rate)
    raise DataError(f"unknown time unit '{unit}'", fix="use seconds, ms or samples")


def to_seconds(values: np.ndarray, unit: str, sample_rate: float | None = None) -> np.ndarray:
    """Convert times in ``unit`` (seconds, ms, samples at ``sample_rate``) to float64 seconds."""
    v = np.asarray(values)
    if v.dtype.kind in ("u", "i"):
        v = v.astype(np.float64)
    return v.astype(np.float64) * unit_factor(unit, sample_rate)


def _alternatives(unit: str, sample_rate: float | None, rate: float, lo: float, hi: float, stated_factor: float) -> list[str]:
    """The other units under which ``rate`` (measured under ``unit``) would fall inside ``[lo, hi]``."""
    cands: list[tuple[str, float]] = [("seconds", 1.0), ("ms", 1e-3)]
    rates = [sample_rate] if (unit == "samples" and sample_rate) else list(TYPICAL_SAMPLE_RATES)
    sample_ok = [fs for fs in rates if lo <= rate * stated_factor * fs <= hi]
    out = [name for name, f in cands if name != unit and lo <= rate * stated_factor / f <= hi]
    if unit != "samples" and sample_ok:
        out.append("samples (at " + ", ".join(f"{fs:g}" for fs in sample_ok) + " Hz)")
    return out


def check_spike_rates(trains: SpikeTrains, unit: str, sample_rate: float | None, lo: float, hi: float, where: str) -> float | None:
    """Fail when the median unit's rate over its own span is implausible for the stated unit.

    Returns the median rate in Hz (None when no unit has 3 or more spikes).
    """
    rates = []
    for t in trains.times:
        if t.size >= 3:
            span = float(t.max() - t.min())
            if span > 0:
                rates.append(t.size / span)
    if not rates:
        return None
    rate = float(np.median(rates))
    if lo <= rate <= hi:
        return rate
    alts = _alternatives(unit, sample_rate, rate, lo, hi, unit_factor(unit, sample_rate))
    label = unit_label(unit, sample_rate)
    if alts:
        fix = f"they look like {' or '.join(alts)}: set spikes.unit (and spikes.sample_rate) to match"
    else:
        fix = "check spikes.unit and spikes.sample_rate; if these rates are real, widen checks.min_rate_hz / checks.max_rate_hz"
    raise DataError(
        f"spike times read as {label} give a median firing rate of {rate:.3g} Hz per unit, outside the plausible {lo:g}-{hi:g} Hz",
        where,
        fix,
    )


def check_frame_rate(frame_times: np.ndarray, unit: str | None, sample_rate: float | None, lo: float, hi: float, where: str, raw: np.ndarray | None = None) -> float:
    """Fail when the frame rate implied by the onsets is implausible for the stated unit; return it (Hz)."""
    d = np.diff(frame_times)
    if d.size == 0:
        raise DataError("there is only one frame onset", where, "give one onset time per stimulus frame")
    med = float(np.median(d))
    if not med > 0:
        raise DataError("frame onsets are not increasing (median interval <= 0)", where, "give the onset times in order, one per frame")
    rate = 1.0 / med
    if raw is not None and raw.size >= 3 and np.all(np.diff(np.asarray(raw, dtype=np.float64)) == 1.0) and float(raw[0]) in (0.0, 1.0):
        raise DataError(
            f"frame onsets are consecutive integers ({raw[0]:g}, {raw[1]:g}, {raw[2]:g}, ...): they look like frame numbers, not times",
            where,
            "give the onset times (e.g. from the trigger/photodiode channel), or frames.rate for evenly spaced frames",
        )
    if lo <= rate <= hi:
        return rate
    label = unit_label(unit or "seconds", sample_rate)
    # a frame *rate* moves the opposite way to a spike count rate, so test the intervals directly
    stated = unit_factor(unit or "seconds", sample_rate)
    alts = []
    for name, f in (("seconds", 1.0), ("ms", 1e-3)):
        if name != unit and lo <= 1.0 / (med / stated * f) <= hi:
            alts.append(name)
    fss = [sample_rate] if (unit == "samples" and sample_rate) else list(TYPICAL_SAMPLE_RATES)
    ok = [fs for fs in fss if lo <= fs / (med / stated) <= hi]
    if unit != "samples" and ok:
        alts.append("samples (at " + ", ".join(f"{fs:g}" for fs in ok) + " Hz)")
    fix = f"they look like {' or '.join(alts)}: set frames.unit (and frames.sample_rate) to match" if alts else "check frames.unit and frames.sample_rate; if the rate is real, widen checks.min_frame_rate_hz / checks.max_frame_rate_hz"
    raise DataError(f"frame onsets read as {label} give a frame rate of {rate:.3g} Hz, outside the plausible {lo:g}-{hi:g} Hz", where, fix)


def check_spikes_after_last_frame(trains: SpikeTrains, frame_times: np.ndarray, frame_dt: float, max_fraction: float, where: str) -> tuple[int, int]:
    """Fail when more than ``max_fraction`` of all spikes fall after the end of the last frame.

    Returns (spikes before the first frame, spikes after the last frame).
    """
    end = float(frame_times[-1] + frame_dt)
    start = float(frame_times[0])
    total = trains.n_spikes
    after = int(sum(int(np.count_nonzero(t >= end)) for t in trains.times))
    before = int(sum(int(np.count_nonzero(t < start)) for t in trains.times))
    if total == 0:
        raise DataError("the selected units have no spikes at all", where, "check spikes.variable and the [units] selection")
    if before + after == total:
        last = max(float(t.max()) for t in trains.times if t.size)
        first = min(float(t.min()) for t in trains.times if t.size)
        raise DataError(
            f"none of the {total} spikes falls within the frames (spikes span {first:.6g}-{last:.6g} s, frames {start:.6g}-{end:.6g} s)",
            where,
            "spike and frame times use different units or clocks: check spikes.unit/spikes.sample_rate and frames.unit/frames.sample_rate",
        )
    if after > max_fraction * total:
        last = max(float(t.max()) for t in trains.times if t.size)
        ratio = (last - start) / (end - start) if end > start else float("nan")
        raise DataError(
            f"{after} of {total} spikes ({100.0 * after / total:.0f}%) fall after the last frame (last spike at {last:.2f} s, last frame ends at {end:.2f} s, {ratio:.2f}x the frame span)",
            where,
            "spike and frame times disagree on units or clocks: check spikes.unit/spikes.sample_rate against frames.unit/frames.sample_rate; "
            "if the recording really continues after the stimulus, raise checks.max_fraction_after_last_frame",
        )
    return before, after


# ----------------------------------------------------------------------------- frames
def check_frame_intervals(frame_times: np.ndarray, jitter: float, gaps: str, where: str) -> tuple[float, list[int]]:
    """Check that frame intervals do not jump; return (median interval, indices where new runs start).

    Intervals shorter than ``1 - jitter`` times the median always fail (a trigger counted twice);
    longer than ``1 + jitter`` times the median fail with ``gaps='error'`` (a dropped frame or a
    missed trigger) or start a new run of frames with ``gaps='split'`` (a pause in the stimulus).
    """
    ft = np.asarray(frame_times, dtype=np.float64)
    d = np.diff(ft)
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0])
        raise DataError(f"frame onsets are not strictly increasing (onset {i + 1} at {ft[i + 1]:.6g} s <= onset {i} at {ft[i]:.6g} s)", where, "sort the onsets or remove duplicates")
    med = float(np.median(d))
    short = np.flatnonzero(d < (1.0 - jitter) * med)
    if short.size:
        i = int(short[0])
        raise DataError(
            f"frame intervals jump: {_n(short.size, 'interval')} shorter than {1 - jitter:g}x the median {1e3 * med:.2f} ms (first: {1e3 * d[i]:.2f} ms from frame {i} at {ft[i]:.4f} s)",
            where,
            "a trigger was counted twice or the onsets include other events: remove the extra onsets",
        )
    long = np.flatnonzero(d > (1.0 + jitter) * med)
    if long.size and gaps == "error":
        i = int(long[0])
        raise DataError(
            f"frame intervals jump: {_n(long.size, 'interval')} longer than {1 + jitter:g}x the median {1e3 * med:.2f} ms (first: {1e3 * d[i]:.2f} ms = {d[i] / med:.1f} frames, after frame {i} at {ft[i]:.4f} s)",
            where,
            "frames were dropped or the trigger missed onsets: fix the frame times; if the stimulus paused there, set checks.frame_gaps = 'split'",
        )
    return med, [0] + [int(i) + 1 for i in long]


# ----------------------------------------------------------------------------- repeats
def mean_frame_interval(frame_times: np.ndarray, jitter: float) -> float:
    """Mean frame interval over the regular intervals (pauses left out): the display's true frame period.

    The median of a 30 Hz display sampled at 10 kHz is 333 samples, the mean 333.33; converting a
    20 s segment with the mean gives the 600 frames that were shown, not 601.
    """
    d = np.diff(np.asarray(frame_times, dtype=np.float64))
    med = float(np.median(d))
    regular = d[d <= (1.0 + jitter) * med]
    return float(regular.mean()) if regular.size else med


def repeat_frames_from_length(length: float, length_unit: str, frame_dt: float) -> int:
    """Number of frames of the repeated segment from its length in seconds (at frame interval ``frame_dt``) or frames."""
    frames = length / frame_dt if length_unit == "seconds" else length
    if not np.isfinite(frames) or abs(frames) > 2**40:  # e.g. a damaged stop time: longer than any recording
        raise DataError(f"the repeated segment ({length:g} {length_unit}) is longer than any recording could be", fix="check repeats.length and repeats.length_unit (or the repeats' stop times)")
    n = int(round(frames))
    if n < 1:
        raise DataError(f"the repeated segment ({length:g} {length_unit}) is shorter than one frame ({1e3 * frame_dt:.2f} ms)", fix="check repeats.length and repeats.length_unit")
    return n


def locate_repeats(frame_times: np.ndarray, starts: np.ndarray, n_frames: int, frame_dt: float, jitter: float, where: str, allow_overlap: int = 0) -> np.ndarray:
    """Frame index where each repeat starts: the first frame whose onset is ``>=`` its start time.

    Fails when a start lies after the last frame or far before the next onset, when a repeat
    runs past the last frame, or when repeats overlap by more than ``allow_overlap`` frames (back-to-back
    repeats with one start marked a frame late overlap by one frame until :func:`align_repeats` shifts it).
    """
    ft = np.asarray(frame_times, dtype=np.float64)
    s = np.sort(np.asarray(starts, dtype=np.float64))
    T = ft.size
    idx = np.searchsorted(ft, s, side="left")
    for k, (start, i) in enumerate(zip(s, idx), start=1):
        if k > 1 and i < idx[k - 2] + n_frames - allow_overlap:
            raise DataError(
                f"repeats {k - 1} and {k} overlap (they start at frames {idx[k - 2]} and {i} but a repeat lasts {n_frames} frames)",
                where,
                "check repeats.length and the start times",
            )
        if i >= T:
            raise DataError(f"repeat {k} starts at {start:.4f} s, after the last frame onset ({ft[-1]:.4f} s)", where, "check repeats.unit/repeats.sample_rate and that repeat starts and frame times share one clock")
        lag = float(ft[i] - start)
        if lag > (1.0 + jitter) * frame_dt:
            raise DataError(
                f"repeat {k} starts at {start:.4f} s but the next frame onset is at {ft[i]:.4f} s ({lag / frame_dt:.1f} frame intervals later)",
                where,
                "check repeats.unit/repeats.sample_rate and that repeat starts and frame times share one clock",
            )
        if i + n_frames > T:
            raise DataError(
                f"repeat {k} needs frames {i}..{i + n_frames - 1} but there are only {T} frames",
                where,
                f"check repeats.length ({n_frames} frames of {1e3 * frame_dt:.2f} ms) and the start times",
            )
    return idx.astype(np.int64)


def starts_from_index(index: np.ndarray, frame_times: np.ndarray, per: str, sample_rate: float | None, where: str) -> tuple[np.ndarray, float | None, str]:
    """Repeat starts from a repeat index (0/negative/NaN outside repeats, a label inside).

    ``per='frame'``: one entry per frame; ``per='sample'``: one entry per acquisition sample.
    Every contiguous run of one positive label is one repeat. Returns (start times in seconds,
    the length of the first run, its unit ``'frames'`` or ``'seconds'``).
    """
    x = np.asarray(index, dtype=np.float64).ravel()
    if per == "frame" and x.size != frame_times.size:
        raise DataError(f"the repeat index has {x.size} entries but there are {frame_times.size} frames", where, "give one entry per frame, or set repeats.index_per = 'sample'")
    lab = np.where(np.isfinite(x) & (x > 0), x, 0.0)
    change = np.flatnonzero(np.diff(np.concatenate([[0.0], lab, [0.0]])) != 0)
    runs = [(int(a), int(b)) for a, b in zip(change[:-1], change[1:]) if lab[a] > 0]
    if not runs:
        raise DataError("the repeat index marks no repeats (no positive entries)", where, "repeats are marked by positive numbers (e.g. 1, 2, 3 or 1 for 'inside a repeat')")
    if per == "frame":
        return np.array([frame_times[a] for a, _ in runs]), float(runs[0][1] - runs[0][0]), "frames"
    fs = float(sample_rate)  # type: ignore[arg-type]
    return np.array([a / fs for a, _ in runs]), (runs[0][1] - runs[0][0]) / fs, "seconds"


def _first_mismatch(a: np.ndarray, b: np.ndarray) -> tuple[int, int, Any, Any]:
    diff = (a != b).reshape(a.shape[0], -1).any(axis=1)
    j = int(np.flatnonzero(diff)[0])
    va = a[j] if a.ndim == 1 else a[j].ravel()[np.flatnonzero(a[j].ravel() != b[j].ravel())[0]]
    vb = b[j] if b.ndim == 1 else b[j].ravel()[np.flatnonzero(a[j].ravel() != b[j].ravel())[0]]
    return int(diff.sum()), j, _num(va), _num(vb)


def _num(v: Any) -> str:
    """A stimulus value for a message: ``1.5``, ``255``."""
    x = np.asarray(v).item()
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _n(count: int, word: str) -> str:
    """``1 interval is`` / ``3 intervals are``."""
    return f"{count} {word} is" if count == 1 else f"{count} {word}s are"


def align_repeats(
    stimulus: np.ndarray,
    frame_times: np.ndarray,
    starts: np.ndarray,
    n_frames: int,
    frame_dt: float,
    realign: bool,
    max_shift: int,
    jitter: float,
    where: str,
    check_stimulus: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """Check that the repeats show the same stimulus with the same frame timing; realign when unambiguous.

    The reference is the first repeat, unless a strict majority of repeats agree with each other
    and not with it. A repeat that differs is shifted by the one offset in
    ``-max_shift..max_shift`` frames that makes its stimulus identical to the reference (when
    ``realign``); no such offset, or several, is an error. Returns (start frames, notes).
    """
    idx = np.asarray(starts, dtype=np.int64).copy()
    R = idx.size
    T = stimulus.shape[0]
    notes: list[str] = []
    segs = [np.ascontiguousarray(stimulus[i : i + n_frames]) for i in idx]
    keys = [s.tobytes() for s in segs]
    groups: dict[bytes, list[int]] = {}
    for k, key in enumerate(keys):
        groups.setdefault(key, []).append(k)
    ref_k = 0
    biggest = max(groups.values(), key=len)
    if not check_stimulus:
        keys = [keys[0]] * R  # the segment is stored once: nothing to compare
    elif len(groups[keys[0]]) < len(biggest) and len(biggest) > R / 2:
        ref_k = biggest[0]
        notes.append(f"repeat 1 differs from the majority of repeats; repeat {ref_k + 1} is the reference")
    ref = segs[ref_k]
    for k in range(R):
        if keys[k] == keys[ref_k]:
            continue
        ok = []
        for s in range(-max_shift, max_shift + 1):
            i = idx[k] + s
            if s == 0 or i < 0 or i + n_frames > T:
                continue
            if np.array_equal(stimulus[i : i + n_frames], ref):
                ok.append(s)
        n_diff, j, va, vb = _first_mismatch(segs[k], ref)
        what = (
            f"repeat {k + 1}'s stimulus does not match repeat {ref_k + 1}'s: {n_diff} of {n_frames} frames differ "
            f"(first at frame {j} of the repeat: {va} vs {vb})"
        )
        if len(ok) == 1 and realign:
            idx[k] += ok[0]
            notes.append(
                f"realigned repeat {k + 1} by {ok[0]:+d} frame{'s' if abs(ok[0]) > 1 else ''}: its stimulus matched repeat {ref_k + 1}'s only after that shift"
            )
            continue
        if len(ok) == 1:
            raise DataError(f"{what}; shifting it by {ok[0]:+d} frames would make it match", where, "fix repeats.starts, or set checks.realign_repeats = true to let retinakit shift it")
        if len(ok) > 1:
            raise DataError(f"{what}; shifts of {', '.join(f'{s:+d}' for s in ok)} frames all match, so the right one is ambiguous", where, "fix the start of that repeat in the mapping")
        raise DataError(
            f"{what}; no shift of up to {max_shift} frames makes it match",
            where,
            f"check repeats.starts and repeats.length, and that the stimulus is the one shown; or leave this repeat out with repeats.drop = [{k + 1}]",
        )
    order = np.sort(idx)
    if np.any(np.diff(order) < n_frames):
        raise DataError("after realignment two repeats overlap", where, "fix repeats.starts by hand, or set checks.realign_repeats = false to see the mismatch")
    # frame timing: every repeat must have the same onsets relative to its start
    ft = np.asarray(frame_times, dtype=np.float64)
    rel_ref = ft[idx[ref_k] : idx[ref_k] + n_frames] - ft[idx[ref_k]]
    for k in range(R):
        rel = ft[idx[k] : idx[k] + n_frames] - ft[idx[k]]
        off = np.abs(rel - rel_ref)
        if np.any(off > 0.5 * frame_dt):
            j = int(np.flatnonzero(off > 0.5 * frame_dt)[0])
            raise DataError(
                f"repeat {k + 1}'s frame times do not line up with repeat {ref_k + 1}'s: its frame {j} comes {1e3 * (rel[j] - rel_ref[j]):+.1f} ms from where it should",
                where,
                f"a frame was dropped or repeated inside repeat {k + 1}: fix the frame times, or leave it out with repeats.drop = [{k + 1}]",
            )
    return idx, notes


# ----------------------------------------------------------------------------- assembly
def _runs_to_blocks(frames: np.ndarray, run_starts: set[int]) -> list[tuple[int, int]]:
    """Split sorted frame indices into blocks of consecutive frames, also cut at ``run_starts``."""
    blocks: list[tuple[int, int]] = []
    if frames.size == 0:
        return blocks
    b0 = 0
    for j in range(1, frames.size):
        if frames[j] != frames[j - 1] + 1 or int(frames[j]) in run_starts:
            blocks.append((b0, j))
            b0 = j
    blocks.append((b0, frames.size))
    return blocks


def bin_frames(trains: SpikeTrains, frame_times: np.ndarray, run_starts: list[int]) -> np.ndarray:
    """Spike counts ``(T, n_units)`` per frame; the last frame of each run lasts the median interval.

    One call of :func:`retinakit.spikes.bin_spikes` on the onsets plus the end of every run but
    the last (the bins that span a pause are then dropped).
    """
    ft = np.asarray(frame_times, dtype=np.float64)
    bin_dt = float(np.median(np.diff(ft)))
    ends = [int(i) - 1 for i in run_starts[1:]]  # last frame of every run but the final one
    if not ends:
        return bin_spikes(trains.times, ft, frame_dt=bin_dt)
    edges = np.insert(ft, np.array(ends) + 1, ft[ends] + bin_dt)
    is_frame = np.ones(edges.size, dtype=bool)
    is_frame[np.array(ends) + 1 + np.arange(len(ends))] = False
    return bin_spikes(trains.times, edges, frame_dt=bin_dt)[is_frame]


def assemble_recording(
    trains: SpikeTrains,
    frame_times: np.ndarray,
    stimulus: np.ndarray,
    repeat_starts: np.ndarray | None,
    n_repeat_frames: int,
    run_starts: list[int],
    frame_dt: float,
    stimulus_kind: str,
    provenance: dict[str, Any],
    exclude_starts: np.ndarray | None = None,
    counts: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
) -> Recording:
    """Bin spikes onto frames and split them into the training part and the repeated test part.

    ``repeat_starts`` are frame indices (already checked by :func:`align_repeats`), ``run_starts``
    the first frame of each run of contiguous frames (from :func:`check_frame_intervals`).
    ``frame_dt`` becomes the recording's frame interval; the last bin of each run lasts the median
    frame interval. Frames of ``exclude_starts`` (repeats left out), and frames where the boolean
    mask ``exclude`` is set, go into neither part. ``counts`` ``(T, n_units)``, when given, are the
    spike counts already binned (per acquisition block, each on its own clock).
    """
    ft = np.asarray(frame_times, dtype=np.float64)
    T = ft.size
    where = str(provenance.get("source", "<import>"))
    counts = bin_frames(trains, ft, run_starts) if counts is None else counts
    in_repeat = np.zeros(T, dtype=bool)
    reps = None
    test = None
    if repeat_starts is not None and len(repeat_starts):
        for i in repeat_starts:
            in_repeat[i : i + n_repeat_frames] = True
        reps = np.stack([counts[i : i + n_repeat_frames] for i in repeat_starts])
        i0 = int(repeat_starts[0])
        test = Split(
            stimulus=stimulus[i0 : i0 + n_repeat_frames],
            time=ft[i0 : i0 + n_repeat_frames],
            counts=reps.mean(axis=0),
            repeats=reps,
        )
    for i in exclude_starts if exclude_starts is not None else ():
        in_repeat[i : i + n_repeat_frames] = True  # repeats left out: in neither part
    if exclude is not None:
        in_repeat |= exclude
    train_frames = np.flatnonzero(~in_repeat)
    if train_frames.size < 2:
        raise DataError(f"only {train_frames.size} frames lie outside the repeats, nothing to train on", where, "check repeats.length and the start times")
    blocks = _runs_to_blocks(train_frames, set(run_starts))
    provenance = dict(provenance)
    provenance["train_blocks"] = [[int(a), int(b)] for a, b in blocks]
    provenance["train_block_start_times_s"] = [float(ft[train_frames[a]]) for a, _ in blocks]
    train = Split(stimulus=stimulus[train_frames], time=ft[train_frames], counts=counts[train_frames])
    return Recording(train=train, test=test, cell_ids=trains.ids, frame_dt=frame_dt, stimulus_kind=stimulus_kind, provenance=provenance)
