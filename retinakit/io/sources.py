"""Reading one named variable from a lab's file, whatever its format, as plain Python values.

Every reader (:mod:`.matlab`, :mod:`.numpy_files`, :mod:`.hdf5_datasets`, :mod:`.nwb`) returns
the same kinds of value, so the import logic does not care where a piece came from:

* a numpy array for numbers (and strings) — MATLAB arrays keep MATLAB's shape (rows, columns, ...);
* a ``list`` for a MATLAB cell array, a NumPy object array, an HDF5 variable-length or
  reference dataset (one item per element, MATLAB's column-major order);
* a ``dict`` for a scalar MATLAB struct or an HDF5 group (field/member name -> value);
* a ``list`` of ``dict`` for a MATLAB struct array (one dict per element).

Variable names can reach inside structs and groups: ``exp.units`` or ``exp/units``.

This module dispatches to the readers; the helpers they share (and the importer uses) are in
:mod:`.variables`, below the readers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError


class FileCache:
    """Keeps each file's decoded variables and SHA-256 so a file read for several pieces is read once."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str, str | None], Any] = {}
        self.files: dict[str, str] = {}

    def read(self, path: Path, fmt: str, name: str | None, key: str) -> Any:
        """The value of variable ``name`` in ``path`` (``key`` names the mapping key for errors)."""
        cache_key = (str(path), fmt, name)
        if cache_key not in self._values:
            self._values[cache_key] = read_variable(path, fmt, name, key)
            self.note_file(path)
        return self._values[cache_key]

    def note_file(self, path: Path) -> None:
        """Remember ``path`` (and its content hash) for the provenance."""
        from .baccus_h5 import file_sha256

        p = str(path)
        if p not in self.files and path.is_file():
            self.files[p] = file_sha256(path)


def read_variable(path: Path, fmt: str, name: str | None, key: str) -> Any:
    """Read variable ``name`` from ``path`` in format ``fmt`` (matlab, numpy, hdf5, nwb)."""
    if not path.exists():
        raise DataError(f"file '{path}' does not exist", fix=f"check {key.rsplit('.', 1)[0]}.file in the mapping (relative paths start at the mapping's folder)")
    if path.is_dir():
        raise DataError(f"'{path}' is a folder, not a file", fix=f"check {key.rsplit('.', 1)[0]}.file in the mapping")
    if fmt == "matlab":
        from . import matlab

        return matlab.read_variable(path, name, key)
    if fmt == "numpy":
        from . import numpy_files

        return numpy_files.read_variable(path, name, key)
    if fmt == "hdf5":
        from . import hdf5_datasets

        return hdf5_datasets.read_variable(path, name, key)
    if fmt == "nwb":
        from . import nwb

        return nwb.read_variable(path, name, key)
    raise ConfigError(f"{key}: cannot read variables from a '{fmt}' source", fix="use a .mat, .npy/.npz, .h5 or .nwb file")
