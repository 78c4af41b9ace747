"""A read-only folder for tests, also when the tests run as root (CI does)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def readonly_folder(base: Path) -> Iterator[Path]:
    """Yield a folder nobody can write into: chmod 555 for users, a read-only tmpfs for root."""
    folder = base / "readonly"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "retinakit-ro", str(folder)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs ({res.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)
