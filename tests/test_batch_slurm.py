"""Sweeps on a real SLURM controller: job arrays, cancelled jobs, pre-emption with requeue.

These run in the default ``pytest`` whenever a cluster answers (CI starts a one-node SLURM with
shared/slurm/start-slurm.sh) and skip otherwise. Jobs run the real fit on tiny data, 1 CPU each.
"""

from __future__ import annotations

import csv
import functools
import json
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner
from helpers.sweeps import save_sweep_recording, sweep_file, sweep_text

from retinakit.batch import load_sweep
from retinakit.batch.state import last_epoch, read_attempts, read_jobs, slurm_states, sweep_status
from retinakit.cli import main

pytest.importorskip("submitit")
from retinakit.batch.executor import wait_for  # noqa: E402
from retinakit.batch.state import slurm_available  # noqa: E402

pytestmark = pytest.mark.slurm


@functools.lru_cache(maxsize=1)
def _cluster() -> bool:
    return slurm_available()


@pytest.fixture(autouse=True)
def needs_cluster() -> None:
    """Skip (asked only when a test of this file actually runs) unless a SLURM controller answers."""
    if not _cluster():
        pytest.skip("no SLURM cluster answers (sinfo missing or failing); these tests need a running "
                    "SLURM controller (.ci/run starts a single-node one when it has it)")

SWEEP = sweep_text("tiny-slurm", "signal_delay_s = 30")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("slurmdata")
    return {"small": save_sweep_recording(folder / "rec.h5"), "long": save_sweep_recording(folder / "long.h5", train_bins=6000)}


