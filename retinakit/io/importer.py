"""`retinakit data import`: read every piece an import mapping names and assemble a recording.

A mapping with ``[[blocks]]`` is read block by block, each on its own clock (:func:`_read_block`
is the same reading and checking a single-block mapping gets); the blocks are then checked
against each other (same unit ids, one frame rate, one frame geometry, one repeat length),
binned separately and joined on one timeline (:func:`_import_blocks`).

See :mod:`retinakit.io.mapping` for the mapping, :mod:`retinakit.io.spiketimes` for the checks
and the assembly, and the format modules for the reading.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..recording import Recording
from . import spiketimes as st
from .mapping import ImportMapping, frames_laid_out, load_mapping
from .sources import FileCache
from .variables import as_vector, id_from_name, scalar_of, spike_array


@dataclass
class ImportResult:
    """An imported recording with the notes of what the import did (realignments, dropped spikes...)."""

    recording: Recording
    notes: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        """A few lines for the terminal."""
        rec = self.recording
        shape = "full-field" if rec.is_fullfield else "x".join(map(str, rec.frame_shape))
        lines = [
            f"cells: {rec.n_cells} (ids {_ids_text(rec.cell_ids)})",
            f"stimulus: {shape} {rec.stimulus_kind}, {rec.frame_rate:.4g} Hz frames (bins = frames, {1e3 * float(rec.frame_dt):.3f} ms)",  # type: ignore[arg-type]
            f"train: {rec.train.n_bins} bins ({rec.train.duration:.1f} s) in {len(rec.provenance.get('train_blocks', []))} block(s)",
        ]
        if rec.test is not None:
            lines.append(f"test: {rec.test.n_bins} bins ({rec.test.duration:.2f} s) x {rec.test.n_repeats} repeats")
        else:
            lines.append("test: none (no [repeats] in the mapping)")
        lines.extend(f"block '{b['name']}': {block_text(b)}" for b in rec.provenance.get("blocks", []))
        return lines


def block_text(b: dict[str, Any]) -> str:
    """One block of ``provenance['blocks']`` in words: role, frames, rate, how the frame times were found, runs, repeats."""
    text = f"{b['role']}, {b['n_frames']} frames at {b['frame_rate_hz']:.4g} Hz ({b['frame_times']}), {b['runs']} run{'s' if b['runs'] != 1 else ''}"
    return text + (f", {b['n_repeats']} repeats" if b["n_repeats"] else "")


def _ids_text(ids: np.ndarray) -> str:
    vals = [int(i) for i in ids]
    return ", ".join(map(str, vals)) if len(vals) <= 12 else ", ".join(map(str, vals[:10])) + f", ... {vals[-1]}"


@dataclass
class _Block:
    """One acquisition block read and checked on its own clock (the whole recording when there are no blocks)."""

    m: ImportMapping  # the view the block was read through (its pieces, its name in messages)
    role: str
    trains: st.SpikeTrains
    raw_unit: tuple[str, float | None]
    frame_times: np.ndarray
    frame_dt: float
    run_starts: list[int]
    stimulus: np.ndarray
    starts_idx: np.ndarray | None
    dropped: np.ndarray
    n_rep: int
    check_stimulus: bool
    frames_how: str


def import_recording(mapping: str | os.PathLike[str] | ImportMapping) -> ImportResult:
    """Import a recording described by an import mapping (a TOML path or a parsed mapping)."""
    m = mapping if isinstance(mapping, ImportMapping) else load_mapping(mapping)
    cache = FileCache()
    notes: list[str] = []
    if m.blocks:
        return _import_blocks(m, cache, notes)
    where = m.where
    chk = m.checks
    b = _read_block(m, cache, notes, "both", "")
    m, frame_times, frame_dt, stimulus, n_rep = b.m, b.frame_times, b.frame_dt, b.stimulus, b.n_rep
    starts_idx = b.starts_idx
    first_times: list[float] = []
    if starts_idx is not None:
        starts_idx, align_notes = st.align_repeats(
            stimulus, frame_times, starts_idx, n_rep, frame_dt, chk.realign_repeats, chk.max_shift_frames, chk.frame_jitter, where, check_stimulus=b.check_stimulus
        )
        notes.extend(align_notes)
        if starts_idx.size == 1:
            notes.append("only one repeat: the reliability of the cells cannot be measured")
        first_times = [float(frame_times[i]) for i in starts_idx]
    kind = m.stimulus.kind or ("fullfield" if stimulus.ndim == 1 else "unknown")
    prov = _provenance(m, cache, b.raw_unit, frame_times.size, starts_idx, first_times, n_rep, notes)
    period = st.mean_frame_interval(frame_times, chk.frame_jitter)
    prov["frame_rate_hz"] = 1.0 / period
    # content hash of what was imported: the mapping and every file it read
    prov["sha256"] = hashlib.sha256((m.text + json.dumps(sorted(cache.files.items()))).encode()).hexdigest()
    rec = st.assemble_recording(b.trains, frame_times, stimulus, starts_idx, n_rep, b.run_starts, period, kind, prov, exclude_starts=b.dropped)
    return ImportResult(recording=rec, notes=notes)


def _provenance(m: ImportMapping, cache: FileCache, raw_unit: tuple[str, float | None], n_frames: int, starts_idx: np.ndarray | None, first_times: list[float], n_rep: int, notes: list[str]) -> dict[str, Any]:
    return {
        "source": str(m.path),
        "importer": "retinakit data import",
        "mapping_text": m.text,
        "name": m.name,
        "notes_text": m.notes,
        "files": dict(cache.files),
        "spikes_unit": st.unit_label(raw_unit[0], raw_unit[1]),
        "n_frames": int(n_frames),
        "repeat_start_frames": [int(i) for i in starts_idx] if starts_idx is not None else [],
        "repeat_first_frame_times_s": first_times,
        "repeat_frames": int(n_rep),
        "import_notes": list(notes),
    }


def _read_block(m: ImportMapping, cache: FileCache, notes: list[str], role: str, prefix: str) -> _Block:
    """Spikes, frames, stimulus and repeat starts of one block, each checked on the block's own clock."""
    where = m.where

    def note(text: str) -> None:
        notes.append(prefix + text)

    trains, values, raw_unit = _read_spikes(m, cache)
    if m.spikes.format == "phy":  # frames / repeat starts in samples default to the rate of params.py
        m = _with_phy_rate(m, float(raw_unit[1]))  # type: ignore[arg-type]
    n_all = trains.n_units
    sel_notes: list[str] = []
    trains = _select_units(trains, values, m, sel_notes).sorted_by_id()
    for text in sel_notes:
        note(text)
    if trains.n_units < n_all:
        note(f"kept {trains.n_units} of {n_all} units")
    chk = m.checks
    st.check_spike_rates(trains, raw_unit[0], raw_unit[1], chk.min_rate_hz, chk.max_rate_hz, where)

    stim_raw, nwb_times, series_type = _read_stimulus_raw(m, cache)
    laid_out = frames_laid_out(m.frames, m.stimulus, m.repeats)
    frame_raw, frame_times = _read_frames(m, cache, nwb_times, stim_raw)
    st.check_frame_rate(frame_times, m.frames.unit, m.frames.sample_rate, chk.min_frame_rate_hz, chk.max_frame_rate_hz, where, raw=frame_raw)
    frame_dt, run_starts = st.check_frame_intervals(frame_times, chk.frame_jitter, "split" if laid_out else chk.frame_gaps, where)
    if laid_out:
        note(f"no frame onsets: {frame_times.size} frames laid out at {m.frames.rate:g} Hz from the repeat starts")
    elif len(run_starts) > 1:
        note(f"frame onsets pause {len(run_starts) - 1} time(s); the frames are binned as {len(run_starts)} separate runs")
    before, after = st.check_spikes_after_last_frame(trains, frame_times, frame_dt, chk.max_fraction_after_last_frame, where)
    if before or after:
        note(f"{before} spikes before the first frame and {after} after the last frame were left out")
    silent = [int(i) for i, t in zip(trains.ids, trains.times) if not np.any((t >= frame_times[0]) & (t < frame_times[-1] + frame_dt))]
    if silent:
        note(f"units {silent[:10]}{' ...' if len(silent) > 10 else ''} have no spikes during the frames")

    seg_raw = _read_repeat_stimulus(m, cache)
    starts_idx = None
    dropped = np.zeros(0, dtype=np.int64)
    all_idx = np.zeros(0, dtype=np.int64)
    n_rep = 0
    if m.repeats is not None:
        n_seg = None if seg_raw is None else _time_axis_length(seg_raw, m)
        starts_s, n_rep = _repeat_starts(m, cache, frame_times, n_seg)
        slack = chk.max_shift_frames if (chk.realign_repeats and seg_raw is None) else 0  # align_repeats may still resolve it
        all_idx = st.locate_repeats(frame_times, starts_s, n_rep, frame_dt, chk.frame_jitter, where, allow_overlap=slack)
        drop_notes: list[str] = []
        starts_idx, dropped = _drop_repeats(all_idx, m, drop_notes)
        for text in drop_notes:
            note(text)
    if m.stimulus.per == "sample":
        stimulus = _sampled_stimulus(stim_raw, frame_times, frame_dt, run_starts, m)
        note(f"stimulus logged per sample at {m.stimulus.sample_rate:g} Hz: each frame's value is read at the frame's centre")
    elif seg_raw is not None:
        stimulus = _stimulus_with_segment(stim_raw, seg_raw, all_idx, n_rep, frame_times.size, m, series_type)
        note("the repeated segment's stimulus is stored once (stimulus.repeat_variable), so a shifted repeat cannot be detected from the stimulus")
    else:
        stimulus = _shape_stimulus(stim_raw, frame_times.size, m, series_type)
    how = "laid out from the repeat starts" if laid_out else ("rate" if m.frames.rate is not None else "onsets")
    return _Block(m, role, trains, raw_unit, frame_times, frame_dt, run_starts, stimulus, starts_idx, dropped, n_rep, seg_raw is None, how)


