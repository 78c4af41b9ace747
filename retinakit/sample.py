"""The bundled sample recordings: simulated on first use into a cache folder (works offline).

``retinakit fit`` with no data argument uses :func:`sample_path`. Wherever a recording is
taken (CLI and API), the names ``sample`` (the natural-scene sample) and ``sample:<kind>``
(e.g. ``sample:whitenoise``) stand for these files (:func:`resolve_sample`). The sample is made by the
simulated retina (:mod:`retinakit.simulate`) from :data:`SAMPLE_SPECS`, deterministically; the
file name carries the simulator version and a hash of the spec, so a changed spec or simulator
makes a new file instead of reusing a stale one. The cache folder is ``$RETINAKIT_CACHE``, else
``$XDG_CACHE_HOME/retinakit``, else ``~/.cache/retinakit``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

# The ONE place the samples are defined (the lead may tune these; the file name follows).
SAMPLE_SPECS: dict[str, dict[str, Any]] = {
    "naturalscene": {
        "stimulus": "naturalscene",
        "size": [32, 32],
        "n_cells": 8,
        "minutes": 10.0,
        "test_seconds": 20.0,
        "n_repeats": 10,
        "frame_rate": 100.0,
        "seed": 0,
    },
    "whitenoise": {
        "stimulus": "whitenoise",
        "size": [32, 32],
        "n_cells": 8,
        "minutes": 10.0,
        "test_seconds": 20.0,
        "n_repeats": 10,
        "frame_rate": 100.0,
        "seed": 0,
    },
}


def cache_dir() -> Path:
    """The cache folder: ``$RETINAKIT_CACHE``, else ``$XDG_CACHE_HOME/retinakit``, else ``~/.cache/retinakit``."""
    env = os.environ.get("RETINAKIT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "retinakit"
    return Path.home() / ".cache" / "retinakit"


def _spec_for(kind: str) -> dict[str, Any]:
    if kind not in SAMPLE_SPECS:
        raise ConfigError(f"there is no bundled sample '{kind}'", fix=f"use one of {', '.join(sorted(SAMPLE_SPECS))}")
    return dict(SAMPLE_SPECS[kind])


def _resolved_spec(kind: str) -> Any:
    from .simulate.record import SimulationSpec

    fields = _spec_for(kind)
    if "size" in fields:
        fields["size"] = tuple(int(v) for v in fields["size"])
    try:
        return SimulationSpec(**fields).validate()
    except TypeError as exc:
        raise ConfigError(f"SAMPLE_SPECS['{kind}'] has an unknown field ({exc})", "retinakit/sample.py", "use the fields of retinakit.simulate.SimulationSpec") from None


def sample_name(kind: str = "naturalscene") -> str:
    """File name of a sample: kind, simulator version and a hash of everything that shapes it.

    The hash covers the resolved spec (defaults included), the retina's parameters and its cell
    types, so changing any of them makes a new file rather than reusing a stale one.
    """
    from dataclasses import asdict

    from .simulate.retina import CELL_TYPES, SIMULATOR_VERSION, RetinaParams

    blob = json.dumps(
        {
            "simulator_version": SIMULATOR_VERSION,
            "spec": _resolved_spec(kind).to_json(),
            "retina": asdict(RetinaParams()),
            "cell_types": [asdict(t) for t in CELL_TYPES],
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]
    return f"sample-{kind}-sim{SIMULATOR_VERSION}-{digest}.h5"


def sample_path(kind: str = "naturalscene", progress: bool = True) -> Path:
    """The bundled sample recording of ``kind`` ("naturalscene" or "whitenoise").

    Returns the cached file, simulating it first (atomically, a few seconds) when it is not
    there yet. Raises :class:`~retinakit.errors.ConfigError` for an unknown kind and
    :class:`~retinakit.errors.OutputError` when the cache folder cannot be written.
    """
    from .io.baccus_h5 import is_hdf5

    path = cache_dir() / sample_name(kind)
    if path.is_file() and is_hdf5(path):
        return path
    from .simulate.record import simulate_to_file

    simulate_to_file(_resolved_spec(kind), path, progress=progress)
    return path


SAMPLE_NAME = "sample"


def sample_kind(name: str | os.PathLike[str]) -> str | None:
    """The sample kind a recording argument names: ``sample`` -> ``naturalscene``,
    ``sample:whitenoise`` -> ``whitenoise``; ``None`` when it names no sample.

    Raises :class:`~retinakit.errors.ConfigError` for ``sample:<unknown kind>``.
    """
    text = os.fspath(name) if isinstance(name, (str, os.PathLike)) else None
    if not isinstance(text, str):
        return None
    if text == SAMPLE_NAME:
        return "naturalscene"
    if text.startswith(SAMPLE_NAME + ":"):
        kind = text[len(SAMPLE_NAME) + 1 :]
        if kind not in SAMPLE_SPECS:
            raise ConfigError(f"there is no bundled sample '{kind}' (in '{text}')",
                              fix=f"use one of {', '.join(['sample'] + [f'sample:{k}' for k in sorted(SAMPLE_SPECS)])}")
        return kind
    return None


def resolve_sample(data: Any, progress: bool | None = None) -> Any:
    """``data`` with a sample name (``sample``, ``sample:<kind>``) replaced by the sample's file
    (simulated on first use; ``progress=None``: a bar only when stderr is a terminal); anything
    else (a path, a Recording, None) is returned unchanged.

    An existing file or folder of that name wins over the sample.
    """
    if not isinstance(data, (str, os.PathLike)) or Path(data).exists():
        return data
    kind = sample_kind(data)
    if kind is None:
        return data
    if progress is None:
        import sys

        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return sample_path(kind, progress=progress)


def data_label(path: str | os.PathLike[str] | None) -> str:
    """A short name for a recording in run-folder names: ``sample`` / ``sample-<kind>`` for the
    bundled samples (natural scenes are plain ``sample``), else the file's stem."""
    if path is None:
        return SAMPLE_NAME
    kind = sample_kind(path)
    name = Path(path).name
    if kind is None and name.startswith("sample-") and name.endswith(".h5"):
        kind = next((k for k in SAMPLE_SPECS if name.startswith(f"sample-{k}-sim")), None)
    if kind is not None:
        return SAMPLE_NAME if kind == "naturalscene" else f"{SAMPLE_NAME}-{kind}"
    return Path(path).stem or "data"