def until(cond: Callable[[], bool], what: str, timeout_s: float = 240.0, poll_s: float = 0.3) -> None:
    """Wait for ``cond`` (a deadline only so that a broken cluster cannot hang the suite)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def test_array_cancel_rerun_collect(tmp_path: Path, recordings: dict[str, Path]) -> None:
    # held at submission so that the test, not the scheduler's timing, decides which task is cancelled
    sweep_path = sweep_file(tmp_path, recordings["small"], SWEEP + "sbatch = { hold = true }\n")
    runner = CliRunner()
    res = runner.invoke(main, ["batch", "run", str(sweep_path), "--executor", "slurm", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "4 to submit (slurm)" in res.output and "submitted job array" in res.output
    sweep = load_sweep(sweep_path)
    jobs = read_jobs(sweep.out)
    ids = [jobs[p.id][0]["job_id"] for p in sweep.points]
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{i}" for i in range(4)]  # one job array, one task per point
    assert set(slurm_states(ids).values()) <= {("PENDING", "JobHeldUser")}

    sh("scancel", ids[3])
    sh("scontrol", "release", array)
    counts = wait_for(sweep, [p.id for p in sweep.points], progress=False, poll_s=1.0, timeout_s=300)
    assert counts == {"done": 3, "running": 0, "failed": 1, "pending": 0}, counts
    res = runner.invoke(main, ["batch", "status", str(sweep_path)])
    line = next(x for x in res.output.splitlines() if x.startswith(sweep.points[3].id))
    assert " failed " in line and "cancelled" in line and ids[3] in line

    # running the sweep again resubmits only the cancelled point
    res = runner.invoke(main, ["batch", "run", str(sweep_path), "--executor", "slurm", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "3 done, 0 queued or running, 1 to submit" in res.output
    jobs = read_jobs(sweep.out)
    assert [len(jobs[p.id]) for p in sweep.points] == [1, 1, 1, 2]
    new_id = jobs[sweep.points[3].id][-1]["job_id"]
    sh("scontrol", "release", new_id.split("_")[0])
    counts = wait_for(sweep, [sweep.points[3].id], progress=False, poll_s=1.0, timeout_s=240)
    assert counts["done"] == 4, counts

    res = runner.invoke(main, ["batch", "collect", str(sweep_path)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((sweep.out / "collect" / "results.csv").open()))
    assert len(rows) == 4 and sorted(r["point"] for r in rows) == sorted(p.id for p in sweep.points)
    assert all(r["fit_epochs"] == "2" for r in rows)


def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path: Path, recordings: dict[str, Path]) -> None:
    text = SWEEP.replace("max_epochs = 2", "max_epochs = 40\nmax_steps = 10000000\npatience = 40").replace(
        "[grid]\nlr = [0.001, 0.01]\nseed = [0, 1]", "[grid]\nseed = [3]")
    sweep_path = sweep_file(tmp_path, recordings["long"], text)
    res = CliRunner().invoke(main, ["batch", "run", str(sweep_path), "--executor", "slurm", "--quiet"])
    assert res.exit_code == 0, res.output
    sweep = load_sweep(sweep_path)
    point = sweep.points[0]
    job_id = read_jobs(sweep.out)[point.id][0]["job_id"]

    until(lambda: (last_epoch(point.run_dir) or 0) >= 2, "epoch 2 of the fit")
    # what SLURM does on pre-emption: SIGTERM, then the USR2 warning submitit acts on
    sh("scancel", "--signal=TERM", job_id)
    sh("scancel", "--signal=USR2", job_id)
    until(lambda: any(e["event"] == "checkpoint" for e in read_attempts(sweep.out, point.id)), "the job's checkpoint", 60)
    def requeued() -> bool:  # pending again, or (on a fast scheduler) already started a second time
        starts = sum(e["event"] == "start" for e in read_attempts(sweep.out, point.id))
        return slurm_states([job_id]).get(job_id, ("",))[0] == "PENDING" or starts >= 2

    until(requeued, "the requeued job", 240)
    assert sweep_status(sweep)[0].state in ("pending", "running", "done")
    # skip SLURM's delay before a requeued job may start (harmless if it started already)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
    until(lambda: (point.run_dir / "DONE").is_file(), "the resumed fit to finish", 300)

    events = read_attempts(sweep.out, point.id)
    assert [e["event"] for e in events] == ["start", "checkpoint", "start", "done"], events
    first, ckpt, second, done = events
    assert first["resume"] is False and second["resume"] is True and second["requested_resume"] is True
    assert first["job_id"] == second["job_id"] == job_id  # the same job, requeued
    resumed_at = second["from_epoch"]
    assert 2 <= resumed_at < 40 and ckpt["epoch"] >= 2
    log = [json.loads(x) for x in (point.run_dir / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, 41))  # continued, not restarted: no epoch twice
    config = json.loads((point.run_dir / "config.json").read_text())
    assert len(config["resumed"]) == 1
    until(lambda: sweep_status(sweep)[0].state == "done", "status done", 30)


def test_cancelled_running_job_fails_and_its_rerun_resumes(tmp_path: Path, recordings: dict[str, Path]) -> None:
    # a fit far too long to end by itself during the test (nor during SLURM's kill grace time)
    text = SWEEP.replace("max_epochs = 2", "max_epochs = 5000\nmax_steps = 10000000\npatience = 5000").replace(
        "[grid]\nlr = [0.001, 0.01]\nseed = [0, 1]", "[grid]\nseed = [4]")
    sweep_path = sweep_file(tmp_path, recordings["long"], text)
    runner = CliRunner()
    assert runner.invoke(main, ["batch", "run", str(sweep_path), "--executor", "slurm", "--quiet"]).exit_code == 0
    sweep = load_sweep(sweep_path)
    point = sweep.points[0]
    first = read_jobs(sweep.out)[point.id][0]["job_id"]
    until(lambda: (last_epoch(point.run_dir) or 0) >= 2, "epoch 2 of the fit")
    assert sweep_status(sweep)[0].state == "running"
    sh("scancel", first)
    until(lambda: sweep_status(sweep)[0].state == "failed", "the cancelled job to end", 120)
    assert sweep_status(sweep)[0].detail.startswith(f"cancelled (job {first}")

    res = runner.invoke(main, ["batch", "run", str(sweep_path), "--executor", "slurm", "--quiet"])
    assert "0 done, 0 queued or running, 1 to submit" in res.output
    second = read_jobs(sweep.out)[point.id][-1]["job_id"]
    assert second != first
    until(lambda: sum(e["event"] == "start" for e in read_attempts(sweep.out, point.id)) == 2, "the resubmitted job to start")
    start = [e for e in read_attempts(sweep.out, point.id) if e["event"] == "start"][-1]
    assert start["job_id"] == second and start["resume"] is True and start["from_epoch"] >= 2
    sh("scancel", second)  # clean up: the point stays unfinished
    until(lambda: sweep_status(sweep)[0].state == "failed", "the second cancelled job to end", 120)


@pytest.mark.slow
def test_job_at_its_time_limit_is_requeued_and_finishes(tmp_path: Path, recordings: dict[str, Path]) -> None:
    # a 1-minute limit with the warning 30 s before it: SLURM itself sends USR2 (sbatch --signal)
    text = SWEEP.replace("max_epochs = 2", "max_epochs = 150\nmax_steps = 10000000\npatience = 150").replace(
        "[grid]\nlr = [0.001, 0.01]\nseed = [0, 1]", "[grid]\nseed = [5]").replace("time_min = 10", "time_min = 1")
    sweep_path = sweep_file(tmp_path, recordings["long"], text)
    assert CliRunner().invoke(main, ["batch", "run", str(sweep_path), "--executor", "slurm", "--quiet"]).exit_code == 0
    sweep = load_sweep(sweep_path)
    point = sweep.points[0]
    job_id = read_jobs(sweep.out)[point.id][0]["job_id"]

    def nudge() -> bool:  # let a requeued job start at once instead of after SLURM's requeue delay
        if slurm_states([job_id]).get(job_id, ("",))[0] == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
        return (point.run_dir / "DONE").is_file() or sweep_status(sweep)[0].state == "failed"

    until(nudge, "the fit to finish across requeues", 600, poll_s=2.0)
    events = read_attempts(sweep.out, point.id)
    assert sweep_status(sweep)[0].state == "done", events
    assert sum(e["event"] == "checkpoint" for e in events) >= 1
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) >= 2 and all(s["resume"] for s in starts[1:])
    log = [json.loads(x)["epoch"] for x in (point.run_dir / "log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 151))
