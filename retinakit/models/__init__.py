"""Model families: the CNN (and its batch-norm variant), the recurrent CNN and the LN baseline, one module each.

Every model maps z-scored stimulus windows ``(B, history, H, W)`` (oldest frame first; 1x1 for
full-field) to the expected spike count per bin ``(B, n_cells)``, and has ``spec()`` /
``from_spec()`` so a checkpoint is tensors plus JSON, never a pickle.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

MODEL_KINDS = ("cnn", "bn-cnn", "rcnn", "ln")


def build_model(kind: str, history: int, frame_shape: tuple[int, ...], n_cells: int, **options: Any) -> Any:
    """Build a fresh model of ``kind`` (one of :data:`MODEL_KINDS`) for this geometry.

    A CNN for a full-field stimulus (``frame_shape == ()``) is the temporal CNN
    (:mod:`.temporal_cnn`) when ``frame_rate`` is given and no explicit ``kernels``: its kernel
    lengths are set in seconds and its channels grow with the number of cells.

    ``rcnn`` is the recurrent CNN (:mod:`.rcnn`); ``frame_rate`` sets its time constants and
    burn-in in seconds, and on a full-field stimulus its channels grow with the number of cells
    as the temporal CNN's do.
    """
    if kind == "rcnn":
        from .rcnn import DEFAULT_FRAME_RATE, RCNN

        frame_rate = options.pop("frame_rate", None)
        filters = tuple(options.pop("filters", (8, 8)))
        if len(frame_shape) == 0:
            from .temporal_cnn import temporal_channels

            filters = temporal_channels(n_cells, filters)  # type: ignore[arg-type]
        rate = float(frame_rate) if frame_rate is not None else DEFAULT_FRAME_RATE
        return RCNN(history, frame_shape, n_cells, filters=filters, frame_rate=rate, **options)  # type: ignore[arg-type]
    if kind in ("cnn", "bn-cnn"):
        frame_rate = options.pop("frame_rate", None)
        if len(frame_shape) == 0 and "kernels" not in options and frame_rate is not None:  # (the readout option is for 2-D frames)
            from .temporal_cnn import TemporalCNN

            return TemporalCNN.for_recording(history, n_cells, float(frame_rate), filters=tuple(options.get("filters", (8, 8))),  # type: ignore[arg-type]
                                             batchnorm=(kind == "bn-cnn"), noise_std=float(options.get("noise_std", 0.05)))
        from .cnn import CNN

        return CNN(history, frame_shape, n_cells, batchnorm=(kind == "bn-cnn"), **options)
    if kind == "ln":
        from .ln import LN

        return LN(history, frame_shape, n_cells, **options)
    raise ConfigError(f"unknown model '{kind}'", fix=f"use one of {', '.join(MODEL_KINDS)}")


def model_from_spec(spec: dict[str, Any]) -> Any:
    """Rebuild a model (untrained weights) from its ``spec()`` dictionary."""
    family = spec.get("family")
    if family == "cnn":
        from .cnn import CNN

        return CNN.from_spec(spec)
    if family == "tcnn":
        from .temporal_cnn import TemporalCNN

        return TemporalCNN.from_spec(spec)
    if family == "rcnn":
        from .rcnn import RCNN

        return RCNN.from_spec(spec)
    if family == "ln":
        from .ln import LN

        return LN.from_spec(spec)
    raise ConfigError(f"unknown model family '{family}' in a checkpoint", fix="the checkpoint was written by another tool or a newer retinakit")