# ----------------------------------------------------------------------------- blocks
def _import_blocks(m: ImportMapping, cache: FileCache, notes: list[str]) -> ImportResult:
    """Read every block on its own clock, check them against each other, and join them into one recording."""
    chk = m.checks
    blocks = [_read_block(m.block_view(spec), cache, notes, spec.role, f"block '{spec.name}': ") for spec in m.blocks]
    _check_same_units(blocks, m)
    periods = _check_frame_rates(blocks, m)
    shapes = {b.stimulus.shape[1:] for b in blocks}
    if len(shapes) > 1:
        desc = ", ".join(f"'{b.m.block}' {'full-field' if b.stimulus.ndim == 1 else 'x'.join(map(str, b.stimulus.shape[1:]))}" for b in blocks)
        raise DataError(f"the blocks' stimuli have different frame shapes ({desc})", m.where, "every block must show frames of one geometry")
    kinds = {b.m.stimulus.kind for b in blocks if b.m.stimulus.kind is not None}
    if len(kinds) > 1:
        raise ConfigError(f"the blocks give different stimulus.kind values ({', '.join(sorted(kinds))})", m.where, "give one kind (or leave it out in all but one block)")
    rep_blocks = [b for b in blocks if b.starts_idx is not None]
    lengths = {b.n_rep for b in rep_blocks}
    if len(lengths) > 1:
        desc = ", ".join(f"'{b.m.block}' {b.n_rep}" for b in rep_blocks)
        raise DataError(f"the repeat blocks disagree on the repeated segment's length in frames ({desc})", m.where, "check repeats.length (or the repeat index) of each block")
    n_rep = rep_blocks[0].n_rep if rep_blocks else 0

    # one timeline: each block keeps its own clock, shifted to start 1 s after the previous block ends
    times, stims, counts, run_starts, base = [], [], [], [], []
    starts: list[np.ndarray] = []
    dropped: list[np.ndarray] = []
    offsets: list[float] = []
    n = 0
    end = None
    for b in blocks:
        off = 0.0 if end is None else end + 1.0 - float(b.frame_times[0])
        offsets.append(off)
        times.append(b.frame_times + off)
        stims.append(b.stimulus)
        counts.append(st.bin_frames(b.trains, b.frame_times, b.run_starts))
        run_starts.extend(n + i for i in b.run_starts)
        base.append(n)
        if b.starts_idx is not None:
            starts.append(b.starts_idx + n)
            dropped.append(b.dropped + n)
        n += b.frame_times.size
        end = float(times[-1][-1]) + b.frame_dt
    ft = np.concatenate(times)
    stimulus = np.concatenate(stims)
    all_counts = np.concatenate(counts)
    starts_idx = np.concatenate(starts) if starts else None
    where = m.where
    if starts_idx is not None:
        starts_idx, align_notes = st.align_repeats(
            stimulus, ft, starts_idx, n_rep, float(np.median(periods)), chk.realign_repeats, chk.max_shift_frames, chk.frame_jitter, where, check_stimulus=all(b.check_stimulus for b in rep_blocks)
        )
        notes.extend(align_notes)
        _check_repeats_in_blocks(starts_idx, n_rep, blocks, base, where)
        if starts_idx.size == 1:
            notes.append("only one repeat: the reliability of the cells cannot be measured")
    exclude = np.zeros(n, dtype=bool)
    for i in np.concatenate(dropped) if dropped else ():
        exclude[i : i + n_rep] = True
    in_rep = np.zeros(n, dtype=bool)
    for i in starts_idx if starts_idx is not None else ():
        in_rep[i : i + n_rep] = True
    info = []
    for k, b in enumerate(blocks):
        sl = slice(base[k], base[k] + b.frame_times.size)
        if b.role == "test":
            outside = int(np.count_nonzero(~in_rep[sl] & ~exclude[sl]))
            if outside:
                notes.append(f"block '{b.m.block}': {outside} frames outside the repeats are in neither part (role = 'test')")
            exclude[sl] |= ~in_rep[sl]
        mine = [int(i - base[k]) for i in (starts_idx if starts_idx is not None else ()) if base[k] <= i < sl.stop]
        info.append(
            {
                "name": b.m.block,
                "role": b.role,
                "frames": [int(sl.start), int(sl.stop)],
                "n_frames": int(b.frame_times.size),
                "frame_rate_hz": 1.0 / periods[k],
                "frame_times": b.frames_how,
                "stimulus_per": b.m.stimulus.per,
                "runs": len(b.run_starts),
                "n_repeats": len(mine),
                "repeat_start_frames": mine,
                "first_frame_s": float(b.frame_times[0]),
                "time_offset_s": offsets[k],
                "n_units": int(b.trains.n_units),
                "spikes": int(b.trains.n_spikes),
            }
        )
    first_times = [float(ft[i]) for i in starts_idx] if starts_idx is not None else []
    kind = next(iter(kinds)) if kinds else ("fullfield" if stimulus.ndim == 1 else "unknown")
    prov = _provenance(m, cache, blocks[0].raw_unit, n, starts_idx, first_times, n_rep, notes)
    prov["blocks"] = info
    diffs = np.concatenate([np.diff(b.frame_times) for b in blocks])
    period = float(diffs[diffs <= (1.0 + chk.frame_jitter) * np.median(diffs)].mean())
    prov["frame_rate_hz"] = 1.0 / period
    prov["sha256"] = hashlib.sha256((m.text + json.dumps(sorted(cache.files.items()))).encode()).hexdigest()
    rec = st.assemble_recording(blocks[0].trains, ft, stimulus, starts_idx, n_rep, sorted(set(run_starts)), period, kind, prov, counts=all_counts, exclude=exclude)
    return ImportResult(recording=rec, notes=notes)


