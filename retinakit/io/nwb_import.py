"""An NWB file as a recording with the default import mapping: the ``units`` table, the one
stimulus series and the ``repeats`` intervals (see :mod:`.nwb`), plus the notes retinakit wrote
when it exported the file. Sits above the importer, which reads NWB pieces through :mod:`.nwb`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..recording import Recording
from .importer import import_recording
from .mapping import parse_mapping
from .nwb import has_intervals, read_notes


def load_nwb(path: str | os.PathLike[str], cells: list[int] | None = None) -> Recording:
    """Read an NWB file with the default mapping (units table, the one stimulus series, ``repeats`` intervals)."""
    p = Path(path).resolve()
    notes = read_notes(p)
    raw: dict[str, Any] = {
        "spikes": {"file": str(p), "format": "nwb"},
        "stimulus": {"file": str(p), "format": "nwb"},
        "checks": {"frame_gaps": "split"},
    }
    if notes.get("stimulus_kind"):
        raw["stimulus"]["kind"] = notes["stimulus_kind"]
    if has_intervals(p, "repeats"):
        raw["repeats"] = {"file": str(p), "format": "nwb", "intervals": "repeats"}
    mapping = parse_mapping(raw, p)
    rec = import_recording(mapping).recording
    if notes.get("frame_dt"):
        rec.frame_dt = float(notes["frame_dt"])
    if notes.get("provenance"):
        prov = dict(notes["provenance"])
        prov.update({k: v for k, v in rec.provenance.items() if k in ("train_blocks", "train_block_start_times_s", "source", "sha256")})
        rec.provenance = prov
    if cells is not None:
        rec = rec.select_cells(cells)
    return rec
