"""The Baccus-lab HDF5 layout (Maheswaranathan et al. 2023), retinakit's own on-disk format.

Layout (responses are stored ``(n_cells, T)`` as in the released files)::

    /train/time               (T,)           frame onsets, seconds
    /train/stimulus           (T,) | (T,H,W)
    /train/response/binned    (n_cells, T)   spike counts per bin
    /train/response/firing_rate_10ms (n_cells, T)  Gaussian-smoothed rate, Hz (also 5ms, 20ms)
    /test/...                 the same for the repeated segment (binned = mean over repeats)
    /test/repeats/cellNN      (n_repeats, T) spike counts per repeat, NN = cell id (>= 2 digits)
    /train/stas/cellNN        optional, ignored on reading

retinakit adds (and reads when present): root attributes ``retinakit_format``, ``frame_dt``,
``stimulus_kind``, ``provenance`` (JSON), a root dataset ``cell_ids``, and
``<split>/response/true_rate`` (n_cells, T), the expected count per bin of a simulation.
Cells are ordered by their number, never alphabetically (``cell100`` comes after ``cell99``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import DataError, FormatError
from ..recording import Recording, Split

FORMAT_VERSION = 1
_CELL_RE = re.compile(r"^cell(\d+)$")
_RATE_RE = re.compile(r"^firing_rate_\d+ms$")


def cell_name(cell_id: int) -> str:
    """The dataset name of a cell: ``cell07``, ``cell123``."""
    return f"cell{int(cell_id):02d}"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def is_hdf5(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with the HDF5 signature (at offset 0)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _open(path: Path):  # noqa: ANN202 - h5py.File
    import h5py

    if not path.exists():
        raise DataError(f"file '{path}' does not exist", fix="check the path (run `retinakit simulate` to make a sample recording)")
    if path.is_dir():
        raise DataError(f"'{path}' is a folder, not a recording file", fix="give the .h5 file inside it")
    if not is_hdf5(path):
        raise FormatError(f"'{path}' is not an HDF5 file", fix="give a recording in the retinakit/Baccus HDF5 layout, or import it with `retinakit data import`")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"'{path}' cannot be opened as HDF5 (truncated or corrupt: {exc})", fix="copy the file again from its source") from exc


def _read(ds: Any, where: str, name: str) -> np.ndarray:
    try:
        return np.asarray(ds[()])
    except Exception as exc:  # h5py raises OSError/KeyError/ValueError on corrupt blocks
        raise FormatError(f"dataset '{name}' cannot be read ({type(exc).__name__}: {exc})", where, "the file is truncated or corrupt; copy it again") from exc


def _cells_from_group(group: Any) -> dict[int, str]:
    out: dict[int, str] = {}
    for key in group.keys():
        m = _CELL_RE.match(key)
        if m:
            out[int(m.group(1))] = key
    return dict(sorted(out.items()))


def _read_split(f: Any, name: str, where: str, n_cells_hint: int | None, rate_keys: list[str] | None) -> tuple[Split, dict[int, str]]:
    if name not in f:
        raise FormatError(f"group '/{name}' is missing", where, "a recording needs '/train' (and '/test' for scoring); see data/FORMATS.md")
    g = f[name]
    for required in ("time", "stimulus"):
        if required not in g:
            raise FormatError(f"dataset '/{name}/{required}' is missing", where, "see data/FORMATS.md for the layout")
    time = _read(g["time"], where, f"/{name}/time")
    stimulus = _read(g["stimulus"], where, f"/{name}/stimulus")
    if "response" not in g:
        raise FormatError(f"group '/{name}/response' is missing", where, "store spike counts in '/{name}/response/binned'")
    resp = g["response"]
    available = sorted(k for k in resp.keys() if _RATE_RE.match(k))
    counts = None
    if "binned" in resp:
        counts = _read(resp["binned"], where, f"/{name}/response/binned")
        if counts.ndim != 2:
            raise FormatError(f"'/{name}/response/binned' must be (n_cells, T), got shape {counts.shape}", where, "store one row per cell")
        counts = counts.T
    rates: dict[str, np.ndarray] = {}
    wanted = available if rate_keys is None else rate_keys
    for key in wanted:
        if key not in resp:
            raise FormatError(f"rate '/{name}/response/{key}' is missing", where, f"available rates: {', '.join(available) or 'none'}")
        arr = _read(resp[key], where, f"/{name}/response/{key}")
        if arr.ndim != 2:
            raise FormatError(f"'/{name}/response/{key}' must be (n_cells, T), got shape {arr.shape}", where)
        rates[key] = arr.T
    true_rate = None
    if "true_rate" in resp:
        true_rate = _read(resp["true_rate"], where, f"/{name}/response/true_rate").T
    repeats = None
    rep_cells: dict[int, str] = {}
    if "repeats" in g:
        rep_cells = _cells_from_group(g["repeats"])
        if rep_cells:
            arrays = []
            for cid, key in rep_cells.items():
                arr = _read(g["repeats"][key], where, f"/{name}/repeats/{key}")
                if arr.ndim != 2:
                    raise FormatError(f"'/{name}/repeats/{key}' must be (n_repeats, T), got shape {arr.shape}", where)
                arrays.append(arr)
            shapes = {a.shape for a in arrays}
            if len(shapes) != 1:
                raise FormatError(f"repeats have different shapes across cells: {sorted(shapes)}", where, "every cell needs the same number of repeats over the same bins")
            repeats = np.stack(arrays, axis=-1)  # (R, T, n)
    if counts is None:
        if repeats is not None:
            counts = repeats.mean(axis=0)
        elif rates:
            raise FormatError(f"'/{name}/response/binned' is missing (only smoothed rates found)", where, "retinakit fits spike counts; store them in '/{name}/response/binned'")
        else:
            raise FormatError(f"no responses in '/{name}/response'", where, "store spike counts in '/{name}/response/binned'")
    return Split(stimulus=stimulus, time=time, counts=counts, rates=rates, repeats=repeats, true_rate=true_rate), rep_cells


def load(path: str | os.PathLike[str], cells: list[int] | None = None, rate_keys: list[str] | None = None, hash_content: bool = True) -> Recording:
    """Read a recording in the Baccus-lab HDF5 layout.

    ``cells`` selects cell ids (default: all); ``rate_keys`` selects smoothed rates such as
    ``["firing_rate_10ms"]`` (default: all present). Raises :class:`DataError` on any problem.
    """
    p = Path(path)
    where = str(p)
    f = _open(p)
    try:
        try:
            train, _ = _read_split(f, "train", where, None, rate_keys)
            test = None
            rep_cells: dict[int, str] = {}
            if "test" in f:
                test, rep_cells = _read_split(f, "test", where, None, rate_keys)
            attrs = dict(f.attrs)
            n = train.counts.shape[1] if train.counts.ndim == 2 else 0
            if "cell_ids" in f:
                cell_ids = _read(f["cell_ids"], where, "/cell_ids")
            elif rep_cells and len(rep_cells) == n:
                cell_ids = np.array(list(rep_cells.keys()))
            else:
                cell_ids = np.arange(1, n + 1)
            frame_dt = float(attrs["frame_dt"]) if "frame_dt" in attrs else None
            kind = str(attrs.get("stimulus_kind", _guess_kind(p, train.stimulus)))
            prov: dict[str, Any] = {}
            if "provenance" in attrs:
                try:
                    prov = json.loads(str(attrs["provenance"]))
                except json.JSONDecodeError:
                    prov = {}
        except DataError:
            raise
        except Exception as exc:  # h5py reports corrupt metadata as OSError/RuntimeError/KeyError/ValueError...
            raise FormatError(f"the file's structure cannot be read ({type(exc).__name__}: {exc})", where, "the file is truncated, corrupt or not in the retinakit/Baccus layout (see data/FORMATS.md)") from exc
    finally:
        try:
            f.close()
        except Exception:  # noqa: BLE001 - closing a corrupt file may fail; the error above already says why
            pass
    prov["source"] = where
    if hash_content:
        prov["sha256"] = file_sha256(p)
    rec = Recording(train=train, test=test, cell_ids=cell_ids, frame_dt=frame_dt, stimulus_kind=kind, provenance=prov)
    if cells is not None:
        rec = rec.select_cells(cells)
    return rec


def _guess_kind(path: Path, stimulus: np.ndarray) -> str:
    name = path.stem.lower()
    for kind, keys in (("whitenoise", ("whitenoise", "white_noise", "wn")), ("naturalscene", ("naturalscene", "natural"))):
        if any(k in name for k in keys):
            return kind
    if stimulus.ndim == 1:
        return "fullfield"
    return "unknown"


def save(rec: Recording, path: str | os.PathLike[str], compression: str | None = "gzip") -> Path:
    """Write ``rec`` atomically in the Baccus-lab layout (plus retinakit's extras); return the path."""
    import h5py

    target = Path(path)
    with atomic_path(target, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["retinakit_format"] = FORMAT_VERSION
            f.attrs["frame_dt"] = float(rec.frame_dt)  # type: ignore[arg-type]
            f.attrs["stimulus_kind"] = rec.stimulus_kind
            prov = {k: v for k, v in rec.provenance.items() if k not in ("source", "sha256")}
            f.attrs["provenance"] = json.dumps(prov, default=str)
            f.create_dataset("cell_ids", data=rec.cell_ids.astype(np.int64))
            for name, split in (("train", rec.train), ("test", rec.test)):
                if split is None:
                    continue
                g = f.create_group(name)
                g.create_dataset("time", data=split.time)
                chunks = (min(256, split.n_bins),) + split.stimulus.shape[1:] if split.stimulus.ndim == 3 else None
                g.create_dataset("stimulus", data=split.stimulus, compression=compression, chunks=chunks)
                r = g.create_group("response")
                r.create_dataset("binned", data=split.counts.T, compression=compression)
                for key, rate in split.rates.items():
                    r.create_dataset(key, data=rate.T, compression=compression)
                if split.true_rate is not None:
                    r.create_dataset("true_rate", data=split.true_rate.T, compression=compression)
                if split.repeats is not None:
                    rg = g.create_group("repeats")
                    for k, cid in enumerate(rec.cell_ids):
                        rg.create_dataset(cell_name(int(cid)), data=split.repeats[:, :, k], compression=compression)
    return target