def _check_same_units(blocks: list[_Block], m: ImportMapping) -> None:
    """Units are matched across blocks by id: every block must hold the same ids (after the [units] selection)."""
    every = sorted(set().union(*(set(b.trains.ids.tolist()) for b in blocks)))
    for b in blocks:
        missing = sorted(set(every) - set(b.trains.ids.tolist()))
        if missing:
            others = [o.m.block for o in blocks if o is not b and set(missing) & set(o.trains.ids.tolist())]
            raise DataError(
                f"units are matched across blocks by id, but block '{b.m.block}' has no unit{'s' if len(missing) > 1 else ''} {_ids_text(np.array(missing))} (found in block {', '.join(repr(o) for o in others)})",
                m.where,
                f"check spikes.id_field of each block (without it the position in the struct/cell array is the id), or leave them out with units.exclude = {missing[:10]}",
            )


def _check_frame_rates(blocks: list[_Block], m: ImportMapping) -> list[float]:
    """Each block's mean frame interval; bins are frames, so the blocks must agree within checks.max_frame_rate_mismatch."""
    periods = [st.mean_frame_interval(b.frame_times, m.checks.frame_jitter) for b in blocks]
    ref = periods[0]
    for b, p in zip(blocks[1:], periods[1:]):
        rel = abs(ref / p - 1.0)
        if rel > m.checks.max_frame_rate_mismatch:
            raise DataError(
                f"block '{b.m.block}' has {1.0 / p:.5g} Hz frames but block '{blocks[0].m.block}' {1.0 / ref:.5g} Hz ({100 * rel:.3g}% apart, more than checks.max_frame_rate_mismatch = {m.checks.max_frame_rate_mismatch:g})",
                m.where,
                f"bins are frames, so every block needs one frame rate: check frames.rate / frames.unit / frames.sample_rate of block '{b.m.block}'",
            )
    return periods


