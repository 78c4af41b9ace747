"""`retinakit data inspect`: planted receptive fields come back; bad input gives one line and exit 2."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_recording
from retinakit.cli import main
from retinakit.io import save_recording


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_lists_commands():
    res = invoke("--help")
    assert res.exit_code == 0
    assert "data" in res.output
    assert "inspect" in invoke("data", "--help").output


def test_inspect_recovers_planted_receptive_fields(tmp_path):
    centers = [(2, 7), (8, 1), (5, 5)]
    rec = make_recording(frame_shape=(10, 10), n_cells=3, train_bins=15000, rf_centers=centers, lag=3)
    path = save_recording(rec, tmp_path / "whitenoise.h5")
    out = tmp_path / "figs"
    res = invoke("data", "inspect", str(path), "--json", "--out", str(out), "--history", "10")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["n_cells"] == 3 and summary["n_repeats"] == 6
    assert summary["frame_rate_hz"] == pytest.approx(100.0)
    assert summary["stimulus_kind"] == "whitenoise"
    for cell, (r, c) in zip(summary["cells"], centers):
        peak = cell["sta_peak"]
        assert (peak["row"], peak["col"]) == (r, c)
        assert peak["lag_frames"] == 3
        assert peak["polarity"] == ("ON" if cell["id"] % 2 == 1 else "OFF")  # cell k=0,2 ON
        assert 0 < cell["ceiling"] <= 1
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["sta_cell01.png", "sta_cell02.png", "sta_cell03.png"]
    # the figure is a real image
    assert (out / "sta_cell01.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_text_summary(tmp_path):
    rec = make_recording(frame_shape=(), n_cells=2, train_bins=2000)
    path = save_recording(rec, tmp_path / "ff.h5")
    res = invoke("data", "inspect", str(path), "--out", str(tmp_path / "o"))
    assert res.exit_code == 0
    assert "full-field" in res.output and "100 Hz" in res.output and "x 6 repeats" in res.output


# ------------------------------------------------------------------ bad input
def _good(tmp_path):
    rec = make_recording(frame_shape=(4, 4), n_cells=2, train_bins=200, test_bins=50)
    return save_recording(rec, tmp_path / "good.h5")


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def _replace(f, name, data):
    del f[name]
    f[name] = data


def _bad_missing_file(tmp_path):
    return tmp_path / "nope.h5", "does not exist"


def _bad_not_hdf5(tmp_path):
    p = tmp_path / "notes.h5"
    p.write_text("this is a text file\n")
    return p, "is not an HDF5 file"


def _bad_truncated(tmp_path):
    p = _good(tmp_path)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    return p, "truncated or corrupt"


def _bad_folder(tmp_path):
    return tmp_path, "is a folder"


def _bad_missing_group(tmp_path):
    return _edit(_good(tmp_path), lambda f: f.__delitem__("train")), "group '/train' is missing"


def _bad_missing_stimulus(tmp_path):
    return _edit(_good(tmp_path), lambda f: f.__delitem__("train/stimulus")), "'/train/stimulus' is missing"


def _bad_shape(tmp_path):
    return _edit(_good(tmp_path), lambda f: _replace(f, "train/stimulus", np.zeros((150, 4, 4), np.int8))), "'train/stimulus' must be (T,) or (T, H, W) with T=200"


def _bad_nan(tmp_path):
    def fn(f):
        s = f["train/stimulus"][()].astype(np.float32)
        s[10, 1, 1] = np.nan
        _replace(f, "train/stimulus", s)

    return _edit(_good(tmp_path), fn), "'train/stimulus' has 1 NaN or infinite values"


def _bad_decreasing_time(tmp_path):
    def fn(f):
        t = f["train/time"][()]
        t[50] = t[49] - 1
        _replace(f, "train/time", t)

    return _edit(_good(tmp_path), fn), "'train/time' is not strictly increasing"


def _bad_zero_cells(tmp_path):
    def fn(f):
        for s in ("train", "test"):
            _replace(f, f"{s}/response/binned", np.zeros((0, f[f"{s}/time"].shape[0])))
            del f[f"{s}/response/true_rate"]
        del f["test/repeats"]
        del f["cell_ids"]

    return _edit(_good(tmp_path), fn), "'train' has zero cells"


def _bad_repeat_shapes(tmp_path):
    return _edit(_good(tmp_path), lambda f: _replace(f, "test/repeats/cell02", np.zeros((3, 50)))), "repeats have different shapes across cells"


def _bad_negative_counts(tmp_path):
    def fn(f):
        b = f["train/response/binned"][()]
        b[0, 3] = -1
        _replace(f, "train/response/binned", b)

    return _edit(_good(tmp_path), fn), "spike counts has negative values"


BAD = [_bad_missing_file, _bad_not_hdf5, _bad_truncated, _bad_folder, _bad_missing_group, _bad_missing_stimulus,
       _bad_shape, _bad_nan, _bad_decreasing_time, _bad_zero_cells, _bad_repeat_shapes, _bad_negative_counts]


@pytest.mark.parametrize("make_bad", BAD, ids=[f.__name__[5:] for f in BAD])
def test_bad_input_one_line_exit_2(tmp_path, make_bad):
    path, expected = make_bad(tmp_path)
    res = CliRunner().invoke(main, ["data", "inspect", str(path), "--out", str(tmp_path / "figs")])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert "Traceback" not in res.output
    assert not (tmp_path / "figs").exists()  # nothing half-written


def test_bad_cells_option(tmp_path):
    path = _good(tmp_path)
    res = CliRunner().invoke(main, ["data", "inspect", str(path), "--cells", "1,99"])
    assert res.exit_code == 2
    assert "cells [99] are not in the recording" in res.stderr and "available cells: [1, 2]" in res.stderr
    res = CliRunner().invoke(main, ["data", "inspect", str(path), "--cells", "one"])
    assert res.exit_code == 2 and "--cells must be comma-separated integers" in res.stderr


def test_console_script_runs_as_a_process(tmp_path):
    exe = shutil.which("retinakit")
    if exe is None:
        pytest.skip("console script not installed (pip install -e .)")
    import subprocess

    out = subprocess.run([exe, "data", "inspect", str(tmp_path / "missing.h5")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: file") and "Traceback" not in out.stderr


def test_read_only_output_folder_gives_clear_error(tmp_path):
    from helpers.readonly import readonly_folder

    rec = make_recording(frame_shape=(4, 4), n_cells=2, train_bins=500, test_bins=50)
    path = save_recording(rec, tmp_path / "whitenoise.h5")
    with readonly_folder(tmp_path) as ro:
        res = CliRunner().invoke(main, ["data", "inspect", str(path), "--out", str(ro / "figs")])
        assert res.exit_code == 2, res.output
        line = res.stderr.strip()
        assert line.startswith("error: cannot write") and "read-only" in line and "--out" in line
        assert list(ro.iterdir()) == []


@pytest.mark.parametrize("args", [["fit", "--history", "abc"], ["nosuch"], ["data", "inspect"]])
def test_usage_errors_are_one_line_from_the_console_script(args):
    import subprocess
    import sys

    code = "import sys; from retinakit.cli import run; sys.argv = ['retinakit'] + sys.argv[1:]; run()"
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help'" in lines[0], out.stderr
