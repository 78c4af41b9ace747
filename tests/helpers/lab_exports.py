"""A simulated lab export with known spikes, and writers for every source format the importer reads.

The import, fuzz and resources tests import these (``from helpers.lab_exports import ...``).
The simulation works in acquisition samples, as a lab's rig does: frame onsets are sample
indices, each spike is a sample strictly inside its frame, so the binned counts are known exactly.
The experiment interleaves training blocks with repeats of one stimulus segment:
``[train 0][repeat 1][train 1][repeat 2] ... [repeat n][train n]``.
"""

from __future__ import annotations

import itertools
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retinakit.recording import compact_stimulus


@dataclass
class LabExport:
    """What a lab hands over, plus the answer the importer must find."""

    fs: float
    frame_rate: float
    onsets: np.ndarray  # (T,) frame onset sample indices
    stimulus: np.ndarray  # (T,) or (T, H, W), one per frame
    spikes: list[np.ndarray]  # per unit: spike sample indices (sorted, int64)
    ids: np.ndarray  # the units' own ids
    quality: list[str]
    repeat_frames: int
    repeat_starts: np.ndarray  # frame index of each repeat's first frame
    counts: np.ndarray  # (T, n_units) spikes per frame, known
    pre_spikes: int = 0  # spikes placed before the first frame
    post_spikes: int = 0  # spikes placed after the last frame
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def onset_s(self) -> np.ndarray:
        return self.onsets / self.fs

    @property
    def spike_s(self) -> list[np.ndarray]:
        return [s / self.fs for s in self.spikes]

    @property
    def repeat_start_s(self) -> np.ndarray:
        return self.onsets[self.repeat_starts] / self.fs

    def expected(self, ids: list[int] | None = None) -> dict[str, np.ndarray]:
        """Train/test arrays the import must produce (for the units ``ids``, default all, sorted by id)."""
        ids = sorted(self.ids.tolist()) if ids is None else sorted(ids)
        cols = [int(np.flatnonzero(self.ids == i)[0]) for i in ids]
        T = self.onsets.size
        mask = np.zeros(T, dtype=bool)
        for i in self.repeat_starts:
            mask[i : i + self.repeat_frames] = True
        reps = np.stack([self.counts[i : i + self.repeat_frames][:, cols] for i in self.repeat_starts])
        i0 = int(self.repeat_starts[0])
        return {
            "ids": np.array(ids),
            "train_counts": self.counts[~mask][:, cols],
            "train_stimulus": self.stimulus[~mask],
            "train_time": self.onset_s[~mask],
            "repeats": reps,
            "test_stimulus": self.stimulus[i0 : i0 + self.repeat_frames],
            "test_time": self.onset_s[i0 : i0 + self.repeat_frames],
        }


def simulate_export(
    frame_shape: tuple[int, ...] = (),
    frame_rate: float = 30.0,
    fs: float = 10000.0,
    n_units: int = 4,
    train_block_frames: int = 60,
    repeat_frames: int = 30,
    n_repeats: int = 3,
    seed: int = 0,
    ids: list[int] | None = None,
    jitter_samples: int = 0,
    start_sample: int = 5000,
    pre_post_spikes: bool = True,
    mean_rate_hz: float = 20.0,
) -> LabExport:
    """Simulate an interleaved train/repeat experiment of LN cells with known per-frame counts."""
    rng = np.random.default_rng(seed)
    n_train_blocks = n_repeats + 1
    T = n_train_blocks * train_block_frames + n_repeats * repeat_frames
    step = fs / frame_rate
    onsets = (start_sample + np.round(np.arange(T) * step)).astype(np.int64)
    if jitter_samples:
        onsets[1:] += rng.integers(-jitter_samples, jitter_samples + 1, size=T - 1)
    shape = (T,) + tuple(frame_shape)
    if frame_shape:
        stim = rng.choice(np.array([0, 255], dtype=np.uint8), size=shape)
        seg = rng.choice(np.array([0, 255], dtype=np.uint8), size=(repeat_frames,) + tuple(frame_shape))
    else:
        stim = np.round(rng.normal(size=shape), 3)
        seg = np.round(rng.normal(size=repeat_frames), 3)
    starts = np.array([(k + 1) * train_block_frames + k * repeat_frames for k in range(n_repeats)], dtype=np.int64)
    for i in starts:
        stim[i : i + repeat_frames] = seg
    drive = stim.astype(np.float64).reshape(T, -1).mean(axis=1)
    drive = (drive - drive.mean()) / (drive.std() + 1e-9)
    lagged = np.concatenate([[0.0, 0.0], drive[:-2]])
    base = mean_rate_hz / frame_rate
    rates = np.stack([base * np.exp(0.6 * (1 if k % 2 == 0 else -1) * lagged - 0.18) for k in range(n_units)], axis=1)
    counts = rng.poisson(rates).astype(np.int64)
    ends = np.append(onsets[1:], onsets[-1] + int(round(step)))
    spikes = []
    pre = post = 0
    for k in range(n_units):
        c = counts[:, k]
        frame = np.repeat(np.arange(T), c)
        s = rng.integers(onsets[frame] + 1, ends[frame] - 1)  # strictly inside the frame
        if pre_post_spikes:
            s = np.concatenate([s, rng.integers(0, onsets[0] - 1, size=3), rng.integers(ends[-1] + 10, ends[-1] + 2000, size=2)])
            pre, post = pre + 3, post + 2
        spikes.append(np.sort(s).astype(np.int64))
    uid = np.array(ids if ids is not None else [3 + 4 * k for k in range(n_units)], dtype=np.int64)
    quality = ["good" if k % 3 != 1 else "mua" for k in range(n_units)]
    return LabExport(fs, frame_rate, onsets, stim, spikes, uid, quality, repeat_frames, starts, counts, pre, post)


