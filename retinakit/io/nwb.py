"""Neurodata Without Borders (NWB) files: read spike times, stimulus and repeats; write a recording.

Needs the optional extra ``pynwb`` (``pip install 'retinakit[nwb]'``), imported only here.

Reading (through an import mapping, or :func:`retinakit.io.nwb_import.load_nwb` with the defaults below):

* spikes: the ``units`` table (``spike_times`` in seconds, the table's ``id`` as cell id, any
  scalar column such as ``quality`` usable in ``[units]``);
* stimulus: a ``TimeSeries`` (full-field, ``(T,)``), an ``ImageSeries`` (NWB's ``(frame, x, y)``
  order, read as ``(T, H, W)``; override with ``stimulus.axes``) or an ``IndexSeries`` into an
  ``Images`` container, from ``/stimulus`` (or ``/acquisition``, or ``module/name`` in
  ``/processing``);
* frame times: the stimulus series' ``timestamps`` (or ``starting_time`` + frame/``rate``);
* repeats: a ``TimeIntervals`` table (default ``repeats``), one row per repeat, optionally
  filtered by a column value (e.g. the ``trials`` table where ``stimulus == 'repeat'``).

Writing (:func:`export`): a ``units`` table, the stimulus series with timestamps, and a
``repeats`` intervals table. A recording holds spike *counts* per bin, not spike times, so the
exported spike times are placed evenly inside each bin (``k`` spikes in a bin at fractions
``(j + 0.5) / k`` of it); importing the file bins them back to exactly the same counts. Train
frames keep their times; each repeat goes back to its original time when the provenance knows it
and it is free, otherwise after the end of the recording.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ConfigError, DataError, FormatError
from ..recording import Recording

NOTES_KEY = "retinakit"


def _pynwb() -> Any:
    try:
        import pynwb
    except ImportError as exc:  # pragma: no cover - pynwb is installed with the [nwb] extra
        raise ConfigError("reading or writing NWB files needs the optional package pynwb", fix="pip install 'retinakit[nwb]'") from exc
    return pynwb


@contextlib.contextmanager
def open_nwb(path: Path) -> Iterator[Any]:
    """Open an NWB file read-only and yield the ``NWBFile``."""
    pynwb = _pynwb()
    from .variables import hdf5_signature_offset

    if not path.is_file():
        raise DataError(f"NWB file '{path}' does not exist", fix="check the path in the mapping")
    if hdf5_signature_offset(path) is None:
        raise FormatError(f"'{path}' is not an NWB (HDF5) file", fix="give an .nwb file written by pynwb/MatNWB")
    try:
        io = pynwb.NWBHDF5IO(str(path), "r")
        nwbfile = io.read()
    except Exception as exc:  # noqa: BLE001 - hdmf raises many kinds on a file it cannot map
        raise FormatError(f"'{path}' cannot be read as NWB ({type(exc).__name__}: {exc})", fix="check that it is a valid NWB 2.x file (e.g. with nwbinspector)") from exc
    try:
        yield nwbfile
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
        # data read lazily from a damaged or unusual file (wrong dtype, corrupt chunk, missing column)
        msg = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise FormatError(f"'{path}' holds data retinakit cannot read ({type(exc).__name__}: {msg})", fix="check that it is a valid NWB 2.x file (e.g. with nwbinspector)") from exc
    finally:
        io.close()


def _units_table(nwbfile: Any, table: str, path: Path) -> Any:
    if table == "units":
        if nwbfile.units is None:
            raise DataError(f"'{path}' has no units table", fix="the NWB file needs spike-sorted units (nwbfile.units), or name another table with spikes.table")
        return nwbfile.units
    parts = table.strip("/").split("/")
    if parts[0] == "processing":
        parts = parts[1:]
    if len(parts) == 2 and parts[0] in nwbfile.processing and parts[1] in nwbfile.processing[parts[0]].data_interfaces:
        return nwbfile.processing[parts[0]][parts[1]]
    raise ConfigError(f"spikes.table: '{table}' is not in '{path.name}'", fix="use 'units' or 'module/name' of a Units table in /processing")


def read_units(path: Path, table: str = "units") -> tuple[list[np.ndarray], np.ndarray, dict[str, list[Any]]]:
    """Spike times (seconds) per unit, unit ids, and the scalar columns of the units table."""
    with open_nwb(path) as nwbfile:
        units = _units_table(nwbfile, table, path)
        if "spike_times" not in units.colnames:
            raise DataError(f"the units table of '{path}' has no spike_times column", fix="store spike times per unit (add_unit(spike_times=...))")
        ids = np.asarray(units.id.data[:], dtype=np.int64)
        flat = np.asarray(units["spike_times"].target.data[:], dtype=np.float64)
        ends = np.asarray(units["spike_times"].data[:], dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]])
        times = [np.sort(flat[a:b]) for a, b in zip(starts, ends)]
        columns: dict[str, list[Any]] = {}
        for col in units.colnames:
            if col == "spike_times":
                continue
            try:
                values = units[col].data[:]
            except Exception:  # noqa: BLE001 - ragged or region columns are not usable as unit labels
                continue
            values = list(np.asarray(values).ravel()) if not isinstance(values, list) else values
            if len(values) == len(ids):
                columns[col] = [v.decode() if isinstance(v, bytes) else v for v in values]
        return times, ids, columns


def _find_series(nwbfile: Any, name: str | None, path: Path, key: str) -> Any:
    if name is None:
        stim = dict(nwbfile.stimulus)
        if len(stim) == 1:
            return next(iter(stim.values()))
        if not stim:
            raise DataError(f"'{path}' has no stimulus series in /stimulus", fix=f"name the series with {key} (e.g. a series in /acquisition)")
        raise ConfigError(f"{key}: '{path.name}' has several stimulus series ({', '.join(sorted(stim))})", fix=f"name the one to use with {key}")
    parts = name.strip("/").split("/")
    if parts[0] in ("stimulus", "acquisition") and len(parts) == 2:
        group = nwbfile.stimulus if parts[0] == "stimulus" else nwbfile.acquisition
        if parts[1] in group:
            return group[parts[1]]
    if len(parts) == 1:
        for group in (nwbfile.stimulus, nwbfile.acquisition):
            if name in group:
                return group[name]
    if parts[0] == "processing":
        parts = parts[1:]
    if len(parts) == 2 and parts[0] in nwbfile.processing and parts[1] in nwbfile.processing[parts[0]].data_interfaces:
        return nwbfile.processing[parts[0]][parts[1]]
    avail = [f"stimulus/{k}" for k in nwbfile.stimulus] + [f"acquisition/{k}" for k in nwbfile.acquisition]
    for mod in nwbfile.processing.values():
        avail += [f"processing/{mod.name}/{k}" for k in mod.data_interfaces]
    from .variables import missing_variable

    raise missing_variable(name, path, avail, key)


def _series_times(series: Any, n: int) -> np.ndarray:
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], dtype=np.float64)
    if series.rate is None:
        raise DataError(f"series '{series.name}' has neither timestamps nor a rate", fix="give frame times in [frames]")
    return float(series.starting_time or 0.0) + np.arange(n, dtype=np.float64) / float(series.rate)


def _series_data(series: Any, path: Path) -> np.ndarray:
    kind = type(series).__name__
    if kind == "IndexSeries":
        images = series.indexed_images
        if images is None:
            raise FormatError(f"IndexSeries '{series.name}' in '{path}' does not point to an Images container", fix="store the frames in an ImageSeries instead")
        ordered = list(images.order_of_images.data) if images.order_of_images is not None else [images.images[k] for k in sorted(images.images)]
        stack = np.stack([np.asarray(img.data[:]) for img in ordered])
        return stack[np.asarray(series.data[:], dtype=np.int64)]
    if getattr(series, "external_file", None) is not None and series.data is None:
        raise FormatError(f"ImageSeries '{series.name}' in '{path}' stores its frames in an external file", fix="store the frames inside the NWB file (data=...)")
    return np.asarray(series.data[:])


def read_stimulus(path: Path, name: str | None, key: str = "stimulus.variable") -> tuple[np.ndarray, np.ndarray, str]:
    """The stimulus array (as stored), its frame times in seconds, and the series type name."""
    with open_nwb(path) as nwbfile:
        series = _find_series(nwbfile, name, path, key)
        data = _series_data(series, path)
        return data, _series_times(series, data.shape[0]), type(series).__name__


def read_frame_times(path: Path, name: str | None, key: str = "frames.variable") -> np.ndarray:
    """Frame onset times (seconds) of a series: its timestamps, or starting_time + k/rate."""
    with open_nwb(path) as nwbfile:
        series = _find_series(nwbfile, name, path, key)
        n = series.data.shape[0] if series.data is not None else len(series.timestamps)
        return _series_times(series, n)


def read_intervals(path: Path, name: str, column: str | None = None, value: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop times (seconds) of the rows of an intervals table (rows where ``column == value``)."""
    with open_nwb(path) as nwbfile:
        tables = dict(nwbfile.intervals) if nwbfile.intervals is not None else {}
        for extra in ("trials", "epochs"):
            t = getattr(nwbfile, extra, None)
            if t is not None:
                tables.setdefault(extra, t)
        if name not in tables:
            raise ConfigError(f"repeats.intervals: '{name}' is not in '{path.name}'", fix=f"intervals tables in the file: {', '.join(sorted(tables)) or 'none'}")
        table = tables[name]
        start = np.asarray(table["start_time"].data[:], dtype=np.float64)
        stop = np.asarray(table["stop_time"].data[:], dtype=np.float64)
        if start.ndim != 1 or stop.shape != start.shape:
            raise FormatError(f"intervals table '{name}': start_time and stop_time must be 1-D columns of one length, got shapes {start.shape} and {stop.shape}", str(path),
                              "check that it is a valid NWB 2.x file (e.g. with nwbinspector)")
        if not (np.all(np.isfinite(start)) and np.all(np.isfinite(stop))):
            raise DataError(f"intervals table '{name}' has NaN or infinite start/stop times", str(path), "fix or drop those rows")
        if column is not None:
            if column not in table.colnames:
                raise ConfigError(f"repeats.column: '{column}' is not a column of '{name}'", fix=f"columns: {', '.join(table.colnames)}")
            vals = [v.decode() if isinstance(v, bytes) else v for v in table[column].data[:]]
            keep = np.array([v == value for v in vals], dtype=bool)
            if not keep.any():
                raise DataError(f"no row of '{name}' has {column} == {value!r}", str(path), f"values present: {sorted({str(v) for v in vals})[:10]}")
            start, stop = start[keep], stop[keep]
        return start, stop