def _check_repeats_in_blocks(starts: np.ndarray, n_rep: int, blocks: list[_Block], base: list[int], where: str) -> None:
    for k, i in enumerate(starts, start=1):
        j = int(np.searchsorted(base, i, side="right")) - 1
        stop = base[j] + blocks[j].frame_times.size
        if i + n_rep > stop:
            raise DataError(f"repeat {k} runs past the end of block '{blocks[j].m.block}' (after realignment)", where, "check that block's repeat starts and repeats.length; or set checks.realign_repeats = false to see the mismatch")


# ----------------------------------------------------------------------------- spikes
def _with_phy_rate(m: ImportMapping, rate: float) -> ImportMapping:
    frames = m.frames
    if frames.unit == "samples" and frames.sample_rate is None:
        frames = dataclasses.replace(frames, sample_rate=rate)
    repeats = m.repeats
    if repeats is not None and repeats.sample_rate is None and (repeats.unit == "samples" or (repeats.source == "index" and repeats.index_per == "sample")):
        repeats = dataclasses.replace(repeats, sample_rate=rate)
    return dataclasses.replace(m, frames=frames, repeats=repeats)


def _read_spikes(m: ImportMapping, cache: FileCache) -> tuple[st.SpikeTrains, list[Any] | None, tuple[str, float | None]]:
    """All units' spike times in seconds, the per-unit selection values, and (unit, sample rate)."""
    s = m.spikes
    uf = m.units.field
    if s.format == "phy":
        from . import phy

        raw, ids, rate, table = phy.read_units(s.folder)  # type: ignore[arg-type]
        for name in ("spike_times.npy", "spike_clusters.npy", "cluster_group.tsv", "cluster_info.tsv", "params.py"):
            cache.note_file(s.folder / name)  # type: ignore[operator]
        if s.sample_rate is not None and abs(s.sample_rate - rate) > 1e-6 * rate:
            raise ConfigError(f"spikes.sample_rate = {s.sample_rate:g} Hz disagrees with params.py ({rate:g} Hz)", m.where, "remove spikes.sample_rate (params.py is authoritative)")
        values = None
        if uf is not None:
            if uf not in table:
                raise ConfigError(f"units.field: '{uf}' is not a column of the phy cluster tables", m.where, f"columns: {', '.join(sorted(table)) or 'none (no cluster_*.tsv files: curate in phy, or set units.all = true)'}")
            values = [table[uf].get(int(i)) for i in ids]
        return st.SpikeTrains([st.to_seconds(t, "samples", rate) for t in raw], ids), values, ("samples", rate)
    if s.format == "nwb":
        from . import nwb

        times, ids, cols = nwb.read_units(s.file, s.table)  # type: ignore[arg-type]
        cache.note_file(s.file)  # type: ignore[arg-type]
        values = None
        if uf is not None:
            if uf not in cols:
                raise ConfigError(f"units.field: '{uf}' is not a column of the NWB units table", m.where, f"columns: {', '.join(sorted(cols)) or 'none'}")
            values = cols[uf]
        return st.SpikeTrains(times, ids), values, ("seconds", None)

    value = cache.read(s.file, s.format, s.variable, "spikes.variable")  # type: ignore[arg-type]
    unit, rate = s.unit or "seconds", s.sample_rate
    values: list[Any] | None = None
    if s.field is not None:  # struct array
        elems = [value] if isinstance(value, dict) else value
        if not isinstance(elems, list) or not all(isinstance(e, dict) for e in elems):
            raise DataError(f"spikes.variable '{s.variable}' is not a struct array (spikes.field = '{s.field}' expects one)", m.where, "remove spikes.field for a cell/object array of spike-time vectors")
        for e in elems[:1]:
            for f in (s.field, s.id_field, uf):
                if f is not None and f not in e:
                    raise ConfigError(f"'{f}' is not a field of struct array '{s.variable}'", m.where, f"fields: {', '.join(sorted(e))}")
        raw = [spike_array(e[s.field], "spikes.field", f"unit {k + 1}") for k, e in enumerate(elems)]
        if s.id_field is not None:
            ids = np.array([_int_id(scalar_of(e[s.id_field]), f"spikes.id_field ('{s.id_field}')", m.where) for e in elems], dtype=np.int64)
        else:
            ids = np.arange(1, len(elems) + 1)
        if uf is not None:
            values = [scalar_of(e[uf]) for e in elems]
    elif s.labels_variable is not None:  # flat: one label per spike
        flat = as_vector(value, "spikes.variable", "the spike times")
        labels = as_vector(cache.read(s.file, s.format, s.labels_variable, "spikes.labels_variable"), "spikes.labels_variable", "the unit labels")  # type: ignore[arg-type]
        if labels.size != flat.size:
            raise DataError(f"spikes.labels_variable has {labels.size} labels for {flat.size} spike times", m.where, "give one unit label per spike")
        if not np.all(labels == np.round(labels)):
            raise DataError("spikes.labels_variable must hold integer unit ids", m.where)
        labels = labels.astype(np.int64)
        order = np.argsort(labels, kind="stable")
        ids, first = np.unique(labels[order], return_index=True)
        raw = [spike_array(c, "spikes.variable", "a unit") for c in np.split(np.asarray(flat, dtype=np.float64)[order], first[1:])]
    else:
        raw, ids = _per_unit(value, s.variable or s.file.name, m)  # type: ignore[union-attr]
    if s.ids_variable is not None:
        given = as_vector(cache.read(s.file, s.format, s.ids_variable, "spikes.ids_variable"), "spikes.ids_variable", "the unit ids")  # type: ignore[arg-type]
        if given.size != len(raw):
            raise DataError(f"spikes.ids_variable has {given.size} ids for {len(raw)} units", m.where, "give one id per unit, in the same order")
        ids = np.array([_int_id(v, "spikes.ids_variable", m.where) for v in given], dtype=np.int64)
    if m.units.variable is not None:
        uv = cache.read(m.units.file, m.units.format, m.units.variable, "units.variable")  # type: ignore[arg-type]
        vec = as_vector(uv, "units.variable", "the per-unit values", numeric=False)
        if vec.size != len(raw):
            raise DataError(f"units.variable has {vec.size} values for {len(raw)} units", m.where, "give one value per unit, in the same order as the spike times")
        values = [scalar_of(v) for v in vec]
    trains = st.SpikeTrains([np.sort(st.to_seconds(t, unit, rate)) for t in raw], ids)
    return trains, values, (unit, rate)


