"""Crash safety: a real `retinakit fit` process is killed with SIGKILL at chosen moments (found by
watching its run folder), resumed with `fit --resume`, and must end exactly like an
uninterrupted run: same metrics, same weights, same per-epoch log, an intact run folder, and no
folder that looks finished (``DONE``) before it is.

The kill points are chosen by polling the run folder (config.json, checkpoint.pt, the lines of
log.jsonl, model.pt, figures/...); nothing in retinakit knows it is being tested. The default
run kills at 2 points (resumed in-process); ``pytest -m slow tests/test_crash_safety.py`` at 10.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_recording

from retinakit.atomic import write_json, write_text
from retinakit.cli import main
from retinakit.fitting.checkpoint import load_checkpoint
from retinakit.fitting.run_folder import is_finished
from retinakit.io import save_recording

FIT_OPTIONS = ["--model", "bn-cnn", "--history", "8", "--filters", "2,2", "--kernels", "3,3", "--max-epochs", "5", "--patience", "10", "--batch-size", "400",
               "--chunk-len", "100", "--seed", "3", "--device", "cpu", "--deterministic", "--noise-std", "0.1", "-q"]
REPO = Path(__file__).resolve().parents[1]  # the subprocesses run this checkout's retinakit, wherever it is installed from
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0",
       "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
TIMEOUT = 300


def retinakit(*args: str) -> list[str]:
    """The command line of a real `retinakit` process."""
    return [sys.executable, "-m", "retinakit.cli", *args]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: Any) -> Path:
    rec = make_recording(frame_shape=(8, 8), n_cells=2, train_bins=1200, test_bins=100, n_repeats=4, seed=5)
    return save_recording(rec, tmp_path_factory.mktemp("crash") / "tiny.h5")


@pytest.fixture(scope="module")
def reference(data_file: Path) -> Path:
    """An uninterrupted run with the same options (in this process, one thread like the subprocesses)."""
    run = data_file.parent / "reference"
    res = fit_here(str(data_file), "--out", str(run))
    assert res.exit_code == 0, res.output
    assert is_finished(run)
    return run


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread, as the subprocesses do (OMP_NUM_THREADS=1), so results match bit for bit."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ----------------------------------------------------------------------------- what must match
VOLATILE = {"run", "wall_seconds", "fit_seconds", "seconds", "created", "resumed"}


def _strip(obj: Any) -> Any:
    """Drop wall-clock times and the run path, which differ between runs."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _log(run: Path) -> list[dict[str, Any]]:
    return [_strip(json.loads(line)) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def assert_same_result(run: Path, ref: Path) -> None:
    """The resumed run ended exactly like the uninterrupted one, and its folder is complete."""
    assert is_finished(run)
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "checkpoint.pt", "model.pt", "metrics.json", "cells.csv", "log.jsonl", "figures", "DONE"} <= names
    leftovers = sorted(p.name for folder in (run, run / "figures") for p in folder.iterdir() if p.name.startswith("."))
    assert not leftovers, f"temporary files left in the run folder: {leftovers}"
    m, mref = json.loads((run / "metrics.json").read_text()), json.loads((ref / "metrics.json").read_text())
    assert _strip(m) == _strip(mref)
    assert (run / "cells.csv").read_text() == (ref / "cells.csv").read_text()
    assert _log(run) == _log(ref)
    got, _ = load_checkpoint(run / "model.pt")
    want, _ = load_checkpoint(ref / "model.pt")
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert sorted(p.name for p in (run / "figures").iterdir()) == sorted(p.name for p in (ref / "figures").iterdir())
    cfg, cref = json.loads((run / "config.json").read_text()), json.loads((ref / "config.json").read_text())
    assert cfg["config"] == cref["config"] and cfg["data"] == cref["data"]


