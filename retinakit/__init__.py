"""retinakit: model the retina from multielectrode-array recordings.

Layers and the data path from file to score: ARCHITECTURE.md. Importing the package is cheap;
torch and matplotlib are imported only by the functions that need them.
"""

from __future__ import annotations

from ._version import __version__
from .errors import CheckpointError, ConfigError, DataError, FormatError, ModelError, OutputError, RetinakitError
from .recording import Recording, Split


def load_recording(path, cells=None, rate_keys=None):  # noqa: ANN001, ANN201 - re-exported, typed in io
    """Load a recording file, or a bundled sample by name (``"sample"``, ``"sample:whitenoise"``); see :func:`retinakit.io.load_recording`."""
    from .io import load_recording as _load

    return _load(path, cells=cells, rate_keys=rate_keys)


def save_recording(rec, path):  # noqa: ANN001, ANN201
    """Save a recording in retinakit's HDF5 layout (see :func:`retinakit.io.save_recording`)."""
    from .io import save_recording as _save

    return _save(rec, path)


_API = ("fit", "load_run", "evaluate", "compare_ln", "FitResult", "ScoreResult", "CompareResult")


def __getattr__(name: str):  # noqa: ANN202 - lazy re-exports of retinakit.api (torch loads only when used)
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'retinakit' has no attribute {name!r}")


__all__ = [
    "fit", "load_run", "evaluate", "compare_ln", "FitResult", "ScoreResult", "CompareResult",
    "__version__", "Recording", "Split", "load_recording", "save_recording",
    "RetinakitError", "DataError", "FormatError", "ConfigError", "ModelError", "CheckpointError", "OutputError",
]
