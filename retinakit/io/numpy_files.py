"""NumPy ``.npy`` / ``.npz`` files, including object arrays of per-unit spike-time arrays.

Object arrays are stored as pickles, and an ordinary ``np.load(allow_pickle=True)`` would run
whatever code a pickle names. Here they are decoded by a restricted unpickler that only rebuilds
NumPy arrays, dtypes and scalars (plus Python lists, tuples and dicts); any other object in the
file is refused with a :class:`~retinakit.errors.FormatError`.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import ConfigError, FormatError
from .variables import missing_variable

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds NumPy arrays and scalars."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module in ("numpy.dtypes", "numpy") and name.endswith("DType"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_npy(fh: IO[bytes], label: str) -> Any:
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError/EOFError/... on a foreign file
        raise FormatError(f"'{label}' is not a NumPy .npy array ({type(exc).__name__}: {exc})", fix="save it with numpy.save") from exc
    if not dtype.hasobject:
        fh.seek(0)
        try:
            return npformat.read_array(fh, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise FormatError(f"'{label}' cannot be read ({type(exc).__name__}: {exc})", fix="the file is truncated or corrupt; save it again") from exc
    try:
        value = _SafeUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        raise FormatError(f"'{label}' holds Python objects other than arrays ({exc})", fix="store numbers, or an object array of numeric arrays (one per unit)") from exc
    except Exception as exc:  # noqa: BLE001
        raise FormatError(f"'{label}' holds an object array that cannot be read ({type(exc).__name__}: {exc})", fix="save it again with numpy.save") from exc
    return value


def _plain(value: Any) -> Any:
    """Object arrays -> lists (of plain values); 0-d object arrays -> their content; dicts kept."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            if value.ndim == 0:
                return _plain(value.item())
            return [_plain(v) for v in value.ravel(order="C")]
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def read_variable(path: Path, name: str | None, key: str) -> Any:
    """Read a ``.npy`` array, or member ``name`` of a ``.npz`` (all members as a dict when ``name`` is None)."""
    label = str(path)
    if path.suffix.lower() == ".npz" or zipfile.is_zipfile(path):
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise FormatError(f"'{path}' is not a readable .npz file ({exc})", fix="save it with numpy.savez") from exc
        with zf:
            members = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
            if name is None:
                return {k: _member(zf, m, f"{label}:{k}") for k, m in members.items()}
            if name not in members:
                raise missing_variable(name, path, sorted(members), key)
            return _member(zf, members[name], f"{label}:{name}")
    if name is not None:
        raise ConfigError(f"{key}: '{path.name}' is a single .npy array, it has no variable '{name}'", fix=f"remove {key} (or use an .npz file with named arrays)")
    with open(path, "rb") as fh:
        return _plain(_load_npy(fh, label))


def _member(zf: zipfile.ZipFile, member: str, label: str) -> Any:
    try:
        raw = zf.read(member)
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise FormatError(f"'{label}' cannot be read ({exc})", fix="the .npz file is truncated or corrupt; save it again") from exc
    return _plain(_load_npy(io.BytesIO(raw), label))