def read_variable(path: Path, name: str | None, key: str) -> Any:
    """The data of a series (or a column of the units table as ``units.<column>``)."""
    with open_nwb(path) as nwbfile:
        if name and name.startswith("units.") and nwbfile.units is not None:
            col = name.split(".", 1)[1]
            if col in nwbfile.units.colnames:
                return np.asarray(nwbfile.units[col].data[:])
        series = _find_series(nwbfile, name, path, key)
        return _series_data(series, path)


def read_notes(path: Path) -> dict[str, Any]:
    """What retinakit wrote into the file's ``notes`` (empty for other files)."""
    with open_nwb(path) as nwbfile:
        try:
            notes = json.loads(nwbfile.notes or "")
        except (TypeError, ValueError):
            return {}
        return notes.get(NOTES_KEY, {}) if isinstance(notes, dict) else {}


def has_intervals(path: Path, name: str) -> bool:
    """True when the file has an intervals table called ``name``."""
    with open_nwb(path) as nwbfile:
        return nwbfile.intervals is not None and name in nwbfile.intervals


def is_nwb(path: Path) -> bool:
    """True for an HDF5 file with NWB's root attribute ``nwb_version``."""
    from .variables import hdf5_signature_offset

    if not path.is_file() or hdf5_signature_offset(path) is None:
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "nwb_version" in f.attrs
    except (OSError, RuntimeError, ValueError, KeyError):  # damaged: not readable as NWB (the HDF5 reader reports it)
        return False


