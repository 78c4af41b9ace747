"""Recordings split across acquisition blocks: a training block and a repeat block, each on its own clock.

The simulated lab export is the one a MATLAB v5 user hands over: a struct array of training spike
times (field ``sp``, samples at 10 kHz), a struct array of repeat spike times on the repeat block's
clock, frame onsets for the training block only (with one 2-frame pause), the training stimulus
(one value per frame), repeat start times in samples, and the repeat stimulus logged once per
acquisition sample with a second row holding the repeat index. One of the nine repeats was shown
one frame late. The counts per frame are known exactly (every spike lies strictly inside a frame).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.lab_exports import write_toml

from retinakit.cli import main
from retinakit.errors import ConfigError, DataError
from retinakit.io import load_recording
from retinakit.io.importer import import_recording
from retinakit.io.mapping import load_mapping
from retinakit.recording import Recording, compact_stimulus

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "import_examples"

MAPPING = """
version = 1
[recording]
sample_rate = 10000
[checks]
frame_gaps = "split"

[[blocks]]
name = "train"
role = "train"
[blocks.spikes]
file = "rec.mat"
variable = "train_spikes"
field = "sp"
unit = "samples"
[blocks.frames]
variable = "frame_onsets"
unit = "samples"
[blocks.stimulus]
variable = "train_stim"
kind = "fullfield"

