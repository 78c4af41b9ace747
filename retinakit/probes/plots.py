"""Figure helpers shared by the probes (matplotlib on Agg, imported lazily, files written atomically)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..atomic import save_figure
from ..figures import new_figure

MAX_PANELS = 16


def panel_grid(n: int, panel_size: tuple[float, float] = (3.2, 2.4)) -> tuple[Any, list[Any]]:
    """A figure with ``n`` small panels (at most :data:`MAX_PANELS`), returned flat; spare axes hidden."""
    n = max(1, min(int(n), MAX_PANELS))
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = new_figure(nrows, ncols, size=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat:
        ax.ticklabel_format(axis="y", useOffset=False)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def save(fig: Any, out_dir: Path, name: str, tight: bool = True) -> str:
    """Save ``fig`` as ``out_dir/name`` (tight layout unless ``tight`` is False) and return the file name."""
    if tight:
        fig.tight_layout()
    save_figure(fig, Path(out_dir) / name)
    return name


def panel_labels(cell_ids: list[int], with_population: bool = True) -> list[str]:
    """Panel titles: ``cell N`` for the first cells that fit, then ``population`` (mean over all cells)."""
    n_cells = min(len(cell_ids), MAX_PANELS - (1 if with_population else 0))
    labels = [f"cell {c}" for c in cell_ids[:n_cells]]
    return labels + (["population"] if with_population else [])