def check_import(rec: Any, exp: LabExport, ids: list[int] | None = None) -> None:
    """Assert that an imported recording holds exactly the known counts, repeats, stimulus and times."""
    want = exp.expected(ids)
    np.testing.assert_array_equal(rec.cell_ids, want["ids"])
    np.testing.assert_array_equal(rec.train.counts, want["train_counts"])
    np.testing.assert_array_equal(rec.test.repeats, want["repeats"])
    np.testing.assert_array_equal(rec.test.counts, want["repeats"].mean(axis=0).astype(np.float32))
    np.testing.assert_array_equal(rec.train.stimulus, compact_stimulus(want["train_stimulus"]))
    np.testing.assert_array_equal(rec.test.stimulus, compact_stimulus(want["test_stimulus"]))
    np.testing.assert_allclose(rec.train.time, want["train_time"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(rec.test.time, want["test_time"], rtol=0, atol=1e-9)


def write_toml(path: Path, text: str) -> Path:
    """Write a mapping (dedented)."""
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# ----------------------------------------------------------------------------- MATLAB
def matlab_stimulus(exp: LabExport) -> np.ndarray:
    """The stimulus as a MATLAB user stores it: a row vector, or an (H, W, T) movie."""
    return exp.stimulus[None, :] if exp.stimulus.ndim == 1 else np.transpose(exp.stimulus, (1, 2, 0))


def write_mat_struct(path: Path, exp: LabExport, unit: str = "samples") -> Path:
    """MATLAB v5: a 1xN struct array ``units`` (id, spike_times, quality) plus frames, stimulus, repeat starts."""
    import scipy.io

    conv = {"samples": lambda s: s.astype(np.float64), "seconds": lambda s: s / exp.fs, "ms": lambda s: s / exp.fs * 1e3}[unit]
    units = np.zeros((1, len(exp.ids)), dtype=[("id", "O"), ("spike_times", "O"), ("quality", "O")])
    for k in range(len(exp.ids)):
        units[0, k]["id"] = np.array([[float(exp.ids[k])]])
        units[0, k]["spike_times"] = conv(exp.spikes[k])[:, None]
        units[0, k]["quality"] = exp.quality[k]
    scipy.io.savemat(
        path,
        {
            "units": units,
            "frame_onsets": conv(exp.onsets)[:, None],
            "stimulus": matlab_stimulus(exp),
            "repeat_starts": conv(exp.onsets[exp.repeat_starts])[None, :],
        },
    )
    return path


def struct_mapping(spike_unit: str = "samples", spike_rate: int = 10000, frame_unit: str = "samples", keep: list[str] | None = None,
                   repeat_frames: int = 30, extra: str = "") -> str:
    """The import mapping of ``rec.mat`` as :func:`write_mat_struct` writes it (times in samples at
    10 kHz unless the units say otherwise); ``keep`` lists the qualities to keep, ``extra`` ends it."""
    units = "[units]\nfield = \"quality\"\nkeep = [" + ", ".join(f'"{q}"' for q in keep) + "]\n" if keep else ""
    return ("[spikes]\nfile = \"rec.mat\"\nvariable = \"units\"\nfield = \"spike_times\"\nid_field = \"id\"\n"
            f"unit = \"{spike_unit}\"\nsample_rate = {spike_rate}\n{units}"
            f"[frames]\nvariable = \"frame_onsets\"\nunit = \"{frame_unit}\"\nsample_rate = 10000\n"
            "[stimulus]\nvariable = \"stimulus\"\n"
            f"[repeats]\nvariable = \"repeat_starts\"\nunit = \"samples\"\nsample_rate = 10000\nlength = {repeat_frames}\nlength_unit = \"frames\"\n{extra}")


def write_struct_export(folder: Path, exp: LabExport, **mapping: Any) -> Path:
    """``rec.mat`` (:func:`write_mat_struct`) and its mapping ``m.toml`` (:func:`struct_mapping`
    with ``mapping``) in ``folder``; returns the mapping's path."""
    write_mat_struct(folder / "rec.mat", exp)
    return write_toml(folder / "m.toml", struct_mapping(**mapping))


def write_mat_cell(path: Path, exp: LabExport) -> Path:
    """MATLAB v5: a cell array ``spikes`` of spike-time vectors in seconds (unit id = 1-based index)."""
    import scipy.io

    cells = np.empty((len(exp.ids), 1), dtype=object)
    for k in range(len(exp.ids)):
        cells[k, 0] = (exp.spikes[k] / exp.fs)[None, :]
    scipy.io.savemat(path, {"spikes": cells, "frame_times": exp.onset_s[None, :], "stim": matlab_stimulus(exp), "rep_start": exp.repeat_start_s})
    return path


def write_mat73(path: Path, variables: dict[str, Any]) -> Path:
    """Write variables the way MATLAB's ``save -v7.3`` does (HDF5, arrays transposed, cells/structs by reference)."""
    import h5py

    counter = itertools.count()

    def cls(obj: Any, name: str) -> None:
        obj.attrs["MATLAB_class"] = np.bytes_(name)

    def put(group: Any, name: str, value: Any) -> Any:
        if isinstance(value, dict):
            g = group.create_group(name)
            cls(g, "struct")
            for k, v in value.items():
                put(g, k, v)
            return g
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            g = group.create_group(name)
            cls(g, "struct")
            for k in value[0]:
                refs = np.array([ref(v[k]) for v in value], dtype=h5py.ref_dtype).reshape(len(value), 1)
                g.create_dataset(k, data=refs)
            return g
        if isinstance(value, list):
            refs = np.array([ref(v) for v in value], dtype=h5py.ref_dtype).reshape(len(value), 1)
            ds = group.create_dataset(name, data=refs)
            cls(ds, "cell")
            return ds
        if isinstance(value, str):
            ds = group.create_dataset(name, data=np.array([ord(c) for c in value], dtype=np.uint16).reshape(-1, 1))
            cls(ds, "char")
            return ds
        arr = np.asarray(value)
        if arr.ndim == 1:
            arr = arr[None, :]  # a MATLAB row vector 1xN
        if arr.size == 0:
            ds = group.create_dataset(name, data=np.array(arr.shape, dtype=np.uint64))
            ds.attrs["MATLAB_empty"] = np.uint8(1)
            cls(ds, "double")
            return ds
        ds = group.create_dataset(name, data=np.ascontiguousarray(arr.T))
        cls(ds, {np.dtype(np.float64): "double", np.dtype(np.uint8): "uint8", np.dtype(np.int64): "int64", np.dtype(np.float32): "single"}.get(arr.dtype, "double"))
        return ds

    def ref(value: Any) -> Any:
        name = str(next(counter))
        return put(refs_group, name, value).ref

    with h5py.File(path, "w", userblock_size=512) as f:
        refs_group = f.create_group("#refs#")
        for k, v in variables.items():
            put(f, k, v)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    return path


# ----------------------------------------------------------------------------- NumPy, HDF5, phy, NWB
def write_npz(path: Path, exp: LabExport) -> Path:
    """``.npz``: an object array of per-unit spike times (seconds), unit ids, frame times, stimulus, repeat starts."""
    obj = np.empty(len(exp.ids), dtype=object)
    for k in range(len(exp.ids)):
        obj[k] = exp.spikes[k] / exp.fs
    np.savez(path, spike_times=obj, unit_ids=exp.ids, frame_times=exp.onset_s, stimulus=exp.stimulus, repeat_starts=exp.repeat_start_s, quality=np.array(exp.quality))
    return path


def write_hdf5(path: Path, exp: LabExport) -> Path:
    """Generic HDF5: a group with one dataset per unit (ms), frame onsets (samples), stimulus, repeat index per frame."""
    import h5py

    index = np.zeros(exp.onsets.size, dtype=np.int32)
    for k, i in enumerate(exp.repeat_starts):
        index[i : i + exp.repeat_frames] = k + 1
    with h5py.File(path, "w") as f:
        g = f.create_group("sorting/units")
        for k, uid in enumerate(exp.ids):
            g.create_dataset(f"unit_{uid:03d}", data=exp.spikes[k] / exp.fs * 1e3)
        f.create_dataset("sync/frame_onsets", data=exp.onsets)
        f.create_dataset("stimulus/frames", data=exp.stimulus)
        f.create_dataset("stimulus/repeat_index", data=index)
    return path


def write_phy(folder: Path, exp: LabExport, labels: str = "group") -> Path:
    """A Kilosort/phy folder (spike_times in samples, clusters = unit ids) plus frame onsets and stimulus files."""
    folder.mkdir(parents=True, exist_ok=True)
    times = np.concatenate(exp.spikes)
    clusters = np.concatenate([np.full(s.size, uid, dtype=np.int32) for s, uid in zip(exp.spikes, exp.ids)])
    order = np.argsort(times, kind="stable")
    np.save(folder / "spike_times.npy", times[order].astype(np.uint64)[:, None])
    np.save(folder / "spike_clusters.npy", clusters[order])
    (folder / "params.py").write_text(
        "dat_path = 'recording.dat'\nn_channels_dat = 64\ndtype = 'int16'\noffset = 0\n"
        f"sample_rate = {exp.fs:.1f}\nhp_filtered = False\n"
    )
    if labels == "group":
        rows = ["cluster_id\tgroup"] + [f"{uid}\t{q}" for uid, q in zip(exp.ids, exp.quality)]
        (folder / "cluster_group.tsv").write_text("\n".join(rows) + "\n")
    elif labels == "info":
        rows = ["cluster_id\tAmplitude\tContamPct\tKSLabel\tfr\tgroup\tn_spikes"]
        rows += [f"{uid}\t50.0\t{5.0 * k}\t{q}\t{s.size / 100:.1f}\t\t{s.size}" for k, (uid, q, s) in enumerate(zip(exp.ids, exp.quality, exp.spikes))]
        (folder / "cluster_info.tsv").write_text("\n".join(rows) + "\n")
    np.save(folder / "frame_onsets.npy", exp.onsets)
    np.save(folder / "stimulus.npy", exp.stimulus)
    return folder


def write_nwb(path: Path, exp: LabExport) -> Path:
    """NWB: units table (with a quality column), stimulus series with timestamps, repeats intervals."""
    import datetime

    import pynwb
    from pynwb.epoch import TimeIntervals
    from pynwb.image import ImageSeries

    nwb = pynwb.NWBFile(session_description="simulated", identifier="sim", session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
    nwb.add_unit_column("quality", "sorting quality")
    for k, uid in enumerate(exp.ids):
        nwb.add_unit(id=int(uid), spike_times=exp.spikes[k] / exp.fs, quality=exp.quality[k])
    if exp.stimulus.ndim == 1:
        nwb.add_stimulus(pynwb.TimeSeries(name="flicker", data=exp.stimulus, unit="n.a.", timestamps=exp.onset_s))
    else:
        nwb.add_stimulus(ImageSeries(name="checkerboard", data=exp.stimulus.transpose(0, 2, 1), unit="n.a.", timestamps=exp.onset_s))
    table = TimeIntervals(name="repeats", description="repeated segment")
    dur = exp.repeat_frames / exp.frame_rate
    for t in exp.repeat_start_s:
        table.add_interval(start_time=float(t), stop_time=float(t + dur))
    nwb.add_time_intervals(table)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path
