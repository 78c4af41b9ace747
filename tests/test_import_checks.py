"""Unit and alignment checks: each broken input fails with its exact message, or is realigned and says so."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from helpers.lab_exports import LabExport, check_import, simulate_export, write_struct_export

from retinakit.errors import DataError
from retinakit.io.importer import import_recording

@pytest.fixture(scope="module")
def exp() -> LabExport:
    return simulate_export(seed=11)


def _import(tmp_path: Path, exp: LabExport, sunit: str = "samples", srate: int = 10000, funit: str = "samples", extra: str = ""):  # noqa: ANN202
    return import_recording(write_struct_export(tmp_path, exp, spike_unit=sunit, spike_rate=srate, frame_unit=funit, extra=extra))


def _error(tmp_path: Path, exp: LabExport, **kw: str) -> str:
    with pytest.raises(DataError) as info:
        _import(tmp_path, exp, **kw)
    return info.value.one_line().replace(str(tmp_path / "m.toml"), "MAPPING")


def test_spike_times_in_samples_declared_seconds(tmp_path: Path, exp: LabExport) -> None:
    assert _error(tmp_path, exp, sunit="seconds") == (
        "spike times read as seconds give a median firing rate of 0.00189 Hz per unit, outside the plausible 0.01-500 Hz in MAPPING; "
        "they look like ms or samples (at 10000, 20000, 25000, 30000 Hz): set spikes.unit (and spikes.sample_rate) to match"
    )


def test_spike_times_in_seconds_declared_samples(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    e.spikes = [s / e.fs for s in e.spikes]  # seconds written where samples were promised
    msg = _error(tmp_path, e)
    assert msg.startswith("spike times read as samples at 10000 Hz give a median firing rate of 1.89e+05 Hz per unit, outside the plausible 0.01-500 Hz in MAPPING;")
    assert msg.endswith("they look like seconds: set spikes.unit (and spikes.sample_rate) to match")


def test_frame_onsets_in_samples_declared_seconds(tmp_path: Path, exp: LabExport) -> None:
    assert _error(tmp_path, exp, funit="seconds") == (
        "frame onsets read as seconds give a frame rate of 0.003 Hz, outside the plausible 0.5-1000 Hz in MAPPING; "
        "they look like ms or samples (at 10000, 20000, 25000, 30000 Hz): set frames.unit (and frames.sample_rate) to match"
    )


def test_frame_numbers_instead_of_times(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    e.onsets = np.arange(e.onsets.size)
    assert _error(tmp_path, e, funit="seconds") == (
        "frame onsets are consecutive integers (0, 1, 2, ...): they look like frame numbers, not times in MAPPING; "
        "give the onset times (e.g. from the trigger/photodiode channel), or frames.rate for evenly spaced frames"
    )


def test_spikes_after_the_last_frame_wrong_sample_rate(tmp_path: Path, exp: LabExport) -> None:
    assert _error(tmp_path, exp, srate=5000) == (
        "464 of 887 spikes (52%) fall after the last frame (last spike at 23.37 s, last frame ends at 11.50 s, 2.08x the frame span) in MAPPING; "
        "spike and frame times disagree on units or clocks: check spikes.unit/spikes.sample_rate against frames.unit/frames.sample_rate; "
        "if the recording really continues after the stimulus, raise checks.max_fraction_after_last_frame"
    )


def test_frame_interval_jump_missed_trigger(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    e.onsets = np.delete(e.onsets, 100)
    assert _error(tmp_path, e) == (
        "frame intervals jump: 1 interval is longer than 1.25x the median 33.30 ms (first: 66.70 ms = 2.0 frames, after frame 99 at 3.8000 s) in MAPPING; "
        "frames were dropped or the trigger missed onsets: fix the frame times; if the stimulus paused there, set checks.frame_gaps = 'split'"
    )


def test_frame_interval_jump_double_trigger(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    e.onsets = np.insert(e.onsets, 101, e.onsets[100] + 40)
    assert _error(tmp_path, e) == (
        "frame intervals jump: 1 interval is shorter than 0.75x the median 33.30 ms (first: 4.00 ms from frame 100 at 3.8333 s) in MAPPING; "
        "a trigger was counted twice or the onsets include other events: remove the extra onsets"
    )


def test_pause_between_blocks_is_split_when_asked(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    i = 100  # inside the second training block (frames 90-149)
    e.onsets[i:] += 5000
    e.spikes = [np.where(s >= exp.onsets[i], s + 5000, s) for s in e.spikes]
    res = _import(tmp_path, e, extra="[checks]\nframe_gaps = 'split'")
    check_import(res.recording, e)
    assert res.recording.provenance["train_blocks"] == [[0, 60], [60, 70], [70, 120], [120, 180], [180, 240]]
    assert "frame onsets pause 1 time(s); the frames are binned as 2 separate runs" in res.notes


def test_pause_inside_a_repeat_misaligns_frame_times(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    i = e.repeat_starts[1] + 10
    e.onsets[i:] += 5000
    assert _error(tmp_path, e, extra="[checks]\nframe_gaps = 'split'") == (
        "repeat 2's frame times do not line up with repeat 1's: its frame 10 comes +500.0 ms from where it should in MAPPING; "
        "a frame was dropped or repeated inside repeat 2: fix the frame times, or leave it out with repeats.drop = [2]"
    )


def test_repeat_shifted_by_one_frame_is_realigned(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    e.repeat_starts = e.repeat_starts.copy()
    e.repeat_starts[1] += 1  # the lab's start time for repeat 2 is one frame late
    res = _import(tmp_path, e)
    assert "realigned repeat 2 by -1 frame: its stimulus matched repeat 1's only after that shift" in res.notes
    check_import(res.recording, exp)  # exactly the true repeats
    assert res.recording.provenance["repeat_start_frames"] == exp.repeat_starts.tolist()


def test_first_repeat_shifted_is_realigned_to_the_majority(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    e.repeat_starts = e.repeat_starts.copy()
    e.repeat_starts[0] -= 2
    res = _import(tmp_path, e)
    assert res.notes[-2:] == [
        "repeat 1 differs from the majority of repeats; repeat 2 is the reference",
        "realigned repeat 1 by +2 frames: its stimulus matched repeat 2's only after that shift",
    ]
    check_import(res.recording, exp)


def test_shifted_repeat_without_realignment_fails(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    e.repeat_starts = e.repeat_starts.copy()
    e.repeat_starts[1] += 1
    assert _error(tmp_path, e, extra="[checks]\nrealign_repeats = false") == (
        "repeat 2's stimulus does not match repeat 1's: 30 of 30 frames differ (first at frame 0 of the repeat: 1.933 vs -0.173); "
        "shifting it by -1 frames would make it match in MAPPING; fix repeats.starts, or set checks.realign_repeats = true to let retinakit shift it"
    )


def test_repeat_with_different_stimulus_fails(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    e.stimulus[e.repeat_starts[2] + 7] += 1.0
    assert _error(tmp_path, e) == (
        "repeat 3's stimulus does not match repeat 1's: 1 of 30 frames differ (first at frame 7 of the repeat: 2.295 vs 1.295); "
        "no shift of up to 2 frames makes it match in MAPPING; check repeats.starts and repeats.length, and that the stimulus is the one shown; "
        "or leave this repeat out with repeats.drop = [3]"
    )
    res = _import(tmp_path, e, extra="drop = [3]")
    assert res.recording.test.n_repeats == 2
    assert res.recording.train.n_bins == 240  # the left-out repeat's frames do not become training data
    assert "left out repeats [3] (repeats.drop): their frames are in neither part" in res.notes


def test_repeats_that_overlap_or_run_past_the_end(tmp_path: Path, exp: LabExport) -> None:
    with pytest.raises(DataError) as info:
        import_recording(write_struct_export(tmp_path, exp, repeat_frames=95))
    assert info.value.what == "repeats 1 and 2 overlap (they start at frames 60 and 150 but a repeat lasts 95 frames)"
    e = copy.deepcopy(exp)
    e.onsets = e.onsets[:-70]
    e.stimulus = e.stimulus[:-70]
    e.spikes = [s[s < e.onsets[-1]] for s in e.spikes]
    msg = _error(tmp_path, e)
    assert msg.startswith("repeat 3 needs frames 240..269 but there are only 260 frames in MAPPING;")


def test_stimulus_with_one_frame_too_many(tmp_path: Path, exp: LabExport) -> None:
    e = copy.deepcopy(exp)
    e.stimulus = np.append(e.stimulus, 0.5)
    assert _error(tmp_path, e) == (
        "the stimulus (331,) does not have one frame per frame onset: there are 330 onsets in MAPPING; "
        "the trigger may include extra onsets: select the stimulus frames' onsets with frames.skip / frames.count, or set stimulus.axes"
    )


def test_any_layout_bins_back_exactly(tmp_path: Path) -> None:
    """Property: for random frame rates, sample rates, jitter, block and repeat sizes, unit ids and
    geometries, the import returns exactly the simulated counts, repeats and stimulus."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hs

    from retinakit.io.spiketimes import SpikeTrains, align_repeats, assemble_recording, check_frame_intervals, locate_repeats

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        frame_rate=hs.sampled_from([15.0, 30.0, 60.0, 75.0, 120.0, 144.0]),
        fs=hs.sampled_from([10000.0, 20000.0, 25000.0, 30000.0]),
        shape=hs.sampled_from([(), (1, 1), (2, 3), (7, 5)]),
        n_units=hs.integers(1, 4),
        block=hs.integers(3, 40),
        rep=hs.integers(2, 25),
        n_rep=hs.integers(1, 4),
        jitter=hs.integers(0, 8),
        seed=hs.integers(0, 10_000),
    )
    def check(frame_rate: float, fs: float, shape: tuple[int, ...], n_units: int, block: int, rep: int, n_rep: int, jitter: int, seed: int) -> None:
        exp = simulate_export(frame_shape=shape, frame_rate=frame_rate, fs=fs, n_units=n_units, train_block_frames=block,
                              repeat_frames=rep, n_repeats=n_rep, seed=seed, jitter_samples=jitter, ids=list(range(100, 100 - 7 * n_units, -7)))
        ft = exp.onset_s
        dt, runs = check_frame_intervals(ft, 0.25, "error", "<test>")
        idx = locate_repeats(ft, exp.repeat_start_s, rep, dt, 0.25, "<test>")
        idx, notes = align_repeats(exp.stimulus, ft, idx, rep, dt, True, 2, 0.25, "<test>")
        trains = SpikeTrains(exp.spike_s, exp.ids).sorted_by_id()
        rec = assemble_recording(trains, ft, exp.stimulus, idx, rep, runs, dt, "unknown", {"source": "<test>"})
        check_import(rec, exp)

    check()
