"""The import mapping: a small TOML file that says where each piece of a lab's recording lives.

A mapping has the sections ``[recording]``, ``[spikes]``, ``[units]``, ``[frames]``,
``[stimulus]``, ``[repeats]`` and ``[checks]``; a recording split across acquisition blocks, each
on its own clock, lists ``[[blocks]]`` instead, each with its own ``spikes``, ``frames``,
``stimulus``, ``repeats`` and a ``role`` (``train``, ``test`` or ``both``); commented examples for every source format are
in ``data/import_examples/`` and the reference is ``data/FORMATS.md``. :func:`load_mapping`
parses the file with the standard library's ``tomllib`` and validates every key, raising a
:class:`~retinakit.errors.ConfigError` that names the key, e.g.
``spikes.unit: expected one of seconds|ms|samples, got 'sec'``. Relative paths are relative to
the folder of the mapping file. Nothing is read from the data files here.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..recording import STIMULUS_KINDS

TIME_UNITS = ("seconds", "ms", "samples")
LENGTH_UNITS = ("seconds", "frames")
SOURCE_FORMATS = ("matlab", "numpy", "hdf5", "nwb", "phy")
FRAME_GAP_POLICIES = ("error", "split")
BLOCK_ROLES = ("train", "test", "both")
BLOCK_KEYS = ("name", "role", "spikes", "frames", "stimulus", "repeats")
MAPPING_VERSION = 1

_SUFFIX_FORMATS = {
    ".mat": "matlab",
    ".npy": "numpy",
    ".npz": "numpy",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".nwb": "nwb",
}


# ----------------------------------------------------------------------------- the parsed mapping
@dataclass(frozen=True)
class SpikesSpec:
    """``[spikes]``: where the spike times are and in which unit."""

    file: Path | None
    folder: Path | None
    format: str
    variable: str | None = None
    field: str | None = None
    id_field: str | None = None
    ids_variable: str | None = None
    labels_variable: str | None = None
    unit: str | None = None
    sample_rate: float | None = None
    table: str = "units"


@dataclass(frozen=True)
class UnitsSpec:
    """``[units]``: which units to keep (by id, or by a per-unit quality value)."""

    ids: tuple[int, ...] | None = None
    exclude: tuple[int, ...] = ()
    field: str | None = None
    variable: str | None = None
    file: Path | None = None
    format: str | None = None
    keep: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    all: bool = False


@dataclass(frozen=True)
class FramesSpec:
    """``[frames]``: frame onset times (from a file, or evenly spaced at ``rate``)."""

    file: Path | None = None
    format: str | None = None
    variable: str | tuple[str, ...] | None = None
    unit: str | None = None
    sample_rate: float | None = None
    rate: float | None = None
    start: float | None = None  # None with ``rate``: 0, or laid out from the repeat starts (per-sample stimulus)
    skip: int = 0
    count: int | None = None


@dataclass(frozen=True)
class StimulusSpec:
    """``[stimulus]``: one value (full-field) or one frame per frame onset (``repeat_variable``: the repeated segment stored once)."""

    file: Path | None
    format: str
    variable: str | None = None
    axes: str | None = None
    frame_shape: tuple[int, int] | None = None
    order: str = "C"
    kind: str | None = None
    repeat_variable: str | None = None
    per: str = "frame"  # "sample": logged once per acquisition sample, read at each frame's centre
    sample_rate: float | None = None
    row: int | None = None  # 1-based channel of a 2-D per-sample log


@dataclass(frozen=True)
class RepeatsSpec:
    """``[repeats]``: the repeated segment, by start times (or a repeat index, or NWB intervals) and length."""

    starts: tuple[float, ...] | None = None
    file: Path | None = None
    format: str | None = None
    variable: str | None = None
    unit: str = "seconds"
    sample_rate: float | None = None
    length: float | None = None
    length_unit: str = "seconds"
    index_variable: str | None = None
    index_per: str = "frame"
    index_row: int | None = None  # 1-based channel of a 2-D index array
    intervals: str | None = None
    column: str | None = None
    value: Any = None
    drop: tuple[int, ...] = ()

    @property
    def source(self) -> str:
        """Which way the starts are given: ``inline``, ``variable``, ``index`` or ``intervals``."""
        if self.starts is not None:
            return "inline"
        if self.index_variable is not None:
            return "index"
        if self.intervals is not None:
            return "intervals"
        return "variable"


@dataclass(frozen=True)
class ChecksSpec:
    """``[checks]``: thresholds of the unit and alignment checks, and what to do about gaps and shifts."""

    min_rate_hz: float = 0.01
    max_rate_hz: float = 500.0
    min_frame_rate_hz: float = 0.5
    max_frame_rate_hz: float = 1000.0
    max_fraction_after_last_frame: float = 0.2
    frame_jitter: float = 0.25
    frame_gaps: str = "error"
    realign_repeats: bool = True
    max_shift_frames: int = 2
    max_frame_rate_mismatch: float = 0.01


@dataclass(frozen=True)
class BlockSpec:
    """One ``[[blocks]]`` entry: an acquisition block on its own clock, and what it is for."""

    name: str
    role: str
    spikes: SpikesSpec
    units: UnitsSpec
    frames: FramesSpec
    stimulus: StimulusSpec
    repeats: RepeatsSpec | None

    @property
    def frames_laid_out(self) -> bool:
        """True when the block has no frame onsets and its frames are laid out from the repeat starts."""
        return frames_laid_out(self.frames, self.stimulus, self.repeats)


@dataclass(frozen=True)
class ImportMapping:
    """A parsed, validated import mapping."""

    path: Path
    text: str
    spikes: SpikesSpec
    units: UnitsSpec
    frames: FramesSpec
    stimulus: StimulusSpec
    repeats: RepeatsSpec | None
    checks: ChecksSpec
    name: str | None = None
    notes: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    blocks: tuple[BlockSpec, ...] = ()
    block: str | None = None  # set on the per-block view the importer reads one block through

    @property
    def where(self) -> str:
        """The mapping file (and the block being read), for error messages."""
        return str(self.path) if self.block is None else f"{self.path} (block '{self.block}')"

    def block_view(self, b: BlockSpec) -> "ImportMapping":
        """This mapping with the pieces of block ``b`` in place of the top-level ones."""
        import dataclasses

        return dataclasses.replace(self, spikes=b.spikes, units=b.units, frames=b.frames, stimulus=b.stimulus, repeats=b.repeats, block=b.name)


def frames_laid_out(frames: FramesSpec, stimulus: StimulusSpec, repeats: RepeatsSpec | None) -> bool:
    """Frames given by a rate only, for a stimulus logged per sample with repeats: one run per repeat start."""
    return frames.rate is not None and frames.start is None and stimulus.per == "sample" and repeats is not None


# ----------------------------------------------------------------------------- schema
Checker = Callable[[str, Any], Any]


def _fail(key: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {got!r}")


def _str(key: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _fail(key, "a non-empty string", v)
    return v


def _str_or_strs(key: str, v: Any) -> str | tuple[str, ...]:
    if isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v):
        return tuple(v) if len(v) > 1 else v[0]
    if isinstance(v, str) and v.strip():
        return v
    raise _fail(key, "a name, or a list of names whose values are joined", v)


def _path(key: str, v: Any) -> str:
    return _str(key, v)


def _choice(*choices: str) -> Checker:
    def check(key: str, v: Any) -> str:
        if not isinstance(v, str) or v not in choices:
            raise _fail(key, f"one of {'|'.join(choices)}", v)
        return v

    return check


def _positive(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0) or v != v or v == float("inf"):
        raise _fail(key, "a positive number", v)
    return float(v)


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) == float("inf"):
        raise _fail(key, "a number", v)
    return float(v)


def _fraction(key: str, v: Any) -> float:
    x = _number(key, v)
    if not 0.0 <= x <= 1.0:
        raise _fail(key, "a number between 0 and 1", v)
    return x


def _count(minimum: int) -> Checker:
    def check(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise _fail(key, f"an integer >= {minimum}", v)
        return int(v)

    return check


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(key, "true or false", v)
    return v


def _int_list(key: str, v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise _fail(key, "a list of integers", v)
    return tuple(int(x) for x in v)


def _number_list(key: str, v: Any) -> tuple[float, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise _fail(key, "a non-empty list of numbers", v)
    return tuple(float(x) for x in v)


def _scalar_list(key: str, v: Any) -> tuple[Any, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v):
        raise _fail(key, "a non-empty list of strings or numbers", v)
    return tuple(v)


def _scalar(key: str, v: Any) -> Any:
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise _fail(key, "a string or a number", v)
    return v


def _axes(key: str, v: Any) -> str:
    if not isinstance(v, str) or v not in ("t", "ty", "yt", "tyx", "txy", "yxt", "xyt", "ytx", "xty"):
        raise _fail(key, "'t' (full-field) or an order of the letters t, y, x such as 'tyx' (time, row, column) or 'yxt'", v)
    return v


def _frame_shape(key: str, v: Any) -> tuple[int, int]:
    if not isinstance(v, list) or len(v) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        raise _fail(key, "[height, width] as two positive integers", v)
    return int(v[0]), int(v[1])


_FILE_KEYS: dict[str, Checker] = {"file": _path, "format": _choice(*SOURCE_FORMATS), "variable": _str}

SCHEMA: dict[str, dict[str, Checker]] = {
    "recording": {"name": _str, "notes": _str, "sample_rate": _positive},
    "spikes": {
        **_FILE_KEYS,
        "folder": _path,
        "field": _str,
        "id_field": _str,
        "ids_variable": _str,
        "labels_variable": _str,
        "unit": _choice(*TIME_UNITS),
        "sample_rate": _positive,
        "table": _str,
    },
    "units": {
        "ids": _int_list,
        "exclude": _int_list,
        "field": _str,
        **_FILE_KEYS,
        "keep": _scalar_list,
        "min": _number,
        "max": _number,
        "all": _bool,
    },
    "frames": {
        **_FILE_KEYS,
        "variable": _str_or_strs,
        "unit": _choice(*TIME_UNITS),
        "sample_rate": _positive,
        "rate": _positive,
        "start": _number,
        "skip": _count(0),
        "count": _count(1),
    },
    "stimulus": {
        **_FILE_KEYS,
        "axes": _axes,
        "frame_shape": _frame_shape,
        "order": _choice("C", "F"),
        "kind": _choice(*STIMULUS_KINDS),
        "repeat_variable": _str,
        "per": _choice("frame", "sample"),
        "sample_rate": _positive,
        "row": _count(1),
    },
    "repeats": {
        "starts": _number_list,
        **_FILE_KEYS,
        "unit": _choice(*TIME_UNITS),
        "sample_rate": _positive,
        "length": _positive,
        "length_unit": _choice(*LENGTH_UNITS),
        "index_variable": _str,
        "index_per": _choice("frame", "sample"),
        "index_row": _count(1),
        "intervals": _str,
        "column": _str,
        "value": _scalar,
        "drop": _int_list,
    },
    "checks": {
        "min_rate_hz": _positive,
        "max_rate_hz": _positive,
        "min_frame_rate_hz": _positive,
        "max_frame_rate_hz": _positive,
        "max_fraction_after_last_frame": _fraction,
        "frame_jitter": _fraction,
        "frame_gaps": _choice(*FRAME_GAP_POLICIES),
        "realign_repeats": _bool,
        "max_shift_frames": _count(0),
        "max_frame_rate_mismatch": _fraction,
    },
}
TOP_LEVEL = {"version", "blocks", *SCHEMA}
BLOCK_SECTIONS = ("spikes", "frames", "stimulus", "repeats")


def _unknown(key: str, known: list[str]) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ConfigError(f"{key}: unknown key", fix=f"{hint}known keys here: {', '.join(sorted(known))}")


def _check_section(name: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table ([{name}]), got {table!r}", fix=f"write the keys under a [{name}] header")
    schema = SCHEMA[name]
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{name}.{key}"
        if key not in schema:
            raise _unknown(full, list(schema))
        out[key] = schema[key](full, value)
    return out


# ----------------------------------------------------------------------------- parse + validate
def format_of(path: Path, declared: str | None, key: str) -> str:
    """The source format of ``path``: ``declared`` when given, else from the suffix (a folder is phy)."""
    if declared:
        return declared
    if path.is_dir():
        return "phy"
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{key}: cannot tell the format of '{path.name}' from its suffix",
            fix=f"set {key.rsplit('.', 1)[0]}.format to one of {'|'.join(SOURCE_FORMATS)} (suffixes: {', '.join(sorted(_SUFFIX_FORMATS))})",
        )
    return fmt


def _resolve(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else base / p


def load_mapping(path: str | os.PathLike[str]) -> ImportMapping:
    """Read and validate an import mapping (TOML). Raises :class:`ConfigError` naming the bad key."""
    import tomllib

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"mapping file '{p}' does not exist", fix="check the path; examples are in data/import_examples/")
    if p.is_dir():
        raise ConfigError(f"'{p}' is a folder, not a mapping file", fix="give the .toml mapping file (examples in data/import_examples/)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"mapping file '{p}' cannot be read ({exc})", fix="give a UTF-8 TOML file") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the mapping is not valid TOML ({exc})", str(p), "fix the syntax; examples are in data/import_examples/") from exc
    try:
        return parse_mapping(raw, p, text)
    except ConfigError as exc:
        if exc.where is None:
            exc.where = str(p)
            exc.args = (exc.one_line(),)
        raise


def parse_mapping(raw: dict[str, Any], path: Path, text: str = "") -> ImportMapping:
    """Validate a mapping already parsed from TOML (``path`` locates relative file names)."""
    for key in raw:
        if key not in TOP_LEVEL:
            raise _unknown(key, sorted(TOP_LEVEL))
    version = raw.get("version", MAPPING_VERSION)
    if version != MAPPING_VERSION:
        raise ConfigError(f"version: this retinakit reads mapping version {MAPPING_VERSION}, got {version!r}", fix="write version = 1 (or upgrade retinakit)")
    if "blocks" in raw:
        return _parse_blocks(raw, path, text)
    for name in ("spikes", "stimulus"):
        if name not in raw:
            what = "the spike times are: [spikes] file = ..., unit = ..." if name == "spikes" else "the stimulus is: [stimulus] file = ..., variable = ..."
            raise ConfigError(f"[{name}] is missing", fix=f"say where {what}")
    sec = {name: _check_section(name, raw.get(name, {})) for name in SCHEMA}
    base = path.parent
    rate = sec["recording"].get("sample_rate")
    spikes = _spikes_spec(sec["spikes"], base, rate)
    units = _units_spec(sec["units"], base, spikes)
    stimulus = _stimulus_spec(sec["stimulus"], base, spikes.file, rate)
    frames = _frames_spec(sec["frames"], base, rate, spikes, stimulus)
    repeats = _repeats_spec(sec["repeats"], base, rate, spikes, frames, stimulus) if sec["repeats"] else None
    _check_layout(frames, stimulus, repeats)
    checks = _checks_spec(sec["checks"])
    return ImportMapping(
        path=path,
        text=text,
        spikes=spikes,
        units=units,
        frames=frames,
        stimulus=stimulus,
        repeats=repeats,
        checks=checks,
        name=sec["recording"].get("name"),
        notes=sec["recording"].get("notes"),
        raw=raw,
    )


def _parse_blocks(raw: dict[str, Any], path: Path, text: str) -> ImportMapping:
    """A mapping with ``[[blocks]]``: one set of spikes/frames/stimulus/repeats per acquisition block."""
    given = [f"[{n}]" for n in BLOCK_SECTIONS if n in raw]
    if given:
        raise ConfigError(
            f"{', '.join(given)} and [[blocks]] cannot both be given",
            fix="with [[blocks]] each block has its own [blocks.spikes], [blocks.frames], [blocks.stimulus], [blocks.repeats]; move the sections into the blocks (or drop [[blocks]] for a single block)",
        )
    items = raw["blocks"]
    if not isinstance(items, list) or not items or not all(isinstance(b, dict) for b in items):
        raise ConfigError(f"blocks: expected one or more [[blocks]] tables, got {items!r}", fix="write each block under its own [[blocks]] header")
    sec = {name: _check_section(name, raw.get(name, {})) for name in ("recording", "units", "checks")}
    base = path.parent
    rate = sec["recording"].get("sample_rate")
    blocks: list[BlockSpec] = []
    first_spikes: dict[str, Any] = {}
    for k, b in enumerate(items, start=1):
        name = b.get("name", f"block{k}")
        label = f"blocks[{k}]"
        if not isinstance(name, str) or not name.strip():
            raise _fail(f"{label}.name", "a non-empty string", name)
        for key in b:
            if key not in BLOCK_KEYS:
                raise _unknown(f"{label}.{key}", list(BLOCK_KEYS))
        if any(n.name == name for n in blocks):
            raise ConfigError(f"{label}.name: two blocks are called '{name}'", fix="give every block its own name")
        try:
            blocks.append(_block_spec(b, name, sec, base, rate, first_spikes))
        except ConfigError as exc:
            raise ConfigError(f"block '{name}' ({label}): {exc.what}", exc.where, exc.fix) from exc
        if k == 1:
            first_spikes = {key: b["spikes"][key] for key in ("file", "folder", "format") if isinstance(b.get("spikes"), dict) and key in b["spikes"]}
    if not any(b.role in ("train", "both") for b in blocks):
        raise ConfigError("no block has training data (every block has role = 'test')", fix="set role = 'train' (or 'both') on the training block")
    checks = _checks_spec(sec["checks"])
    first = blocks[0]
    return ImportMapping(
        path=path,
        text=text,
        spikes=first.spikes,
        units=first.units,
        frames=first.frames,
        stimulus=first.stimulus,
        repeats=first.repeats,
        checks=checks,
        name=sec["recording"].get("name"),
        notes=sec["recording"].get("notes"),
        raw=raw,
        blocks=tuple(blocks),
    )


def _block_spec(b: dict[str, Any], name: str, sec: dict[str, dict[str, Any]], base: Path, rate: float | None, first_spikes: dict[str, Any]) -> BlockSpec:
    """One block's pieces, parsed as the single-block sections are (spikes file defaults to the first block's)."""
    for n in ("spikes", "stimulus"):
        if n not in b:
            raise ConfigError(f"[blocks.{n}] is missing", fix=f"give the block's {n} under [blocks.{n}] after its [[blocks]] header")
    raw_spikes = b["spikes"]
    if isinstance(raw_spikes, dict) and "file" not in raw_spikes and "folder" not in raw_spikes:
        raw_spikes = {**first_spikes, **raw_spikes}
    sp = _check_section("spikes", raw_spikes)
    spikes = _spikes_spec(sp, base, rate)
    units = _units_spec(sec["units"], base, spikes)
    stimulus = _stimulus_spec(_check_section("stimulus", b["stimulus"]), base, spikes.file, rate)
    frames = _frames_spec(_check_section("frames", b.get("frames", {})), base, rate, spikes, stimulus)
    rp = _check_section("repeats", b.get("repeats", {}))
    repeats = _repeats_spec(rp, base, rate, spikes, frames, stimulus) if rp else None
    _check_layout(frames, stimulus, repeats)
    role = b.get("role", "both" if repeats is not None else "train")
    if role not in BLOCK_ROLES:
        raise _fail("role", f"one of {'|'.join(BLOCK_ROLES)}", role)
    if role == "train" and repeats is not None:
        raise ConfigError("role = 'train' but the block has [blocks.repeats]", fix="use role = 'both' (repeats to the test part, the rest to training) or role = 'test'")
    if role != "train" and repeats is None:
        raise ConfigError(f"role = '{role}' needs [blocks.repeats] (where the repeated segment is)", fix="give the repeat starts or index, or set role = 'train'")
    return BlockSpec(name=name, role=role, spikes=spikes, units=units, frames=frames, stimulus=stimulus, repeats=repeats)


def _check_layout(frames: FramesSpec, stimulus: StimulusSpec, repeats: RepeatsSpec | None) -> None:
    """What laying out frames from the repeat starts needs: starts in time, no skip/count."""
    if not frames_laid_out(frames, stimulus, repeats):
        return
    assert repeats is not None  # noqa: S101 - frames_laid_out says so
    if repeats.source == "index" and repeats.index_per == "frame":
        raise ConfigError(
            "frames.rate without frames.start lays the frames out from the repeat starts, but repeats.index_per = 'frame' needs frame onsets",
            fix="use repeats.index_per = 'sample' (an index logged per acquisition sample) or repeat start times, or give frames.start",
        )
    if repeats.source == "intervals":
        raise ConfigError("frames laid out from the repeat starts need start times or a per-sample index, not NWB intervals", fix="give frames.start (or frame onsets)")
    if frames.skip or frames.count is not None:
        raise ConfigError("frames.skip/frames.count do not apply to frames laid out from the repeat starts", fix="remove them, or give frames.start to lay the frames out from one start")


def _spikes_spec(s: dict[str, Any], base: Path, default_rate: float | None) -> SpikesSpec:
    if "file" not in s and "folder" not in s:
        raise ConfigError("spikes.file: missing", fix="give the file with the spike times (or spikes.folder for a Kilosort/phy folder)")
    if "file" in s and "folder" in s:
        raise ConfigError("spikes: give either spikes.file or spikes.folder, not both", fix="spikes.folder is for Kilosort/phy output folders")
    sfile = _resolve(base, s.get("file"))
    sfolder = _resolve(base, s.get("folder"))
    sformat = format_of(sfolder or sfile, s.get("format") or ("phy" if sfolder else None), "spikes.file")  # type: ignore[arg-type]
    if sformat == "phy":
        if sfolder is None:
            sfolder, sfile = sfile, None
        if s.get("unit", "samples") != "samples":
            raise ConfigError(f"spikes.unit: Kilosort/phy spike_times.npy holds sample indices, got unit {s['unit']!r}", fix="remove spikes.unit (the sample rate comes from params.py)")
        unit = "samples"
    elif sformat == "nwb":
        if s.get("unit", "seconds") != "seconds":
            raise ConfigError(f"spikes.unit: NWB stores spike times in seconds, got unit {s['unit']!r}", fix="remove spikes.unit")
        unit = "seconds"
    else:
        if sfolder is not None:
            raise ConfigError(f"spikes.folder is only for Kilosort/phy folders (format '{sformat}')", fix="use spikes.file")
        if "unit" not in s:
            raise ConfigError("spikes.unit: missing", fix=f"say how the spike times are counted: one of {'|'.join(TIME_UNITS)}")
        unit = s["unit"]
        if "variable" not in s and sformat != "numpy":
            raise ConfigError("spikes.variable: missing", fix="name the variable (MATLAB), dataset or group (HDF5) that holds the spike times")
        if "field" in s and "labels_variable" in s:
            raise ConfigError("spikes: give either spikes.field (struct arrays) or spikes.labels_variable (one unit label per spike), not both")
        if "id_field" in s and "field" not in s:
            raise ConfigError("spikes.id_field needs spikes.field (it names a field of the same struct array)", fix="use spikes.ids_variable for a separate list of ids")
    sample_rate = s.get("sample_rate", default_rate if unit == "samples" and sformat != "phy" else None)
    if unit == "samples" and sformat != "phy" and sample_rate is None:
        raise ConfigError("spikes.sample_rate: missing (spikes.unit = 'samples' needs the acquisition rate in Hz)", fix="e.g. spikes.sample_rate = 10000, or [recording] sample_rate = 10000")
    return SpikesSpec(
        file=sfile,
        folder=sfolder,
        format=sformat,
        variable=s.get("variable"),
        field=s.get("field"),
        id_field=s.get("id_field"),
        ids_variable=s.get("ids_variable"),
        labels_variable=s.get("labels_variable"),
        unit=unit,
        sample_rate=sample_rate,
        table=s.get("table", "units"),
    )


def _units_spec(u: dict[str, Any], base: Path, spikes: SpikesSpec) -> UnitsSpec:
    phy = spikes.format == "phy"
    if "field" in u and "variable" in u:
        raise ConfigError("units: give either units.field or units.variable, not both", fix="units.field is a per-unit field (struct field, phy/NWB column); units.variable a separate array")
    if any(k in u for k in ("keep", "min", "max")) and "field" not in u and "variable" not in u:
        if not phy:
            raise ConfigError("units.keep/min/max need units.field or units.variable (the per-unit value to test)", fix="e.g. units.field = 'quality'")
        u = {**u, "field": "group"}
    if ("field" in u or "variable" in u) and not any(k in u for k in ("keep", "min", "max")):
        raise ConfigError("units: units.field/units.variable is given but no units.keep, units.min or units.max", fix="e.g. units.keep = ['good'] or units.min = 3")
    if u.get("all") and any(k in u for k in ("field", "variable", "keep", "min", "max")):
        raise ConfigError("units.all = true keeps every unit; remove units.field/keep/min/max or units.all")
    if "field" in u and spikes.format not in ("phy", "nwb") and spikes.field is None:
        raise ConfigError("units.field needs struct arrays (spikes.field), a phy folder or an NWB units table", fix="use units.variable for a separate per-unit array")
    ufield, ukeep = u.get("field"), u.get("keep")
    if phy and not u.get("all") and ufield is None and "variable" not in u:
        ufield, ukeep = "group", ("good",)  # Kilosort/phy: keep the clusters labelled 'good'
    ufile = _resolve(base, u.get("file")) or spikes.file
    return UnitsSpec(
        ids=u.get("ids"),
        exclude=u.get("exclude", ()),
        field=ufield,
        variable=u.get("variable"),
        file=ufile,
        format=format_of(ufile, u.get("format"), "units.file") if (ufile is not None and "variable" in u) else None,
        keep=ukeep,
        min=u.get("min"),
        max=u.get("max"),
        all=bool(u.get("all", False)),
    )


def _stimulus_spec(st: dict[str, Any], base: Path, default_file: Path | None, default_rate: float | None = None) -> StimulusSpec:
    stfile = _resolve(base, st.get("file")) or default_file
    if stfile is None:
        raise ConfigError("stimulus.file: missing", fix="give the file with the stimulus (one value or frame per frame onset)")
    stformat = format_of(stfile, st.get("format"), "stimulus.file")
    if stformat == "phy":
        raise ConfigError("stimulus.format: a phy folder holds no stimulus", fix="give the stimulus file (.mat, .npy, .npz, .h5, .nwb)")
    if "variable" not in st and stformat not in ("numpy", "nwb"):
        raise ConfigError("stimulus.variable: missing", fix="name the variable or dataset that holds the stimulus")
    if "frame_shape" in st and st.get("axes") not in (None, "ty", "yt"):
        raise ConfigError("stimulus.frame_shape is for 2-D stimuli stored as (frames, pixels); remove stimulus.axes or set it to 'ty'/'yt'")
    if "repeat_variable" in st and stformat == "nwb":
        raise ConfigError("stimulus.repeat_variable is not supported for NWB files", fix="store every frame shown in the stimulus series")
    per = st.get("per", "frame")
    srate = st.get("sample_rate", default_rate if per == "sample" else None)
    if per == "sample":
        if stformat == "nwb":
            raise ConfigError("stimulus.per = 'sample' is not supported for NWB files", fix="NWB series carry their own timestamps: remove stimulus.per")
        clash = [f"stimulus.{k}" for k in ("repeat_variable", "axes", "frame_shape") if k in st]
        if clash:
            raise ConfigError(f"stimulus.per = 'sample' (one full-field value per acquisition sample) does not go with {', '.join(clash)}", fix="remove them")
        if srate is None:
            raise ConfigError("stimulus.sample_rate: missing (stimulus.per = 'sample' needs the acquisition rate in Hz)", fix="e.g. stimulus.sample_rate = 10000, or [recording] sample_rate = 10000")
    elif "row" in st or "sample_rate" in st:
        key = "row" if "row" in st else "sample_rate"
        raise ConfigError(f"stimulus.{key} applies to a stimulus logged per acquisition sample", fix="set stimulus.per = 'sample', or remove stimulus." + key)
    return StimulusSpec(
        file=stfile,
        format=stformat,
        variable=st.get("variable"),
        axes=st.get("axes"),
        frame_shape=st.get("frame_shape"),
        order=st.get("order", "C"),
        kind=st.get("kind"),
        repeat_variable=st.get("repeat_variable"),
        per=per,
        sample_rate=srate if per == "sample" else None,
        row=st.get("row"),
    )


def _frames_spec(fr: dict[str, Any], base: Path, default_rate: float | None, spikes: SpikesSpec, stimulus: StimulusSpec) -> FramesSpec:
    if "rate" in fr:
        if any(k in fr for k in ("file", "variable", "unit")):
            raise ConfigError("frames: give either frames.rate (evenly spaced frames) or frames.file/variable, not both")
        return FramesSpec(rate=fr["rate"], start=fr.get("start"), skip=fr.get("skip", 0), count=fr.get("count"))
    if "start" in fr:
        raise ConfigError("frames.start only applies with frames.rate")
    ffile = _resolve(base, fr.get("file")) or (stimulus.file if stimulus.format == "nwb" else spikes.file)
    if ffile is None:
        raise ConfigError("frames.file: missing", fix="give the file with the frame onset times (or frames.rate for evenly spaced frames)")
    fformat = format_of(ffile, fr.get("format"), "frames.file")
    if fformat == "phy":
        raise ConfigError("frames.format: a phy folder holds no frame times", fix="give the file with the frame onsets (e.g. from the trigger channel)")
    variable = fr.get("variable")
    if fformat == "nwb":
        funit = fr.get("unit", "seconds")
        if funit != "seconds":
            raise ConfigError(f"frames.unit: NWB stores times in seconds, got unit {funit!r}", fix="remove frames.unit")
        if isinstance(variable, tuple):
            raise ConfigError("frames.variable: NWB frame times come from one series", fix="name one series")
    else:
        if "unit" not in fr:
            raise ConfigError("frames.unit: missing", fix=f"say how the frame onsets are counted: one of {'|'.join(TIME_UNITS)}")
        if variable is None and fformat != "numpy":
            raise ConfigError("frames.variable: missing", fix="name the variable or dataset with the frame onset times")
        funit = fr["unit"]
    fsr = fr.get("sample_rate", default_rate if funit == "samples" else None)
    if funit == "samples" and fsr is None and spikes.format != "phy":  # phy: the rate of params.py, filled in on import
        raise ConfigError("frames.sample_rate: missing (frames.unit = 'samples' needs the acquisition rate in Hz)", fix="e.g. frames.sample_rate = 10000, or [recording] sample_rate = 10000")
    return FramesSpec(file=ffile, format=fformat, variable=variable, unit=funit, sample_rate=fsr, skip=fr.get("skip", 0), count=fr.get("count"))


def _repeats_spec(rp: dict[str, Any], base: Path, default_rate: float | None, spikes: SpikesSpec, frames: FramesSpec, stimulus: StimulusSpec) -> RepeatsSpec:
    ways = [k for k in ("starts", "variable", "index_variable", "intervals") if k in rp]
    if not ways and "file" in rp:
        ways = ["variable"]  # a .npy file of start times needs no variable name
    if len(ways) != 1:
        got = ", ".join(f"repeats.{k}" for k in ways) or "none"
        raise ConfigError(f"repeats: give exactly one of repeats.starts, repeats.variable, repeats.index_variable, repeats.intervals (got {got})", fix="see data/FORMATS.md, section 'repeats'")
    way = ways[0]
    if way in ("starts", "variable") and "length" not in rp and stimulus.repeat_variable is None:
        raise ConfigError("repeats.length: missing (the length of the repeated segment)", fix="e.g. repeats.length = 20.0 with repeats.length_unit = 'seconds' (or 'frames')")
    if way != "intervals" and ("column" in rp or "value" in rp):
        raise ConfigError("repeats.column/value filter the rows of NWB intervals; they need repeats.intervals")
    if ("column" in rp) != ("value" in rp):
        raise ConfigError("repeats.column and repeats.value go together (keep rows where column == value)")
    if "index_row" in rp and way != "index_variable":
        raise ConfigError("repeats.index_row picks a row of repeats.index_variable", fix="give repeats.index_variable, or remove repeats.index_row")
    if way == "index_variable" and "unit" in rp:
        raise ConfigError("repeats.unit applies to start times; for a repeat index use repeats.index_per = 'frame' or 'sample'")
    first_frames = frames.file if isinstance(frames.file, Path) else None
    rfile = _resolve(base, rp.get("file")) or first_frames or spikes.file
    rformat = None
    if way != "starts":
        if rfile is None:
            raise ConfigError("repeats.file: missing", fix="give the file that holds the repeat starts or index")
        rformat = format_of(rfile, rp.get("format"), "repeats.file")
        if way == "variable" and "variable" not in rp and rformat != "numpy":
            raise ConfigError("repeats.variable: missing", fix="name the variable or dataset with the repeat start times")
        if way == "intervals" and rformat != "nwb":
            raise ConfigError(f"repeats.intervals names an NWB intervals table, but repeats.file is {rformat}", fix="use repeats.variable for start times in other files")
    runit = rp.get("unit", "seconds")
    if way == "intervals" and runit != "seconds":
        raise ConfigError(f"repeats.unit: NWB intervals are in seconds, got {runit!r}", fix="remove repeats.unit")
    rsr = rp.get("sample_rate", default_rate)
    needs_rate = (way in ("starts", "variable") and runit == "samples") or (way == "index_variable" and rp.get("index_per") == "sample")
    if needs_rate and rsr is None:
        rsr = frames.sample_rate if frames.unit == "samples" else spikes.sample_rate
        if rsr is None and spikes.format != "phy":
            raise ConfigError("repeats.sample_rate: missing (sample indices need the acquisition rate in Hz)", fix="e.g. repeats.sample_rate = 10000")
    drop = rp.get("drop", ())
    if any(d < 1 for d in drop):
        raise ConfigError(f"repeats.drop: repeat numbers start at 1, got {list(drop)}")
    length, length_unit = rp.get("length"), rp.get("length_unit", "seconds")
    if length_unit == "frames" and length is not None and float(length) != int(length):
        raise ConfigError(f"repeats.length: a length in frames must be a whole number, got {length!r}")
    return RepeatsSpec(
        starts=rp.get("starts"),
        file=rfile,
        format=rformat,
        variable=rp.get("variable"),
        unit=runit,
        sample_rate=rsr if needs_rate else None,
        length=length,
        length_unit=length_unit,
        index_variable=rp.get("index_variable"),
        index_per=rp.get("index_per", "frame"),
        index_row=rp.get("index_row"),
        intervals=rp.get("intervals"),
        column=rp.get("column"),
        value=rp.get("value"),
        drop=drop,
    )


def _checks_spec(c: dict[str, Any]) -> ChecksSpec:
    checks = ChecksSpec(**c)
    if checks.min_rate_hz >= checks.max_rate_hz:
        raise ConfigError(f"checks.min_rate_hz ({checks.min_rate_hz}) must be below checks.max_rate_hz ({checks.max_rate_hz})")
    if checks.min_frame_rate_hz >= checks.max_frame_rate_hz:
        raise ConfigError(f"checks.min_frame_rate_hz ({checks.min_frame_rate_hz}) must be below checks.max_frame_rate_hz ({checks.max_frame_rate_hz})")
    if checks.frame_jitter >= 0.5:
        raise ConfigError(f"checks.frame_jitter: expected a fraction below 0.5 of the median frame interval, got {checks.frame_jitter}")
    return checks
