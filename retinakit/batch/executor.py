"""Submit the points of a sweep through submitit: a SLURM job array, or a local pool.

Each point runs :class:`FitJob`, a ``submitit.helpers.Checkpointable``: when SLURM warns a job
that it is about to be pre-empted or to hit its time limit (USR2, ``resources.signal_delay_s``
before the end), submitit calls :meth:`FitJob.checkpoint`, which returns a submission of the same
point with ``resume=True``; submitit requeues the job and the fit continues from the run
folder's last ``checkpoint.pt`` (written every epoch by the fit). A job restarted any other way
(requeued by the scheduler after a node failure, resubmitted by ``batch run`` after a
cancellation) also resumes when the run folder has a checkpoint.

submitit is imported here, so import this module only where jobs are submitted.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ConfigError, OutputError, RetinakitError
from .state import (DONE, FAILED, LOGS_DIR, PENDING, RUNNING, append_attempt, count_states, last_epoch,
                    record_submissions, slurm_available, sweep_status, write_points)
from .sweep import Point, Sweep

try:
    import submitit
    import submitit.helpers
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigError("batch runs need submitit, which is not installed", fix="pip install 'retinakit[slurm]'") from exc

EXECUTORS = ("auto", "slurm", "local")
FitFunction = Callable[..., dict]


def _default_fit(data: Path | None, run_dir: Path, options: dict[str, Any], resume: bool, progress: bool) -> dict:
    from ..pipeline import run_fit

    return run_fit(data, run_dir, options, resume=resume, progress=progress)


class FitJob(submitit.helpers.Checkpointable):
    """One point of a sweep as a checkpointable submitit job.

    Parameters
    ----------
    fit_fn : the function that fits one run folder, called as
        ``fit_fn(data, run_dir, options, resume=..., progress=...)`` (default
        :func:`retinakit.pipeline.run_fit`; tests inject a stand-in).
    """

    def __init__(self, fit_fn: FitFunction | None = None) -> None:
        self.fit_fn = fit_fn

    def __call__(self, point_id: str, data: str | None, run_dir: str, options: dict[str, Any], out: str,
                 threads: int = 1, resume: bool = False) -> dict:
        """Fit the point's run folder (continuing from its checkpoint when it has one)."""
        out_dir, run = Path(out), Path(run_dir)
        with contextlib.suppress(OSError):
            os.chdir(out_dir)
        _limit_threads(threads)
        job_id = _job_id()
        if (run / "DONE").is_file():
            append_attempt(out_dir, point_id, "done", job_id=job_id, note="already finished")
            return _read_metrics(run)
        # a run folder with config.json was started before: continue it (from checkpoint.pt when
        # there is one; run_fit starts the epochs afresh when the job died before the first one)
        started = (run / "config.json").is_file()
        from_epoch = last_epoch(run) if (run / "checkpoint.pt").is_file() else None
        append_attempt(out_dir, point_id, "start", job_id=job_id, resume=started, requested_resume=resume,
                       from_epoch=from_epoch)
        fit = self.fit_fn or _default_fit
        try:
            metrics = fit(None if data is None else Path(data), run, options, resume=started, progress=False)
        except Exception as exc:
            reason = exc.one_line() if isinstance(exc, RetinakitError) else f"{type(exc).__name__}: {exc}"
            append_attempt(out_dir, point_id, "error", job_id=job_id, reason=" ".join(reason.split())[:500])
            raise
        append_attempt(out_dir, point_id, "done", job_id=job_id, epoch=last_epoch(run))
        return metrics

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on pre-emption or time-out: requeue this point with ``resume=True``."""
        point_id, out, run_dir = kwargs.get("point_id"), kwargs.get("out"), kwargs.get("run_dir")
        if point_id and out:
            with contextlib.suppress(OSError, RetinakitError):
                append_attempt(Path(out), str(point_id), "checkpoint", job_id=_job_id(),
                               epoch=last_epoch(Path(run_dir)) if run_dir else None)
        return submitit.helpers.DelayedSubmission(FitJob(self.fit_fn), *args, **{**kwargs, "resume": True})


def _job_id() -> str | None:
    if any(k in os.environ for k in ("SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID")):
        with contextlib.suppress(Exception):
            return str(submitit.JobEnvironment().job_id)
    return None


def _limit_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    with contextlib.suppress(ImportError, RuntimeError):
        import torch

        torch.set_num_threads(max(1, int(threads)))


def _read_metrics(run: Path) -> dict:
    import json

    try:
        return json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------- executors
def resolve_executor(kind: str) -> str:
    """``auto`` -> ``slurm`` when a SLURM controller answers, else ``local``."""
    if kind not in EXECUTORS:
        raise ConfigError(f"unknown executor '{kind}'", fix=f"use one of {', '.join(EXECUTORS)}")
    if kind == "auto":
        return "slurm" if slurm_available() else "local"
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("no SLURM on this machine (sbatch not found)", fix="run on the cluster's login node, or use --executor local")
    return kind


def _mem(mem_gb: float) -> str:
    return f"{int(mem_gb)}G" if float(mem_gb).is_integer() else f"{int(round(mem_gb * 1024))}M"


def make_executor(sweep: Sweep, kind: str) -> Any:
    """A configured submitit executor (``slurm`` or ``local``) writing its files to ``<out>/logs``."""
    res = sweep.resources
    folder = sweep.out / LOGS_DIR
    python = shlex.quote(sys.executable)
    if kind == "slurm":
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=res.max_requeue, python=python)
        params: dict[str, Any] = dict(job_name=sweep.name, time=res.time_min, cpus_per_task=res.cpus, mem=_mem(res.mem_gb),
                                      signal_delay_s=res.signal_delay_s, array_parallelism=res.array_parallelism,
                                      additional_parameters={"chdir": str(sweep.out), **res.sbatch})
        if res.gpus:
            params["gpus_per_node"] = res.gpus
        for key in ("partition", "account", "qos"):
            if getattr(res, key):
                params[key] = getattr(res, key)
        if res.setup:
            params["setup"] = list(res.setup)
        ex.update_parameters(**params)
        return ex
    ex = submitit.LocalExecutor(folder=folder, max_num_timeout=res.max_requeue, python=python)
    local: dict[str, Any] = dict(timeout_min=res.time_min, signal_delay_s=res.signal_delay_s, gpus_per_node=res.gpus)
    if res.setup:
        local["setup"] = list(res.setup)
    ex.update_parameters(**local)
    return ex


def _job_kwargs(sweep: Sweep, p: Point) -> dict[str, Any]:
    return dict(point_id=p.id, data=None if p.data is None else str(p.data), run_dir=str(p.run_dir),
                options=p.options, out=str(sweep.out), threads=sweep.resources.cpus, resume=False)


def _submission(job: Any, kind: str) -> dict[str, Any]:
    return {"job_id": str(job.job_id), "executor": kind, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}


def submit_slurm(sweep: Sweep, points: list[Point], fit_fn: FitFunction | None = None) -> list[str]:
    """Submit ``points`` as one SLURM job array; return the job ids (``<array>_<task>``)."""
    from submitit.core.utils import FailedSubmissionError, UncompletedJobError

    ex = make_executor(sweep, "slurm")
    try:
        with ex.batch():
            jobs = [ex.submit(FitJob(fit_fn), **_job_kwargs(sweep, p)) for p in points]
    except (UncompletedJobError, FailedSubmissionError) as exc:
        msg = " ".join(str(exc).split())[:400]
        raise ConfigError(f"sbatch refused the job array: {msg}", f"[resources] of {sweep.path}",
                          fix="check partition, account, qos, time_min, mem_gb and the sbatch flags against `sinfo`") from None
    record_submissions(sweep.out, {p.id: _submission(j, "slurm") for p, j in zip(points, jobs)})
    return [str(j.job_id) for j in jobs]


def run_local_pool(sweep: Sweep, points: list[Point], fit_fn: FitFunction | None = None, progress: bool = True,
                   poll_s: float = 0.5) -> list[str]:
    """Run ``points`` with submitit's local executor, at most ``resources.local_workers`` at a time.

    Blocks until every point has ended; Ctrl-C stops the running jobs (they resume from their
    checkpoints when the sweep is run again).
    """
    from tqdm import tqdm

    res = sweep.resources
    workers = res.local_workers or max(1, (os.cpu_count() or 1) // max(1, res.cpus))
    ex = make_executor(sweep, "local")
    queue, running, ids = list(points), {}, []
    bar = tqdm(total=len(points), desc=f"{sweep.name} (local, {workers} at a time)", unit="point",
               disable=not progress, file=sys.stderr)
    try:
        while queue or running:
            while queue and len(running) < workers:
                p = queue.pop(0)
                job = ex.submit(FitJob(fit_fn), **_job_kwargs(sweep, p))
                record_submissions(sweep.out, {p.id: _submission(job, "local")})
                running[p.id] = job
                ids.append(str(job.job_id))
            for pid, job in list(running.items()):
                if job.done():
                    running.pop(pid)
                    bar.update(1)
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for job in running.values():
            with contextlib.suppress(Exception):
                job.cancel()
        raise
    finally:
        bar.close()
    return ids


# ----------------------------------------------------------------------------- the sweep
@contextlib.contextmanager
def sweep_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the sweep folder so two ``batch run`` never submit the same points."""
    import fcntl

    try:
        out.mkdir(parents=True, exist_ok=True)
        fh = open(out / ".lock", "a+")
    except OSError as exc:
        raise OutputError(f"cannot create the sweep folder '{out}': {exc.strerror}", fix="set [sweep] out to a writable folder") from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError(f"another `retinakit batch run` is working on '{out}'", fix="wait for it to finish, then run again") from None
        yield
    finally:
        fh.close()


