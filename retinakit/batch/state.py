"""Where each point of a sweep stands: done, running, failed (with the reason) or pending.

The answer is read from three places, in this order of trust:

1. the run folder: a ``DONE`` file means finished (written last by the fit, atomically);
2. the point's attempt log ``<out>/attempts/<point>.jsonl``, written by the job itself
   (start, checkpoint/requeue, done, error with its message);
3. the scheduler: ``squeue`` for live jobs, ``sacct`` for ended ones (a job cancelled or killed
   never writes anything itself, only accounting knows), or the process table for local jobs.

Submissions are recorded in ``<out>/jobs.json`` (point id -> list of submissions).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_json, write_text
from .sweep import Point, Sweep

DONE, RUNNING, FAILED, PENDING = "done", "running", "failed", "pending"
STATES = (DONE, RUNNING, FAILED, PENDING)

JOBS_FILE = "jobs.json"
POINTS_FILE = "points.json"
ATTEMPTS_DIR = "attempts"
LOGS_DIR = "logs"

# scheduler states (squeue/sacct spellings) grouped by what they mean for a point
_LIVE_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING", "SUSPENDED"}
_LIVE_PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"}
_REASONS = {
    "CANCELLED": "cancelled",
    "TIMEOUT": "hit the time limit; raise resources.time_min or resources.max_requeue",
    "OUT_OF_MEMORY": "ran out of memory; raise resources.mem_gb",
    "NODE_FAIL": "its node failed",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "passed its deadline",
    "PREEMPTED": "was pre-empted and not requeued",
    "FAILED": "failed",
    "COMPLETED": "ended without finishing the run",
    "REVOKED": "was revoked",
}


@dataclass
class PointStatus:
    """The state of one point and a one-line explanation."""

    point: Point
    state: str
    detail: str
    job_id: str | None = None
    executor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"point": self.point.id, "state": self.state, "detail": self.detail, "job_id": self.job_id,
                "executor": self.executor, "run_dir": str(self.point.run_dir), "params": self.point.params}


# ----------------------------------------------------------------------------- records
def is_done(run_dir: Path) -> bool:
    """True when the run folder holds ``DONE`` (the fit finished and wrote everything)."""
    try:
        from ..fitting.run_folder import is_finished
    except ImportError:  # the fitting package is optional for reading states
        return (Path(run_dir) / "DONE").is_file()
    return bool(is_finished(run_dir))


def read_jobs(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Submission records: point id -> submissions, oldest first (empty when none)."""
    path = Path(out) / JOBS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def record_submissions(out: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Append one submission per point id to ``jobs.json`` (atomically)."""
    jobs = read_jobs(out)
    for point_id, entry in entries.items():
        jobs.setdefault(point_id, []).append(entry)
    write_json(Path(out) / JOBS_FILE, jobs)


def write_points(sweep: Sweep) -> None:
    """Write the expanded points (ids, parameters, run folders) to ``points.json``."""
    write_json(sweep.out / POINTS_FILE, {"sweep": str(sweep.path), "name": sweep.name, "swept": sweep.swept_keys,
                                         "points": [p.to_dict() for p in sweep.points]})


def attempts_path(out: Path, point_id: str) -> Path:
    """The attempt log of one point."""
    return Path(out) / ATTEMPTS_DIR / f"{point_id}.jsonl"


def read_attempts(out: Path, point_id: str) -> list[dict[str, Any]]:
    """Events written by the jobs of one point, oldest first (garbled lines skipped)."""
    path = attempts_path(out, point_id)
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict):
            events.append(ev)
    return events


def append_attempt(out: Path, point_id: str, event: str, **fields: Any) -> None:
    """Add one event (``start``, ``checkpoint``, ``done``, ``error``) to a point's attempt log."""
    path = attempts_path(out, point_id)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    ev = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(), **fields}
    write_text(path, old + json.dumps(ev, default=str) + "\n")


def last_epoch(run_dir: Path) -> int | None:
    """The last epoch written to the run's ``log.jsonl`` (None when there is none yet)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return None
    best = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("epoch"), int):
            best = ev["epoch"] if best is None else max(best, ev["epoch"])
    return best


# ----------------------------------------------------------------------------- scheduler
def slurm_available() -> bool:
    """True when a SLURM controller answers (``sinfo`` exists and succeeds)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _expand_ids(token: str) -> list[str]:
    """``12_[0-2,5%4]`` -> ``12_0 12_1 12_2 12_5``; plain ids unchanged."""
    m = re.fullmatch(r"(\d+)_\[([0-9,\-%]+)\]", token)
    if not m:
        return [token]
    base, spec = m.group(1), m.group(2).split("%")[0]
    ids = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            ids += [f"{base}_{i}" for i in range(int(lo), int(hi) + 1)]
        elif part:
            ids.append(f"{base}_{part}")
    return ids