def _int_id(v: Any, key: str, where: str) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise DataError(f"{key}: unit id {v!r} is not a number", where) from None
    if not math.isfinite(f) or f != int(f) or abs(f) >= 2**63:
        raise DataError(f"{key}: unit id {v!r} is not an integer (or too large)", where)
    return int(f)


def _per_unit(value: Any, name: str, m: ImportMapping) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-unit spike-time vectors from a cell array / object array / list, or a dict keyed by unit."""
    if isinstance(value, dict):
        ids = []
        for k in value:
            i = id_from_name(str(k)) if not isinstance(k, (int, np.integer)) else int(k)
            if i is None:
                raise DataError(f"spikes.variable '{name}' is a group/dict, but member '{k}' has no unit number in its name", m.where, "name members like unit_01, cell12 (or give spikes.variable a cell/object array)")
            ids.append(i)
        order = np.argsort(ids, kind="stable")
        keys = list(value)
        return [spike_array(value[keys[i]], "spikes.variable", f"unit '{keys[i]}'") for i in order], np.array(ids, dtype=np.int64)[order]
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            raise DataError(f"spikes.variable '{name}' is a struct array", m.where, "name the field with the spike times: spikes.field = '...'")
        return [spike_array(v, "spikes.variable", f"unit {k + 1}") for k, v in enumerate(value)], np.arange(1, len(value) + 1)
    arr = np.asarray(value)
    raise DataError(
        f"spikes.variable '{name}' is a numeric array of shape {arr.shape}, not one spike-time vector per unit",
        m.where,
        "give a cell/object array of vectors, a struct array with spikes.field, a group of per-unit datasets, or all spike times with spikes.labels_variable (one unit label per spike)",
    )


def _select_units(trains: st.SpikeTrains, values: list[Any] | None, m: ImportMapping, notes: list[str]) -> st.SpikeTrains:
    u = m.units
    keep = np.ones(trains.n_units, dtype=bool)
    if values is not None:
        label = u.field or u.variable
        if u.keep is not None:
            wanted = list(u.keep)
            keep &= np.array([_matches(v, wanted) for v in values], dtype=bool)
            if not keep.any():
                seen = sorted({str(v) for v in values})
                raise ConfigError(f"units.keep = {wanted} matches no unit ({label} values: {', '.join(seen[:12])})", m.where, "fix units.keep (values are compared as written, e.g. 'good')")
        for bound, op, name in ((u.min, np.greater_equal, "min"), (u.max, np.less_equal, "max")):
            if bound is None:
                continue
            nums = np.array([_as_float(v) for v in values])
            if np.all(np.isnan(nums)):
                raise ConfigError(f"units.{name}: {label} is not numeric", m.where, "use units.keep for text labels")
            with np.errstate(invalid="ignore"):
                keep &= op(nums, bound)
        desc = ", ".join(x for x in (f"{label} in {list(u.keep)}" if u.keep else "", f"{label} >= {u.min:g}" if u.min is not None else "", f"{label} <= {u.max:g}" if u.max is not None else "") if x)
        notes.append(f"units selected by {desc}")
    present = set(trains.ids.tolist())
    if u.ids is not None:
        missing = [i for i in u.ids if i not in present]
        if missing:
            raise ConfigError(f"units.ids: units {missing} are not in the spike data", m.where, f"unit ids present: {_ids_text(np.array(sorted(present)))}")
        keep &= np.isin(trains.ids, np.array(u.ids, dtype=np.int64))
    if u.exclude:
        keep &= ~np.isin(trains.ids, np.array(u.exclude, dtype=np.int64))
    if not keep.any():
        raise ConfigError("no units are left after the [units] selection", m.where, "relax units.ids / units.exclude / units.keep / units.min / units.max")
    return trains.select(keep)


def _matches(v: Any, wanted: list[Any]) -> bool:
    for w in wanted:
        if isinstance(w, str):
            if isinstance(v, str) and v.strip() == w:
                return True
        else:
            f = _as_float(v)
            if f == f and f == float(w):
                return True
    return False


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


# ----------------------------------------------------------------------------- stimulus and frames
def _read_stimulus_raw(m: ImportMapping, cache: FileCache) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    s = m.stimulus
    if s.format == "nwb":
        from . import nwb

        data, times, series_type = nwb.read_stimulus(s.file, s.variable)  # type: ignore[arg-type]
        cache.note_file(s.file)  # type: ignore[arg-type]
        return data, times, series_type
    value = cache.read(s.file, s.format, s.variable, "stimulus.variable")  # type: ignore[arg-type]
    if s.per == "sample":  # one value per acquisition sample (a channel of a 2-D log)
        return channel(value, s.row, "stimulus", s.variable or s.file.name, "the stimulus values", m), None, None  # type: ignore[union-attr]
    if isinstance(value, (list, dict)):
        kind = "struct/group" if isinstance(value, dict) or (value and all(isinstance(v, dict) for v in value)) else "cell/object array"
        raise DataError(f"stimulus.variable '{s.variable}' is a {kind}, not a numeric array", m.where, "name the numeric array with one value or frame per frame onset")
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"stimulus.variable '{s.variable}' is not numeric (dtype {arr.dtype})", m.where, "store the stimulus as numbers")
    return arr, None, None


def _read_frames(m: ImportMapping, cache: FileCache, nwb_times: np.ndarray | None, stim: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(raw onsets as stored or None, onsets in seconds), after frames.skip/frames.count."""
    f = m.frames
    raw: np.ndarray | None
    if f.rate is not None and frames_laid_out(f, m.stimulus, m.repeats):
        return None, _laid_out_frames(m, cache, stim.size / float(m.stimulus.sample_rate))  # type: ignore[arg-type]
    if f.rate is not None:
        start = f.start if f.start is not None else 0.0
        if f.count is not None:
            n = f.count
        elif m.stimulus.per == "sample":  # every whole frame the log covers
            n = max(0, int(np.floor((stim.size / float(m.stimulus.sample_rate) - start) * f.rate + 1e-6)) - f.skip)  # type: ignore[arg-type]
        else:
            n = _time_axis_length(stim, m)
        times = start + np.arange(n + f.skip, dtype=np.float64) / f.rate
        raw = None
    elif f.format == "nwb":
        from . import nwb

        if f.variable is None and nwb_times is not None and f.file == m.stimulus.file:
            times = nwb_times
        else:
            times = nwb.read_frame_times(f.file, f.variable if f.variable is not None else m.stimulus.variable)  # type: ignore[arg-type]
        raw = times
    else:
        names = f.variable if isinstance(f.variable, tuple) else (f.variable,)
        if len(names) == 1:
            raw = as_vector(cache.read(f.file, f.format, names[0], "frames.variable"), "frames.variable", "the frame onset times")  # type: ignore[arg-type]
        else:  # several arrays (e.g. training frames and a (repeats, T) array of repeat frames): all onsets, sorted
            parts = [np.asarray(cache.read(f.file, f.format, n, "frames.variable")) for n in names]  # type: ignore[arg-type]
            for n, part in zip(names, parts):
                if not np.issubdtype(part.dtype, np.number):
                    raise DataError(f"frames.variable: '{n}' is not numeric (dtype {part.dtype})", m.where, "name arrays of onset times")
            raw = np.sort(np.concatenate([p.ravel() for p in parts]))
        if not np.all(np.isfinite(raw.astype(np.float64))):
            raise DataError("frames.variable has NaN or infinite onset times", m.where, "remove them")
        times = st.to_seconds(raw, f.unit or "seconds", f.sample_rate)
    total = times.size
    stop = total if f.count is None else f.skip + f.count
    if stop > total:
        raise ConfigError(f"frames.skip + frames.count = {stop} but there are only {total} frame onsets", m.where)
    times = np.asarray(times[f.skip : stop], dtype=np.float64)
    raw = None if raw is None else np.asarray(raw)[f.skip : stop]
    if times.size < 2:
        raise DataError(f"only {times.size} frame onsets", m.where, "give one onset time per stimulus frame")
    return raw, times


