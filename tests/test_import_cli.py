"""`retinakit data import` from the command line, and the full path: MATLAB struct arrays -> import -> LN vs CNN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.lab_exports import check_import, simulate_export, write_mat_struct, write_toml

from retinakit.cli import main
from retinakit.io import load_recording

MAPPING = """
[recording]
sample_rate = 10000
[spikes]
file = "rec.mat"
variable = "units"
field = "spike_times"
id_field = "id"
unit = "samples"
[frames]
variable = "frame_onsets"
unit = "samples"
[stimulus]
variable = "stimulus"
kind = "fullfield"
[repeats]
variable = "repeat_starts"
unit = "samples"
length = {length}
"""


def _has_command(name: str) -> bool:
    import importlib.util

    return name in main.commands and importlib.util.find_spec("retinakit.pipeline.compare") is not None


def test_import_command_writes_the_recording(tmp_path: Path) -> None:
    exp = simulate_export(seed=41)
    write_mat_struct(tmp_path / "rec.mat", exp)
    m = write_toml(tmp_path / "m.toml", MAPPING.format(length=1.0))
    out = tmp_path / "rec.h5"
    runner = CliRunner()
    res = runner.invoke(main, ["data", "import", str(m), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        "cells: 4 (ids 3, 7, 11, 15)",
        "stimulus: full-field fullfield, 30 Hz frames (bins = frames, 33.333 ms)",
        "train: 240 bins (8.0 s) in 4 block(s)",
        "test: 30 bins (1.00 s) x 3 repeats",
        f"wrote {out}",
    ]
    assert "note: 12 spikes before the first frame and 8 after the last frame were left out" in res.stderr
    rec = load_recording(out)
    check_import(rec, exp)
    assert rec.provenance["train_blocks"] == [[0, 60], [60, 120], [120, 180], [180, 240]]
    assert rec.provenance["mapping_text"] == m.read_text()
    # the mapping itself is a readable recording too
    res = runner.invoke(main, ["data", "inspect", str(m), "--json", "--no-sta"])
    assert res.exit_code == 0, res.output
    assert [c["id"] for c in json.loads(res.stdout)["cells"]] == [3, 7, 11, 15]
    # no silent overwrite; --dry-run writes nothing
    res = runner.invoke(main, ["data", "import", str(m), "--out", str(out)])
    assert res.exit_code == 2 and res.stderr.strip() == f"error: '{out}' already exists; choose another --out, or add --force to overwrite it"
    res = runner.invoke(main, ["data", "import", str(m), "--out", str(tmp_path / "dry.h5"), "--dry-run"])
    assert res.exit_code == 0 and res.stdout.splitlines()[-1] == "dry run: nothing written"
    assert not (tmp_path / "dry.h5").exists()


def test_import_command_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    exp = simulate_export(seed=42)
    write_mat_struct(tmp_path / "rec.mat", exp)
    m = write_toml(tmp_path / "m.toml", MAPPING.format(length=1.0).replace('unit = "samples"\n[frames]', 'unit = "sec"\n[frames]'))
    res = CliRunner().invoke(main, ["data", "import", str(m), "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 2
    assert res.stderr == f"error: spikes.unit: expected one of seconds|ms|samples, got 'sec' in {m}\n"
    res = CliRunner().invoke(main, ["data", "import", str(tmp_path / "rec.mat"), "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 2
    assert res.stderr == "error: 'rec.mat' is a data file, not an import mapping; write a TOML mapping that points to it (examples in data/import_examples/)\n"
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.skipif(not _has_command("compare-ln"), reason="`retinakit compare-ln` (fit/compare area) is not in cli.py yet")
def test_fullfield_30hz_matlab_import_then_ln_vs_cnn(tmp_path: Path) -> None:
    """Full-field 30 Hz, spikes and frame onsets in samples at 10 kHz, a 20 s segment repeated 9 times,
    from MATLAB struct arrays: import, then fit LN and CNN and compare them per cell, all from the CLI."""
    exp = simulate_export(frame_rate=30.0, fs=10000.0, n_units=3, train_block_frames=300, repeat_frames=600, n_repeats=9, seed=43, mean_rate_hz=15.0)
    write_mat_struct(tmp_path / "rec.mat", exp)
    m = write_toml(tmp_path / "m.toml", MAPPING.format(length=20.0))
    runner = CliRunner()
    res = runner.invoke(main, ["data", "import", str(m), "--out", str(tmp_path / "rec.h5")])
    assert res.exit_code == 0, res.output
    assert "test: 600 bins (19.98 s) x 9 repeats" in res.stdout
    rec = load_recording(tmp_path / "rec.h5")
    check_import(rec, exp)
    res = runner.invoke(
        main,
        ["compare-ln", str(tmp_path / "rec.h5"), "--out", str(tmp_path / "cmp"), "--history", "10", "--max-epochs", "2", "--quiet", "--json"],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    text = json.dumps(result)
    for cid in (3, 7, 11):
        assert str(cid) in text
    assert (tmp_path / "cmp" / "compare.csv").is_file() and (tmp_path / "cmp" / "compare.json").is_file()
    rows = (tmp_path / "cmp" / "compare.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3  # header + one row per cell
    # the LN model of simulated LN cells is close to the ceiling: the import kept stimulus and spikes aligned
    import csv

    table = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").read_text().splitlines()))
    assert [int(r["cell"]) for r in table] == [3, 7, 11]
    assert np.mean([float(r["ln_r_norm"]) for r in table]) > 0.8