def run_sweep(sweep: Sweep, executor: str = "auto", wait: bool | None = None, dry_run: bool = False,
              progress: bool = True, fit_fn: FitFunction | None = None, poll_s: float = 3.0,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Submit every point that is neither finished nor queued/running; optionally wait.

    Returns a summary: the executor used, the submitted point ids and job ids, the points
    skipped by state, and (when waited) the final count of states.
    """
    kind = resolve_executor(executor)
    with sweep_lock(sweep.out):
        write_points(sweep)
        statuses = sweep_status(sweep)
        todo = [st.point for st in statuses if st.state == FAILED or (st.state == PENDING and st.job_id is None)]
        skipped = {s: [st.point.id for st in statuses if st.state == s and st.point not in todo] for s in (DONE, RUNNING, PENDING)}
        summary: dict[str, Any] = {"executor": kind, "submitted": [p.id for p in todo], "job_ids": [], "skipped": skipped,
                                   "out": str(sweep.out)}
        echo(f"sweep '{sweep.name}': {len(sweep.points)} points, {len(skipped[DONE])} done, "
             f"{len(skipped[RUNNING]) + len(skipped[PENDING])} queued or running, {len(todo)} to submit ({kind})")
        if dry_run or not todo:
            return summary
        if kind == "slurm":
            ids = submit_slurm(sweep, todo, fit_fn)
            what = f"job array {ids[0].split('_')[0]} ({len(ids)} tasks)" if len(ids) > 1 else f"job {ids[0]}"
            echo(f"submitted {what}; logs in {sweep.out / LOGS_DIR}")
            summary["job_ids"] = ids
            if wait:
                summary["final"] = wait_for(sweep, [p.id for p in todo], progress=progress, poll_s=poll_s)
        else:
            summary["job_ids"] = run_local_pool(sweep, todo, fit_fn, progress=progress)
            summary["final"] = count_states(sweep_status(sweep))
    return summary


def wait_for(sweep: Sweep, point_ids: list[str], progress: bool = True, poll_s: float = 3.0,
             timeout_s: float | None = None) -> dict[str, int]:
    """Poll until none of ``point_ids`` is queued or running (or ``timeout_s`` passed); return the counts of states."""
    from tqdm import tqdm

    wanted = set(point_ids)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    bar = tqdm(total=len(wanted), desc=f"{sweep.name} (slurm)", unit="point", disable=not progress, file=sys.stderr)
    try:
        while True:
            statuses = sweep_status(sweep)
            ended = sum(1 for st in statuses if st.point.id in wanted and st.state in (DONE, FAILED))
            bar.n = ended
            bar.refresh()
            if ended == len(wanted) or (deadline is not None and time.monotonic() > deadline):
                return count_states(statuses)
            time.sleep(poll_s)
    finally:
        bar.close()