# ----------------------------------------------------------------------------- export
def _free(t0: float, dur: float, dt: float, occupied: list[tuple[float, float]], train_time: np.ndarray) -> bool:
    """True when frames at ``[t0, t0 + dur)`` collide with no training frame and no placed repeat (half-frame tolerance)."""
    lo, hi = t0 - 0.5 * dt, t0 + dur - 0.5 * dt
    i = np.searchsorted(train_time, lo, side="right")
    if i < train_time.size and train_time[i] < hi:
        return False
    return all(b - 0.5 * dt <= t0 or a >= hi for a, b in occupied)


def export_timeline(rec: Recording) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """Frame times, stimulus and integer counts ``(T, n)`` of every frame in time order, and the repeat intervals."""
    dt = float(rec.frame_dt)  # type: ignore[arg-type]
    where = str(rec.provenance.get("source", "<memory>"))
    parts_t = [rec.train.time]
    parts_s = [rec.train.stimulus]
    parts_c = [rec.train.counts]
    intervals: list[tuple[float, float]] = []
    test = rec.test
    if test is not None:
        reps = test.repeats if test.repeats is not None else test.counts[None]
        rel = test.time - test.time[0]
        dur = float(rel[-1] + dt)
        orig = rec.provenance.get("repeat_first_frame_times_s")
        orig = orig if isinstance(orig, list) and len(orig) == reps.shape[0] else None
        end = float(rec.train.time[-1] + dt)
        for r in range(reps.shape[0]):
            cand = float(orig[r]) if orig is not None else (float(test.time[0]) if r == 0 else None)
            if cand is None or not _free(cand, dur, dt, intervals, rec.train.time):
                cand = max([end] + [b for _, b in intervals]) + dt
            intervals.append((cand, cand + dur))
            parts_t.append(test.time.copy() if cand == float(test.time[0]) else cand + rel)
            parts_s.append(test.stimulus)
            parts_c.append(reps[r])
    times = np.concatenate(parts_t)
    stim = np.concatenate([np.asarray(s, dtype=np.float32 if np.asarray(s).dtype == np.float16 else np.asarray(s).dtype) for s in parts_s])
    counts = np.concatenate(parts_c).astype(np.float64)
    order = np.argsort(times, kind="stable")
    times, stim, counts = times[order], stim[order], counts[order]
    if np.any(np.diff(times) <= 0):
        raise DataError("the recording's frames overlap in time and cannot be laid out on one timeline", where, "check train/time and test/time")
    if not np.all(counts == np.round(counts)):
        raise DataError("the recording holds non-integer counts, which cannot be written as spike times", where, "export a recording of spike counts (not rates or averages)")
    return times, stim, counts.astype(np.int64), intervals


