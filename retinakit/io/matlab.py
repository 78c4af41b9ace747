"""MATLAB ``.mat`` files: v5/v6/v7 through :func:`scipy.io.loadmat`, v7.3 (HDF5) through h5py.

Both paths return the same plain values (see :mod:`retinakit.io.sources`): numeric arrays in
MATLAB's own shape (a v7.3 file stores arrays transposed; they are transposed back here, so a
``(H, W, T)`` movie reads as ``(H, W, T)`` from either version), struct arrays as lists of dicts,
cell arrays as lists, char arrays as ``str``. Elements are listed in MATLAB's column-major order,
so element ``k`` of the list is MATLAB's ``x(k)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, RetinakitError
from .variables import descend, hdf5_signature_offset, missing_variable, open_hdf5, split_name


def is_v73(path: Path) -> bool:
    """True for a MATLAB v7.3 file (an HDF5 file, usually behind a 512-byte MATLAB header)."""
    return hdf5_signature_offset(path) is not None


def read_variable(path: Path, name: str | None, key: str) -> Any:
    """Read variable ``name`` (``exp.units`` reaches into structs) from a ``.mat`` file."""
    if not name:
        from ..errors import ConfigError

        raise ConfigError(f"{key.rsplit('.', 1)[0]}.variable: missing", fix="name the MATLAB variable to read")
    parts = split_name(name)
    if is_v73(path):
        return _read_v73(path, parts, name, key)
    return _read_v5(path, parts, name, key)


def list_variables(path: Path) -> list[str]:
    """Names of the top-level variables in a ``.mat`` file."""
    if is_v73(path):
        with open_hdf5(path, "a MATLAB v7.3 file") as f:
            try:
                return sorted(k for k in f.keys() if not k.startswith("#"))
            except Exception as exc:  # noqa: BLE001 - a damaged root group
                raise FormatError(f"'{path}' cannot be read ({type(exc).__name__}: {exc})", fix="the file is truncated or corrupt; save it again") from exc
    import scipy.io

    check_v5_structure(path)
    try:
        return sorted(v[0] for v in scipy.io.whosmat(str(path)))
    except Exception as exc:  # scipy raises ValueError/MatReadError/... on a foreign file
        raise FormatError(f"'{path}' is not a readable MATLAB file ({type(exc).__name__}: {exc})", fix="save it from MATLAB with save(..., '-v7') or '-v7.3'") from exc


# ----------------------------------------------------------------------------- v5 (scipy)
def _read_v5(path: Path, parts: list[str], name: str, key: str) -> Any:
    import scipy.io

    top = parts[0]
    check_v5_structure(path)
    try:
        data = scipy.io.loadmat(str(path), variable_names=[top], squeeze_me=False, struct_as_record=True, chars_as_strings=True)
    except NotImplementedError as exc:  # "Please use HDF reader for matlab v7.3 files"
        raise FormatError(f"'{path}' looks like a MATLAB v7.3 file but has no HDF5 signature ({exc})", fix="the file may be truncated; save it again") from exc
    except Exception as exc:  # noqa: BLE001 - scipy raises many types on a corrupt or foreign file
        raise FormatError(f"'{path}' is not a readable MATLAB file ({type(exc).__name__}: {exc})", fix="save it from MATLAB with save(..., '-v7') or '-v7.3'") from exc
    if top not in data:
        raise missing_variable(name, path, list_variables(path), key)
    return descend(_from_scipy(data[top]), parts[1:], name, path, key)


def _from_scipy(x: Any) -> Any:
    """Convert what ``loadmat(squeeze_me=False)`` returns into plain values."""
    if isinstance(x, np.ndarray):
        if x.dtype.names:  # struct array
            elems = x.ravel(order="F")
            return [{f: _from_scipy(e[f]) for f in x.dtype.names} for e in elems]
        if x.dtype == object:  # cell array
            return [_from_scipy(e) for e in x.ravel(order="F")]
        if x.dtype.kind in ("U", "S"):
            strings = [str(s) for s in x.ravel(order="F")]
            return strings[0] if len(strings) == 1 else ("" if not strings else strings)
        return x
    if isinstance(x, str):
        return x
    kind = type(x).__name__
    if "sparse" in type(x).__module__:
        return np.asarray(x.todense())
    raise FormatError(f"a MATLAB value of type {kind} cannot be imported", fix="store numbers, strings, cells or structs (not objects or function handles)")


# ----------------------------------------------------------------------------- v7.3 (h5py)
def _cls(obj: Any) -> str:
    c = obj.attrs.get("MATLAB_class", b"")
    return c.decode() if isinstance(c, bytes) else str(c)


def _read_v73(path: Path, parts: list[str], name: str, key: str) -> Any:
    with open_hdf5(path, "a MATLAB v7.3 file") as f:
        try:
            return _find_v73(f, path, parts, name, key)
        except RetinakitError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt blocks surface as OSError/RuntimeError/KeyError/ValueError
            raise FormatError(f"variable '{name}' in '{path}' cannot be read ({type(exc).__name__}: {exc})", fix="the file is truncated or corrupt; save it again") from exc


def _find_v73(f: Any, path: Path, parts: list[str], name: str, key: str) -> Any:
    import h5py

    node: Any = f
    for i, part in enumerate(parts):
        if isinstance(node, h5py.Group) and part in node and not part.startswith("#"):
            node = node[part]
            continue
        if isinstance(node, h5py.Group) or i == 0:
            avail = sorted(k for k in node.keys() if not k.startswith("#")) if isinstance(node, h5py.Group) else []
            prefix = ".".join(parts[:i])
            raise missing_variable(name, path, [f"{prefix}.{a}".lstrip(".") for a in avail], key)
        # reaching into a struct array element stored by reference: decode what we have and descend
        return descend(_from_h5(node, f), parts[i:], name, path, key)
    return _from_h5(node, f)


def _from_h5(obj: Any, f: Any) -> Any:
    import h5py

    if isinstance(obj, h5py.Group):
        cls = _cls(obj)
        if cls not in ("", "struct"):
            raise FormatError(f"MATLAB class '{cls}' in '{obj.name}' cannot be imported", fix="store numbers, strings, cells or structs")
        fields = [k for k in obj.keys() if not k.startswith("#")]
        members = {k: obj[k] for k in fields}
        is_array = bool(fields) and all(
            isinstance(v, h5py.Dataset) and v.dtype == h5py.ref_dtype and _cls(v) != "cell" for v in members.values()
        )
        if is_array:  # struct array: each field is an array of references, one per element
            refs = {k: np.asarray(v[()]).ravel(order="C") for k, v in members.items()}
            n = len(next(iter(refs.values())))
            return [{k: _from_h5(f[refs[k][i]], f) for k in fields} for i in range(n)]
        return {k: _from_h5(v, f) for k, v in members.items()}
    cls = _cls(obj)
    if obj.attrs.get("MATLAB_empty", 0):
        if cls == "cell":
            return []
        if cls == "char":
            return ""
        return np.zeros((0,))
    data = obj[()]
    if obj.dtype == h5py.ref_dtype:
        # cell array: C-order ravel of the stored (transposed) array is MATLAB's column-major order
        return [_from_h5(f[r], f) for r in np.asarray(data).ravel(order="C")]
    arr = np.asarray(data)
    if cls == "char":
        codes = arr.T
        if codes.ndim == 2 and codes.shape[0] > 1:
            return ["".join(map(chr, row)) for row in codes]
        return "".join(map(chr, codes.ravel()))
    if arr.dtype.names and set(arr.dtype.names) == {"real", "imag"}:
        arr = arr["real"] + 1j * arr["imag"]
    if cls == "logical":
        arr = arr.astype(bool)
    return arr.T


# ----------------------------------------------------------------------------- v5 structure check
# scipy's v5 reader (scipy <= 1.17 at least) indexes a table of 20 dtypes with the data type code of
# each element without a range check, so a damaged or crafted file crashes Python with a
# segmentation fault instead of raising (scipy PRs #25349, #25829). Every element tag is checked
# here first: the walk reads only the 8-byte tags (and streams through compressed variables).
_MI_NUMERIC = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18})  # miINT8..miDOUBLE, miINT64, miUINT64, miUTF8/16/32
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MAX_DEPTH = 100


class _Reader:
    """Forward-only reader over part of a file, or over a zlib stream stored in it."""

    def __init__(self, fh: Any, nbytes: int, compressed: bool) -> None:
        import zlib

        self.fh, self.left, self.pos = fh, nbytes, 0
        self.z = zlib.decompressobj() if compressed else None
        self.buf = b""

    def _more(self) -> bool:
        if self.z is None:
            raw = self.fh.read(min(self.left, 1 << 16))
            self.left -= len(raw)
            self.buf += raw
            return bool(raw)
        tail = self.z.unconsumed_tail
        if not tail:
            if self.left <= 0:
                return False
            tail = self.fh.read(min(self.left, 1 << 16))
            self.left -= len(tail)
            if not tail:
                return False
        try:
            out = self.z.decompress(tail, 1 << 20)
        except Exception as exc:  # noqa: BLE001 - zlib.error on a damaged stream
            raise FormatError(f"a compressed variable is damaged ({exc})", fix="the file is truncated or corrupt; save it again") from exc
        self.buf += out
        return bool(out) or bool(self.z.unconsumed_tail) or self.left > 0

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise FormatError("the file ends inside a variable", fix="the file is truncated; save it again")
        out, self.buf = self.buf[:n], self.buf[n:]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        if self.z is None and n > len(self.buf):  # uncompressed: seek over the data
            n_file = n - len(self.buf)
            if n_file > self.left:
                raise FormatError("the file ends inside a variable", fix="the file is truncated; save it again")
            self.fh.seek(n_file, 1)
            self.left -= n_file
            self.pos += n
            self.buf = b""
            return
        while n > 0:
            if not self.buf and not self._more():
                raise FormatError("the file ends inside a variable", fix="the file is truncated; save it again")
            k = min(n, len(self.buf))
            self.buf = self.buf[k:]
            self.pos += k
            n -= k


def _tag(r: _Reader, endian: str) -> tuple[int, int, bytes]:
    """(data type code, byte count, the data of a small element or b'')."""
    import struct

    raw = r.read(8)
    w0, w1 = struct.unpack(endian + "II", raw)
    if w0 >> 16:  # small data element: type and size in one word, data in the next 4 bytes
        n = w0 >> 16
        if n > 4:
            raise FormatError(f"a small data element claims {n} bytes (at most 4)", fix="the file is corrupt; save it again")
        return w0 & 0xFFFF, n, raw[4 : 4 + n]
    return w0, w1, b""


def _walk_matrix(r: _Reader, nbytes: int, endian: str, depth: int) -> None:
    """Check one miMATRIX element's content (``nbytes`` long): valid type codes, and every part its header announces.

    scipy reads the parts its header announces (an imaginary part when the complex flag is set, one
    matrix per cell, fields x elements matrices for a struct...) without checking that they lie
    inside the element, so a missing part makes it read the next element's tag as data.
    """
    import math
    import struct

    if depth > _MAX_DEPTH:
        raise FormatError("MATLAB variables are nested too deeply", fix="the file is corrupt or not a MATLAB file")
    end = r.pos + nbytes
    k, cls, cplx, parts = 0, -1, False, 0
    dims: list[int] | None = None
    fnl, names_len = 0, 0
    first_value = {1: 3, 2: 5, 3: 6}  # index of the first part that is a value (cell, struct, object)
    while r.pos < end:
        mdtype, n, small = _tag(r, endian)
        if k < 3:
            matrix: bool | None = False  # array flags, dimensions, name
        elif cls in first_value:
            matrix = k >= first_value[cls]
        elif cls in (16, 17):
            matrix = None  # function handle / opaque object: either
        else:
            matrix = False  # numeric, char, logical, sparse: data parts
        if mdtype == _MI_MATRIX and matrix is not False and not small:
            _walk_matrix(r, n, endian, depth + 1)
        elif mdtype in _MI_NUMERIC and matrix is not True:
            keep = k < 2 or (cls in (2, 3) and k in (first_value[cls] - 2, first_value[cls] - 1))
            if small:
                data = small
            elif keep and n <= 1 << 16:
                data = r.read(n)
                r.skip((8 - n % 8) % 8)
            else:
                data = b""
                r.skip(n + (8 - n % 8) % 8)
            if k == 0:
                if len(data) < 4:
                    raise FormatError("a MATLAB variable has no array flags", fix="the file is corrupt; save it again")
                word = struct.unpack(endian + "I", data[:4])[0]
                cls, cplx = word & 0xFF, bool(word & 0x800)
            elif k == 1 and cls not in (16, 17):  # dimensions: at least two int32 (or uint32) values, none negative (opaque objects have none)
                if mdtype not in (5, 6) or n % 4 or n < 8 or len(data) != n:
                    raise FormatError(f"a MATLAB variable's dimensions are {n} bytes of data type code {mdtype}", fix="the file is corrupt; save it again")
                dims = list(struct.unpack(endian + ("i" if mdtype == 5 else "I") * (n // 4), data))
                if min(dims) < 0:
                    raise FormatError(f"a MATLAB variable has negative dimensions {dims}", fix="the file is corrupt; save it again")
            elif cls in (2, 3) and k == first_value[cls] - 2 and mdtype == 5 and len(data) == 4:
                fnl = struct.unpack(endian + "i", data)[0]
            elif cls in (2, 3) and k == first_value[cls] - 1:
                names_len = n
        else:
            raise FormatError(f"invalid MATLAB data type code {mdtype} in element {k} of a variable", fix="the file is corrupt; save it again")
        if k >= 3:
            parts += 1
        k += 1
    if r.pos != end:
        raise FormatError("a MATLAB variable's elements overrun its length", fix="the file is corrupt; save it again")
    if k < 3 and nbytes:
        raise FormatError("a MATLAB variable lacks its flags, dimensions or name", fix="the file is corrupt; save it again")
    size = math.prod(dims) if dims is not None else None
    if cls == 1 and size is not None:
        need = size
    elif cls in (2, 3) and size is not None and fnl > 0:
        need = first_value[cls] - 3 + size * (names_len // fnl)
    elif cls == 5:
        need = 3 + cplx  # row indices, column pointers, real part (and imaginary part)
    elif 4 <= cls <= 15:
        need = 1 + cplx  # real part (and imaginary part)
    else:
        need = 0
    if nbytes and parts < need:
        raise FormatError(f"a MATLAB variable has {parts} parts but its header needs {need}", fix="the file is corrupt; save it again")


def check_v5_structure(path: Path) -> None:
    """Raise :class:`FormatError` when a MATLAB v5 file has an element tag scipy cannot read safely."""
    import struct

    import scipy.io.matlab

    try:
        major, _ = scipy.io.matlab.matfile_version(str(path))
    except Exception:  # noqa: BLE001 - not a MATLAB file: scipy's own reader gives the error
        return
    if major != 1:
        return
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(128)
        endian = {b"IM": "<", b"MI": ">"}.get(head[126:128])
        if endian is None:
            raise FormatError(f"'{path}' has no MATLAB byte-order mark", fix="save it from MATLAB with save(..., '-v7')")
        pos = 128
        while pos + 8 <= size:
            fh.seek(pos)
            mdtype, n = struct.unpack(endian + "II", fh.read(8))
            small = mdtype >> 16
            if small or mdtype not in (_MI_MATRIX, _MI_COMPRESSED):
                raise FormatError(f"'{path}': element at byte {pos} is not a MATLAB variable (data type code {mdtype})", fix="the file is corrupt; save it again")
            if n > size - pos - 8:
                raise FormatError(f"'{path}': the variable at byte {pos} runs past the end of the file", fix="the file is truncated; save it again")
            try:
                if mdtype == _MI_MATRIX:
                    _walk_matrix(_Reader(fh, n, compressed=False), n, endian, 0)
                else:
                    r = _Reader(fh, n, compressed=True)
                    inner, m, small = _tag(r, endian)
                    if small or inner != _MI_MATRIX:
                        raise FormatError(f"a compressed element holds data type code {inner}, not a variable", fix="the file is corrupt; save it again")
                    _walk_matrix(r, m, endian, 0)
            except FormatError as exc:
                if str(path) in exc.what:
                    raise
                raise FormatError(f"'{path}' is not a readable MATLAB file: {exc.what}", fix=exc.fix) from None
            pos += 8 + n
