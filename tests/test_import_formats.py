"""Every source format, built here from a simulated recording with known spikes, imports to exactly the known counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.lab_exports import (
    check_import,
    matlab_stimulus,
    simulate_export,
    write_hdf5,
    write_mat73,
    write_mat_cell,
    write_npz,
    write_nwb,
    write_phy,
    write_struct_export,
    write_toml,
)

from retinakit.io.importer import import_recording

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "import_examples"


def _good(exp) -> list[int]:  # noqa: ANN001
    return [int(i) for i, q in zip(exp.ids, exp.quality) if q == "good"]


def test_matlab_struct_array_samples_fullfield_30hz(tmp_path: Path) -> None:
    exp = simulate_export(frame_rate=30.0, fs=10000.0, jitter_samples=3)
    m = write_struct_export(tmp_path, exp, keep=["good"])
    res = import_recording(m)
    check_import(res.recording, exp, _good(exp))
    rec = res.recording
    assert rec.stimulus_kind == "fullfield" and rec.is_fullfield
    assert rec.provenance["train_blocks"] == [[0, 60], [60, 120], [120, 180], [180, 240]]
    assert "9 spikes before the first frame and 6 after the last frame were left out" in res.notes


def test_matlab_cell_array_seconds_checkerboard_60hz(tmp_path: Path) -> None:
    exp = simulate_export(frame_shape=(4, 5), frame_rate=60.0, fs=20000.0, n_units=3, seed=2)
    write_mat_cell(tmp_path / "cells.mat", exp)
    m = write_toml(
        tmp_path / "m.toml",
        """
        [spikes]
        file = "cells.mat"
        variable = "spikes"
        unit = "seconds"
        [frames]
        variable = "frame_times"
        unit = "seconds"
        [stimulus]
        variable = "stim"       # (H, W, T): the time axis is found from the number of frames
        kind = "whitenoise"
        [repeats]
        variable = "rep_start"
        length = 0.5
        """,
    )
    rec = import_recording(m).recording
    exp.ids = np.arange(1, 4)  # cell arrays carry no ids: MATLAB's 1-based index is the id
    check_import(rec, exp)
    assert rec.frame_shape == (4, 5) and rec.stimulus_kind == "whitenoise"


def test_matlab_v73_struct_and_cell_arrays_120hz(tmp_path: Path) -> None:
    exp = simulate_export(frame_shape=(3, 2), frame_rate=120.0, fs=30000.0, n_units=3, seed=3)
    units = [{"id": float(exp.ids[k]), "times_ms": exp.spikes[k] / exp.fs * 1e3, "quality": exp.quality[k]} for k in range(3)]
    write_mat73(
        tmp_path / "v73.mat",
        {
            "exp": {"units": units, "onsets": exp.onsets.astype(np.float64), "movie": matlab_stimulus(exp)},
            "cells": [exp.spikes[k] / exp.fs for k in range(3)],
            "starts": exp.repeat_start_s,
        },
    )
    m = write_toml(
        tmp_path / "m.toml",
        """
        [recording]
        sample_rate = 30000
        [spikes]
        file = "v73.mat"
        variable = "exp.units"
        field = "times_ms"
        id_field = "id"
        unit = "ms"
        [frames]
        variable = "exp.onsets"
        unit = "samples"
        [stimulus]
        variable = "exp.movie"
        axes = "yxt"
        [repeats]
        variable = "starts"
        length = 0.25
        """,
    )
    rec = import_recording(m).recording
    check_import(rec, exp)
    assert rec.frame_shape == (3, 2)
    # the cell array of the same file, ids by position
    text = (tmp_path / "m.toml").read_text().replace('variable = "exp.units"\nfield = "times_ms"\nid_field = "id"\nunit = "ms"', 'variable = "cells"\nunit = "seconds"')
    (tmp_path / "m.toml").write_text(text)
    rec = import_recording(tmp_path / "m.toml").recording
    exp.ids = np.arange(1, 4)
    check_import(rec, exp)


def test_npz_object_arrays_with_ids_and_quality_large_checkerboard(tmp_path: Path) -> None:
    exp = simulate_export(frame_shape=(40, 40), frame_rate=60.0, n_units=5, ids=[17, 4, 9, 30, 2], train_block_frames=20, repeat_frames=10, seed=4)
    write_npz(tmp_path / "rec.npz", exp)
    m = write_toml(
        tmp_path / "m.toml",
        """
        [spikes]
        file = "rec.npz"
        variable = "spike_times"     # an object array: one array of times per unit
        ids_variable = "unit_ids"
        unit = "seconds"
        [units]
        variable = "quality"
        keep = ["good"]
        exclude = [30]
        [frames]
        variable = "frame_times"
        unit = "seconds"
        [stimulus]
        variable = "stimulus"
        [repeats]
        variable = "repeat_starts"
        length = 10
        length_unit = "frames"
        """,
    )
    rec = import_recording(m).recording
    check_import(rec, exp, [i for i in _good(exp) if i != 30])
    assert rec.frame_shape == (40, 40)


def test_npy_files_and_inline_repeat_starts(tmp_path: Path) -> None:
    exp = simulate_export(n_units=3, seed=5)
    obj = np.empty(3, dtype=object)
    for k in range(3):
        obj[k] = exp.spikes[k]
    np.save(tmp_path / "spikes.npy", obj, allow_pickle=True)
    np.save(tmp_path / "frames.npy", exp.onsets)
    np.save(tmp_path / "stim.npy", exp.stimulus)
    starts = ", ".join(str(int(s)) for s in exp.onsets[exp.repeat_starts])
    m = write_toml(
        tmp_path / "m.toml",
        f"""
        [recording]
        sample_rate = 10000
        [spikes]
        file = "spikes.npy"
        unit = "samples"
        [frames]
        file = "frames.npy"
        unit = "samples"
        [stimulus]
        file = "stim.npy"
        [repeats]
        starts = [{starts}]
        unit = "samples"
        length = 1.0
        """,
    )
    rec = import_recording(m).recording
    exp.ids = np.arange(1, 4)
    check_import(rec, exp)


def test_hdf5_group_per_unit_and_repeat_index(tmp_path: Path) -> None:
    exp = simulate_export(frame_shape=(6, 6), n_units=3, seed=6)
    write_hdf5(tmp_path / "rec.h5", exp)
    m = write_toml(
        tmp_path / "m.toml",
        """
        [spikes]
        file = "rec.h5"
        variable = "/sorting/units"     # one dataset per unit: unit_003, unit_007, ...
        unit = "ms"
        [frames]
        variable = "/sync/frame_onsets"
        unit = "samples"
        sample_rate = 10000
        [stimulus]
        variable = "/stimulus/frames"
        [repeats]
        index_variable = "/stimulus/repeat_index"    # 0 outside repeats, k inside repeat k
        """,
    )
    rec = import_recording(m).recording
    check_import(rec, exp)


@pytest.mark.parametrize("labels", ["group", "info"])
def test_phy_folder_keeps_good_clusters(tmp_path: Path, labels: str) -> None:
    exp = simulate_export(frame_shape=(5, 5), n_units=4, fs=30000.0, ids=[0, 12, 7, 31], seed=7)
    write_phy(tmp_path / "ks", exp, labels=labels)
    m = write_toml(
        tmp_path / "m.toml",
        """
        [spikes]
        folder = "ks"             # sample rate from params.py; keeps clusters labelled 'good'
        [frames]
        file = "ks/frame_onsets.npy"
        unit = "samples"          # the sample rate of a phy folder is used
        [stimulus]
        file = "ks/stimulus.npy"
        [repeats]
        starts = [%s]
        length = 1.0
        """
        % ", ".join(repr(float(t)) for t in exp.repeat_start_s),
    )
    res = import_recording(m)
    check_import(res.recording, exp, _good(exp))
    assert "units selected by group in ['good']" in res.notes


def test_nwb_units_imageseries_and_intervals(tmp_path: Path) -> None:
    exp = simulate_export(frame_shape=(3, 4), n_units=3, seed=8)
    write_nwb(tmp_path / "rec.nwb", exp)
    m = write_toml(
        tmp_path / "m.toml",
        """
        [spikes]
        file = "rec.nwb"
        [units]
        field = "quality"
        keep = ["good"]
        [stimulus]
        variable = "checkerboard"   # frames (and their times) from this ImageSeries
        [repeats]
        intervals = "repeats"
        """,
    )
    rec = import_recording(m).recording
    check_import(rec, exp, _good(exp))
    assert rec.frame_shape == (3, 4)


def test_hdf5_flat_spikes_rate_frames_pixel_vectors_sample_index(tmp_path: Path) -> None:
    """All spikes in one vector with a unit label each; evenly spaced frames from frames.rate;
    frames stored as pixel vectors (frame_shape); repeats marked per acquisition sample."""
    import h5py

    exp = simulate_export(frame_shape=(3, 4), frame_rate=50.0, fs=10000.0, n_units=3, seed=9, pre_post_spikes=False)
    assert np.all(np.diff(exp.onsets) == 200)
    index = np.zeros(exp.onsets[-1] + 200, dtype=np.int8)
    for k, i in enumerate(exp.repeat_starts):
        index[exp.onsets[i] : exp.onsets[i] + 200 * exp.repeat_frames] = 1 + (k % 2)  # labels may alternate
    times = np.concatenate(exp.spikes) / exp.fs
    labels = np.concatenate([np.full(s.size, uid) for s, uid in zip(exp.spikes, exp.ids)])
    order = np.argsort(times)
    with h5py.File(tmp_path / "exp.h5", "w") as f:
        f["sorting/spike_times"] = times[order]
        f["sorting/spike_units"] = labels[order]
        f["stimulus/pixels"] = exp.stimulus.reshape(exp.stimulus.shape[0], -1)
        f["sync/repeat_flag"] = index
    m = write_toml(
        tmp_path / "m.toml",
        f"""
        [spikes]
        file = "exp.h5"
        variable = "/sorting/spike_times"
        labels_variable = "/sorting/spike_units"
        unit = "seconds"
        [frames]
        rate = 50.0
        start = {float(exp.onset_s[0])!r}
        [stimulus]
        variable = "/stimulus/pixels"
        frame_shape = [3, 4]
        [repeats]
        index_variable = "/sync/repeat_flag"
        index_per = "sample"
        sample_rate = 10000
        """,
    )
    check_import(import_recording(m).recording, exp)


def test_frames_skip_count_and_numeric_unit_threshold(tmp_path: Path) -> None:
    import scipy.io

    exp = simulate_export(n_units=4, seed=10)
    onsets = np.concatenate([[100, 400], exp.onsets, [exp.onsets[-1] + 5000]])  # trigger test pulses around the stimulus
    units = np.zeros((1, 4), dtype=[("t", "O"), ("snr", "O")])
    for k in range(4):
        units[0, k]["t"] = exp.spikes[k].astype(float)
        units[0, k]["snr"] = float(k + 1)
    scipy.io.savemat(tmp_path / "r.mat", {"units": units, "onsets": onsets.astype(float), "stim": exp.stimulus, "starts": exp.onsets[exp.repeat_starts].astype(float)})
    m = write_toml(
        tmp_path / "m.toml",
        f"""
        [recording]
        sample_rate = 10000
        [spikes]
        file = "r.mat"
        variable = "units"
        field = "t"
        unit = "samples"
        [units]
        field = "snr"
        min = 2.5
        [frames]
        variable = "onsets"
        unit = "samples"
        skip = 2
        count = {exp.onsets.size}
        [stimulus]
        variable = "stim"
        [repeats]
        variable = "starts"
        unit = "samples"
        length = 1.0
        """,
    )
    exp.ids = np.arange(1, 5)
    res = import_recording(m)
    check_import(res.recording, exp, [3, 4])
    assert "units selected by snr >= 2.5" in res.notes


def test_retinakit_simulate_spike_export_round_trip(tmp_path: Path) -> None:
    """The simulator's spike-time export (flat spikes, repeat stimulus stored once, training and
    repeat frames in two arrays, paused blocks) imports back to the simulated recording exactly."""
    simulate = pytest.importorskip("retinakit.simulate")
    spec = simulate.SimulationSpec(stimulus="whitenoise", minutes=0.2, n_cells=2, size=(8, 8), n_repeats=3, test_seconds=1.0, seed=3)
    sim = simulate.simulate(spec, progress=False)
    simulate.export_spikes(sim, tmp_path / "spikes.npz")
    text = (EXAMPLES / "retinakit_simulate_npz.toml").read_text()
    write_toml(tmp_path / "m.toml", text)
    res = import_recording(tmp_path / "m.toml")
    rec, want = res.recording, sim.recording
    np.testing.assert_array_equal(rec.cell_ids, want.cell_ids)
    for a, b in ((rec.train, want.train), (rec.test, want.test)):
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.stimulus, b.stimulus)
        np.testing.assert_allclose(a.time, b.time, atol=1e-9)
    np.testing.assert_array_equal(rec.test.repeats, want.test.repeats)