def channel(value: Any, row: int | None, section: str, name: str, what: str, m: ImportMapping) -> np.ndarray:
    """A 1-D vector, or channel ``row`` (1-based, along the short axis) of a 2-D array such as a 2 x N log."""
    key, row_key = (f"{section}.variable", f"{section}.row") if section == "stimulus" else (f"{section}.index_variable", f"{section}.index_row")
    if isinstance(value, (list, dict)):
        return as_vector(value, key, what)  # the precise error for cells/structs
    arr = np.asarray(value)
    big = [d for d in arr.shape if d != 1]
    if row is None:
        if arr.ndim == 2 and len(big) == 2:
            raise DataError(f"{key} '{name}' is a {arr.shape[0]} x {arr.shape[1]} array", m.where, f"say which row holds {what} with {row_key} = 1 (counted from 1)")
        return as_vector(arr, key, what)
    if arr.ndim != 2 or len(big) < 2:
        raise DataError(f"{row_key} = {row} picks a row of a 2-D array, but {key} '{name}' has shape {arr.shape}", m.where, f"remove {row_key} for a vector")
    axis = 0 if arr.shape[0] <= arr.shape[1] else 1
    if row > arr.shape[axis]:
        raise DataError(f"{row_key} = {row} but {key} '{name}' has {arr.shape[axis]} rows (shape {arr.shape})", m.where, f"rows are counted from 1: {row_key} = 1..{arr.shape[axis]}")
    return as_vector(arr[row - 1] if axis == 0 else arr[:, row - 1], key, what)


def _laid_out_frames(m: ImportMapping, cache: FileCache, log_s: float) -> np.ndarray:
    """Frames at ``frames.rate`` from each repeat start up to the next start (the last to the end of the log), whole frames only."""
    r = m.repeats
    assert r is not None  # noqa: S101 - frames_laid_out says so
    if r.source == "index":
        vec = channel(cache.read(r.file, r.format, r.index_variable, "repeats.index_variable"), r.index_row, "repeats", str(r.index_variable), "the repeat index", m)  # type: ignore[arg-type]
        starts, _, _ = st.starts_from_index(vec, np.zeros(0), "sample", r.sample_rate, m.where)
    else:
        starts = _start_times(m, cache)
    starts = np.sort(starts)
    if starts.size == 0:
        raise DataError("there are no repeat start times to lay the frames out from", m.where, "give at least one start time, or frames.start")
    rate = float(m.frames.rate)  # type: ignore[arg-type]
    fs = float(m.stimulus.sample_rate)  # type: ignore[arg-type]
    if starts[0] < 0 or starts[-1] >= log_s:
        raise DataError(f"a repeat starts at {starts[0] if starts[0] < 0 else starts[-1]:.4f} s, outside the stimulus log (0-{log_s:.4f} s)", m.where, "the repeat starts and the per-sample log must share the block's clock (sample 0 = time 0)")
    runs = []
    for k, t0 in enumerate(starts):
        stop = starts[k + 1] if k + 1 < starts.size else log_s
        n = int(np.floor((stop - t0 + 1.0 / fs) * rate))  # a frame may end up to one sample after the next start
        runs.append(t0 + np.arange(n, dtype=np.float64) / rate)
    return np.concatenate(runs)


