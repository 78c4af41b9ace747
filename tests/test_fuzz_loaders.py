"""Fuzzing the import loaders and `retinakit data import`: MAT v5 / v7.3, NPZ / NPY, generic HDF5,
NWB, Kilosort/phy folders and the TOML mappings themselves.

Every case ends in a :class:`~retinakit.errors.RetinakitError` (CLI: one line ``error: ...``,
exit status 2) or in a validated recording (CLI: exit 0, and the written file loads again).
Anything else (a traceback, exit status 1 "internal error") fails the test.

Four kinds of damage, the first three applied to a small valid export of a simulated experiment per format:

* bytes: bit flips and truncation of one of the files;
* structure: one variable / dataset / file replaced by a transformed version of itself (empty,
  NaN or inf inside, reversed (decreasing times), negated, shifted far out of range, scaled to
  1e300, cast to another dtype, reshaped, truncated, strings, object arrays, a declared-huge
  shape...) or deleted;
* mappings: keys set to values of the wrong type, unknown keys, missing sections, broken TOML;
* command-line options of `fit`, `probe` and `data inspect` with odd values (click's own usage
  errors, "Error: ...", exit 2, are accepted as well).

The default run tries a sample; ``pytest -m slow tests/test_fuzz_loaders.py`` runs 1000+ cases
(``RETINAKIT_FUZZ_EXAMPLES`` per slow test, default 300: 1200 cases).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from helpers.lab_exports import (
    simulate_export,
    struct_mapping,
    write_hdf5,
    write_mat73,
    write_mat_cell,
    write_mat_struct,
    write_npz,
    write_nwb,
    write_phy,
)

from retinakit.cli import main
from retinakit.errors import RetinakitError
from retinakit.io import load_recording
from retinakit.io.importer import import_recording
from retinakit.recording import Recording

FAST = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
SLOW = settings(
    max_examples=int(os.environ.get("RETINAKIT_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)


# ----------------------------------------------------------------------------- the valid exports
@dataclass
class Template:
    """A folder of valid files for one source format, the mapping that imports it, and how to rewrite a variable."""

    name: str
    files: dict[str, bytes]  # relative path -> content (the mapping is "m.toml")
    variables: list[str]  # what the structural fuzzer may replace: "file.ext:variable" or "file.ext"
    rewrite: Callable[[Path, str, Any], None]  # (folder, variable, new value or DELETE)
    extra: dict[str, Any] = field(default_factory=dict)

    def materialise(self, folder: Path) -> Path:
        """Write the files into ``folder``; return the mapping path."""
        for rel, data in self.files.items():
            p = folder / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return folder / "m.toml"


DELETE = object()


def _export():  # noqa: ANN202 - a LabExport
    return simulate_export(frame_shape=(3, 4), n_units=3, train_block_frames=20, repeat_frames=10, n_repeats=2, seed=7)


def _read_folder(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _mapping(text: str) -> bytes:
    return textwrap.dedent(text).lstrip().encode()


def _rewrite_mat5(folder: Path, var: str, value: Any, compress: bool = False) -> None:
    import scipy.io

    fname, name = var.split(":")
    path = folder / fname
    data = {k: v for k, v in scipy.io.loadmat(str(path), squeeze_me=False).items() if not k.startswith("__")}
    if value is DELETE:
        data.pop(name, None)
    else:
        data[name] = value
    scipy.io.savemat(str(path), data, do_compression=compress)


def _rewrite_npz(folder: Path, var: str, value: Any) -> None:
    fname, name = var.split(":")
    path = folder / fname
    with np.load(path, allow_pickle=True) as z:  # our own template file
        data = {k: z[k] for k in z.files}
    if value is DELETE:
        data.pop(name, None)
    else:
        data[name] = value
    np.savez(path, **data)


def _rewrite_npy(folder: Path, var: str, value: Any) -> None:
    path = folder / var
    if value is DELETE:
        path.unlink(missing_ok=True)
    elif isinstance(value, bytes):
        path.write_bytes(value)
    else:
        np.save(path, value, allow_pickle=True)


def _rewrite_h5(folder: Path, var: str, value: Any) -> None:
    import h5py

    fname, name = var.split(":")
    with h5py.File(folder / fname, "r+") as f:
        attrs = dict(f[name].attrs) if name in f else {}
        if name in f:
            del f[name]
        if value is DELETE:
            return
        if isinstance(value, tuple) and value and value[0] == "declared":  # a huge shape, no data written
            f.create_dataset(name, shape=value[1], dtype=value[2], chunks=True, compression="gzip")
        else:
            arr = np.asarray(value)
            if arr.dtype == object:
                arr = np.array([str(v) for v in arr.ravel()], dtype=h5py.string_dtype())
            elif arr.dtype.kind == "U":
                arr = arr.astype(h5py.string_dtype())
            f[name] = arr
        for k, v in attrs.items():  # keep NWB's neurodata attributes (unit, conversion...)
            f[name].attrs[k] = v


def _rewrite_mat73(folder: Path, var: str, value: Any, base: dict[str, Any]) -> None:
    fname, name = var.split(":")
    variables = deep_copy(base)
    parts = name.split(".")
    node = variables
    for p in parts[:-1]:
        node = node[p]
    if value is DELETE:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    write_mat73(folder / fname, variables)


def deep_copy(obj: Any) -> Any:
    """A deep copy of nested dicts/lists of arrays."""
    if isinstance(obj, dict):
        return {k: deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [deep_copy(v) for v in obj]
    return np.array(obj, copy=True) if isinstance(obj, np.ndarray) else obj


_TEMPLATES: dict[str, Template] = {}


def template(name: str) -> Template:
    """The valid export of format ``name`` (built once per session)."""
    if name not in _TEMPLATES:
        with tempfile.TemporaryDirectory() as d:
            _TEMPLATES[name] = _BUILDERS[name](Path(d))
    return _TEMPLATES[name]


def _build_mat5_cell(d: Path) -> Template:
    exp = _export()
    write_mat_cell(d / "cells.mat", exp)
    (d / "m.toml").write_bytes(_mapping("""
        [spikes]
        file = "cells.mat"
        variable = "spikes"
        unit = "seconds"
        [frames]
        variable = "frame_times"
        unit = "seconds"
        [stimulus]
        variable = "stim"
        kind = "whitenoise"
        [repeats]
        variable = "rep_start"
        length = 10
        length_unit = "frames"
        """))
    return Template("mat5_cell", _read_folder(d), [f"cells.mat:{v}" for v in ("spikes", "frame_times", "stim", "rep_start")], _rewrite_mat5)


def _build_mat5_cell_compressed(d: Path) -> Template:
    """The cell-array export saved compressed (MATLAB's default since v7): zlib-compressed variables."""
    tpl = _build_mat5_cell(d)
    _rewrite_mat5(d, "cells.mat:stim", _original(tpl, d, "cells.mat:stim"), compress=True)
    return Template("mat5_cell_z", _read_folder(d), tpl.variables, lambda f, v, x: _rewrite_mat5(f, v, x, compress=True))


def _build_mat5_struct(d: Path) -> Template:
    exp = _export()
    write_mat_struct(d / "rec.mat", exp)
    (d / "m.toml").write_bytes(struct_mapping(keep=["good"], repeat_frames=10).encode())
    return Template("mat5_struct", _read_folder(d), [f"rec.mat:{v}" for v in ("units", "frame_onsets", "stimulus", "repeat_starts")], _rewrite_mat5)


def _build_mat73(d: Path) -> Template:
    exp = _export()
    units = [{"id": float(exp.ids[k]), "times_ms": exp.spikes[k] / exp.fs * 1e3, "quality": exp.quality[k]} for k in range(3)]
    base = {
        "exp": {"units": units, "onsets": exp.onsets.astype(np.float64), "movie": np.transpose(exp.stimulus, (1, 2, 0))},
        "starts": exp.repeat_start_s,
    }
    write_mat73(d / "v73.mat", base)
    (d / "m.toml").write_bytes(_mapping("""
        [recording]
        sample_rate = 10000
        [spikes]
        file = "v73.mat"
        variable = "exp.units"
        field = "times_ms"
        id_field = "id"
        unit = "ms"
        [units]
        field = "quality"
        keep = ["good", "mua"]
        [frames]
        variable = "exp.onsets"
        unit = "samples"
        [stimulus]
        variable = "exp.movie"
        [repeats]
        variable = "starts"
        length = 10
        length_unit = "frames"
        """))
    names = ["exp.units", "exp.onsets", "exp.movie", "starts"]
    return Template("mat73", _read_folder(d), [f"v73.mat:{v}" for v in names], lambda f, v, x: _rewrite_mat73(f, v, x, base), {"base": base})


def _build_npz(d: Path) -> Template:
    exp = _export()
    write_npz(d / "sorted.npz", exp)
    (d / "m.toml").write_bytes(_mapping("""
        [spikes]
        file = "sorted.npz"
        variable = "spike_times"
        ids_variable = "unit_ids"
        unit = "seconds"
        [units]
        variable = "quality"
        keep = ["good"]
        [frames]
        variable = "frame_times"
        unit = "seconds"
        [stimulus]
        variable = "stimulus"
        kind = "whitenoise"
        [repeats]
        variable = "repeat_starts"
        length = 10
        length_unit = "frames"
        """))
    names = ["spike_times", "unit_ids", "quality", "frame_times", "stimulus", "repeat_starts"]
    return Template("npz", _read_folder(d), [f"sorted.npz:{v}" for v in names], _rewrite_npz)


def _build_npy(d: Path) -> Template:
    exp = _export()
    obj = np.empty(len(exp.ids), dtype=object)
    for k in range(len(exp.ids)):
        obj[k] = exp.spikes[k] / exp.fs
    np.save(d / "spikes.npy", obj, allow_pickle=True)
    np.save(d / "frames.npy", exp.onset_s)
    np.save(d / "stimulus.npy", exp.stimulus)
    np.save(d / "repeat_starts.npy", exp.repeat_start_s)
    (d / "m.toml").write_bytes(_mapping("""
        [spikes]
        file = "spikes.npy"
        unit = "seconds"
        [frames]
        file = "frames.npy"
        unit = "seconds"
        [stimulus]
        file = "stimulus.npy"
        [repeats]
        file = "repeat_starts.npy"
        length = 10
        length_unit = "frames"
        """))
    return Template("npy", _read_folder(d), ["spikes.npy", "frames.npy", "stimulus.npy", "repeat_starts.npy"], _rewrite_npy)


def _build_phy(d: Path) -> Template:
    exp = _export()
    write_phy(d / "ks", exp)
    np.save(d / "ks" / "repeat_starts.npy", exp.onsets[exp.repeat_starts])
    (d / "m.toml").write_bytes(_mapping("""
        [spikes]
        folder = "ks"
        [units]
        all = true
        [frames]
        file = "ks/frame_onsets.npy"
        unit = "samples"
        [stimulus]
        file = "ks/stimulus.npy"
        [repeats]
        file = "ks/repeat_starts.npy"
        unit = "samples"
        length = 10
        length_unit = "frames"
        """))
    names = ["spike_times.npy", "spike_clusters.npy", "frame_onsets.npy", "stimulus.npy", "repeat_starts.npy", "params.py", "cluster_group.tsv"]
    return Template("phy", _read_folder(d), [f"ks/{n}" for n in names], _rewrite_npy)


def _build_hdf5(d: Path) -> Template:
    exp = _export()
    write_hdf5(d / "rec.h5", exp)
    (d / "m.toml").write_bytes(_mapping("""
        [spikes]
        file = "rec.h5"
        variable = "/sorting/units"
        unit = "ms"
        [frames]
        variable = "/sync/frame_onsets"
        unit = "samples"
        sample_rate = 10000
        [stimulus]
        variable = "/stimulus/frames"
        [repeats]
        index_variable = "/stimulus/repeat_index"
        """))
    names = ["sorting/units", "sorting/units/unit_003", "sync/frame_onsets", "stimulus/frames", "stimulus/repeat_index"]
    return Template("hdf5", _read_folder(d), [f"rec.h5:{v}" for v in names], _rewrite_h5)


def _build_nwb(d: Path) -> Template:
    exp = _export()
    write_nwb(d / "rec.nwb", exp)
    (d / "m.toml").write_bytes(_mapping("""
        [spikes]
        file = "rec.nwb"
        [units]
        field = "quality"
        keep = ["good", "mua"]
        [stimulus]
        file = "rec.nwb"
        variable = "checkerboard"
        kind = "whitenoise"
        [repeats]
        file = "rec.nwb"
        intervals = "repeats"
        """))
    names = [
        "units/spike_times", "units/spike_times_index", "units/id", "units/quality",
        "stimulus/presentation/checkerboard/data", "stimulus/presentation/checkerboard/timestamps",
        "intervals/repeats/start_time", "intervals/repeats/stop_time", "intervals/repeats/id",
    ]
    return Template("nwb", _read_folder(d), [f"rec.nwb:{v}" for v in names], _rewrite_h5)


_BUILDERS: dict[str, Callable[[Path], Template]] = {
    "mat5_cell": _build_mat5_cell,
    "mat5_cell_z": _build_mat5_cell_compressed,
    "mat5_struct": _build_mat5_struct,
    "mat73": _build_mat73,
    "npz": _build_npz,
    "npy": _build_npy,
    "phy": _build_phy,
    "hdf5": _build_hdf5,
    "nwb": _build_nwb,
}
FORMATS = list(_BUILDERS)


# ----------------------------------------------------------------------------- outcome
def check_import(mapping: Path, direct: Path | None = None) -> str:
    """Import through the CLI (and the library); return 'ok' or 'error', fail on anything else.

    ``direct``: a recording file to read without the mapping (NWB) through `data inspect`.
    """
    runner = CliRunner()
    out = mapping.parent / "out.h5"
    if direct is not None:
        res = runner.invoke(main, ["data", "inspect", str(direct), "--json", "--no-sta"])
    else:
        res = runner.invoke(main, ["data", "import", str(mapping), "--out", str(out), "--force"])
    if res.exit_code not in (0, 2):
        # show the real traceback of the bug
        if direct is not None:
            load_recording(direct)
        else:
            import_recording(mapping)
        pytest.fail(f"exit {res.exit_code}: {res.output}")
    assert "Traceback" not in res.output, res.output
    if res.exit_code == 2:
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        outcome = "error"
    else:
        outcome = "ok"
        if direct is None:
            rec = load_recording(out)  # what was written loads again as a validated recording
            assert isinstance(rec, Recording)
    if direct is None and "nwb" not in mapping.parent.name:  # (NWB reads take ~1 s: the CLI run suffices there)
        try:  # the library agrees with the CLI
            lib = import_recording(mapping)
            assert isinstance(lib.recording, Recording)
            lib_outcome = "ok"
        except RetinakitError as exc:
            assert "\n" not in exc.one_line()
            lib_outcome = "error"
        assert lib_outcome == outcome
    return outcome


# ----------------------------------------------------------------------------- 1. bytes
def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, bit in flips:
        if b:
            b[pos % len(b)] ^= 1 << (bit % 8)
    if cut is not None:
        b = b[: cut % (len(b) + 1)]
    return bytes(b)


@st.composite
def byte_cases(draw: Any, formats: list[str] = FORMATS) -> tuple[str, str, list[tuple[int, int]], int | None, bool]:
    fmt = draw(st.sampled_from(formats))
    files = sorted(k for k in template(fmt).files if k != "m.toml")
    target = draw(st.sampled_from(files))
    size = len(template(fmt).files[target])
    # positions spread over the whole file, and concentrated in its first 2 kB (headers)
    pos = st.one_of(st.integers(0, max(0, size - 1)), st.integers(0, min(size, 2048)))
    flips = draw(st.lists(st.tuples(pos, st.integers(0, 7)), max_size=6))
    cut = draw(st.one_of(st.none(), st.integers(0, size)))
    if not flips and cut is None:
        cut = draw(st.integers(0, max(0, size - 1)))
    direct = fmt == "nwb" and draw(st.booleans())
    return fmt, target, flips, cut, direct


def check_bytes_case(tmp_path_factory: Any, case: tuple[str, str, list[tuple[int, int]], int | None, bool]) -> None:
    fmt, target, flips, cut, direct = case
    folder = tmp_path_factory.mktemp(f"fb_{fmt}")
    mapping = template(fmt).materialise(folder)
    p = folder / target
    p.write_bytes(_mutate(p.read_bytes(), flips, cut))
    check_import(mapping, direct=p if direct else None)


@FAST
@given(case=byte_cases())
def test_fuzz_bytes(tmp_path_factory: Any, case: Any) -> None:
    check_bytes_case(tmp_path_factory, case)


@pytest.mark.slow
@SLOW
@given(case=byte_cases())
def test_fuzz_bytes_slow(tmp_path_factory: Any, case: Any) -> None:
    check_bytes_case(tmp_path_factory, case)


# ----------------------------------------------------------------------------- 2. structure
TRANSFORMS = [
    "delete", "empty", "nan", "inf", "reverse", "negate", "shift", "huge", "tiny", "int8", "uint64", "bool", "complex", "float16",
    "strings", "column", "row", "3d", "transpose", "scalar", "truncate", "double", "repeat_each", "random", "objects", "zeros", "declared",
]


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
        out = np.empty(len(value), dtype=object)
        out[:] = value
        return out
    return np.asarray(value)


def transform(orig: Any, how: str, k: int, seed: int) -> Any:
    """A damaged version of ``orig`` (see module docstring)."""
    rng = np.random.default_rng(seed)
    a = _as_array(orig)
    if how == "delete":
        return DELETE
    if how == "declared":
        return ("declared", (2**31, 2**12), "float64")
    if how == "objects":
        out = np.empty(3, dtype=object)
        out[:] = [np.array(["a"]), [1, [2, 3]], None] if k % 2 else [np.arange(3.0), np.array([[1.0]]), np.array([], dtype=np.float64)]
        return out
    if how == "strings":
        return np.array(["x"] * max(1, min(a.size, 5)) if k % 2 else ["1.5", "2", "three"])
    if how == "random":
        shape = tuple(int(s) for s in rng.integers(0, 6, size=k % 4))
        return rng.standard_normal(shape)
    if how == "scalar":
        return np.float64([0.0, -1.0, 3.5, np.nan, 1e308][k % 5])
    if a.dtype == object:  # cell arrays / object arrays of per-unit vectors: damage one element
        out = a.copy()
        if out.size == 0:
            return out
        i = k % out.size
        elem = np.asarray(out.ravel()[i]) if not isinstance(out.ravel()[i], (dict, list)) else np.arange(3.0)
        try:
            new = transform(elem, how, k, seed)
        except Exception:  # noqa: BLE001 - the transform does not apply to this element
            new = np.array(["x"])
        out.ravel()[i] = new if new is not DELETE else np.zeros(0)
        if how in ("empty", "truncate", "reverse", "double"):
            return transform_container(out, how, k)
        return out
    if a.dtype.names:  # a MATLAB struct array from loadmat: damage one field of one element
        out = a.copy()
        if out.size == 0:
            return out
        name = a.dtype.names[k % len(a.dtype.names)]
        el = out.ravel()[k % out.size]
        val = el[name]
        inner = val if not (isinstance(val, np.ndarray) and val.dtype == object and val.size == 1) else val.ravel()[0]
        try:
            new = transform(np.asarray(inner), how, k, seed)
        except Exception:  # noqa: BLE001
            new = np.array(["x"])
        el[name] = np.zeros((0, 0)) if new is DELETE or isinstance(new, tuple) else new
        if how in ("empty", "truncate", "reverse", "double"):
            return transform_container(out, how, k)
        return out
    x = a.astype(np.float64) if a.dtype.kind in "iub" else a
    if how == "empty":
        return a.reshape(-1)[:0] if k % 2 else np.zeros((0,) + a.shape[1:], dtype=a.dtype)
    if how in ("nan", "inf"):
        if x.dtype.kind not in "fc":
            x = x.astype(np.float64)
        y = x.copy()
        if y.size:
            y.reshape(-1)[k % y.size] = np.nan if how == "nan" else (np.inf if k % 2 else -np.inf)
        return y
    if how == "reverse":
        return a[::-1].copy() if a.ndim else a
    if how == "negate":
        return -x
    if how == "shift":
        return x + (1e6 if k % 2 else -1e6)
    if how == "huge":
        return x * 1e300
    if how == "tiny":
        return x * 1e-12
    if how == "int8":
        return a.astype(np.int8) if a.dtype.kind in "iufb" else a
    if how == "uint64":
        return np.abs(x).astype(np.uint64) if a.dtype.kind in "iufb" else a
    if how == "bool":
        return a.astype(bool) if a.dtype.kind in "iufb" else a
    if how == "complex":
        return x.astype(np.complex128) + 1j if a.dtype.kind in "iufb" else a
    if how == "float16":
        return x.astype(np.float16) if a.dtype.kind in "iufb" else a
    if how == "column":
        return a.reshape(-1, 1)
    if how == "row":
        return a.reshape(1, -1)
    if how == "3d":
        return a.reshape((1, 1, -1)) if k % 2 else np.stack([a, a], axis=-1)
    if how == "transpose":
        return a.T.copy() if a.ndim > 1 else a.reshape(-1, 1).T.copy()
    if how == "truncate":
        return a[: max(0, (a.shape[0] if a.ndim else 1) * (k % 4) // 4)] if a.ndim else a
    if how == "double":
        return np.concatenate([a, a]) if a.ndim else a
    if how == "repeat_each":
        return np.repeat(a, 2, axis=0) if a.ndim else a
    if how == "zeros":
        return np.zeros_like(x)
    raise AssertionError(how)


def transform_mat73(orig: Any, how: str, k: int, seed: int) -> Any:
    """:func:`transform` for the plain Python values :func:`write_mat73` stores (lists of dicts, arrays, str)."""
    if isinstance(orig, list) and orig and all(isinstance(e, dict) for e in orig):  # a struct array
        out = [dict(e) for e in orig]
        if how == "delete":
            return DELETE
        if how in ("empty", "truncate", "reverse", "double"):
            return [out[int(i)] for i in transform_container(np.arange(len(out)), how, k)]
        el = out[k % len(out)]
        name = sorted(el)[k % len(el)]
        el[name] = transform_mat73(el[name], how, k, seed)
        if el[name] is DELETE:
            del el[name]
        return out
    if isinstance(orig, str):
        return DELETE if how == "delete" else {"empty": "", "double": orig * 2, "reverse": orig[::-1]}.get(how, float(k))
    new = transform(np.asarray(orig), how, k, seed)
    if isinstance(new, tuple):
        return np.zeros((0,))
    if isinstance(new, np.ndarray) and new.dtype.kind == "U":
        return str(new.ravel()[0]) if new.size else ""
    if isinstance(new, np.ndarray) and new.dtype == object:
        return [np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) and v.dtype.kind in "iufb" else "x" for v in new.ravel()]
    if isinstance(new, np.ndarray) and new.dtype.kind == "c":
        return new.real
    return new


def transform_container(out: np.ndarray, how: str, k: int) -> np.ndarray:
    """Apply a length-changing transform to an object/struct array as a whole."""
    flat = out.reshape(-1)
    if how == "empty":
        return flat[:0]
    if how == "truncate":
        return flat[: flat.size * (k % 4) // 4]
    if how == "reverse":
        return flat[::-1].copy()
    return np.concatenate([flat, flat])


def _original(tpl: Template, folder: Path, var: str) -> Any:
    """The current value of ``var`` in the materialised template (for the transforms)."""
    if tpl.name in ("mat5_cell", "mat5_cell_z", "mat5_struct"):
        import scipy.io

        fname, name = var.split(":")
        return scipy.io.loadmat(str(folder / fname), squeeze_me=False)[name]
    if tpl.name == "npz":
        fname, name = var.split(":")
        with np.load(folder / fname, allow_pickle=True) as z:
            return z[name]
    if tpl.name in ("npy", "phy"):
        p = folder / var
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=True)
        return p.read_bytes()
    if tpl.name == "mat73":
        node = tpl.extra["base"]
        for part in var.split(":")[1].split("."):
            node = node[part]
        return node
    import h5py

    fname, name = var.split(":")
    with h5py.File(folder / fname, "r") as f:
        obj = f[name]
        if isinstance(obj, h5py.Group):
            return np.arange(5.0)
        return obj[()]


def _text_damage(data: bytes, how: str, k: int) -> bytes:
    """Damage a text file of a phy folder (params.py, cluster_group.tsv)."""
    text = data.decode()
    lines = text.splitlines()
    if how == "delete":
        return b""
    if how in ("empty", "zeros"):
        return b"\n"
    if how == "truncate":
        return "\n".join(lines[: len(lines) * (k % 3) // 3]).encode()
    if how == "strings":
        return text.replace("sample_rate = ", "sample_rate = '").replace("\t", " ").encode()
    if how in ("nan", "inf"):
        return text.replace("10000.0", "float('nan')" if how == "nan" else "1e999").replace("good", "nan").encode()
    if how == "negate":
        return text.replace("10000.0", "-10000.0").replace("\t", "\t-").encode()
    if how == "huge":
        return text.replace("10000.0", "1e308").replace("\n", "\n999999999999999999999\tgood\n", 1).encode()
    if how == "objects":
        return b"import os\nos.system('touch PWNED')\nsample_rate = __import__('os').getpid()\n"
    if how == "reverse":
        return "\n".join(lines[::-1]).encode()
    if how == "double":
        return (text + text).encode()
    return "\n".join(line.replace("\t", "\t\t") for line in lines).encode() if k % 2 else text.replace("cluster_id", "id\tcluster_id").encode()


@st.composite
def structure_cases(draw: Any, formats: list[str] = FORMATS) -> tuple[str, str, str, int, int, bool]:
    fmt = draw(st.sampled_from(formats))
    var = draw(st.sampled_from(template(fmt).variables))
    how = draw(st.sampled_from(TRANSFORMS))
    return fmt, var, how, draw(st.integers(0, 7)), draw(st.integers(0, 1000)), fmt == "nwb" and draw(st.booleans())


def check_structure_case(tmp_path_factory: Any, case: tuple[str, str, str, int, int, bool]) -> None:
    fmt, var, how, k, seed, direct = case
    tpl = template(fmt)
    folder = tmp_path_factory.mktemp(f"fs_{fmt}")
    mapping = tpl.materialise(folder)
    orig = _original(tpl, folder, var)
    if isinstance(orig, bytes):  # a text file
        new: Any = DELETE if how == "delete" else _text_damage(orig, how, k)
    elif tpl.name == "mat73":
        new = transform_mat73(orig, how, k, seed)
    else:
        try:
            new = transform(orig, how, k, seed)
        except (TypeError, ValueError):  # a numeric transform of text (e.g. NaN into an array of labels)
            new = np.array(["nan", "x"])
        if isinstance(new, tuple) and tpl.name not in ("hdf5", "nwb"):
            new = _npy_bomb(k) if tpl.name in ("npy", "phy") else np.zeros((0,))
    try:
        tpl.rewrite(folder, var, new)
    except (TypeError, ValueError, NotImplementedError, AttributeError):  # the writer itself cannot store this value
        tpl.materialise(folder)  # start again from the valid files (the failed write may have left a partial file)
        tpl.rewrite(folder, var, "unstorable" if tpl.name == "mat73" else np.array(["unstorable"]))
    direct_path = folder / var.split(":")[0] if direct else None
    check_import(mapping, direct=direct_path)


def _npy_bomb(k: int) -> bytes:
    """A .npy whose header declares a huge array (8 TB) over a few bytes of data."""
    from numpy.lib import format as npformat

    shape = (2**40,) if k % 2 else (2**20, 2**20)
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\x00" * 64


@FAST
@given(case=structure_cases())
def test_fuzz_structure(tmp_path_factory: Any, case: Any) -> None:
    check_structure_case(tmp_path_factory, case)


@pytest.mark.slow
@SLOW
@given(case=structure_cases())
def test_fuzz_structure_slow(tmp_path_factory: Any, case: Any) -> None:
    check_structure_case(tmp_path_factory, case)


# ----------------------------------------------------------------------------- 3. mappings
def toml_value(v: Any) -> str:
    """``v`` as a TOML value (inline tables for dicts)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    if hasattr(v, "isoformat"):
        return v.isoformat()
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any]) -> str:
    """A mapping dict as TOML text: scalars at the top, then one [section] per table."""
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(name)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 10, 10**6]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1e-300, 1e308]),
    st.booleans(),
    _text,
    st.sampled_from(["", " ", "seconds", "ms", "samples", "frames", "sec", "tyx", "yxt", "t", "phy", "matlab", "numpy", "hdf5", "nwb",
                     "spike_times", "frame_times", "stimulus", "good", "/etc/passwd", "../../x.mat", "~/x.npz", "ks", "sorted.npz", "C", "F"]),
    st.dates(),
)
toml_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=3)), max_leaves=6)


@st.composite
def mapping_cases(draw: Any) -> tuple[str, str]:
    from retinakit.io.mapping import SCHEMA

    fmt = draw(st.sampled_from(["npz", "mat5_struct", "phy", "npy", "hdf5"]))
    import tomllib

    doc = tomllib.loads(template(fmt).files["m.toml"].decode())
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "delete", "unknown", "section", "drop_section", "top"]))
        section = draw(st.sampled_from(sorted(SCHEMA)))
        if op == "set":
            key = draw(st.sampled_from(sorted(SCHEMA[section])))
            doc.setdefault(section, {}) if isinstance(doc.get(section, {}), dict) else None
            if isinstance(doc.get(section), dict):
                doc[section][key] = draw(toml_values)
        elif op == "delete":
            table = doc.get(section)
            if isinstance(table, dict) and table:
                del table[draw(st.sampled_from(sorted(table)))]
        elif op == "unknown":
            if isinstance(doc.get(section, {}), dict):
                doc.setdefault(section, {})[draw(_text.filter(bool))] = draw(toml_values)
        elif op == "section":
            doc[section] = draw(scalars)
        elif op == "drop_section":
            doc.pop(section, None)
        else:
            doc[draw(st.sampled_from(["version", "extra", "spike"]))] = draw(scalars)
    text = to_toml(doc)
    if draw(st.booleans()) and draw(st.booleans()):  # raw damage on top
        b = bytearray(text.encode())
        for pos, bit in draw(st.lists(st.tuples(st.integers(0, max(0, len(b) - 1)), st.integers(0, 7)), min_size=1, max_size=3)):
            b[pos % len(b)] ^= 1 << bit
        text = bytes(b).decode("latin-1")
        return fmt, text + "\x00RAW"
    return fmt, text


def check_mapping_case(tmp_path_factory: Any, case: tuple[str, str]) -> None:
    fmt, text = case
    folder = tmp_path_factory.mktemp(f"fm_{fmt}")
    mapping = template(fmt).materialise(folder)
    if text.endswith("\x00RAW"):
        mapping.write_bytes(text[: -len("\x00RAW")].encode("latin-1"))
    else:
        mapping.write_text(text, encoding="utf-8")
    check_import(mapping)


@FAST
@given(case=mapping_cases())
def test_fuzz_mappings(tmp_path_factory: Any, case: Any) -> None:
    check_mapping_case(tmp_path_factory, case)


@pytest.mark.slow
@SLOW
@given(case=mapping_cases())
def test_fuzz_mappings_slow(tmp_path_factory: Any, case: Any) -> None:
    check_mapping_case(tmp_path_factory, case)


# ----------------------------------------------------------------------------- fixed cases
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_template_imports(tmp_path: Path, fmt: str) -> None:
    """The undamaged exports import (so the fuzzers start from working files)."""
    mapping = template(fmt).materialise(tmp_path)
    assert check_import(mapping) == "ok"


def test_phy_params_are_never_executed(tmp_path: Path) -> None:
    mapping = template("phy").materialise(tmp_path)
    (tmp_path / "ks" / "params.py").write_text("import os\nos.system('touch PWNED')\nsample_rate = __import__('os').getpid()\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert check_import(mapping) == "error"
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "PWNED").exists()


def test_npy_pickle_payload_is_refused(tmp_path: Path) -> None:
    """An object .npy whose pickle would run code is refused without running it."""
    mapping = template("npy").materialise(tmp_path)
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    arr = np.empty(2, dtype=object)
    arr[:] = [Evil(), np.arange(3.0)]
    np.save(tmp_path / "spikes.npy", arr, allow_pickle=True)
    assert check_import(mapping) == "error"
    assert not marker.exists()


@pytest.mark.parametrize("fmt,var", [("npy", "frames.npy"), ("phy", "ks/spike_times.npy"), ("npz", "sorted.npz:frame_times")])
def test_declared_huge_arrays_are_refused(tmp_path: Path, fmt: str, var: str) -> None:
    """A header that declares terabytes over a few bytes gives the one-line error, not a MemoryError."""
    tpl = template(fmt)
    mapping = tpl.materialise(tmp_path)
    if fmt == "npz":
        import zipfile

        with np.load(tmp_path / "sorted.npz", allow_pickle=True) as z:
            data = {k: z[k] for k in z.files}
        np.savez(tmp_path / "sorted.npz", **{k: v for k, v in data.items() if k != "frame_times"})
        with zipfile.ZipFile(tmp_path / "sorted.npz", "a") as zf:
            zf.writestr("frame_times.npy", _npy_bomb(1))
    else:
        (tmp_path / var).write_bytes(_npy_bomb(0))
    assert check_import(mapping) == "error"


def test_declared_huge_hdf5_dataset_is_refused(tmp_path: Path) -> None:
    mapping = template("hdf5").materialise(tmp_path)
    _rewrite_h5(tmp_path, "rec.h5:sync/frame_onsets", ("declared", (2**31, 2**12), "float64"))
    assert check_import(mapping) == "error"


def test_toml_writer_round_trips() -> None:
    """The fuzzer's TOML writer writes what tomllib reads back."""
    import tomllib

    doc = {"version": 1, "spikes": {"file": "a b.mat", "list": [1, 2.5, "x"], "t": {"a": True}, "nan": float("nan")}}
    back = tomllib.loads(to_toml(doc))
    assert back["spikes"]["file"] == "a b.mat" and back["spikes"]["t"] == {"a": True} and math.isnan(back["spikes"]["nan"])


# ----------------------------------------------------------------------------- 4. command-line options
_OPTION_VALUES = st.one_of(
    st.sampled_from(["", "0", "-1", "1", "2", "3", "8,8", "8", "1,2,3", "a,b", "nan", "inf", "-inf", "1e400", "1e-400", "0.5", "-0.5",
                     "99999999999999999999", "1,", ",", "3,x", "cpu", "cuda:7", "mps", "tpu", "auto", "cnn", "ln", "bn-cnn", "gd", "sta",
                     "periods=0.05,0.1", "periods=", "=1", "flash_frames=-2", "polarity=dark", "x=y", "osr", "step"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
)
_COMMANDS = {
    "fit": ["--history", "--cells", "--filters", "--kernels", "--lr", "--l2", "--l1", "--noise-std", "--batch-size", "--chunk-len",
            "--max-epochs", "--patience", "--val-fraction", "--seed", "--device", "--ln-method", "--ln-rank", "--ln-crop",
            "--min-reliability", "--model"],
    "probe": ["--stimulus", "--param", "--out"],
    "data inspect": ["--cells", "--history"],
}


@st.composite
def cli_cases(draw: Any) -> tuple[str, list[tuple[str, str]]]:
    cmd = draw(st.sampled_from(sorted(_COMMANDS)))
    opts = draw(st.lists(st.tuples(st.sampled_from(_COMMANDS[cmd]), _OPTION_VALUES), min_size=1, max_size=4))
    return cmd, opts


def check_cli_case(tmp_path_factory: Any, case: tuple[str, list[tuple[str, str]]]) -> None:
    cmd, opts = case
    folder = tmp_path_factory.mktemp("fc")
    args = cmd.split()
    if cmd == "fit":  # a damaged recording: valid options end in the data error, so no fit ever runs
        bad = folder / "rec.h5"
        bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        args += [str(bad), "--out", str(folder / "run"), "-q"]
    elif cmd == "probe":
        args += [str(folder / "no-such-run"), "-q"]
    else:
        good = folder / "rec.h5"
        good.write_bytes(template_h5())
        args += [str(good), "--no-sta", "--json"]
    for flag, value in opts:
        args += [flag, value]
    old = os.getcwd()
    os.chdir(folder)  # anything written by default goes here
    try:
        res = CliRunner().invoke(main, args)
    finally:
        os.chdir(old)
    assert res.exit_code in (0, 2), (args, res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output, res.output
    if res.exit_code == 2:
        lines = res.stderr.strip().splitlines()
        if lines[-1].startswith("Error: "):  # click's own usage errors (a value that is not an integer...)
            return
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr


_H5: list[bytes] = []


def template_h5() -> bytes:
    """A tiny valid recording in retinakit's layout."""
    if not _H5:
        from conftest import make_recording

        from retinakit.io import save_recording

        with tempfile.TemporaryDirectory() as d:
            rec = make_recording(frame_shape=(4, 4), n_cells=2, train_bins=120, test_bins=40, n_repeats=3)
            _H5.append(save_recording(rec, Path(d) / "t.h5").read_bytes())
    return _H5[0]


@FAST
@given(case=cli_cases())
def test_fuzz_cli_options(tmp_path_factory: Any, case: Any) -> None:
    check_cli_case(tmp_path_factory, case)


@pytest.mark.slow
@SLOW
@given(case=cli_cases())
def test_fuzz_cli_options_slow(tmp_path_factory: Any, case: Any) -> None:
    check_cli_case(tmp_path_factory, case)


# ----------------------------------------------------------------------------- scipy crash regressions
def _cell_element_offset(data: bytes) -> int:
    """Byte offset of the first element (a nested miMATRIX) of the cell array at the start of an uncompressed v5 file."""
    import struct

    o = 128 + 8  # inside the first variable
    for _ in range(3):  # array flags, dimensions, name
        mdtype, n = struct.unpack("<II", data[o : o + 8])
        o += 8 if mdtype >> 16 else 8 + n + (-n % 8)
    assert struct.unpack("<I", data[o : o + 4])[0] == 14
    return o


def test_mat_files_that_crash_scipy_are_refused(tmp_path: Path) -> None:
    """scipy's v5 reader segfaults on an unknown data type code, on a complex flag without an imaginary part
    and on malformed dimensions (it indexes its dtype table unchecked). These files must give the one-line error.
    Run in a child process, so that a regression fails this test instead of killing the test run."""
    import subprocess
    import sys

    data = template("mat5_cell").files["cells.mat"]
    o = _cell_element_offset(data)
    cases = {"type8": (o + 48, 8), "type41": (o + 48, 41), "complex": (o + 17, data[o + 17] | 0x08), "smalldims": (o + 26, 1)}
    for name, (pos, value) in cases.items():
        b = bytearray(data)
        b[pos] = value
        folder = tmp_path / name
        template("mat5_cell").materialise(folder)
        (folder / "cells.mat").write_bytes(bytes(b))
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom retinakit.cli import main\n"
        "for m in sys.argv[1:]:\n"
        "    r = CliRunner().invoke(main, ['data', 'import', m, '--dry-run'])\n"
        "    print(r.exit_code, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else '')\n"
    )
    repo = str(Path(__file__).resolve().parents[1])  # this checkout's retinakit, wherever it is installed from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])])}
    res = subprocess.run([sys.executable, "-c", code, *[str(tmp_path / n / "m.toml") for n in cases]], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, f"the import crashed (signal {-res.returncode}): {res.stderr[-2000:]}"
    lines = res.stdout.strip().splitlines()
    assert len(lines) == len(cases)
    for line in lines:
        assert line.startswith("2 error: ") and "is not a readable MATLAB file" in line, line
