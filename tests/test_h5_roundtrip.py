"""The Baccus-lab HDF5 layout: writer -> reader round trip, cell ordering, rate selection."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from conftest import make_recording
from retinakit.io import load_recording, save_recording
from retinakit.spikes import smooth_rates


@pytest.mark.parametrize("frame_shape", [(), (10, 10), (50, 50)])
def test_round_trip_is_identical(tmp_path, frame_shape):
    rec = make_recording(frame_shape=frame_shape, train_bins=400, test_bins=120, n_repeats=4)
    rec.train.rates["firing_rate_10ms"] = smooth_rates(rec.train.counts, rec.frame_dt, 0.010)
    rec.provenance["note"] = "round trip"
    path = save_recording(rec, tmp_path / "rec.h5")
    back = load_recording(path)
    assert back.frame_dt == rec.frame_dt
    assert back.stimulus_kind == rec.stimulus_kind
    np.testing.assert_array_equal(back.cell_ids, rec.cell_ids)
    for a, b in ((rec.train, back.train), (rec.test, back.test)):
        assert b.stimulus.dtype == a.stimulus.dtype
        np.testing.assert_array_equal(b.stimulus, a.stimulus)
        np.testing.assert_array_equal(b.time, a.time)
        np.testing.assert_array_equal(b.counts, a.counts)
        np.testing.assert_array_equal(b.true_rate, a.true_rate)
        assert sorted(b.rates) == sorted(a.rates)
        for k in a.rates:
            np.testing.assert_array_equal(b.rates[k], a.rates[k])
    np.testing.assert_array_equal(back.test.repeats, rec.test.repeats)
    assert back.provenance["note"] == "round trip"
    assert back.provenance["source"] == str(path)
    assert len(back.provenance["sha256"]) == 64
    # written again, the file reads back the same once more
    again = load_recording(save_recording(back, tmp_path / "again.h5"))
    np.testing.assert_array_equal(again.train.stimulus, rec.train.stimulus)


def test_layout_matches_the_lab_files(tmp_path):
    rec = make_recording(frame_shape=(10, 10), n_cells=3, train_bins=300, test_bins=100)
    path = save_recording(rec, tmp_path / "whitenoise.h5")
    with h5py.File(path) as f:
        assert f["train/stimulus"].shape == (300, 10, 10)
        assert f["train/response/binned"].shape == (3, 300)  # (n_cells, T) as released
        assert sorted(f["test/repeats"].keys()) == ["cell01", "cell02", "cell03"]
        assert f["test/repeats/cell02"].shape == (6, 100)


def _write_lab_file(path, cell_numbers, T=200, R=3, rate_keys=("firing_rate_10ms",)):
    """A file shaped like the released ones: no retinakit attributes, cells named cellNN."""
    rng = np.random.default_rng(1)
    n = len(cell_numbers)
    with h5py.File(path, "w") as f:
        for split in ("train", "test"):
            g = f.create_group(split)
            g["time"] = np.arange(T) * 0.01
            g["stimulus"] = rng.standard_normal((T, 4, 4)).astype(np.float32)
            counts = rng.poisson(0.2, size=(n, T)).astype(np.float64)
            counts[:, 0] = np.asarray(cell_numbers)  # tag each row with its cell number
            g["response/binned"] = counts
            for k in rate_keys:
                g[f"response/{k}"] = counts * 100.0
        reps = f.create_group("test/repeats")
        for i, c in enumerate(cell_numbers):
            arr = rng.poisson(0.2, size=(R, T)).astype(np.float64)
            arr[:, 0] = c
            reps[f"cell{c:02d}"] = arr


def test_cells_ordered_by_number_not_alphabetically(tmp_path):
    numbers = [2, 9, 10, 100]
    path = tmp_path / "naturalscene.h5"
    _write_lab_file(path, numbers)
    rec = load_recording(path)
    assert rec.cell_ids.tolist() == numbers  # alphabetical order would put cell100 before cell2
    assert rec.test.repeats[0, 0].tolist() == numbers
    assert rec.stimulus_kind == "naturalscene"  # guessed from the file name
    assert rec.frame_dt == pytest.approx(0.01)


def test_select_cells_and_rate_key(tmp_path):
    path = tmp_path / "naturalscene.h5"
    _write_lab_file(path, [1, 2, 3], rate_keys=("firing_rate_5ms", "firing_rate_10ms"))
    rec = load_recording(path, cells=[3, 1], rate_keys=["firing_rate_10ms"])
    assert rec.cell_ids.tolist() == [3, 1]
    assert list(rec.train.rates) == ["firing_rate_10ms"]
    assert rec.train.counts[0].tolist() == [3.0, 1.0]
    assert rec.test.repeats[0, 0].tolist() == [3.0, 1.0]


def test_stimulus_kept_compact():
    rec = make_recording(frame_shape=(5, 5), train_bins=100, test_bins=50)
    assert rec.train.stimulus.dtype == np.int8
    from retinakit.recording import compact_stimulus

    assert compact_stimulus(np.array([0.0, 255.0, 3.0])).dtype == np.uint8
    assert compact_stimulus(np.array([0.5, -0.25])).dtype == np.float16
    assert compact_stimulus(np.array([0.1, 0.2])).dtype == np.float32  # float16 would lose precision
