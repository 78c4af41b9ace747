"""Resources: a read-only output folder or a disk that fills up gives the one-line error (exit 2)
and leaves earlier results intact; a fit stopped by a full disk resumes once there is space.

Read-only folders come from ``tests/helpers/readonly.py`` (chmod, or a read-only tmpfs when root); a full
disk is a tiny tmpfs (``mount -t tmpfs -o size=...``, root only; skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner
from conftest import make_recording
from helpers.lab_exports import simulate_export, write_struct_export
from helpers.readonly import readonly_folder

from retinakit.atomic import write_json
from retinakit.cli import main
from retinakit.errors import OutputError
from retinakit.fitting.checkpoint import load_checkpoint
from retinakit.fitting.run_folder import is_finished
from retinakit.io import save_recording

FIT = ["--history", "6", "--filters", "2,2", "--kernels", "3,3", "--max-epochs", "2", "--patience", "5", "--batch-size", "300",
       "--chunk-len", "100", "--device", "cpu", "-q"]
@contextlib.contextmanager
def small_disk(base: Path, size: str) -> Iterator[Path]:
    """A folder on its own tmpfs of ``size`` (e.g. '96k'): writing past it fails with ENOSPC."""
    folder = base / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "retinakit-full", str(folder)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def grow(folder: Path, size: str) -> None:
    """Free space: give the tmpfs more room."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the disk to the last byte with a filler file."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as fh:
        for block in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * block)
    return filler


def one_line_error(res: Any) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("run folder: ")]  # fit announces its folder first
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    return lines[0]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: Any) -> Path:
    rec = make_recording(frame_shape=(6, 6), n_cells=2, train_bins=700, test_bins=60, n_repeats=3, seed=21)
    return save_recording(rec, tmp_path_factory.mktemp("res") / "tiny.h5")


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    return write_struct_export(tmp_path, simulate_export(seed=8))


# ----------------------------------------------------------------------------- read-only
def test_fit_into_a_read_only_folder(tmp_path: Path, data_file: Path) -> None:
    with readonly_folder(tmp_path) as ro:
        line = one_line_error(CliRunner().invoke(main, ["fit", str(data_file), "--out", str(ro / "run"), *FIT]))
        assert str(ro / "run") in line and ("read-only" in line.lower() or "permission" in line.lower()) and "--out" in line
        assert list(ro.iterdir()) == []


def test_fit_without_out_in_a_read_only_working_folder(tmp_path: Path, data_file: Path) -> None:
    with readonly_folder(tmp_path) as ro:
        old = os.getcwd()
        os.chdir(ro)
        try:
            res = CliRunner().invoke(main, ["fit", str(data_file), *FIT])
        finally:
            os.chdir(old)  # before the read-only folder is unmounted
        line = one_line_error(res)
        assert "runs" in line and "--out" in line


def test_import_and_inspect_into_a_read_only_folder(tmp_path: Path, mapping: Path, data_file: Path) -> None:
    with readonly_folder(tmp_path) as ro:
        line = one_line_error(CliRunner().invoke(main, ["data", "import", str(mapping), "--out", str(ro / "rec.h5")]))
        assert "rec.h5" in line and ("read-only" in line.lower() or "permission" in line.lower())
        line = one_line_error(CliRunner().invoke(main, ["data", "inspect", str(data_file), "--out", str(ro / "sta"), "--sta", "--history", "4"]))
        assert "sta" in line
        assert list(ro.iterdir()) == []


# ----------------------------------------------------------------------------- full disk
def test_write_on_a_full_disk_keeps_the_old_file(tmp_path: Path) -> None:
    with small_disk(tmp_path, "64k") as disk:
        target = disk / "metrics.json"
        write_json(target, {"earlier": [1, 2, 3]})
        before = target.read_bytes()
        filler = fill(disk)
        with pytest.raises(OutputError) as info:
            write_json(target, {"x": list(range(5000))})
        assert "disk is full" in info.value.one_line() and "earlier results are intact" in info.value.one_line()
        assert target.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["filler.bin", "metrics.json"]  # no temporary left
        filler.unlink()


def test_import_on_a_full_disk_keeps_the_old_recording(tmp_path: Path, mapping: Path) -> None:
    with small_disk(tmp_path, "256k") as disk:
        out = disk / "rec.h5"
        res = CliRunner().invoke(main, ["data", "import", str(mapping), "--out", str(out)])
        assert res.exit_code == 0, res.output
        before = out.read_bytes()
        fill(disk)
        line = one_line_error(CliRunner().invoke(main, ["data", "import", str(mapping), "--out", str(out), "--force"]))
        assert "disk is full" in line and "rec.h5" in line
        assert out.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["filler.bin", "rec.h5"]


@pytest.mark.parametrize("size,where", [("16k", "checkpoint.pt"), ("128k", "figures")])
def test_fit_on_a_full_disk_stops_cleanly_and_resumes(tmp_path: Path, data_file: Path, size: str, where: str) -> None:
    """The disk fills while the first checkpoint (16k) or the figures (128k) are written: clear error, earlier run
    intact, the last checkpoint whole, no DONE; with more space, --resume finishes the run."""
    with small_disk(tmp_path, size) as disk:
        earlier = disk / "earlier"
        write_json(earlier / "metrics.json", {"r": 0.5})
        (earlier / "DONE").write_text("x\n")
        run = disk / "run"
        line = one_line_error(CliRunner().invoke(main, ["fit", str(data_file), "--out", str(run), *FIT]))
        assert "disk is full" in line and where in line, line
        assert not is_finished(run)
        assert (earlier / "metrics.json").read_text().strip().endswith("}") and is_finished(earlier)
        if where == "figures":
            _, info = load_checkpoint(run / "checkpoint.pt")
            assert info["state"]["epoch"] == 2
        else:
            assert not (run / "checkpoint.pt").exists()
        assert not [p.name for p in run.rglob(".*")], "temporary files left behind"
        grow(disk, "4m")
        res = CliRunner().invoke(main, ["fit", str(data_file), "--resume", str(run), *FIT])
        assert res.exit_code == 0, res.output
        assert is_finished(run) and (run / "figures").is_dir()
