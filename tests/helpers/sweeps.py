"""The sweep of the batch tests: four tiny fits (lr x seed) of ``rec.h5``, and the recordings they fit."""

from __future__ import annotations

from pathlib import Path


def sweep_text(name: str, resources: str) -> str:
    """A sweep ``name`` of four tiny fits into ``runs/``; ``resources`` ends its ``[resources]`` table."""
    return f"""
[sweep]
name = "{name}"
out = "runs"

[fit]
data = "rec.h5"
history = 8
max_epochs = 2
batch_size = 500

[grid]
lr = [0.001, 0.01]
seed = [0, 1]

[resources]
cpus = 1
mem_gb = 1
time_min = 10
{resources}
"""


def sweep_file(folder: Path, rec: Path, text: str) -> Path:
    """Write ``folder/sweep.toml`` with ``text`` next to ``rec.h5``, a link to the recording ``rec``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rec.h5").symlink_to(rec)
    p = folder / "sweep.toml"
    p.write_text(text)
    return p


def save_sweep_recording(path: Path, train_bins: int = 1500) -> Path:
    """A tiny 6x6 white-noise recording for a sweep, saved at ``path``."""
    from conftest import make_recording
    from retinakit.io import save_recording

    save_recording(make_recording(frame_shape=(6, 6), train_bins=train_bins, test_bins=200), path)
    return path
