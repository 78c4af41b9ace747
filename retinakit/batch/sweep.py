"""Sweep files: parse and validate a TOML sweep, expand it into points with stable ids.

A sweep file has these tables (all optional except that some point must result)::

    [sweep]      name, out                   the job name and the output folder
    [fit]        any `retinakit fit` option  fixed for every point (plus `data`)
    [grid]       option = [v1, v2, ...]      every combination of the values
    [[points]]   option = value              explicit points, each crossed with [grid]
    [resources]  cpus, gpus, mem_gb, ...     what each job asks of the scheduler

``data`` (a recording path, relative to the sweep file, or ``"sample"`` / ``"sample:whitenoise"`` for a bundled sample)
is allowed wherever a fit option is. A point is ``[fit]`` overridden by one ``[[points]]`` entry
and one combination of ``[grid]``; a key may not be both in ``[grid]`` and in ``[[points]]``.

A point's id is ``p<index>-<hash>``: the hash (8 hex digits of SHA-256) covers the point's
explicit parameters only (not defaults filled in later), so the same parameters always map to
the same run folder, and a folder found with the same hash is reused even if the index changed
because points were added to the sweep.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

SECTIONS = ("sweep", "fit", "grid", "points", "resources")
SWEEP_KEYS = ("name", "out")
SAMPLE = "sample"


@dataclass(frozen=True)
class Resources:
    """What each job of the sweep asks of the scheduler (and of the local pool)."""

    cpus: int = 1
    gpus: int = 0
    mem_gb: float = 4.0
    time_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    signal_delay_s: int = 90
    max_requeue: int = 3
    local_workers: int | None = None
    setup: tuple[str, ...] = ()
    sbatch: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        d = dict(self.__dict__)
        d["setup"] = list(self.setup)
        d["sbatch"] = dict(self.sbatch)
        return d


RESOURCE_KEYS = tuple(Resources.__dataclass_fields__)

_RESOURCE_HELP = {
    "cpus": "CPU cores per job (sbatch --cpus-per-task; also torch threads)",
    "gpus": "GPUs per job (sbatch --gpus-per-node)",
    "mem_gb": "memory per job in GB (sbatch --mem)",
    "time_min": "time limit per job in minutes (sbatch --time); a job hitting it is checkpointed and requeued",
    "partition": "SLURM partition",
    "account": "SLURM account",
    "qos": "SLURM quality of service",
    "array_parallelism": "at most this many array tasks run at once",
    "signal_delay_s": "seconds before the time limit at which SLURM warns the job (USR2) to checkpoint",
    "max_requeue": "how many times a timed-out job is requeued before it counts as failed",
    "local_workers": "jobs run at once with --executor local (default: CPU cores / cpus)",
    "setup": "shell lines run before each job (e.g. ['module load cuda'])",
    "sbatch": "extra sbatch flags as a table without the dashes, e.g. {constraint = 'avx2'}",
}


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its id, its explicit parameters and its run folder."""

    index: int
    id: str
    params: dict[str, Any]
    run_dir: Path
    data: Path | None

    @property
    def options(self) -> dict[str, Any]:
        """The fit options (everything but ``data``), as passed to ``run_fit``."""
        return {k: v for k, v in self.params.items() if k != "data"}

    def label(self, keys: list[str] | None = None) -> str:
        """Short human description, e.g. ``lr=0.001 seed=1`` (only ``keys`` when given)."""
        keys = list(self.params) if keys is None else keys
        parts = [f"{k}={format_value(self.params[k])}" for k in keys if k in self.params]
        return " ".join(parts) or self.id

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"index": self.index, "id": self.id, "params": self.params, "run_dir": str(self.run_dir),
                "data": None if self.data is None else str(self.data)}


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: where it lives, its points and the resources per job."""

    path: Path
    name: str
    out: Path
    points: list[Point]
    resources: Resources
    swept_keys: list[str]

    def point(self, point_id: str) -> Point:
        """The point with this id (``ConfigError`` when unknown)."""
        for p in self.points:
            if p.id == point_id:
                return p
        raise ConfigError(f"no point '{point_id}' in this sweep", str(self.path), fix=f"the points are {', '.join(p.id for p in self.points[:5])}...")


def format_value(v: Any) -> str:
    """A compact text form of a parameter value (lists joined by commas)."""
    if isinstance(v, (list, tuple)):
        return ",".join(format_value(x) for x in v)
    if v is None:
        return "all"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def fit_option_names() -> list[str]:
    """Names accepted by :class:`retinakit.fitting.config.FitConfig`."""
    import dataclasses

    from ..fitting.config import FitConfig

    return [f.name for f in dataclasses.fields(FitConfig)]


def _did_you_mean(key: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    listing = ", ".join(sorted(known))
    return f"did you mean '{close[0]}'? (known: {listing})" if close else f"known keys: {listing}"


def load_sweep(path: str | os.PathLike[str], check_data: bool = True) -> Sweep:
    """Read, validate and expand a sweep file.

    Parameters
    ----------
    path : the ``.toml`` sweep file.
    check_data : also check that every recording named exists.

    Raises
    ------
    ConfigError
        for any invalid table, key or value (naming the key and the file).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep file '{p}' does not exist", fix="give the path of a .toml sweep file (see data/sweep_example.toml)")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sweep file is not valid TOML ({exc})", str(p), fix="fix the TOML syntax at that line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read sweep file ({exc})", str(p)) from None
    return parse_sweep(raw, p, check_data=check_data)


