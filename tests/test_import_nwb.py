"""NWB: read units + stimulus + intervals through a mapping; export a recording and read it back exactly."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_recording
from helpers.lab_exports import check_import, simulate_export, write_mat_struct, write_toml

from retinakit.cli import main
from retinakit.io import load_recording, save_recording
from retinakit.io.importer import import_recording
from retinakit.io.nwb import export, spikes_from_counts
from retinakit.spikes import bin_spikes

pytest.importorskip("pynwb")


def _same(a, b) -> None:  # noqa: ANN001
    np.testing.assert_array_equal(a.cell_ids, b.cell_ids)
    for x, y in ((a.train, b.train), (a.test, b.test)):
        np.testing.assert_array_equal(x.counts, y.counts)
        np.testing.assert_array_equal(x.stimulus, y.stimulus)
        np.testing.assert_array_equal(x.time, y.time)
    np.testing.assert_array_equal(a.test.repeats, b.test.repeats)
    assert a.stimulus_kind == b.stimulus_kind
    assert a.frame_dt == pytest.approx(b.frame_dt, rel=1e-12)


def test_spikes_from_counts_bin_back_exactly() -> None:
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.uniform(0.009, 0.011, size=500))
    times[300:] += 2.0  # a pause
    counts = rng.poisson(2.0, size=(500, 3))
    spikes = spikes_from_counts(times, counts)
    got = np.concatenate([bin_spikes(spikes, times[:300]), bin_spikes(spikes, times[300:])])
    np.testing.assert_array_equal(got, counts)


@pytest.mark.parametrize("frame_shape", [(6, 5), ()])
def test_export_and_load_round_trip(tmp_path: Path, frame_shape: tuple[int, ...]) -> None:
    rec = make_recording(frame_shape=frame_shape, n_cells=3, train_bins=400, test_bins=50, n_repeats=4)
    export(rec, tmp_path / "rec.nwb")
    back = load_recording(tmp_path / "rec.nwb")
    _same(back, rec)
    assert back.frame_shape == rec.frame_shape


def test_export_of_an_imported_recording_keeps_repeat_times(tmp_path: Path) -> None:
    exp = simulate_export(frame_shape=(3, 3), n_units=3, seed=21, pre_post_spikes=False)
    write_mat_struct(tmp_path / "rec.mat", exp, unit="seconds")
    m = write_toml(
        tmp_path / "m.toml",
        """
        [spikes]
        file = "rec.mat"
        variable = "units"
        field = "spike_times"
        id_field = "id"
        unit = "seconds"
        [frames]
        variable = "frame_onsets"
        unit = "seconds"
        [stimulus]
        variable = "stimulus"
        kind = "whitenoise"
        [repeats]
        variable = "repeat_starts"
        length = 1.0
        """,
    )
    rec = import_recording(m).recording
    export(rec, tmp_path / "rec.nwb")
    back = load_recording(tmp_path / "rec.nwb")
    _same(back, rec)
    check_import(back, exp)
    assert back.provenance["train_blocks"] == rec.provenance["train_blocks"]


def test_nwb_rate_series_and_trials_filter(tmp_path: Path) -> None:
    """A full-field TimeSeries given by starting_time + rate, repeats as rows of the trials table."""
    import pynwb

    exp = simulate_export(frame_rate=50.0, fs=10000.0, n_units=2, seed=22, pre_post_spikes=False)
    exp.onsets = exp.onsets[0] + np.arange(exp.onsets.size) * 200  # exactly 50 Hz
    exp.spikes = [np.sort(exp.onsets[np.repeat(np.arange(exp.onsets.size), exp.counts[:, k])] + 77) for k in range(2)]
    nwb = pynwb.NWBFile(session_description="s", identifier="i", session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
    for k, uid in enumerate(exp.ids):
        nwb.add_unit(id=int(uid), spike_times=exp.spikes[k] / exp.fs)
    nwb.add_stimulus(pynwb.TimeSeries(name="flicker", data=exp.stimulus, unit="n.a.", starting_time=float(exp.onset_s[0]), rate=50.0))
    nwb.add_stimulus(pynwb.TimeSeries(name="other", data=np.zeros(5), unit="n.a.", rate=1.0))
    nwb.add_trial_column("stimulus", "what was shown")
    for t in exp.repeat_start_s:
        nwb.add_trial(start_time=float(t) - 0.5, stop_time=float(t) - 0.1, stimulus="gray")
        nwb.add_trial(start_time=float(t), stop_time=float(t) + exp.repeat_frames / 50.0, stimulus="repeat")
    with pynwb.NWBHDF5IO(str(tmp_path / "f.nwb"), "w") as io:
        io.write(nwb)
    m = write_toml(
        tmp_path / "m.toml",
        """
        [spikes]
        file = "f.nwb"
        [stimulus]
        variable = "flicker"
        [repeats]
        intervals = "trials"
        column = "stimulus"
        value = "repeat"
        """,
    )
    check_import(import_recording(m).recording, exp)
    (tmp_path / "m.toml").write_text((tmp_path / "m.toml").read_text().replace('variable = "flicker"\n', ""))
    with pytest.raises(Exception) as info:
        import_recording(tmp_path / "m.toml")
    assert "stimulus.variable: 'f.nwb' has several stimulus series (flicker, other)" in str(info.value)


def test_cli_export_to_nwb_and_inspect(tmp_path: Path) -> None:
    rec = make_recording(frame_shape=(5, 5), n_cells=2, train_bins=300, test_bins=40, n_repeats=3)
    save_recording(rec, tmp_path / "rec.h5")
    runner = CliRunner()
    res = runner.invoke(main, ["data", "export", str(tmp_path / "rec.h5"), "--to", str(tmp_path / "out.nwb")])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"wrote {tmp_path / 'out.nwb'} (2 cells, 300 train bins, 3 repeats)"
    res = runner.invoke(main, ["data", "export", str(tmp_path / "rec.h5"), "--to", str(tmp_path / "out.nwb")])
    assert res.exit_code == 2 and f"error: '{tmp_path / 'out.nwb'}' already exists" in res.output
    res = runner.invoke(main, ["data", "inspect", str(tmp_path / "out.nwb"), "--json", "--no-sta"])
    assert res.exit_code == 0, res.output
    _same(load_recording(tmp_path / "out.nwb"), load_recording(tmp_path / "rec.h5"))
