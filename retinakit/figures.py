"""Shared figure helpers. matplotlib is imported lazily and always with the Agg backend."""

from __future__ import annotations

from typing import Any


def new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.0, 4.0), **kwargs: Any) -> tuple[Any, Any]:
    """A (figure, axes) pair on the non-interactive Agg backend; never shows a window."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=size, **kwargs)
    return fig, axes