def parse_sweep(raw: dict[str, Any], path: Path, check_data: bool = True) -> Sweep:
    """Validate an already-parsed sweep mapping (see :func:`load_sweep`)."""
    where = str(path)
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"unknown table [{key}]", where, fix=_did_you_mean(key, SECTIONS))
    base = path.parent.resolve()

    head = _table(raw, "sweep", where)
    for key in head:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"unknown key '{key}' in [sweep]", where, fix=_did_you_mean(key, SWEEP_KEYS))
    name = head.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"sweep.name must be a simple name (letters, digits, '-', '_', '.'), got {name!r}", where)
    out_raw = head.get("out", f"{path.stem}-runs")
    if not isinstance(out_raw, str) or not out_raw.strip():
        raise ConfigError(f"sweep.out must be a folder path (text), got {out_raw!r}", where)
    out = (base / Path(out_raw).expanduser()).resolve()

    known = fit_option_names() + ["data"]
    fixed = _table(raw, "fit", where)
    _check_keys(fixed, known, "[fit]", where)
    grid = _table(raw, "grid", where)
    _check_keys(grid, known, "[grid]", where)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key} must be a non-empty list of values, got {values!r}", where, fix=f"e.g. {key} = [a, b]")
        if key == "cells" and not all(v == "all" or isinstance(v, list) for v in values):
            raise ConfigError("grid.cells must be a list of cell groups (lists of ids, or \"all\")", where, fix="e.g. cells = [[1, 2, 3], [4, 5], \"all\"]")
        if len({_canonical(v) for v in values}) != len(values):
            raise ConfigError(f"grid.{key} lists the same value twice: {values!r}", where, fix="remove the duplicate")
    listed = raw.get("points", [{}])
    if not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed) or not listed:
        raise ConfigError("points must be an array of tables ([[points]] blocks)", where, fix="write each point as a [[points]] block with key = value lines")
    for i, entry in enumerate(listed):
        _check_keys(entry, known, f"[[points]] #{i + 1}", where)
        both = sorted(set(entry) & set(grid))
        if both:
            raise ConfigError(f"'{both[0]}' is both in [grid] and in [[points]] #{i + 1}", where, fix="set each option in one place")

    resources = _parse_resources(_table(raw, "resources", where), where)

    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
    params_list: list[dict[str, Any]] = []
    for entry in listed:
        for combo in combos:
            params = {**fixed, **entry, **combo}
            params_list.append({k: _normalise(k, v) for k, v in params.items()})

    width = max(3, len(str(len(params_list) - 1)))
    points: list[Point] = []
    seen: dict[str, int] = {}
    for index, params in enumerate(params_list):
        h = point_hash(params)
        if h in seen:
            raise ConfigError(f"points #{seen[h] + 1} and #{index + 1} have the same parameters {params}", where, fix="remove the duplicate [[points]] entry or grid value")
        seen[h] = index
        data = _resolve_data(params.get("data"), base, where, check_data)
        _check_fit_options(params, where, index)
        point_id = f"p{index:0{width}d}-{h}"
        run_dir = _existing_run_dir(out, h) or out / point_id
        points.append(Point(index=index, id=run_dir.name, params=params, run_dir=run_dir, data=data))
    all_keys = sorted({k for prm in params_list for k in prm})
    swept = [k for k in all_keys if len({_canonical(prm.get(k)) for prm in params_list}) > 1]
    return Sweep(path=path.resolve(), name=name, out=out, points=points, resources=resources, swept_keys=swept)


def point_hash(params: dict[str, Any]) -> str:
    """8 hex digits of SHA-256 over the canonical JSON of ``params`` (key order irrelevant)."""
    return hashlib.sha256(_canonical(params).encode()).hexdigest()[:8]


