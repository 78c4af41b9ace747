"""Point states, the checkpointable job and collection, with stand-ins for the scheduler and the fit.

No job is submitted here; the real fits through the executors are in test_batch_local.py and
test_batch_slurm.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from retinakit.batch import state as st
from retinakit.batch.collect import collect_sweep
from retinakit.batch.sweep import load_sweep
from retinakit.cli import main
from retinakit.errors import DataError, OutputError

pytest.importorskip("submitit")
from retinakit.batch.executor import FitJob, sweep_lock  # noqa: E402


def make_sweep(tmp_path: Path, n: int = 6) -> Any:
    p = tmp_path / "s.toml"
    p.write_text(f'[sweep]\nname = "t"\nout = "out"\n[fit]\nmax_epochs = 10\n[grid]\nseed = {list(range(n))}\n')
    return load_sweep(p)


def fake_finished(run: Path, seed: int, r_norm: list[float | None], reliable: list[bool] | None = None) -> None:
    """A run folder as run_fit leaves it (only the files batch reads)."""
    run.mkdir(parents=True, exist_ok=True)
    reliable = reliable or [True] * len(r_norm)
    cells = [{"cell": i + 1, "r": None if v is None else v * 0.8, "ceiling": 0.8, "r_norm": v, "reliable": ok} for i, (v, ok) in enumerate(zip(r_norm, reliable))]
    ok = [v for v, rel in zip(r_norm, reliable) if rel and v is not None]
    metrics = {"model": "cnn", "summary": {"n_cells": len(r_norm), "n_reliable": sum(reliable), "mean_r_norm": sum(ok) / len(ok), "mean_r": 0.5},
               "cells": cells, "fit": {"epochs": 10, "best_epoch": 7, "fit_seconds": 1.5}, "wall_seconds": 2.0}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps({"config": {"model": "cnn", "seed": seed, "lr": 0.002}, "data": {"source": "rec.h5"}}))
    (run / "DONE").write_text("now\n")


# ----------------------------------------------------------------------------- scheduler parsing
def test_expand_array_ids() -> None:
    assert st._expand_ids("12_[0-2,5%4]") == ["12_0", "12_1", "12_2", "12_5"]
    assert st._expand_ids("12_3") == ["12_3"]
    assert st._expand_ids("7") == ["7"]


def test_slurm_states_reads_squeue_then_sacct(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str]) -> str:
        calls.append(cmd)
        if cmd[0] == "squeue":
            return "5_0|RUNNING|None\n5_[2-3%2]|PENDING|JobArrayTaskLimit\n99|RUNNING|None\n"
        return "5_1|CANCELLED by 0|0:0|None\n4|FAILED|1:0|NonZeroExitCode\n"

    monkeypatch.setattr(st, "_run", fake_run)
    monkeypatch.setattr(st.shutil, "which", lambda name: f"/usr/bin/{name}")
    got = st.slurm_states(["5_0", "5_1", "5_2", "5_3", "4", "8"])
    assert got == {"5_0": ("RUNNING", "None"), "5_2": ("PENDING", "JobArrayTaskLimit"), "5_3": ("PENDING", "JobArrayTaskLimit"),
                   "5_1": ("CANCELLED", ""), "4": ("FAILED", "exit code 1:0")}
    assert calls[1][:2] == ["sacct", "-n"] and calls[1][-1] == "4,5_1,8"  # only what squeue did not know


# ----------------------------------------------------------------------------- states
def test_status_of_each_kind_of_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = make_sweep(tmp_path)
    p = sweep.points
    fake_finished(p[0].run_dir, 0, [0.9, 0.8])
    p[1].run_dir.mkdir(parents=True)
    (p[1].run_dir / "log.jsonl").write_text("".join(json.dumps({"epoch": e, "val_loss": 1.0}) + "\n" for e in (1, 2, 3)))
    st.record_submissions(sweep.out, {p[i].id: {"job_id": f"7_{i}", "executor": "slurm"} for i in (1, 2, 3, 4)})
    st.append_attempt(sweep.out, p[3].id, "start", job_id="7_3")
    st.append_attempt(sweep.out, p[3].id, "error", job_id="7_3", reason="DataError: recording 'x.h5' does not exist")
    st.append_attempt(sweep.out, p[1].id, "checkpoint", job_id="7_1", epoch=2)
    sched = {"7_1": ("RUNNING", "None"), "7_2": ("CANCELLED", ""), "7_3": ("FAILED", "exit code 1:0"), "7_4": ("PENDING", "Resources")}
    monkeypatch.setattr(st, "slurm_states", lambda ids: {k: v for k, v in sched.items() if k in ids})
    statuses = st.sweep_status(sweep)
    states = [s.state for s in statuses]
    assert states == ["done", "running", "failed", "failed", "pending", "pending"]
    assert "epoch 3 of at most 10" in statuses[1].detail and "requeued 1x" in statuses[1].detail
    assert statuses[2].detail.startswith("cancelled (job 7_2")
    assert "DataError: recording 'x.h5' does not exist" in statuses[3].detail
    assert "logs/7_3_0_log.err" in statuses[3].detail
    assert statuses[4].detail == "queued as job 7_4 (Resources)"
    assert statuses[5].detail == "not submitted" and statuses[5].job_id is None
    text = st.format_status(sweep, statuses)
    assert "1 done, 1 running, 2 failed, 2 pending" in text
    assert "seed=2: cancelled" in text


def test_local_job_that_died_is_failed(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 2)
    st.record_submissions(sweep.out, {sweep.points[0].id: {"job_id": "999999999", "executor": "local"}})
    s = st.sweep_status(sweep)[0]
    assert s.state == "failed" and "stopped before the run finished" in s.detail


def test_last_epoch_tolerates_a_torn_line(tmp_path: Path) -> None:
    (tmp_path / "log.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert st.last_epoch(tmp_path) == 2
    assert st.last_epoch(tmp_path / "nothing") is None


# ----------------------------------------------------------------------------- the job
class FakeFit:
    """Stands in for run_fit: writes what run_fit writes; can fail after ``fail_after`` epochs."""

    def __init__(self, epochs: int = 4, fail_after: int | None = None) -> None:
        self.epochs, self.fail_after, self.calls = epochs, fail_after, []

    def __call__(self, data: Any, run: Path, options: dict, resume: bool, progress: bool) -> dict:
        self.calls.append({"data": data, "resume": resume, "options": options})
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text("{}")
        start = st.last_epoch(run) or 0 if resume else 0
        for e in range(start + 1, self.epochs + 1):
            (run / "checkpoint.pt").write_bytes(b"x")
            with open(run / "log.jsonl", "a") as fh:
                fh.write(json.dumps({"epoch": e}) + "\n")
            if self.fail_after is not None and e >= self.fail_after:
                raise RuntimeError("node on fire")
        (run / "metrics.json").write_text(json.dumps({"summary": {"mean_r": 0.5}}))
        (run / "DONE").write_text("x")
        return {"summary": {"mean_r": 0.5}}


def test_fitjob_resumes_records_errors_and_skips_finished(tmp_path: Path) -> None:
    out, run = tmp_path / "out", tmp_path / "out" / "p000-abc"
    kwargs = dict(point_id="p000-abc", data=None, run_dir=str(run), options={"lr": 0.1}, out=str(out), threads=1)
    fit = FakeFit(epochs=4, fail_after=2)
    with pytest.raises(RuntimeError, match="node on fire"):
        FitJob(fit)(**kwargs)
    assert fit.calls[0]["resume"] is False and fit.calls[0]["options"] == {"lr": 0.1}
    events = st.read_attempts(out, "p000-abc")
    assert [e["event"] for e in events] == ["start", "error"]
    assert events[1]["reason"] == "RuntimeError: node on fire"

    fit.fail_after = None
    assert FitJob(fit)(**kwargs) == {"summary": {"mean_r": 0.5}}
    assert fit.calls[1]["resume"] is True
    events = st.read_attempts(out, "p000-abc")
    assert [e["event"] for e in events] == ["start", "error", "start", "done"]
    assert events[2]["resume"] is True and events[2]["from_epoch"] == 2 and events[3]["epoch"] == 4
    assert [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]

    assert FitJob(fit)(**kwargs) == {"summary": {"mean_r": 0.5}}  # DONE: returned without fitting again
    assert len(fit.calls) == 2


def test_checkpoint_requeues_the_same_point_with_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    kwargs = dict(point_id="p001-abc", data="/x/rec.h5", run_dir=str(out / "p001-abc"), options={}, out=str(out), threads=2, resume=False)
    job = FitJob()
    delayed = job.checkpoint(**kwargs)
    assert isinstance(delayed.function, FitJob)
    assert delayed.kwargs == {**kwargs, "resume": True}
    assert st.read_attempts(out, "p001-abc")[0]["event"] == "checkpoint"


def test_two_runs_cannot_hold_the_sweep(tmp_path: Path) -> None:
    with sweep_lock(tmp_path):
        with pytest.raises(OutputError, match="another `retinakit batch run`"):
            with sweep_lock(tmp_path):
                pass
    with sweep_lock(tmp_path):  # released
        pass


# ----------------------------------------------------------------------------- collect
def test_collect_only_finished_points(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 4)
    p = sweep.points
    with pytest.raises(DataError, match="no point of sweep 't' has finished"):
        collect_sweep(sweep)
    fake_finished(p[0].run_dir, 0, [0.9, 0.7])
    fake_finished(p[2].run_dir, 2, [0.6, 0.2, None], reliable=[True, False, True])
    fake_finished(p[1].run_dir, 1, [0.5])
    (p[1].run_dir / "DONE").unlink()  # complete-looking but not finished: must not be collected
    doc = collect_sweep(sweep)
    assert [r["point"] for r in doc["rows"]] == [p[0].id, p[2].id]
    assert doc["not_finished"] == [p[1].id, p[3].id]
    row = doc["rows"][1]
    assert row["seed"] == 2 and row["mean_r_norm"] == 0.6 and row["fit_epochs"] == 10 and row["fit_seconds"] == 1.5
    assert row["config.lr"] == 0.002 and row["run_dir"] == str(p[2].run_dir)
    csv_lines = Path(doc["csv"]).read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("point,label,seed,")
    assert json.loads(Path(doc["json"]).read_text())["n_finished"] == 2
    assert Path(doc["figure"]).stat().st_size > 1000
    from retinakit.batch.collect import per_cell_r_norm

    assert per_cell_r_norm(p[2]) == [0.6]  # the unreliable cell and the undefined one are left out


def test_cli_status_and_collect(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 2)
    runner = CliRunner()
    res = runner.invoke(main, ["batch", "collect", str(sweep.path)])
    assert res.exit_code == 2 and res.output.startswith("error: no point of sweep 't' has finished")
    fake_finished(sweep.points[0].run_dir, 0, [0.9, 0.8])
    res = runner.invoke(main, ["batch", "status", str(sweep.path)])
    assert res.exit_code == 0, res.output
    assert "1 done, 0 running, 0 failed, 1 pending" in res.output
    res = runner.invoke(main, ["batch", "status", str(sweep.path), "--json"])
    doc = json.loads(res.output)
    assert doc["counts"]["done"] == 1 and doc["points"][1]["detail"] == "not submitted"
    res = runner.invoke(main, ["batch", "collect", str(sweep.path)])
    assert res.exit_code == 0, res.output
    assert "1 of 2 points collected; not finished: 1" in res.output
    res = runner.invoke(main, ["batch", "run", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2 and "error: sweep file" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nlearnig_rate = [1]\n")
    res = runner.invoke(main, ["batch", "run", str(bad), "--dry-run"])
    assert res.exit_code == 2 and "unknown option 'learnig_rate' in [grid]" in res.output