def _sampled_stimulus(log: np.ndarray, frame_times: np.ndarray, frame_dt: float, run_starts: list[int], m: ImportMapping) -> np.ndarray:
    """The value of each frame in a per-sample log, read at the frame's centre (sample 0 of the log at time 0)."""
    fs = float(m.stimulus.sample_rate)  # type: ignore[arg-type]
    ft = np.asarray(frame_times, dtype=np.float64)
    ends = np.append(ft[1:], ft[-1] + frame_dt)
    last = np.array([i - 1 for i in run_starts[1:]], dtype=np.int64)
    ends[last] = ft[last] + frame_dt  # the last frame of a run before a pause lasts one frame interval
    centre = np.floor((ft + ends) / 2.0 * fs).astype(np.int64)
    bad = np.flatnonzero((centre < 0) | (centre >= log.size))
    if bad.size:
        k = int(bad[0])
        raise DataError(
            f"the stimulus log '{m.stimulus.variable}' holds {log.size} samples ({log.size / fs:.3f} s at {fs:g} Hz) but frame {k} (onset {ft[k]:.4f} s) is centred on sample {centre[k]}",
            m.where,
            "check stimulus.sample_rate, and that the log, the frames and the spikes of this block share one clock (sample 0 = time 0)",
        )
    return np.ascontiguousarray(log[centre])


def _read_repeat_stimulus(m: ImportMapping, cache: FileCache) -> np.ndarray | None:
    """The repeated segment's stimulus when it is stored once (``stimulus.repeat_variable``)."""
    s = m.stimulus
    if s.repeat_variable is None:
        return None
    if m.repeats is None:
        raise ConfigError("stimulus.repeat_variable needs a [repeats] section (when the segment was shown)", m.where)
    value = cache.read(s.file, s.format, s.repeat_variable, "stimulus.repeat_variable")  # type: ignore[arg-type]
    arr = np.asarray(value) if not isinstance(value, (list, dict)) else np.asarray([], dtype=object)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or arr.size == 0:
        raise DataError(f"stimulus.repeat_variable '{s.repeat_variable}' is not a numeric array", m.where, "name the array with the repeated segment's frames")
    return arr


def _stimulus_with_segment(main: np.ndarray, seg: np.ndarray, starts: np.ndarray, n_rep: int, n_frames: int, m: ImportMapping, series_type: str | None) -> np.ndarray:
    """The stimulus of every frame: the stored segment inside each repeat, the main stimulus elsewhere, in order."""
    seg = _shape_stimulus(seg, n_rep, m, series_type, context="frames in the repeated segment")
    inside = np.zeros(n_frames, dtype=bool)
    for i in starts:
        inside[i : i + n_rep] = True
    rest = _shape_stimulus(main, int((~inside).sum()), m, series_type, context="frames outside the repeats")
    if rest.shape[1:] != seg.shape[1:]:
        raise DataError(f"the repeated segment's frames are {seg.shape[1:]} but the other frames are {rest.shape[1:]}", m.where, "both must have the same geometry")
    out = np.empty((n_frames,) + seg.shape[1:], dtype=np.result_type(rest.dtype, seg.dtype))
    out[~inside] = rest
    for i in starts:
        out[i : i + n_rep] = seg
    return out


def _time_axis_length(stim: np.ndarray, m: ImportMapping) -> int:
    axes = m.stimulus.axes
    if axes is not None:
        return int(stim.shape[axes.index("t")])
    if stim.ndim == 3 and m.stimulus.format == "matlab":
        return int(stim.shape[2])
    big = [d for d in stim.shape if d != 1]
    if stim.ndim == 2 and len(big) == 1:
        return int(big[0])
    return int(stim.shape[0])


def _shape_stimulus(arr: np.ndarray, n_frames: int, m: ImportMapping, series_type: str | None, context: str = "onsets") -> np.ndarray:
    """The stimulus as ``(T,)`` or ``(T, H, W)`` with ``T = n_frames``."""
    s = m.stimulus
    where = m.where
    axes = s.axes
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if axes is None and series_type in ("ImageSeries", "IndexSeries") and arr.ndim == 3:
        axes = "txy"  # NWB's ImageSeries convention
    if axes is None:
        big = [d for d in arr.shape if d != 1]
        if arr.ndim == 2 and len(big) <= 1:
            arr = arr.reshape(-1)
        if arr.ndim == 1:
            axes = "t"
        elif arr.ndim == 2:
            if s.frame_shape is None:
                raise DataError(
                    f"stimulus.variable '{s.variable}' is 2-D {arr.shape}",
                    where,
                    "give stimulus.frame_shape = [height, width] for frames stored as pixel vectors (and stimulus.axes = 'ty' or 'yt'), or store the stimulus as (T,) or (T, H, W)",
                )
            t_axes = [i for i, d in enumerate(arr.shape) if d == n_frames]
            if len(t_axes) != 1:
                raise _mismatch(arr.shape, n_frames, m, context)
            axes = "ty" if t_axes[0] == 0 else "yt"
        elif arr.ndim == 3:
            t_axes = [i for i, d in enumerate(arr.shape) if d == n_frames]
            if not t_axes:
                raise _mismatch(arr.shape, n_frames, m, context)
            if len(t_axes) > 1:
                raise DataError(f"the stimulus {arr.shape} has several axes of length {n_frames} (the number of frames)", where, "say which is time with stimulus.axes, e.g. 'tyx' or 'yxt'")
            order = ["y", "x"]
            order.insert(t_axes[0], "t")
            axes = "".join(order)
        else:
            raise DataError(f"the stimulus has {arr.ndim} dimensions {arr.shape}", where, "store it as (T,), (T, pixels) or (T, H, W) (colour movies: one channel)")
    if len(axes) != arr.ndim:
        raise DataError(f"stimulus.axes = '{axes}' has {len(axes)} letters but the stimulus has {arr.ndim} dimensions {arr.shape}", where, "give one letter per dimension")
    if axes in ("ty", "yt"):
        if s.frame_shape is None:
            raise DataError(f"stimulus.axes = '{axes}' needs stimulus.frame_shape = [height, width]", where)
        arr = arr if axes == "ty" else arr.T
        h, w = s.frame_shape
        if arr.shape[1] != h * w:
            raise DataError(f"stimulus frames have {arr.shape[1]} pixels but stimulus.frame_shape = [{h}, {w}] needs {h * w}", where, "fix stimulus.frame_shape")
        arr = arr.reshape(arr.shape[0], h, w, order=s.order)  # type: ignore[call-overload]
    elif axes != "t":
        arr = np.transpose(arr, [axes.index(c) for c in "tyx"])
    if arr.shape[0] != n_frames:
        raise _mismatch(arr.shape, n_frames, m, context)
    return np.ascontiguousarray(arr)


