"""Fitting: options (:mod:`.config`), the training loop (:mod:`.train`), checkpoints, run folders.

``run_fit`` is imported lazily so ``import retinakit.fitting`` stays cheap (no torch).
"""

from __future__ import annotations

from typing import Any


def run_fit(data: Any, run_dir: Any, options: dict[str, Any] | None = None, resume: bool = False, progress: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Fit a model into a run folder and return its metrics (see :func:`retinakit.fitting.runs.run_fit`)."""
    from .runs import run_fit as _run_fit

    return _run_fit(data, run_dir, options, resume=resume, progress=progress, **kwargs)


def load_run(path: Any) -> Any:
    """Load a finished run's model (see :func:`retinakit.fitting.runs.load_run`)."""
    from .runs import load_run as _load_run

    return _load_run(path)


__all__ = ["run_fit", "load_run"]
