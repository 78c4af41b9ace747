"""Helpers shared by the format readers and the importer: nested variable names, the error for a
missing variable, plain values as vectors, scalars and spike times, and opening HDF5 files.

The readers (:mod:`.matlab`, :mod:`.numpy_files`, :mod:`.hdf5_datasets`, :mod:`.nwb`) import from
here; :mod:`.sources` dispatches to them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, FormatError

_DIGITS = re.compile(r"(\d+)\D*$")


def missing_variable(name: str, path: Path, available: list[str], key: str) -> ConfigError:
    """The error for a variable that is not in a file, listing what is there."""
    import difflib

    close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
    return ConfigError(f"{key}: '{name}' is not in '{path.name}'", fix=f"{hint}the file holds: {shown or 'nothing readable'}")


def split_name(name: str) -> list[str]:
    """Parts of a nested variable name: ``exp.units`` or ``/exp/units`` -> ``['exp', 'units']``."""
    return [p for p in re.split(r"[./]", name) if p]


def descend(value: Any, parts: list[str], name: str, path: Path, key: str) -> Any:
    """Walk into nested dicts (structs, groups) along ``parts``."""
    for i, part in enumerate(parts):
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            value = value[0]  # a 1x1 MATLAB struct array behaves as a scalar struct
        if isinstance(value, dict) and part in value:
            value = value[part]
            continue
        prefix = ".".join(parts[:i])
        if isinstance(value, dict):
            raise missing_variable(name, path, [f"{prefix}.{a}" for a in sorted(map(str, value))], key)
        raise ConfigError(f"{key}: '{name}' is not in '{path.name}' ('{prefix}' is not a struct or group)", fix="check the variable name")
    return value


def as_vector(value: Any, key: str, what: str, numeric: bool = True) -> np.ndarray:
    """A 1-D array from a vector (MATLAB 1xN / Nx1 included); a clear error for anything else."""
    if isinstance(value, list):
        if all(isinstance(v, (np.ndarray, int, float, np.generic)) and np.size(v) == 1 for v in value):
            value = np.array([np.asarray(v).item() for v in value])
        elif all(isinstance(v, str) for v in value):
            value = np.array(value)
        else:
            kind = "struct array" if value and all(isinstance(v, dict) for v in value) else "cell/object array"
            raise DataError(f"{key}: {what} must be a vector, got a {kind} of {len(value)} elements", fix="store a plain numeric vector")
    if isinstance(value, dict):
        raise DataError(f"{key}: {what} must be a vector, got a struct/group with fields {sorted(map(str, value))[:8]}", fix="name the field that holds the vector, e.g. 'exp.frame_times'")
    if isinstance(value, (str, bytes)):
        value = np.array([value])
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim > 1:
        big = [d for d in arr.shape if d != 1]
        if len(big) > 1:
            raise DataError(f"{key}: {what} must be a vector, got an array of shape {arr.shape}", fix="store one value per element as a 1-D (or 1xN / Nx1) array")
        arr = arr.reshape(-1)
    if numeric:
        if arr.dtype == np.bool_:
            arr = arr.astype(np.int64)
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise DataError(f"{key}: {what} must be real numbers, got dtype {arr.dtype}", fix="store real numbers")
    return arr


def scalar_of(value: Any) -> Any:
    """A Python scalar (str, int, float) from a MATLAB-style 1x1 array, a string or a number."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1:
        return scalar_of(value[0])
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):  # a ragged cell array: not a scalar
        return value
    if arr.size == 1:
        item = arr.reshape(()).item()
        if isinstance(item, bytes):
            return item.decode("utf-8", "replace")
        if isinstance(item, float) and item.is_integer():
            return int(item)
        return item
    if arr.size == 0:
        return None
    return value


def id_from_name(name: str) -> int | None:
    """The unit number in a name such as ``unit_07``, ``cell12``, ``3``; None when there is none."""
    m = _DIGITS.search(str(name))
    return int(m.group(1)) if m else None


def spike_array(value: Any, key: str, unit_label: str) -> np.ndarray:
    """One unit's spike times as a 1-D float64 array (an empty MATLAB array is zero spikes)."""
    if isinstance(value, (list, dict)) and len(value) == 0:
        return np.zeros(0)
    arr = np.asarray(value)
    if arr.dtype == object:
        raise DataError(f"{key}: the spike times of {unit_label} are not numbers (got nested cells/objects)", fix="store each unit's spike times as a numeric vector")
    if arr.size == 0:
        return np.zeros(0)
    if arr.ndim > 1 and sum(d != 1 for d in arr.shape) > 1:
        raise DataError(f"{key}: the spike times of {unit_label} must be a vector, got shape {arr.shape}", fix="store one vector of times per unit")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise DataError(f"{key}: the spike times of {unit_label} must be real numbers, got dtype {arr.dtype}", fix="store numbers")
    out = arr.reshape(-1).astype(np.float64)
    if not np.all(np.isfinite(out)):
        bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        raise DataError(f"{key}: the spike times of {unit_label} contain {bad} NaN or infinite values", fix="remove them (NaN padding is not spike times)")
    return out


def hdf5_signature_offset(path: Path) -> int | None:
    """Where the HDF5 signature is (0, or 512 for a MATLAB v7.3 file with its user block); None if absent."""
    sig = b"\x89HDF\r\n\x1a\n"
    try:
        with open(path, "rb") as fh:
            for off in (0, 512, 1024, 2048):
                fh.seek(off)
                if fh.read(8) == sig:
                    return off
    except OSError:
        return None
    return None


def open_hdf5(path: Path, what: str) -> Any:
    """Open an HDF5 file read-only with a :class:`FormatError` for anything that is not one."""
    import h5py

    if hdf5_signature_offset(path) is None:
        raise FormatError(f"'{path}' is not an HDF5 file", fix=f"check the file given for {what} (or its format key)")
    try:
        return h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise FormatError(f"'{path}' cannot be opened as HDF5 (truncated or corrupt: {exc})", fix="copy the file again from its source") from exc
