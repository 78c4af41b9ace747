"""`retinakit fit` and `retinakit compare-ln` end to end on tiny data."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import make_recording
from retinakit.cli import main
from retinakit.io import save_recording

FAST = ["--history", "6", "--max-epochs", "1", "--batch-size", "400", "--chunk-len", "50", "--filters", "4,4", "-q"]


@pytest.fixture(scope="module")
def rec_path(tmp_path_factory):  # noqa: ANN001, ANN201
    p = tmp_path_factory.mktemp("data") / "tiny_wn.h5"
    save_recording(make_recording(frame_shape=(6, 6), n_cells=2, train_bins=1500, test_bins=200, n_repeats=4), p)
    return p


def test_fit_then_compare_ln_reusing_the_cnn_run(rec_path, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["fit", str(rec_path), *FAST])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "bn-cnn-tiny_wn-1"
    assert (run / "DONE").is_file() and (run / "figures" / "predictions.png").is_file()
    assert "r/ceil" in res.output and "run: runs/bn-cnn-tiny_wn-1" in res.output
    assert "mean over" in res.output and "/2 reliable cells" in res.output
    # a second fit never overwrites the first
    res2 = runner.invoke(main, ["fit", str(rec_path), "--model", "ln", "--history", "6", "--json", "-q"])
    assert res2.exit_code == 0, res2.output
    assert json.loads(res2.stdout)["model"] == "ln" and (tmp_path / "runs" / "ln-tiny_wn-1" / "DONE").is_file()
    # resuming a finished run prints its table again
    res3 = runner.invoke(main, ["fit", "--resume", str(run), "-q"])
    assert res3.exit_code == 0 and "run: runs/bn-cnn-tiny_wn-1" in res3.output

    out = tmp_path / "cmp"
    res4 = runner.invoke(main, ["compare-ln", str(rec_path), "--cnn-run", str(run), "--out", str(out), "-q"])
    assert res4.exit_code == 0, res4.output
    assert "LN r/c" in res4.output and "CNN r/c" in res4.output
    for name in ("compare.csv", "compare.json", "compare.png", "ln/DONE"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "compare.json").read_text())
    assert doc["cnn_run"] == str(run) and len(doc["cells"]) == 2
    assert doc["summary"]["bins_scored"] == 200 - 6
    assert {"ln_r", "cnn_r", "ceiling", "ln_r_norm", "cnn_r_norm"} <= set(doc["cells"][0])


def test_compare_ln_fits_both(rec_path, tmp_path) -> None:  # noqa: ANN001
    res = CliRunner().invoke(main, ["compare-ln", str(rec_path), "--out", str(tmp_path / "c"), *FAST])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c" / "cnn" / "DONE").is_file() and (tmp_path / "c" / "ln" / "DONE").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        (["fit", "{rec}", "--lr", "-1"], "option 'lr'"),
        (["fit", "{rec}", "--filters", "a,b"], "--filters"),
        (["fit", "{tmp}/missing.h5"], "does not exist"),
        (["fit", "--resume", "{tmp}"], "run config"),
        (["compare-ln", "{rec}", "--cnn-run", "{tmp}"], "--cnn-run '{tmp}' is an empty folder, not a run"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(rec_path, tmp_path, args, message) -> None:  # noqa: ANN001
    args = [a.format(rec=rec_path, tmp=tmp_path) for a in args]
    message = message.format(tmp=tmp_path)
    res = CliRunner().invoke(main, [*args, "-q"])
    assert res.exit_code == 2, res.output
    assert message in res.output and res.output.startswith("error: ") and res.output.count("\n") == 1