def _run(cmd: list[str]) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def slurm_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Scheduler state and reason of each job id: live ones from squeue, the rest from sacct.

    Ids the scheduler no longer knows are absent from the result.
    """
    wanted = set(job_ids)
    found: dict[str, tuple[str, str]] = {}
    if not wanted:
        return found
    user = os.environ.get("USER") or _whoami()
    cmd = ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r"] + (["-u", user] if user else [])
    for line in (_run(cmd) or "").splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2:
            for jid in _expand_ids(parts[0]):
                if jid in wanted:
                    found[jid] = (parts[1].split()[0], parts[2] if len(parts) > 2 else "")
    missing = sorted(wanted - set(found))
    if missing and shutil.which("sacct"):
        out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State,ExitCode,Reason", "-j", ",".join(missing)])
        for line in (out or "").splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2:
                state = parts[1].split()[0]  # "CANCELLED by 0" -> CANCELLED
                for jid in _expand_ids(parts[0]):
                    if jid in wanted and jid not in found:
                        found[jid] = (state, f"exit code {parts[2]}" if len(parts) > 2 and parts[2] not in ("", "0:0") else "")
    return found


def _whoami() -> str | None:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return None


def local_alive(job_id: str) -> bool:
    """True while the local submitit controller with this pid runs."""
    if not job_id.isdigit():
        return False
    try:
        cmdline = Path(f"/proc/{job_id}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(int(job_id), 0)
        except (OSError, ValueError):
            return False
        return True
    return b"submitit" in cmdline


def log_file(out: Path, job_id: str) -> Path:
    """The stderr log submitit writes for a job id (``logs/<job>_0_log.err``)."""
    return Path(out) / LOGS_DIR / f"{job_id}_0_log.err"


# ----------------------------------------------------------------------------- status
def sweep_status(sweep: Sweep) -> list[PointStatus]:
    """The state of every point of ``sweep`` (queries the scheduler once for all jobs)."""
    jobs = read_jobs(sweep.out)
    latest = {pid: subs[-1] for pid, subs in jobs.items() if subs}
    slurm_ids = [s["job_id"] for pid, s in latest.items() if s.get("executor") == "slurm" and s.get("job_id")]
    sched = slurm_states(slurm_ids) if slurm_ids else {}
    return [_point_status(sweep, p, latest.get(p.id), sched) for p in sweep.points]


def _max_epochs(point: Point) -> int | None:
    v = point.params.get("max_epochs")
    return v if isinstance(v, int) else None


def _progress(point: Point) -> str:
    ep = last_epoch(point.run_dir)
    if ep is None:
        return ""
    total = _max_epochs(point)
    return f", epoch {ep}" + (f" of at most {total}" if total else "")


def _error_reason(events: list[dict[str, Any]], since: str | None) -> str | None:
    for ev in reversed(events):
        if since is not None and str(ev.get("job_id")) != since:
            continue
        if ev.get("event") == "error":
            return str(ev.get("reason", "an error"))
    return None


def _point_status(sweep: Sweep, point: Point, sub: dict[str, Any] | None, sched: dict[str, tuple[str, str]]) -> PointStatus:
    if is_done(point.run_dir):
        return PointStatus(point, DONE, point.label(sweep.swept_keys))
    if sub is None:
        return PointStatus(point, PENDING, "not submitted")
    job_id, executor = str(sub.get("job_id")), sub.get("executor")
    events = read_attempts(sweep.out, point.id)
    requeues = sum(1 for ev in events if ev.get("event") == "checkpoint" and str(ev.get("job_id")) == job_id)
    requeued = f", requeued {requeues}x" if requeues else ""
    err = _error_reason(events, job_id)
    log = log_file(sweep.out, job_id)
    if executor == "local":
        if local_alive(job_id):
            return PointStatus(point, RUNNING, f"local job {job_id}{_progress(point)}{requeued}", job_id, executor)
        reason = err or "the local job stopped before the run finished (interrupted or killed)"
        return PointStatus(point, FAILED, f"{reason} (local job {job_id}; log {log})", job_id, executor)
    state, why = sched.get(job_id, ("UNKNOWN", ""))
    if state in _LIVE_RUNNING:
        return PointStatus(point, RUNNING, f"job {job_id}{_progress(point)}{requeued}", job_id, executor)
    if state in _LIVE_PENDING:
        wait = f" ({why})" if why and why not in ("None", "(null)") else ""
        return PointStatus(point, PENDING, f"queued as job {job_id}{wait}{requeued}", job_id, executor)
    if state == "UNKNOWN":
        started = any(ev.get("event") == "start" and str(ev.get("job_id")) == job_id for ev in events)
        if err:
            reason = err
        elif started:
            reason = "the job ended without finishing the run and the scheduler keeps no record of it (is sacct/slurmdbd set up?)"
        else:  # SLURM keeps no record of an array task cancelled while it was queued
            reason = "cancelled or removed before it started (the scheduler keeps no record of the job)"
        return PointStatus(point, FAILED, f"{reason} (job {job_id})", job_id, executor)
    reason = _REASONS.get(state, state.lower())
    if err and state != "CANCELLED":
        reason = err
    elif err:
        reason = f"{reason}; last error: {err}"
    extra = f", {why}" if why and state == "FAILED" and not err else ""
    return PointStatus(point, FAILED, f"{reason} (job {job_id}{extra}; log {log})", job_id, executor)


def count_states(statuses: list[PointStatus]) -> dict[str, int]:
    """How many points are in each state."""
    return {s: sum(1 for st in statuses if st.state == s) for s in STATES}


def format_status(sweep: Sweep, statuses: list[PointStatus]) -> str:
    """A plain-text table of the sweep's points, one per line, and a one-line summary."""
    width = max([len(st.point.id) for st in statuses] + [5])
    lines = [f"sweep '{sweep.name}': {len(statuses)} points in {sweep.out}",
             f"{'point':<{width}}  {'state':<8} detail"]
    for st in statuses:
        detail = st.detail if st.state == DONE else f"{st.point.label(sweep.swept_keys)}: {st.detail}"
        lines.append(f"{st.point.id:<{width}}  {st.state:<8} {detail}")
    counts = count_states(statuses)
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
