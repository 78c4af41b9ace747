"""Kilosort / phy output folders.

Read: ``spike_times.npy`` (sample indices), ``spike_clusters.npy`` (cluster id per spike; falls
back to ``spike_templates.npy`` before curation), the sample rate from ``params.py``, and cluster
labels and metrics from ``cluster_group.tsv`` (phy's curated labels), ``cluster_info.tsv`` and any
other ``cluster_<name>.tsv`` (e.g. Kilosort's ``cluster_KSLabel.tsv``, ``cluster_ContamPct.tsv``).

``params.py`` is a Python file written by Kilosort; it is never executed. Each ``name = value``
line is parsed on its own with :func:`ast.literal_eval`, which only accepts literals.
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FormatError

LABEL_PRIORITY = ("cluster_group.tsv", "cluster_info.tsv")


def read_params(path: Path) -> dict[str, Any]:
    """The ``name = literal`` assignments of a Kilosort ``params.py``, without executing it."""
    out: dict[str, Any] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"'{path}' cannot be read ({exc})", fix="check the phy folder") from exc
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            continue
        value = value.strip()
        for candidate in (value, value.split("#", 1)[0].strip()):  # with, then without a trailing comment
            try:
                out[name] = ast.literal_eval(candidate)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue  # not a literal (e.g. an expression): ignored, never evaluated
    return out


def sample_rate_of(folder: Path) -> float:
    """The acquisition rate in Hz from ``params.py`` (``sample_rate``)."""
    p = folder / "params.py"
    if not p.is_file():
        raise DataError(f"'{p}' is missing", fix="a Kilosort/phy folder has params.py with sample_rate; copy it, or check spikes.folder")
    params = read_params(p)
    rate = params.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
        raise DataError(f"'{p}' has no valid 'sample_rate = <Hz>' line (got {rate!r})", fix="add e.g. sample_rate = 30000.0 to params.py")
    return float(rate)


def _load(folder: Path, name: str) -> np.ndarray:
    p = folder / name
    try:
        return np.load(p, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        raise FormatError(f"'{p}' holds Python objects, not a numeric array ({exc})", fix="Kilosort writes plain numeric .npy files; re-export the folder") from exc
    except (OSError, EOFError) as exc:
        raise FormatError(f"'{p}' cannot be read ({exc})", fix="the file is truncated or corrupt; copy the folder again") from exc


def read_cluster_table(folder: Path) -> dict[str, dict[int, Any]]:
    """Per-cluster columns from the TSV files: ``{column: {cluster_id: value}}``.

    ``group`` comes from ``cluster_group.tsv`` when present (phy's curated labels), else from
    ``cluster_info.tsv``; where a cluster has no group, its Kilosort label (``KSLabel``) is used.
    """
    table: dict[str, dict[int, Any]] = {}
    files = [folder / n for n in LABEL_PRIORITY if (folder / n).is_file()]
    files += sorted(p for p in folder.glob("cluster_*.tsv") if p.name not in LABEL_PRIORITY)
    for p in reversed(files):  # later (lower-priority) files first, so cluster_group.tsv wins
        for col, values in _read_tsv(p).items():
            table.setdefault(col, {}).update({k: v for k, v in values.items() if v not in ("", None)})
    if "KSLabel" in table:
        group = table.setdefault("group", {})
        for cid, lab in table["KSLabel"].items():
            group.setdefault(cid, lab)
    return table


def _read_tsv(path: Path) -> dict[str, dict[int, Any]]:
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
    except OSError as exc:
        raise DataError(f"'{path}' cannot be read ({exc})", fix="check the phy folder") from exc
    if not rows:
        return {}
    header = [h.strip() for h in rows[0]]
    id_col = next((i for i, h in enumerate(header) if h in ("cluster_id", "id")), None)
    if id_col is None:
        raise FormatError(f"'{path}' has no 'cluster_id' column (header: {header})", fix="phy writes cluster_id as the first column; re-export the folder")
    out: dict[str, dict[int, Any]] = {h: {} for i, h in enumerate(header) if i != id_col}
    for r, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            cid = int(row[id_col])
        except (ValueError, IndexError):
            raise FormatError(f"'{path}' line {r}: cluster id {row[id_col] if id_col < len(row) else ''!r} is not an integer", fix="fix or re-export the file") from None
        for i, h in enumerate(header):
            if i == id_col or i >= len(row):
                continue
            out[h][cid] = _cell(row[i].strip())
    return out


def _cell(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_units(folder: Path) -> tuple[list[np.ndarray], np.ndarray, float, dict[str, dict[int, Any]]]:
    """Spike times per cluster (sample indices, float64), cluster ids, the sample rate and the cluster table."""
    if not folder.is_dir():
        raise DataError(f"'{folder}' is not a folder", fix="spikes.folder must be the Kilosort/phy output folder")
    if not (folder / "spike_times.npy").is_file():
        raise DataError(f"'{folder}' has no spike_times.npy", fix="give the Kilosort/phy output folder as spikes.folder")
    rate = sample_rate_of(folder)
    times = np.asarray(_load(folder, "spike_times.npy")).reshape(-1)
    label_file = "spike_clusters.npy" if (folder / "spike_clusters.npy").is_file() else "spike_templates.npy"
    if not (folder / label_file).is_file():
        raise DataError(f"'{folder}' has neither spike_clusters.npy nor spike_templates.npy", fix="copy the whole Kilosort/phy folder")
    labels = np.asarray(_load(folder, label_file)).reshape(-1)
    if labels.size != times.size:
        raise FormatError(f"'{folder}': spike_times.npy has {times.size} spikes but {label_file} has {labels.size}", fix="the two files come from different sortings; copy the folder again")
    if not np.issubdtype(times.dtype, np.number) or not np.issubdtype(labels.dtype, np.integer):
        raise FormatError(f"'{folder}': spike_times.npy must be numeric and {label_file} integer (got {times.dtype}, {labels.dtype})", fix="re-export the folder")
    order = np.argsort(labels, kind="stable")
    ids, first = np.unique(labels[order], return_index=True)
    chunks = np.split(np.asarray(times[order], dtype=np.float64), first[1:])
    return [np.sort(c) for c in chunks], ids.astype(np.int64), rate, read_cluster_table(folder)
