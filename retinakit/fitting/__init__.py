"""Fitting: options (:mod:`.config`), devices, the training loop (:mod:`.train`), checkpoints, and
run folders on disk (:mod:`.run_folder`). A whole fit into a run folder is
:func:`retinakit.pipeline.run_fit`.

``load_run`` is imported lazily so ``import retinakit.fitting`` stays cheap (no torch).
"""

from __future__ import annotations

from typing import Any


def load_run(path: Any) -> Any:
    """Load a finished run's model (see :func:`retinakit.fitting.run_folder.load_run`)."""
    from .run_folder import load_run as _load_run

    return _load_run(path)


__all__ = ["load_run"]
