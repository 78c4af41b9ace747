"""One API (issue 15): the CLI's defaults, result objects with the same methods, ``out=None`` as a
new temporary folder, messages in the API's own terms."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import retinakit as rk
from conftest import make_recording
from retinakit.cli import main
from retinakit.errors import CheckpointError, ConfigError
from retinakit.io import save_recording

OPTS = {"history": 6, "max_epochs": 1, "batch_size": 400, "chunk_len": 50, "filters": [4, 4]}
FLAGS = ["--history", "6", "--max-epochs", "1", "--batch-size", "400", "--chunk-len", "50", "--filters", "4,4", "-q"]


@pytest.fixture(scope="module")
def rec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("data") / "tiny.h5"
    save_recording(make_recording(frame_shape=(6, 6), n_cells=2, train_bins=1500, test_bins=200, n_repeats=4), p)
    return p


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folders ``out=None`` makes go under this test's tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_api_and_cli_fit_the_same_default_model_with_the_same_config(rec_path: Path, own_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from retinakit.fitting.config import FitConfig

    monkeypatch.chdir(own_tmp)
    res = CliRunner().invoke(main, ["fit", str(rec_path), *FLAGS])
    assert res.exit_code == 0, res.output
    api = rk.fit(str(rec_path), progress=False, **OPTS)
    cli_cfg = json.loads((own_tmp / "runs" / "bn-cnn-tiny-1" / "config.json").read_text())["config"]
    api_cfg = json.loads((api.run_dir / "config.json").read_text())["config"]
    assert api_cfg == cli_cfg and api_cfg["model"] == FitConfig().model == rk.api.default_model() == "bn-cnn"
    assert "[default: bn-cnn]" in CliRunner().invoke(main, ["fit", "--help"]).output
    # out=None: a new temporary folder named like the CLI's run folders, never ./runs
    assert api.run_dir.parent == own_tmp and api.run_dir.name.startswith("retinakit-bn-cnn-tiny-")
    assert api.out == api.run_dir and "r/ceil" in api.table() and str(api) == api.table()


def test_results_share_their_methods(rec_path: Path, own_tmp: Path) -> None:
    rec = rk.load_recording(rec_path)
    fitted = rk.fit(rec, model="ln", progress=False, history=6)
    scores = rk.evaluate(fitted.run_dir, rec)
    cmp = rk.compare_ln(rec, cnn_run=None, ln_run=fitted.run_dir, progress=False, **OPTS)
    for result in (fitted, scores, cmp):
        rows = [line.split()[0] for line in result.table().splitlines()[1:3]]
        assert rows == ["1", "2"] and "mean over 1/2 reliable cells" in result.table()  # header, one row per cell, the means
        assert result.summary["n_cells"] == 2 and [c["cell"] for c in result.cells] == [1, 2]
        assert result.to_dict()["summary"] == result.summary and result["summary"] == result.summary
    assert np.allclose(scores["r"], [c["r"] for c in fitted.cells])  # as the dict evaluate returned before
    assert np.allclose([c["r"] for c in scores.cells], [c["r"] for c in fitted.cells])
    assert scores.table().splitlines()[1] == fitted.table().splitlines()[1]  # the same row for cell 1
    assert rk.evaluate(fitted).summary == scores.summary  # a FitResult; data=None: the recording it was fit on
    assert cmp.out is not None and (cmp.out / "compare.png").is_file() and cmp.ln_run == fitted.run_dir
    assert "LN r/c" in cmp.table()


def test_compare_ln_twice_and_messages_in_api_terms(rec_path: Path, own_tmp: Path) -> None:
    rec = rk.load_recording(rec_path)
    a = rk.compare_ln(rec, progress=False, **OPTS)
    b = rk.compare_ln(rec, progress=False, **OPTS)  # a second call makes a second folder, no error
    assert a.out != b.out and a.out.parent == b.out.parent == own_tmp
    again = rk.compare_ln(rec, out=a.out, progress=False, **OPTS)  # same options: the finished fits are reused
    assert again.summary == a.summary
    errors = []
    with pytest.raises(ConfigError, match=r"out='.*' already holds a cnn fit made with max_epochs=1, not 2; give another out= ") as e1:
        rk.compare_ln(rec, out=a.out, progress=False, **{**OPTS, "max_epochs": 2})
    with pytest.raises(ConfigError, match=r"compare_ln\(\) has no model= .* cnn_model=") as e2:
        rk.compare_ln(rec, model="cnn")
    (own_tmp / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"cnn_run '.*' is an empty folder, not a run") as e3:
        rk.compare_ln(rec, cnn_run=own_tmp / "empty")
    with pytest.raises(ConfigError, match=r"out='.*' already exists and is a finished run; pass resume=True") as e4:
        rk.fit(rec, out=a.cnn_run, progress=False, **OPTS)
    with pytest.raises(ConfigError, match="resume=True needs the run folder to continue as out=") as e5:
        rk.fit(rec, resume=True)
    errors = [e.value.one_line() for e in (e1, e2, e3, e4, e5)]
    assert not [m for m in errors if " --" in m], errors  # no CLI flags in the API's messages


def test_the_sample_by_name_in_the_api() -> None:
    from retinakit.sample import sample_path

    rec = rk.load_recording("sample")
    assert rec.provenance["source"] == str(sample_path()) and rec.n_cells == 8
    with pytest.raises(ConfigError, match="there is no bundled sample 'nope'"):
        rk.load_recording("sample:nope")
