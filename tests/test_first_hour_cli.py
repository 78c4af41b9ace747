"""The first hour of a new user (issue 15): the sample by name, interrupt and resume, output that
reads well in a log, file modes, wrong-folder diagnoses, help text, the STA noise warning."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_recording
from retinakit.cli import main
from retinakit.io import save_recording
from retinakit.recording import Recording, Split

FAST = ["--history", "6", "--batch-size", "400", "--chunk-len", "50", "--filters", "4,4"]


@pytest.fixture(scope="module")
def rec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("data") / "tiny.h5"
    save_recording(make_recording(frame_shape=(6, 6), n_cells=2, train_bins=1500, test_bins=200, n_repeats=4), p)
    return p


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _retinakit() -> list[str]:
    return [sys.executable, "-m", "retinakit.cli"]


def _one_line_error(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
    return res.output


# ----------------------------------------------------------------------------- the sample by name
def test_the_bundled_sample_has_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import retinakit as rk
    from retinakit.sample import data_label, sample_path

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["data", "inspect", "sample", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["source"] == str(sample_path()) and doc["stimulus_kind"] == "naturalscene" and doc["n_cells"] == 8
    rec = rk.load_recording("sample:whitenoise")  # the API takes the same names
    assert rec.stimulus_kind == "whitenoise" and rec.provenance["source"] == str(sample_path("whitenoise"))
    # run folders and inspect folders are named after the sample, not its cache file
    assert data_label(sample_path()) == data_label("sample") == "sample"
    assert data_label(sample_path("whitenoise")) == data_label("sample:whitenoise") == "sample-whitenoise"
    assert "there is no bundled sample 'bogus'" in _one_line_error("data", "inspect", "sample:bogus")
    # a file of that name wins over the sample
    Path("sample").write_text("not a recording\n")
    assert "cannot tell the format of 'sample'" in _one_line_error("data", "inspect", "sample")


def test_a_missing_file_points_at_the_sample_names(tmp_path: Path) -> None:
    assert "`sample` (natural scenes) or `sample:whitenoise`" in _one_line_error("data", "inspect", str(tmp_path / "rec.h5"))


# ----------------------------------------------------------------------------- interrupt and resume
def test_ctrl_c_names_the_run_and_how_to_resume_and_a_rerun_finds_it(rec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from retinakit.fitting.run_folder import checkpoint_epoch, is_finished

    run = Path("runs") / "bn-cnn-tiny-1"
    log = tmp_path / run / "log.jsonl"
    args = ["fit", str(rec_path), *FAST, "--max-epochs", "100000", "--max-steps", "100000000", "--patience", "100000"]  # never ends by itself
    # SIGINT back to its default in the child: a shell running the tests in the background (`... &`) ignores it,
    # Python then installs no KeyboardInterrupt handler and Ctrl-C could never reach the fit
    proc = subprocess.Popen([*_retinakit(), *args], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while proc.poll() is None and not (log.is_file() and log.read_text().count("\n") >= 2):
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.splitlines()[0] == f"run folder: {run}"
    last = err.strip().splitlines()[-1]
    kept = checkpoint_epoch(tmp_path / run)
    assert kept >= 2 and not is_finished(tmp_path / run)
    assert last == f"interrupted: run folder {run} is not finished (its checkpoint keeps epoch {kept}); continue with: retinakit fit --resume {run}"
    # stderr is not a terminal: one plain line per epoch, no progress bars or escape codes
    assert "\r" not in err and "\x1b" not in err and out == ""
    assert re.search(r"^epoch 1/100000: train loss \d\.\d{4}, validation loss \d\.\d{4}, validation r -?\d\.\d{3}", err, re.M)

    # the same command again: says there is an unfinished run of the same fit, then starts a new one
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    again = runner.invoke(main, [*args[:-4], "--max-epochs", "1", "-q"])
    assert again.exit_code == 0, again.output
    assert f"note: {run} is an unfinished run of this fit (epoch {kept} of 100000); to continue it instead: retinakit fit --resume {run}" in again.stderr
    assert "run: runs/bn-cnn-tiny-2" in again.stdout
    other = runner.invoke(main, ["fit", str(rec_path), *FAST, "--max-epochs", "1", "--lr", "0.01", "-q"])  # another fit: no note
    assert other.exit_code == 0 and "unfinished" not in other.stderr

    resumed = runner.invoke(main, ["fit", "--resume", str(run), "--max-epochs", str(kept + 1), "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stderr.splitlines()[0] == f"resuming {run} from epoch {kept} (of at most {kept + 1})"
    assert is_finished(run) and json.loads((run / "metrics.json").read_text())["fit"]["epochs"] == kept + 1
    done = runner.invoke(main, ["fit", "--resume", str(run), "-q"])
    assert done.exit_code == 0 and done.stderr.startswith(f"note: run {run} is already finished (DONE, {kept + 1} epochs); printing its results")
    assert "r/ceil" in done.stdout


def test_on_a_terminal_the_same_command_offers_to_resume(rec_path: Path, tmp_path: Path) -> None:
    import pty
    import select

    from retinakit.pipeline import run_fit
    from retinakit.fitting.run_folder import is_finished

    class Stop(Exception):
        pass

    def stop_after_2(entry: dict) -> None:
        if entry["epoch"] == 2:
            raise Stop

    run = tmp_path / "runs" / "bn-cnn-tiny-1"
    opts = {"history": 6, "batch_size": 400, "chunk_len": 50, "filters": [4, 4], "max_epochs": 3}
    with pytest.raises(Stop):
        run_fit(rec_path, run, opts, progress=False, on_epoch=stop_after_2, figures=False)
    pid, fd = pty.fork()
    if pid == 0:  # the child: `retinakit fit` on a terminal, in tmp_path
        os.chdir(tmp_path)
        os.execve(sys.executable, [*_retinakit(), "fit", str(rec_path), *FAST, "--max-epochs", "3"], _env())
    out, answered, deadline = b"", False, time.monotonic() + 300  # a guard against a hang, not a timing test
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"Resume it? [Y/n]" in out:
            os.write(fd, b"y\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "runs/bn-cnn-tiny-1 is an unfinished run of this fit (epoch 2 of 3). Resume it? [Y/n]" in text
    assert "resuming runs/bn-cnn-tiny-1 from epoch 2" in text and "run: runs/bn-cnn-tiny-1" in text
    assert is_finished(run) and not (tmp_path / "runs" / "bn-cnn-tiny-2").exists()


def test_a_log_file_gets_the_table_on_its_own_lines(rec_path: Path, tmp_path: Path) -> None:
    """`retinakit fit > log 2>&1`: no escape codes, one line per epoch, the table on lines of its own."""
    logfile = tmp_path / "fit.log"
    with open(logfile, "w") as fh:
        res = subprocess.run([*_retinakit(), "fit", str(rec_path), *FAST, "--max-epochs", "2"], cwd=tmp_path, env=_env(), stdout=fh, stderr=fh, timeout=300)
    text = logfile.read_text()
    assert res.returncode == 0, text
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "run folder: runs/bn-cnn-tiny-1" and sum(line.startswith("epoch ") for line in lines) == 2
    assert any(re.match(r"^ +cell +r +ceiling", line) for line in lines) and lines[-1] == "run: runs/bn-cnn-tiny-1"


# ----------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_follow_the_umask(rec_path: Path, tmp_path: Path, umask: int) -> None:
    from retinakit.pipeline import run_fit

    old = os.umask(umask)
    try:
        run_fit(rec_path, tmp_path / "run", {"history": 6, "filters": [2, 2], "max_epochs": 1, "batch_size": 400, "chunk_len": 50}, progress=False)
        save_recording(make_recording(frame_shape=(4, 4), n_cells=1, train_bins=200, test_bins=50, n_repeats=2), tmp_path / "rec.h5")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()] + [tmp_path / "rec.h5"]
    assert any(p.suffix == ".png" for p in files) and any(p.name == "model.pt" for p in files)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
    assert oct((tmp_path / "run" / "figures").stat().st_mode & 0o777) == oct(0o777 & ~umask)


# ----------------------------------------------------------------------------- wrong folders
def test_wrong_folders_and_files_are_named_for_what_they_are(rec_path: Path, tmp_path: Path) -> None:
    from retinakit.pipeline import run_fit

    class Stop(Exception):
        pass

    def stop(entry: dict) -> None:
        raise Stop

    unfinished = tmp_path / "unfinished"
    with pytest.raises(Stop):
        run_fit(rec_path, unfinished, {"history": 6, "filters": [2, 2], "max_epochs": 5, "batch_size": 400, "chunk_len": 50}, progress=False, on_epoch=stop)
    cmp = tmp_path / "cmp"
    (cmp / "cnn").mkdir(parents=True)
    (cmp / "ln").mkdir()
    runs = tmp_path / "runs"
    runs.mkdir()
    (tmp_path / "unfinished").rename(runs / "bn-cnn-rec-1")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    (tmp_path / "notes.txt").write_text("hello\n")
    cases = [
        (["check", str(runs / "bn-cnn-rec-1")], f"run folder '{runs / 'bn-cnn-rec-1'}' is a run that has not finished (no DONE; its checkpoint keeps epoch 1 of at most 5); "
                                                 f"continue it with `retinakit fit --resume {runs / 'bn-cnn-rec-1'}`"),
        (["probe", str(cmp), "-s", "step"], f"run folder '{cmp}' is a compare-ln folder, not a run; give one of the runs inside it: {cmp / 'cnn'} or {cmp / 'ln'}"),
        (["check", str(runs)], f"run folder '{runs}' is not a run but a folder of 1 run(s); give one of them, e.g. {runs / 'bn-cnn-rec-1'}"),
        (["check", str(tmp_path / "empty")], f"run folder '{tmp_path / 'empty'}' is an empty folder, not a run"),
        (["check", str(tmp_path / "other")], "is not a retinakit run (no config.json, model.pt or DONE)"),
        (["check", str(tmp_path / "notes.txt")], f"'{tmp_path / 'notes.txt'}' is not a fitted model (it is a text file); give a run folder made by `retinakit fit`"),
        (["probe", str(rec_path), "-s", "step"], "is not a fitted model (it is an HDF5 file: a recording?"),
        (["compare-ln", str(rec_path), "--cnn-run", str(cmp), "-q"], f"--cnn-run '{cmp}' is a compare-ln folder, not a run"),
    ]
    for args, message in cases:
        line = _one_line_error(*args)
        assert message in line, (args, line)
        assert "KeyError" not in line and "no DONE)" not in line.replace("(no DONE;", "")


# ----------------------------------------------------------------------------- help text
def _help(*args: str) -> str:
    res = CliRunner().invoke(main, [*args, "--help"], terminal_width=80)
    assert res.exit_code == 0, res.output
    return res.output


def test_help_text_reads_well() -> None:
    root = _help()
    commands = root.split("Commands:")[1]
    assert "..." not in commands and "(McIntosh et al." not in commands  # short helps are whole sentences
    assert "retinakit data inspect sample" in root
    for cmd in (["fit"], ["compare-ln"], ["probe"], ["simulate"]):
        text = _help(*cmd)
        assert "\n\n  Examples:\n" in text, cmd  # a paragraph of its own
        assert "runs/cnn-sample-1" not in text  # example folders look like the ones fit makes
        assert not re.search(r"\[(?!default:\s)[^\]]*\]\.", text.replace("[OPTIONS]", "")), cmd  # defaults written one way
    assert "--model cnn" not in _help("compare-ln")
    bench = _help("bench")
    assert "--batch-size" in bench and "--chunk-len" in bench and "--batch " not in bench and "--chunk " not in bench
    check = _help("check")
    assert "alignment.py" not in check and "predict()" not in check
    version = CliRunner().invoke(main, ["--version"])
    assert version.exit_code == 0 and re.match(r"retinakit \S+ \(torch \S+, (CPU-only build|CUDA \S+ build, GPU (not )?available)\)", version.output)


# ----------------------------------------------------------------------------- STA noise warning
def _sta_recording() -> Recording:
    """Three cells on 8x8 binary white noise: an OFF cell, one that ignores the stimulus, an ON-OFF cell."""
    rng = np.random.default_rng(5)
    T = 20000
    stim = rng.choice(np.array([-1, 1], dtype=np.int8), size=(T, 8, 8))
    x = np.zeros(T)
    x[3:] = stim[:-3, 4, 4]  # the pixel (4, 4), 3 frames before the bin
    # OFF cell; a cell that ignores the stimulus; an ON-OFF cell (symmetric in the stimulus)
    rates = np.stack([0.1 * np.exp(-1.0 * x), np.full(T, 0.1), 0.1 * np.exp(0.8 * x) + 0.1 * np.exp(-0.8 * x)], axis=1)
    counts = rng.poisson(rates).astype(np.float32)
    train = Split(stimulus=stim, time=np.arange(T) * 0.01, counts=counts)
    reps = rng.poisson(rates[None, :300].repeat(4, 0)).astype(np.float32)
    test = Split(stimulus=stim[:300], time=1000 + np.arange(300) * 0.01, counts=reps.mean(0), repeats=reps)
    return Recording(train=train, test=test, cell_ids=np.array([1, 2, 3]), frame_dt=0.01, stimulus_kind="whitenoise", provenance={"source": "<test>"})


def test_an_sta_at_noise_level_is_reported_as_none(tmp_path: Path) -> None:
    from retinakit.summary import format_summary, summarize, write_sta_figures

    rec = _sta_recording()
    summary, stas = summarize(rec, sta_history=8)
    peaks = [c["sta_peak"] for c in summary["cells"]]
    assert peaks[0]["clear"] and peaks[0]["polarity"] == "OFF" and (peaks[0]["row"], peaks[0]["col"], peaks[0]["lag_frames"]) == (4, 4, 3)
    assert not peaks[1]["clear"] and not peaks[2]["clear"]  # unrelated spikes; ON and OFF halves cancelling
    assert peaks[1]["z"] < peaks[1]["z_threshold"] < peaks[0]["z"]
    text = format_summary(summary)
    assert "warning: no clear STA for cells 2, 3" in text and text.count("none clear (peak at noise level)") == 2
    assert len(write_sta_figures(stas, rec, tmp_path)) == 3