def spikes_from_counts(times: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Spike times that bin back to ``counts``: ``k`` spikes placed at fractions ``(j + 0.5)/k`` of each bin."""
    d = np.diff(times)
    width = float(np.median(d)) if d.size else 1.0
    w = np.append(np.minimum(d, width), width)
    out = []
    for k in range(counts.shape[1]):
        c = counts[:, k]
        n = int(c.sum())
        if n == 0:
            out.append(np.zeros(0))
            continue
        frame = np.repeat(np.arange(c.size), c)
        first = np.repeat(np.cumsum(c) - c, c)
        j = np.arange(n) - first
        out.append(times[frame] + w[frame] * (j + 0.5) / c[frame])
    return out


def export(rec: Recording, path: str | os.PathLike[str]) -> Path:
    """Write ``rec`` as an NWB file (atomically); see the module docstring for what goes where."""
    import datetime
    import hashlib

    pynwb = _pynwb()
    from pynwb.epoch import TimeIntervals
    from pynwb.image import ImageSeries

    from ..atomic import atomic_path

    target = Path(path)
    times, stim, counts, intervals = export_timeline(rec)
    spikes = spikes_from_counts(times, counts)
    ident = hashlib.sha256(times.tobytes() + counts.tobytes() + np.ascontiguousarray(stim).tobytes()).hexdigest()[:32]
    prov = {k: v for k, v in rec.provenance.items() if k not in ("source", "sha256", "mapping_text")}
    notes = {
        NOTES_KEY: {
            "format": 1,
            "stimulus_kind": rec.stimulus_kind,
            "frame_dt": float(rec.frame_dt),  # type: ignore[arg-type]
            "spike_times": "reconstructed from binned counts: k spikes evenly inside each bin",
            "provenance": prov,
        }
    }
    nwbfile = pynwb.NWBFile(
        session_description=f"retinakit recording exported from {rec.provenance.get('source', 'memory')} (session start time unknown)",
        identifier=f"retinakit-{ident}",
        session_start_time=datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc),
        notes=json.dumps(notes, default=str),
    )
    desc = f"{rec.stimulus_kind} stimulus, one value per frame onset"
    if stim.ndim == 1:
        series = pynwb.TimeSeries(name="stimulus", data=stim, unit="n.a.", timestamps=times, description=desc)
    else:
        series = ImageSeries(name="stimulus", data=np.ascontiguousarray(stim.transpose(0, 2, 1)), unit="n.a.", timestamps=times, description=desc + " (frame, x, y)")
    nwbfile.add_stimulus(series)
    nwbfile.add_unit_column("cell_id", "the retinakit cell id (equal to the unit id)")
    for k, cid in enumerate(rec.cell_ids):
        nwbfile.add_unit(id=int(cid), spike_times=spikes[k], cell_id=int(cid))
    if intervals:
        table = TimeIntervals(name="repeats", description="the repeated stimulus segment, one row per repeat")
        for a, b in intervals:
            table.add_interval(start_time=a, stop_time=b)
        nwbfile.add_time_intervals(table)
    with atomic_path(target, suffix=".nwb") as tmp:
        with pynwb.NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwbfile)
    return target
