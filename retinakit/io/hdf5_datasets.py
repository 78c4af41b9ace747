"""Generic HDF5 files (not retinakit's own layout): read a named dataset or group.

* a numeric dataset -> array, exactly as stored (no transposition: unlike MATLAB v7.3, a generic
  HDF5 file keeps its writer's axis order);
* a variable-length dataset (``h5py.vlen_dtype``) -> one array per element (per-unit spike times);
* a dataset of object references -> the referenced datasets, one per element;
* a group -> a dict of its members (e.g. ``spikes/unit_01``, ``spikes/unit_02``: one dataset per unit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, RetinakitError
from .variables import missing_variable, open_hdf5


def read_variable(path: Path, name: str | None, key: str) -> Any:
    """Read dataset or group ``name`` (an HDF5 path such as ``/sorting/spike_times``)."""
    from ..errors import ConfigError

    if not name:
        raise ConfigError(f"{key.rsplit('.', 1)[0]}.variable: missing", fix="name the HDF5 dataset or group, e.g. '/spikes/times'")
    with open_hdf5(path, "an HDF5 file") as f:
        clean = "/" + name.strip("/")
        try:
            if clean not in f:
                raise missing_variable(name, path, _list(f), key)
            return _value(f[clean], f)
        except RetinakitError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt blocks surface as OSError/RuntimeError/KeyError/ValueError
            raise FormatError(f"'{name}' in '{path}' cannot be read ({type(exc).__name__}: {exc})", fix="the file is truncated or corrupt; copy it again") from exc


def _list(f: Any, limit: int = 50) -> list[str]:
    import h5py

    names: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if len(names) < limit:
            names.append(("/" + name) + ("/" if isinstance(obj, h5py.Group) else ""))

    f.visititems(visit)
    return names


def _value(obj: Any, f: Any) -> Any:
    import h5py

    if isinstance(obj, h5py.Group):
        return {k: _value(v, f) for k, v in obj.items()}
    dt = obj.dtype
    if h5py.check_vlen_dtype(dt) is not None and h5py.check_string_dtype(dt) is None:
        return [np.asarray(v) for v in np.asarray(obj[()], dtype=object).ravel()]
    if dt == h5py.ref_dtype:
        return [_value(f[r], f) for r in np.asarray(obj[()]).ravel()]
    if h5py.check_string_dtype(dt) is not None:
        data = obj.asstr()[()]
        return data if isinstance(data, str) else np.asarray(data, dtype=str)
    return np.asarray(obj[()])
