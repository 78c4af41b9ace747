"""A sweep through submitit's local executor with the real fit, end to end from the command line.

Tiny data (6x6 white noise, 1500 training bins, history 8, 2 epochs) so each point takes seconds.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.sweeps import save_sweep_recording, sweep_file, sweep_text

from retinakit.cli import main

pytest.importorskip("submitit")

SWEEP = sweep_text("tiny-local", "local_workers = 2")


@pytest.fixture(scope="module")
def tiny_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_sweep_recording(tmp_path_factory.mktemp("batchdata") / "rec.h5")


def test_local_sweep_runs_skips_and_collects(tmp_path: Path, tiny_recording: Path) -> None:
    sweep = sweep_file(tmp_path, tiny_recording, SWEEP)
    runner = CliRunner()
    res = runner.invoke(main, ["batch", "run", str(sweep), "--executor", "local", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "4 to submit (local)" in res.output and "4 done, 0 running, 0 failed, 0 pending" in res.output
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if re.fullmatch(r"p\d{3}-[0-9a-f]{8}", p.name))
    assert [p.name[:4] for p in runs] == ["p000", "p001", "p002", "p003"]
    for run in runs:  # the same folders `retinakit fit` makes, finished
        assert {"config.json", "model.pt", "metrics.json", "cells.csv", "log.jsonl", "DONE"} <= {f.name for f in run.iterdir()}
    cfg = json.loads((runs[3] / "config.json").read_text())["config"]
    assert (cfg["lr"], cfg["seed"], cfg["history"], cfg["max_epochs"]) == (0.01, 1, 8, 2)

    # running again submits nothing: every point is finished
    res = runner.invoke(main, ["batch", "run", str(sweep), "--executor", "local", "--quiet"])
    assert res.exit_code == 0 and "4 done, 0 queued or running, 0 to submit" in res.output

    res = runner.invoke(main, ["batch", "status", str(sweep)])
    assert "4 done, 0 running, 0 failed, 0 pending" in res.output

    res = runner.invoke(main, ["batch", "collect", str(sweep)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "runs" / "collect" / "results.csv").open()))
    assert len(rows) == 4
    assert {(r["lr"], r["seed"]) for r in rows} == {("0.001", "0"), ("0.001", "1"), ("0.01", "0"), ("0.01", "1")}
    for r in rows:
        metrics = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
        assert float(r["mean_r"]) == pytest.approx(metrics["summary"]["mean_r"], rel=1e-5)
        assert r["fit_epochs"] == "2"
    assert (tmp_path / "runs" / "collect" / "r_norm.png").stat().st_size > 1000


def test_local_failure_shows_its_reason_and_is_resubmitted(tmp_path: Path, tiny_recording: Path) -> None:
    text = SWEEP.replace("[grid]\nlr = [0.001, 0.01]\nseed = [0, 1]", "[grid]\ncells = [[99]]")
    sweep = sweep_file(tmp_path, tiny_recording, text)
    runner = CliRunner()
    res = runner.invoke(main, ["batch", "run", str(sweep), "--executor", "local", "--quiet"])
    assert res.exit_code == 1, res.output  # a point failed: not bad input, but not success either
    assert "0 done, 0 running, 1 failed" in res.output
    res = runner.invoke(main, ["batch", "status", str(sweep)])
    assert "failed" in res.output and "cells [99] are not in the recording" in res.output
    res = runner.invoke(main, ["batch", "run", str(sweep), "--executor", "local", "--quiet", "--dry-run"])
    assert "1 to submit" in res.output and "submit  p000-" in res.output