def _canonical(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _table(raw: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    t = raw.get(name, {})
    if not isinstance(t, dict):
        raise ConfigError(f"[{name}] must be a table, got {type(t).__name__}", where, fix=f"write it as a [{name}] section with key = value lines")
    return t


def _check_keys(table: dict[str, Any], known: list[str], section: str, where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown option '{key}' in {section}", where, fix=_did_you_mean(key, known))


def _normalise(key: str, value: Any) -> Any:
    """Spell "all cells" and "the sample" one way, so equal points hash equally."""
    if key == "cells" and value == "all":
        return None
    if key == "data" and value == SAMPLE:
        return None
    return value


def _resolve_data(data: Any, base: Path, where: str, check: bool) -> Path | None:
    if data is None:
        return None
    if not isinstance(data, str) or not data.strip():
        raise ConfigError(f"data must be a recording path (text) or \"{SAMPLE}\", got {data!r}", where)
    p = (base / Path(data).expanduser()).resolve()
    if not p.exists():
        from ..sample import cache_dir, sample_kind, sample_name, sample_path

        try:
            kind = sample_kind(data)  # "sample:whitenoise" and the like: the bundled samples
        except ConfigError as exc:
            raise ConfigError(exc.what, where, fix=exc.fix) from None
        if kind is not None:
            return sample_path(kind, progress=False) if check else cache_dir() / sample_name(kind)
    if check and not p.exists():
        raise DataError(f"recording '{data}' does not exist (looked for {p})", where, fix="paths in a sweep file are relative to the sweep file's folder")
    return p


def _check_fit_options(params: dict[str, Any], where: str, index: int) -> None:
    """Let the fit configuration validate the point's values (types, ranges)."""
    from ..fitting.config import FitConfig

    options = {k: v for k, v in params.items() if k != "data"}
    try:
        FitConfig.from_dict(options)
    except ConfigError as exc:
        raise ConfigError(f"point #{index + 1} ({params}): {exc.what}", where, fix=exc.fix) from None


def _existing_run_dir(out: Path, h: str) -> Path | None:
    if not out.is_dir():
        return None
    found = sorted(d for d in out.glob(f"p*-{h}") if d.is_dir())
    return found[0] if found else None


def _parse_resources(table: dict[str, Any], where: str) -> Resources:
    for key in table:
        if key not in RESOURCE_KEYS:
            raise ConfigError(f"unknown key '{key}' in [resources]", where, fix=_did_you_mean(key, RESOURCE_KEYS))
    defaults = Resources()
    values: dict[str, Any] = {}

    def integer(key: str, lo: int) -> None:
        if key in table:
            v = table[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"resources.{key} must be an integer >= {lo}, got {v!r}", where, fix=_RESOURCE_HELP[key])
            values[key] = v

    for key, lo in (("cpus", 1), ("gpus", 0), ("time_min", 1), ("array_parallelism", 1), ("signal_delay_s", 0), ("max_requeue", 0), ("local_workers", 1)):
        integer(key, lo)
    if "mem_gb" in table:
        v = table["mem_gb"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"resources.mem_gb must be a positive number, got {v!r}", where, fix=_RESOURCE_HELP["mem_gb"])
        values["mem_gb"] = float(v)
    for key in ("partition", "account", "qos"):
        if key in table:
            v = table[key]
            if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_.,:@+-]+", v):
                raise ConfigError(f"resources.{key} must be a SLURM name, got {v!r}", where, fix=_RESOURCE_HELP[key])
            values[key] = v
    if "setup" in table:
        v = table["setup"]
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise ConfigError(f"resources.setup must be a list of shell lines, got {v!r}", where, fix=_RESOURCE_HELP["setup"])
        values["setup"] = tuple(v)
    if "sbatch" in table:
        v = table["sbatch"]
        if not isinstance(v, dict):
            raise ConfigError(f"resources.sbatch must be a table of sbatch flags, got {v!r}", where, fix=_RESOURCE_HELP["sbatch"])
        for flag, val in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9-]*", flag):
                raise ConfigError(f"resources.sbatch key '{flag}' is not an sbatch flag name", where, fix="write the long flag name without dashes in front, e.g. constraint = \"avx2\"")
            if flag in ("array", "output", "error", "chdir", "job-name", "signal", "open-mode", "wrap"):
                raise ConfigError(f"resources.sbatch.{flag} is set by retinakit itself", where, fix="remove it (use sweep.name for the job name)")
            if not isinstance(val, (str, int, float, bool)) or val is False:
                raise ConfigError(f"resources.sbatch.{flag} must be text, a number or true, got {val!r}", where)
        values["sbatch"] = dict(v)
    if values.get("signal_delay_s", defaults.signal_delay_s) >= 60 * values.get("time_min", defaults.time_min):
        raise ConfigError("resources.signal_delay_s must be shorter than the time limit", where, fix="lower signal_delay_s or raise time_min")
    return Resources(**{**defaults.__dict__, **values})
