"""Readers and writers, one module per file format, behind :func:`load_recording`."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError, FormatError
from ..recording import Recording

FORMATS = {
    "h5": "Baccus-lab / retinakit HDF5 layout (.h5, .hdf5): train/, test/, response/binned, test/repeats/cellNN",
    "nwb": "Neurodata Without Borders (.nwb, needs pynwb): units table, one stimulus series, 'repeats' intervals",
    "toml": "an import mapping (.toml) for spike times from MATLAB, NumPy, HDF5, NWB or Kilosort/phy (see data/FORMATS.md)",
}


def load_recording(path: str | os.PathLike[str], cells: list[int] | None = None, rate_keys: list[str] | None = None) -> Recording:
    """Load a recording file, choosing the reader from its content; list the formats when unknown."""
    from . import baccus_h5

    p = Path(path)
    if not p.exists():
        from ..sample import resolve_sample  # `sample`, `sample:whitenoise`: the bundled samples

        p = Path(resolve_sample(path))
    if not p.exists():
        raise DataError(f"file '{p}' does not exist", fix="check the path, or use the bundled sample: `sample` (natural scenes) or `sample:whitenoise`")
    if p.is_file() and p.suffix.lower() == ".toml":
        from .importer import import_recording

        rec = import_recording(p).recording
        return rec if cells is None else rec.select_cells(cells)
    if p.is_file() and baccus_h5.is_hdf5(p) and (p.suffix.lower() == ".nwb" or _is_nwb(p)):
        from .nwb_import import load_nwb

        return load_nwb(p, cells=cells)
    if p.is_file() and baccus_h5.is_hdf5(p):
        return baccus_h5.load(p, cells=cells, rate_keys=rate_keys)
    if p.is_dir():
        raise FormatError(f"'{p}' is a folder, not a recording file", fix="give the .h5 file inside it, or import a spike-sorting folder with `retinakit data import MAPPING.toml`")
    if p.suffix.lower() in (".h5", ".hdf5", ".hdf"):
        return baccus_h5.load(p, cells=cells, rate_keys=rate_keys)  # gives the precise 'not HDF5' error
    known = "; ".join(f"{k}: {v}" for k, v in FORMATS.items())
    raise FormatError(f"cannot tell the format of '{p}'", fix=f"supported formats are {known}; convert other exports with `retinakit data import MAPPING.toml`")


def _is_nwb(path: Path) -> bool:
    from .nwb import is_nwb

    return is_nwb(path)


def save_recording(rec: Recording, path: str | os.PathLike[str]) -> Path:
    """Write a recording in retinakit's HDF5 layout (atomically)."""
    from . import baccus_h5

    return baccus_h5.save(rec, path)