# ----------------------------------------------------------------------------- kill points
def _log_lines(run: Path) -> int:
    try:
        return sum(1 for line in (run / "log.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _files(folder: Path) -> int:
    try:
        return sum(1 for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return 0


KILL_POINTS: dict[str, Callable[[Path, float], bool]] = {
    # (run folder, seconds since start) -> kill now?
    "while starting (0.3 s)": lambda run, t: t > 0.3,
    "run folder created": lambda run, t: run.is_dir(),
    "config written, no checkpoint yet": lambda run, t: (run / "config.json").is_file(),
    "first checkpoint written": lambda run, t: (run / "checkpoint.pt").is_file(),
    "after epoch 2": lambda run, t: _log_lines(run) >= 2,
    "inside epoch 4": lambda run, t: _log_lines(run) >= 3 and (time.sleep(0.15) or True),
    "after epoch 4": lambda run, t: _log_lines(run) >= 4,
    "all epochs done, finalising": lambda run, t: _log_lines(run) >= 5,
    "model.pt written, scoring": lambda run, t: (run / "model.pt").is_file(),
    "writing figures": lambda run, t: _files(run / "figures") >= 1,
}
DEFAULT_POINTS = ["after epoch 2", "model.pt written, scoring"]


def kill_at(cmd: list[str], run: Path, when: Callable[[Path, float], bool]) -> bool:
    """Start ``cmd``; SIGKILL it as soon as ``when`` holds; True when the kill ended it (an error when it ended first)."""
    errors = run.parent / f"{run.name}.stderr.txt"
    with open(errors, "wb") as err:
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        t0 = time.monotonic()
        try:
            while proc.poll() is None:
                if when(run, time.monotonic() - t0):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=30)
                    return proc.returncode == -signal.SIGKILL
                if time.monotonic() - t0 > TIMEOUT:
                    raise AssertionError(f"{cmd} did not reach the kill point in {TIMEOUT} s")
                time.sleep(0.003)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    raise AssertionError(f"the fit ended (exit {proc.returncode}) before the kill point: {errors.read_text()[-2000:]}")


def resume(data_file: Path, run: Path) -> subprocess.CompletedProcess[str]:
    """`retinakit fit DATA --resume RUN` with the options of the first attempt (a new process)."""
    return subprocess.run(retinakit("fit", str(data_file), "--resume", str(run), *FIT_OPTIONS), env=ENV, capture_output=True, text=True, timeout=TIMEOUT)


def fit_here(*args: str) -> Any:
    """`retinakit fit ...` in this process (no torch start-up cost; one thread, like the subprocesses)."""
    with one_thread():
        return CliRunner().invoke(main, ["fit", *args, *FIT_OPTIONS])


def check_kill_and_resume(data_file: Path, reference: Path, point: str, tmp_path: Path, new_process: bool) -> None:
    run = tmp_path / "run"
    assert kill_at(retinakit("fit", str(data_file), "--out", str(run), *FIT_OPTIONS), run, KILL_POINTS[point])
    # a killed run never looks finished
    assert not is_finished(run)
    if run.is_dir() and (run / "checkpoint.pt").is_file():
        load_checkpoint(run / "checkpoint.pt")  # the last checkpoint is whole (atomic write + checksum)
    if new_process:
        res = resume(data_file, run)
        assert res.returncode == 0, res.stderr
    else:
        out = fit_here(str(data_file), "--resume", str(run))
        assert out.exit_code == 0, out.output
    assert_same_result(run, reference)


@pytest.mark.parametrize("point", DEFAULT_POINTS)
def test_kill_and_resume(data_file: Path, reference: Path, point: str, tmp_path: Path) -> None:
    """Default run: 2 kill points, resumed in this process."""
    check_kill_and_resume(data_file, reference, point, tmp_path, new_process=False)


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_and_resume_slow(data_file: Path, reference: Path, point: str, tmp_path: Path) -> None:
    """All 10 kill points, each resumed by a new `retinakit fit --resume` process."""
    check_kill_and_resume(data_file, reference, point, tmp_path, new_process=True)


@pytest.mark.slow
def test_killed_twice_then_resumed(data_file: Path, reference: Path, tmp_path: Path) -> None:
    """Kill the first attempt after epoch 2 and the resumed one inside epoch 4: still the same result."""
    run = tmp_path / "run"
    assert kill_at(retinakit("fit", str(data_file), "--out", str(run), *FIT_OPTIONS), run, KILL_POINTS["after epoch 2"])
    assert kill_at(retinakit("fit", str(data_file), "--resume", str(run), *FIT_OPTIONS), run, lambda r, t: _log_lines(r) >= 3 and (time.sleep(0.1) or True))
    assert not is_finished(run)
    res = resume(data_file, run)
    assert res.returncode == 0, res.stderr
    assert_same_result(run, reference)


# ----------------------------------------------------------------------------- folder rules
def test_resume_of_a_finished_run_changes_nothing(reference: Path, data_file: Path, tmp_path: Path) -> None:
    run = tmp_path / "done"
    shutil.copytree(reference, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    res = fit_here(str(data_file), "--resume", str(run))
    assert res.exit_code == 0, res.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_fit_never_overwrites_a_run(reference: Path, data_file: Path) -> None:
    before = (reference / "metrics.json").read_bytes()
    res = fit_here(str(data_file), "--out", str(reference))
    assert res.exit_code == 2 and res.stderr.strip().startswith("error: ") and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "--resume" in res.stderr
    assert (reference / "metrics.json").read_bytes() == before


@pytest.mark.parametrize("damage", ["edited weight", "truncated"])
def test_damaged_checkpoint_on_resume_is_a_clear_error(reference: Path, data_file: Path, tmp_path: Path, damage: str) -> None:
    """A checkpoint that fails its checksum (or cannot be read) is refused on resume (one line, exit 2) and left as it is."""
    run = tmp_path / "damaged"
    shutil.copytree(reference, run)
    (run / "DONE").unlink()
    if damage == "edited weight":  # a valid torch file whose content no longer matches its SHA-256
        payload = torch.load(run / "checkpoint.pt", weights_only=True)
        name = sorted(payload["tensors"])[0]
        payload["tensors"][name] = payload["tensors"][name] + 1
        torch.save(payload, run / "checkpoint.pt")
    else:
        data = (run / "checkpoint.pt").read_bytes()
        (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    before = (run / "checkpoint.pt").read_bytes()
    res = fit_here(str(data_file), "--resume", str(run))
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: "), res.output
    assert ("checksum does not match" if damage == "edited weight" else "cannot be read as a checkpoint") in res.stderr
    assert (run / "checkpoint.pt").read_bytes() == before and not is_finished(run)


def test_atomic_writes_leave_the_old_file_on_failure(tmp_path: Path) -> None:
    """An exception in the middle of a write leaves the previous content and no temporary file."""
    from retinakit.atomic import atomic_path

    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"a": 2, "trunc')
            raise RuntimeError("killed half way")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_text(target, "x")
    assert target.read_text() == "x"


def test_writes_are_atomic_under_sigkill(tmp_path: Path) -> None:
    """A process killed while rewriting a file over and over never leaves a torn file behind."""
    target = tmp_path / "big.json"
    payload = {"x": list(range(20000))}
    write_json(target, payload)
    code = (
        "import sys\nfrom retinakit.atomic import write_json\n"
        f"p = {str(target)!r}\nk = 0\n"
        "while True:\n    k += 1\n    write_json(p, {'x': list(range(20000)), 'k': k})\n"
    )
    for delay in (0.3, 0.45, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", code], env=ENV)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = json.loads(target.read_text())  # never half written
        assert data["x"] == payload["x"]
    for p in tmp_path.iterdir():  # only the target, or temporaries named .big.json.*
        assert p.name == "big.json" or p.name.startswith(".big.json."), p.name


def test_training_checkpoint_holds_the_whole_state(reference: Path) -> None:
    """The training checkpoint restores everything resume needs from tensors + JSON."""
    tensors, info = load_checkpoint(reference / "checkpoint.pt")
    assert info["kind"] == "training" and "rng/torch" in tensors and info["state"]["epoch"] == 5
    assert any(k.startswith("best/") for k in tensors) and any(k.startswith("optim/") for k in tensors)
    assert np.isfinite(info["state"]["best_val_loss"])


def test_resume_of_a_run_killed_before_it_started_needs_the_data(tmp_path: Path) -> None:
    """No config.json yet (killed while starting): without DATA there is nothing to go on, and the error says what to do."""
    run = tmp_path / "early"
    run.mkdir()
    (run / ".config.json.x1y2.tmp").write_text('{"half')  # what a kill during the first atomic write leaves
    res = fit_here("--resume", str(run))
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "interrupted before it started" in res.stderr and f"retinakit fit DATA --out {run}" in res.stderr


def test_temporaries_of_a_killed_write_are_cleaned_and_do_not_block_a_new_fit(tmp_path: Path, data_file: Path) -> None:
    from retinakit.fitting.run_folder import remove_temporaries
    from retinakit.pipeline.runs import run_fit

    run = tmp_path / "run"
    run.mkdir()
    (run / ".config.json.k3j2.tmp").write_text('{"half')  # a kill during the first write of the run
    # a new fit in this folder (a batch job retried after a kill) starts instead of refusing a "non-empty" folder
    with one_thread():
        run_fit(data_file, run, {"history": 8, "filters": [2, 2], "kernels": [3, 3], "max_epochs": 0, "device": "cpu"}, progress=False, figures=False)
    assert is_finished(run) and not [p.name for p in run.rglob(".*")]
    # user files are never touched
    (run / ".notes").write_text("mine")
    (run / ".checkpoint.pt.zz.pt").write_bytes(b"half")
    (run / "figures").mkdir(exist_ok=True)
    (run / "figures" / ".training.png.a1b2.png").write_bytes(b"\x89PNG half")
    assert sorted(remove_temporaries(run)) == [".checkpoint.pt.zz.pt", "figures/.training.png.a1b2.png"]
    assert (run / ".notes").read_text() == "mine"


def test_a_fit_that_fails_on_its_data_leaves_no_empty_run_folder(tmp_path: Path) -> None:
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        res = CliRunner().invoke(main, ["fit", "missing.h5", "-q"])
    finally:
        os.chdir(old)
    assert res.exit_code == 2 and "does not exist" in res.stderr
    assert list((tmp_path / "runs").iterdir()) == []