def _mismatch(shape: tuple[int, ...], n_frames: int, m: ImportMapping, context: str = "onsets") -> DataError:
    f = m.frames
    sel = f" (after frames.skip = {f.skip})" if f.skip else ""
    if context != "onsets":
        return DataError(f"the stimulus {shape} does not match the {n_frames} {context}", m.where, "check stimulus.variable, stimulus.repeat_variable and the repeats")
    return DataError(
        f"the stimulus {shape} does not have one frame per frame onset: there are {n_frames} onsets{sel}",
        m.where,
        "the trigger may include extra onsets: select the stimulus frames' onsets with frames.skip / frames.count, or set stimulus.axes",
    )


# ----------------------------------------------------------------------------- repeats
def _repeat_starts(m: ImportMapping, cache: FileCache, frame_times: np.ndarray, seg_frames: int | None) -> tuple[np.ndarray, int]:
    """Repeat start times (seconds) and the number of frames per repeat."""
    r = m.repeats
    assert r is not None  # noqa: S101 - guarded by the caller
    length, length_unit = r.length, r.length_unit
    if length is None and seg_frames is not None:
        length, length_unit = float(seg_frames), "frames"
    way = r.source
    if way in ("inline", "variable"):
        starts = _start_times(m, cache)
    elif way == "intervals":
        from . import nwb

        starts, stops = nwb.read_intervals(r.file, r.intervals, r.column, r.value)  # type: ignore[arg-type]
        cache.note_file(r.file)  # type: ignore[arg-type]
        if length is None:
            length, length_unit = float(np.median(stops - starts)), "seconds"
    else:
        vec = channel(cache.read(r.file, r.format, r.index_variable, "repeats.index_variable"), r.index_row, "repeats", str(r.index_variable), "the repeat index", m)  # type: ignore[arg-type]
        starts, run_len, run_unit = st.starts_from_index(vec, frame_times, r.index_per, r.sample_rate, m.where)
        if length is None:
            length, length_unit = run_len, run_unit
    if starts.size == 0:
        raise DataError("there are no repeat start times", m.where, "give at least one start time")
    period = st.mean_frame_interval(frame_times, m.checks.frame_jitter)
    n = st.repeat_frames_from_length(float(length), length_unit, period)  # type: ignore[arg-type]
    if seg_frames is not None and n != seg_frames:
        raise DataError(
            f"stimulus.repeat_variable holds {seg_frames} frames but the repeated segment lasts {n} frames",
            m.where,
            "check repeats.length (or leave it out: the stored segment gives the length)",
        )
    return starts, n


def _start_times(m: ImportMapping, cache: FileCache) -> np.ndarray:
    """Repeat start times in seconds from repeats.starts or repeats.variable."""
    r = m.repeats
    assert r is not None  # noqa: S101 - guarded by the callers
    if r.source == "inline":
        return st.to_seconds(np.array(r.starts), r.unit, r.sample_rate)
    vec = as_vector(cache.read(r.file, r.format, r.variable, "repeats.variable"), "repeats.variable", "the repeat start times")  # type: ignore[arg-type]
    return st.to_seconds(vec, r.unit, r.sample_rate)


def _drop_repeats(idx: np.ndarray, m: ImportMapping, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(repeats kept, repeats left out by repeats.drop), as start frames."""
    drop = m.repeats.drop if m.repeats is not None else ()
    if not drop:
        return idx, np.zeros(0, dtype=np.int64)
    bad = [d for d in drop if d > idx.size]
    if bad:
        raise ConfigError(f"repeats.drop: there are only {idx.size} repeats, got {list(drop)}", m.where)
    keep = np.array([k + 1 not in drop for k in range(idx.size)])
    if not keep.any():
        raise ConfigError("repeats.drop leaves no repeats", m.where)
    notes.append(f"left out repeats {sorted(drop)} (repeats.drop): their frames are in neither part")
    return idx[keep], idx[~keep]


def mapping_path_or_error(path: str | os.PathLike[str]) -> Path:
    """The mapping path, with a clear error for a recording given by mistake."""
    p = Path(path)
    if p.suffix.lower() in (".h5", ".hdf5", ".nwb", ".mat", ".npz", ".npy"):
        raise ConfigError(f"'{p.name}' is a data file, not an import mapping", fix="write a TOML mapping that points to it (examples in data/import_examples/)")
    return p