[[blocks]]
name = "repeats"
role = "test"
[blocks.spikes]
variable = "repeat_spikes"
field = "sp"
unit = "samples"
[blocks.frames]
rate = {rate}
[blocks.stimulus]
variable = "repeat_stim"
per = "sample"
row = 1
[blocks.repeats]
{repeats}
"""

BY_INDEX = 'index_variable = "repeat_stim"\nindex_row = 2\nindex_per = "sample"'
BY_STARTS = 'variable = "repeat_starts"\nunit = "samples"\nlength = {length}\nlength_unit = "frames"'


@dataclass
class BlockExport:
    """The two-block export and the answer the importer must find."""

    fs: float
    rate: float
    train_onsets: np.ndarray  # (T1,) samples on the training clock
    train_stim: np.ndarray  # (T1,)
    train_counts: np.ndarray  # (T1, n_units)
    train_spikes: list[np.ndarray]
    runs: tuple[int, int]  # frames before and after the pause
    log: np.ndarray  # (2, N): stimulus value and repeat index per sample of the repeat block
    repeat_starts: np.ndarray  # (R,) samples on the repeat clock (as marked, like the index)
    repeat_spikes: list[np.ndarray]
    seg: np.ndarray  # (L,) the repeated segment
    shown: np.ndarray  # (R,) grid frame where each repeat really began
    rep_counts: np.ndarray  # (F, n_units) per grid frame of the repeat block

    @property
    def n_frames(self) -> int:
        return int(self.seg.size)

    def expected_repeats(self) -> np.ndarray:
        return np.stack([self.rep_counts[i : i + self.n_frames] for i in self.shown])


def simulate_blocks(
    n_units: int = 3,
    runs: tuple[int, int] = (1500, 1500),
    seg_frames: int = 600,
    n_repeats: int = 9,
    lead: int = 12,
    gap: int = 15,
    tail: int = 6,
    late_repeat: int = 5,
    late: str = "stimulus",
    fs: float = 10000.0,
    rate: float = 30.0,
    seed: int = 0,
    mean_rate_hz: float = 15.0,
) -> BlockExport:
    """Simulate LN cells recorded in a training block (onsets, one 2-frame pause) and a repeat block (per-sample log).

    Repeat ``late_repeat`` is one frame off: with ``late="stimulus"`` it was shown a frame after its
    marked start (needs ``gap >= 1``); with ``late="marker"`` it was shown on time but its index and
    start time were logged a frame late (repeats may then follow each other without gaps).
    """
    rng = np.random.default_rng(seed)
    step = fs / rate
    signs = np.array([1.0 if k % 2 == 0 else -1.0 for k in range(n_units)])

    def counts_of(drive: np.ndarray) -> np.ndarray:
        lagged = np.concatenate([[0.0, 0.0], drive[:-2]])
        lam = (mean_rate_hz / rate) * np.exp(0.6 * signs[None, :] * lagged[:, None] - 0.18)
        return rng.poisson(lam).astype(np.int64)

    def place(counts: np.ndarray, onsets: np.ndarray) -> list[np.ndarray]:
        margin = int(np.floor(step)) - 2  # every frame lasts at least floor(step) samples
        out = []
        for k in range(counts.shape[1]):
            frame = np.repeat(np.arange(onsets.size), counts[:, k])
            out.append(np.ceil(onsets[frame]).astype(np.int64) + rng.integers(1, margin, size=frame.size))
        return out

    # training block: frames on the grid, positions n1, n1+1 skipped (a 2-frame pause)
    n1, n2 = runs
    pos = np.concatenate([np.arange(n1), np.arange(n1 + 2, n1 + 2 + n2)])
    t_on = (5000 + np.round(pos * step)).astype(np.int64)
    t_stim = np.round(rng.normal(size=pos.size), 3)
    t_counts = counts_of(t_stim)
    t_spikes = place(t_counts, t_on.astype(np.float64))
    pause = t_on[n1 - 1] + 340  # spikes inside the pause and before/after the frames belong to no frame
    t_spikes = [np.sort(np.concatenate([s, [10, 4000], rng.integers(pause, t_on[n1] - 2, size=2), [t_on[-1] + 2000]])) for s in t_spikes]

    # repeat block: its own clock (sample 0 = first logged sample), a gray lead-in, repeats separated by gray gaps
    seg = np.round(rng.normal(size=seg_frames), 3)
    planned = lead + np.arange(n_repeats) * (seg_frames + gap)
    shown = planned.copy()
    marked = planned.copy()
    (shown if late == "stimulus" else marked)[late_repeat - 1] += 1  # one frame off
    F = lead + n_repeats * seg_frames + (n_repeats - 1) * gap + tail
    values = np.zeros(F)
    label = np.zeros(F)
    for k in range(n_repeats):
        values[shown[k] : shown[k] + seg_frames] = seg
    for k in range(n_repeats):  # a late marker is cut short by the next repeat's
        label[marked[k] : marked[k] + seg_frames] = k + 1
    N = int(np.ceil(F * step))
    frame_of = (np.arange(N, dtype=np.int64) * int(rate)) // int(fs)  # grid frame of every sample
    log = np.stack([values[frame_of], label[frame_of]])
    r_counts = counts_of(values)
    r_spikes = place(r_counts, np.arange(F) * step)
    r_spikes = [np.sort(np.concatenate([s, [N + 50]])) for s in r_spikes]
    starts = np.ceil(marked * step).astype(np.int64)  # the first sample of each marked repeat
    return BlockExport(fs, rate, t_on, t_stim, t_counts, t_spikes, runs, log, starts, r_spikes, seg, shown, r_counts)


def _struct(spikes: list[np.ndarray]) -> np.ndarray:
    arr = np.zeros((1, len(spikes)), dtype=[("sp", "O")])
    for k, s in enumerate(spikes):
        arr[0, k]["sp"] = s.astype(np.float64)[:, None]
    return arr


def write_blocks_mat(path: Path, exp: BlockExport, repeat_units: list[int] | None = None) -> Path:
    """MATLAB v5, as the lab saves it (``repeat_units``: 0-based units present in the repeat struct)."""
    import scipy.io

    rep = exp.repeat_spikes if repeat_units is None else [exp.repeat_spikes[k] for k in repeat_units]
    scipy.io.savemat(
        path,
        {
            "train_spikes": _struct(exp.train_spikes),
            "repeat_spikes": _struct(rep),
            "frame_onsets": exp.train_onsets.astype(np.float64)[:, None],
            "train_stim": exp.train_stim[None, :],
            "repeat_starts": exp.repeat_starts.astype(np.float64)[None, :],
            "repeat_stim": exp.log,
        },
    )
    return path


def mapping(tmp_path: Path, exp: BlockExport, repeats: str = BY_INDEX, rate: float | None = None, name: str = "m.toml") -> Path:
    return write_toml(tmp_path / name, MAPPING.format(rate=rate or exp.rate, repeats=repeats.format(length=exp.n_frames)))


def check_blocks_import(rec: Recording, exp: BlockExport) -> None:
    """Exactly the known counts, repeats, stimulus and blocks."""
    n1, n2 = exp.runs
    n_units = exp.train_counts.shape[1]
    np.testing.assert_array_equal(rec.cell_ids, np.arange(1, n_units + 1))
    np.testing.assert_array_equal(rec.train.counts, exp.train_counts)
    np.testing.assert_array_equal(rec.train.stimulus, compact_stimulus(exp.train_stim))
    np.testing.assert_allclose(rec.train.time, exp.train_onsets / exp.fs, rtol=0, atol=1e-9)
    assert rec.provenance["train_blocks"] == [[0, n1], [n1, n1 + n2]]
    np.testing.assert_array_equal(rec.test.repeats, exp.expected_repeats())
    np.testing.assert_array_equal(rec.test.counts, exp.expected_repeats().mean(axis=0).astype(np.float32))
    np.testing.assert_array_equal(rec.test.stimulus, compact_stimulus(exp.seg))
    # the repeat block's clock is placed 1 s after the training block ends; frames at the given rate
    end = exp.train_onsets[-1] / exp.fs + np.median(np.diff(exp.train_onsets)) / exp.fs
    np.testing.assert_allclose(rec.test.time, end + 1.0 + np.arange(exp.n_frames) / exp.rate, rtol=0, atol=1e-9)
    assert rec.frame_rate == pytest.approx(exp.rate, rel=1e-4)


# ----------------------------------------------------------------------------- the import
@pytest.mark.parametrize("repeats", [BY_INDEX, BY_STARTS], ids=["index-row", "start-times"])
def test_two_block_export_imports_exactly(tmp_path: Path, repeats: str) -> None:
    exp = simulate_blocks(runs=(200, 150), seg_frames=60, n_repeats=9, seed=3)
    write_blocks_mat(tmp_path / "rec.mat", exp)
    result = import_recording(mapping(tmp_path, exp, repeats))
    rec = result.recording
    check_blocks_import(rec, exp)
    notes = result.notes
    assert "realigned repeat 5 by +1 frame: its stimulus matched repeat 1's only after that shift" in notes
    assert "block 'train': frame onsets pause 1 time(s); the frames are binned as 2 separate runs" in notes
    assert "block 'train': 6 spikes before the first frame and 3 after the last frame were left out" in notes
    n_laid = 9 * 60 + 8 * 15 + 6
    assert f"block 'repeats': no frame onsets: {n_laid} frames laid out at 30 Hz from the repeat starts" in notes
    before = int(exp.rep_counts[:12].sum())  # spikes during the gray lead-in, before the first repeat start
    assert f"block 'repeats': {before} spikes before the first frame and 3 after the last frame were left out" in notes
    assert "block 'repeats': stimulus logged per sample at 10000 Hz: each frame's value is read at the frame's centre" in notes
    assert f"block 'repeats': {n_laid - 9 * 60} frames outside the repeats are in neither part (role = 'test')" in notes
    blocks = rec.provenance["blocks"]
    assert [(b["name"], b["role"], b["n_frames"], b["runs"], b["n_repeats"], b["frame_times"]) for b in blocks] == [
        ("train", "train", 350, 2, 0, "onsets"),
        ("repeats", "test", n_laid, 1, 9, "laid out from the repeat starts"),  # whole gray frames between repeats: one run
    ]
    assert blocks[1]["repeat_start_frames"] == [k * 75 + (1 if k == 4 else 0) for k in range(9)]
    assert rec.provenance["repeat_start_frames"] == [350 + k * 75 + (1 if k == 4 else 0) for k in range(9)]


def test_back_to_back_repeats_with_one_start_marked_late(tmp_path: Path) -> None:
    """No gaps between repeats: the late-marked repeat overlaps the next by a frame until it is realigned."""
    exp = simulate_blocks(runs=(200, 150), seg_frames=60, lead=0, gap=0, tail=0, late="marker", seed=14)
    assert exp.log.shape == (2, 9 * 60 * 10000 // 30)
    write_blocks_mat(tmp_path / "rec.mat", exp)
    for repeats in (BY_INDEX, BY_STARTS):
        result = import_recording(mapping(tmp_path, exp, repeats))
        check_blocks_import(result.recording, exp)
        assert "realigned repeat 5 by -1 frame: its stimulus matched repeat 1's only after that shift" in result.notes
    m = mapping(tmp_path, exp)
    m.write_text(m.read_text().replace('frame_gaps = "split"', 'frame_gaps = "split"\nrealign_repeats = false'))
    with pytest.raises(DataError, match=r"repeats 5 and 6 overlap \(they start at frames 241 and 300 but a repeat lasts 60 frames\)"):
        import_recording(m)


def _laid_out_grid_frames(exp: BlockExport, lead: int = 12) -> np.ndarray:
    """Grid frames of the repeat block that get laid out: from the first repeat start to the end of the log."""
    return np.arange(lead, exp.rep_counts.shape[0])


def test_role_both_sends_the_frames_between_repeats_to_training(tmp_path: Path) -> None:
    exp = simulate_blocks(runs=(200, 150), seg_frames=60, seed=12)
    write_blocks_mat(tmp_path / "rec.mat", exp)
    m = mapping(tmp_path, exp)
    m.write_text(m.read_text().replace('role = "test"', 'role = "both"'))
    result = import_recording(m)
    rec = result.recording
    grid = _laid_out_grid_frames(exp)
    inside = np.zeros(exp.rep_counts.shape[0], dtype=bool)
    for i in exp.shown:
        inside[i : i + exp.n_frames] = True
    rest = grid[~inside[grid]]  # the gray gaps (one of them a frame shorter: repeat 5 came late) and the tail
    np.testing.assert_array_equal(rec.train.counts, np.concatenate([exp.train_counts, exp.rep_counts[rest]]))
    np.testing.assert_array_equal(rec.test.repeats, exp.expected_repeats())
    assert rec.train.n_bins == 350 + rest.size and rest.size == 8 * 15 + 6
    assert not any("neither part" in n for n in result.notes)
    # the training part joins the training block's two runs and the repeat block's gaps, each a block of its own
    assert rec.provenance["train_blocks"][:2] == [[0, 200], [200, 350]] and len(rec.provenance["train_blocks"]) == 2 + 9


def test_a_single_block_mapping_takes_a_per_sample_stimulus_too(tmp_path: Path) -> None:
    exp = simulate_blocks(runs=(200, 150), seg_frames=60, seed=13)
    write_blocks_mat(tmp_path / "rec.mat", exp)
    m = write_toml(
        tmp_path / "single.toml",
        """
        [recording]
        sample_rate = 10000
        [spikes]
        file = "rec.mat"
        variable = "repeat_spikes"
        field = "sp"
        unit = "samples"
        [frames]
        rate = 30.0
        [stimulus]
        variable = "repeat_stim"
        per = "sample"
        row = 1
        [repeats]
        index_variable = "repeat_stim"
        index_row = 2
        index_per = "sample"
        """,
    )
    result = import_recording(m)
    rec = result.recording
    np.testing.assert_array_equal(rec.test.repeats, exp.expected_repeats())
    assert "realigned repeat 5 by +1 frame: its stimulus matched repeat 1's only after that shift" in result.notes
    assert rec.train.n_bins == 8 * 15 + 6 and "blocks" not in rec.provenance
    # a 2-D log without its row is refused with the fix
    m.write_text(m.read_text().replace('per = "sample"\nrow = 1\n', 'per = "sample"\n'))
    with pytest.raises(DataError, match=r"stimulus.variable 'repeat_stim' is a 2 x 226000 array in .*; say which row holds the stimulus values with stimulus.row = 1"):
        import_recording(m)


def test_with_realignment_off_the_late_repeat_is_an_error_naming_the_shift(tmp_path: Path) -> None:
    exp = simulate_blocks(runs=(200, 150), seg_frames=60, seed=4)
    write_blocks_mat(tmp_path / "rec.mat", exp)
    m = mapping(tmp_path, exp)
    m.write_text(m.read_text().replace('frame_gaps = "split"', 'frame_gaps = "split"\nrealign_repeats = false'))
    with pytest.raises(DataError, match=r"repeat 5's stimulus does not match repeat 1's: 60 of 60 frames differ .*shifting it by \+1 frames would make it match"):
        import_recording(m)


def test_training_pause_without_split_is_the_clear_frame_gap_error(tmp_path: Path) -> None:
    exp = simulate_blocks(runs=(200, 150), seg_frames=60, seed=5)
    write_blocks_mat(tmp_path / "rec.mat", exp)
    m = mapping(tmp_path, exp)
    m.write_text(m.read_text().replace('[checks]\nframe_gaps = "split"\n', ""))
    with pytest.raises(DataError) as info:
        import_recording(m)
    msg = info.value.one_line()
    assert "frame intervals jump: 1 interval is longer than 1.25x the median 33.30 ms (first: 100.00 ms = 3.0 frames, after frame 199" in msg
    assert f"in {m} (block 'train');" in msg and "set checks.frame_gaps = 'split'" in msg


def test_a_unit_missing_from_one_block_is_named(tmp_path: Path) -> None:
    exp = simulate_blocks(runs=(200, 150), seg_frames=60, seed=6)
    write_blocks_mat(tmp_path / "rec.mat", exp, repeat_units=[0, 1])
    m = mapping(tmp_path, exp)
    with pytest.raises(DataError) as info:
        import_recording(m)
    assert info.value.one_line() == (
        f"units are matched across blocks by id, but block 'repeats' has no unit 3 (found in block 'train') in {m}; "
        "check spikes.id_field of each block (without it the position in the struct/cell array is the id), or leave them out with units.exclude = [3]"
    )
    m.write_text(m.read_text().replace("[checks]\n", "[units]\nexclude = [3]\n[checks]\n"))
    rec = import_recording(m).recording
    np.testing.assert_array_equal(rec.cell_ids, [1, 2])
    np.testing.assert_array_equal(rec.test.repeats, exp.expected_repeats()[:, :, :2])


def test_frame_rates_must_agree_across_blocks(tmp_path: Path) -> None:
    exp = simulate_blocks(runs=(200, 150), seg_frames=60, seed=7)
    write_blocks_mat(tmp_path / "rec.mat", exp)
    m = mapping(tmp_path, exp, rate=60.0)
    with pytest.raises(DataError, match=r"block 'repeats' has 60 Hz frames but block 'train' 30 Hz \(100% apart, more than checks.max_frame_rate_mismatch = 0.01\)"):
        import_recording(m)


def test_stimulus_log_that_does_not_cover_the_frames(tmp_path: Path) -> None:
    exp = simulate_blocks(runs=(200, 150), seg_frames=60, seed=8)
    write_blocks_mat(tmp_path / "rec.mat", exp)
    m = mapping(tmp_path, exp, repeats=BY_STARTS)
    m.write_text(m.read_text().replace("row = 1\n", "row = 1\nsample_rate = 20000\n"))  # the log read at twice its rate ends too soon
    with pytest.raises(DataError, match=r"a repeat starts at .* s, outside the stimulus log"):
        import_recording(m)


# ----------------------------------------------------------------------------- the mapping
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('role = "test"', 'role = "repeat"'), "block 'repeats' (blocks[2]): role: expected one of train|test|both, got 'repeat'"),
        (('role = "train"', 'role = "train"\nclock = 1'), "blocks[1].clock: unknown key"),
        (('role = "test"', 'role = "train"'), "block 'repeats' (blocks[2]): role = 'train' but the block has [blocks.repeats]"),
        (("row = 1\n", "row = 1\naxes = 't'\n"), "block 'repeats' (blocks[2]): stimulus.per = 'sample' (one full-field value per acquisition sample) does not go with stimulus.axes"),
        (('index_per = "sample"', 'index_per = "frame"'), "block 'repeats' (blocks[2]): frames.rate without frames.start lays the frames out from the repeat starts, but repeats.index_per = 'frame' needs frame onsets"),
        (('name = "repeats"', 'name = "train"'), "blocks[2].name: two blocks are called 'train'"),
        (('[[blocks]]\nname = "train"', '[spikes]\nfile = "x.mat"\n[[blocks]]\nname = "train"'), "[spikes] and [[blocks]] cannot both be given"),
    ],
)
def test_block_mapping_errors_name_the_block_and_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    text = MAPPING.format(rate=30.0, repeats=BY_INDEX)
    assert edit[0] in text
    write_toml(tmp_path / "m.toml", text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as info:
        load_mapping(tmp_path / "m.toml")
    assert info.value.one_line().startswith(message)


def test_block_example_imports_the_export_it_describes(tmp_path: Path) -> None:
    m = load_mapping(EXAMPLES / "matlab_blocks.toml")
    assert [(b.name, b.role, b.frames_laid_out) for b in m.blocks] == [("train", "train", False), ("repeats", "test", True)]
    assert m.blocks[1].spikes.file == m.blocks[0].spikes.file  # later blocks default to the first block's file
    exp = simulate_blocks(runs=(120, 90), seg_frames=45, seed=9)
    write_blocks_mat(tmp_path / "recording.mat", exp)
    write_toml(tmp_path / "m.toml", (EXAMPLES / "matlab_blocks.toml").read_text())
    check_blocks_import(import_recording(tmp_path / "m.toml").recording, exp)


# ----------------------------------------------------------------------------- the command line, end to end
def test_two_block_matlab_export_from_the_cli_then_compare_ln(tmp_path: Path) -> None:
    """The export as described: 9 repeats of 20 s at 30 Hz back to back, logged per sample at 10 kHz (1.8 million
    columns), repeat 5 marked a frame late; imported from the command line to exactly the known counts,
    inspected, then LN vs CNN per cell."""
    exp = simulate_blocks(runs=(1500, 1500), seg_frames=600, n_repeats=9, lead=0, gap=0, tail=0, late="marker", seed=11)
    assert exp.log.shape == (2, 1_800_000)
    write_blocks_mat(tmp_path / "rec.mat", exp)
    m = mapping(tmp_path, exp)
    runner = CliRunner()
    res = runner.invoke(main, ["data", "import", str(m), "--out", str(tmp_path / "rec.h5")])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        "cells: 3 (ids 1, 2, 3)",
        "stimulus: full-field fullfield, 30 Hz frames (bins = frames, 33.333 ms)",
        "train: 3000 bins (99.9 s) in 2 block(s)",
        "test: 600 bins (20.00 s) x 9 repeats",
        "block 'train': train, 3000 frames at 30 Hz (onsets), 2 runs",
        "block 'repeats': test, 5400 frames at 30 Hz (laid out from the repeat starts), 1 run, 9 repeats",
        f"wrote {tmp_path / 'rec.h5'}",
    ]
    assert "note: realigned repeat 5 by -1 frame: its stimulus matched repeat 1's only after that shift" in res.stderr
    rec = load_recording(tmp_path / "rec.h5")
    check_blocks_import(rec, exp)
    res = runner.invoke(main, ["data", "inspect", str(m), "--no-sta"])
    assert res.exit_code == 0, res.output
    assert "block train      train, 3000 frames at 30 Hz (onsets), 2 runs" in res.stdout
    assert "block repeats    test, 5400 frames at 30 Hz (laid out from the repeat starts), 1 run, 9 repeats" in res.stdout
    res = runner.invoke(main, ["data", "inspect", str(m), "--no-sta", "--json"])
    assert [b["name"] for b in json.loads(res.stdout)["blocks"]] == ["train", "repeats"]
    res = runner.invoke(main, ["compare-ln", str(tmp_path / "rec.h5"), "--out", str(tmp_path / "cmp"), "--history", "10", "--max-epochs", "1", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    import csv

    table = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").read_text().splitlines()))
    assert [int(r["cell"]) for r in table] == [1, 2, 3]
    # the simulated cells are LN cells: an LN fit on the imported training block predicts the imported repeats
    # well only if spikes, frames and stimulus stayed aligned in both blocks
    assert np.mean([float(r["ln_r_norm"]) for r in table]) > 0.8
