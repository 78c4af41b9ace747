"""Every fit option in one dataclass, validated at the public boundary.

``FitConfig.from_dict`` is the single place where options are checked: unknown keys get a
"did you mean" suggestion, values are checked for type and range, and every problem is a
:class:`~retinakit.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ConfigError

MODELS = ("cnn", "bn-cnn", "rcnn", "ln")
LN_METHODS = ("auto", "sta", "ridge", "gd", "stc")
READOUTS = ("auto", "dense", "factorized")
FIRST_LAYERS = ("auto", "full", "separable")
AUTO_FIRST_LAYER = {"bn-cnn": "separable", "cnn": "full", "rcnn": "separable"}  # what ``first_layer="auto"`` means per model
AUTO_READOUT = {"bn-cnn": "factorized", "cnn": "dense", "rcnn": "factorized"}  # what ``readout="auto"`` means per model
AUTO_WEIGHT_EMA = {"bn-cnn": 1.0, "rcnn": 1.0}  # what ``weight_ema=None`` means per model (0 for the others)

# What an option meant in runs written before it existed (a run folder's config.json without the key).
LEGACY_VALUES = {"readout": "dense", "first_layer": "full", "weight_ema": 0.0}

# Adam learning rate when none is given: the LN has few parameters and takes larger steps.
DEFAULT_LR = {"cnn": 2e-3, "ln": 3e-2}

# Bins per batch when none is given: the plain CNN learns more per epoch with large batches
# (its hidden units die more often under noisy small-batch updates), the batch-norm CNN and the
# LN with small ones (more steps per epoch).
DEFAULT_BATCH = {"cnn": 2000, "bn-cnn": 500, "rcnn": 500, "ln": 500}

# Keys that may differ when a run is resumed (they do not change what is being fit).
RUNTIME_KEYS = ("device", "max_epochs", "max_steps", "patience", "deterministic", "mixed_precision")


@dataclass
class FitConfig:
    """Options of one fit, with their defaults (see the README's "Fitting" section).

    Attributes
    ----------
    model : ``bn-cnn`` (the default: McIntosh et al. 2016 with batch norm, Tanaka et al. 2019;
        it reaches in ~10 epochs what the plain CNN does not reach in 25 on the sample), ``cnn``
        (McIntosh et al. 2016 as published), ``rcnn`` (the batch-norm CNN's first layer followed by a
        gated bypass recurrent layer that carries a state over the movie, for adaptation over
        seconds; :mod:`retinakit.models.rcnn`) or ``ln``.
    history : frames of stimulus history the model sees (40 = 400 ms at 100 Hz).
    filters, kernels : CNN channels and kernel sizes of the two conv layers (``kernels=None``:
        the reference 15/11, scaled down for frames smaller than 50 pixels; see ``geometry_note``).
    lr, l2, l1 : Adam learning rate (default 2e-3 for the CNNs, 3e-2 for the LN); L2 penalty on weights; L1 penalty on output activity
        (mean over bins and cells of the predicted counts: it does not grow with the number of cells).
    noise_std : s.d. of the Gaussian noise on hidden activations while training (CNN).
    readout : the CNN's last layer on 2-D frames: ``dense`` (one weight per cell, channel and
        position, as published) or ``factorized`` (a spatial mask times a feature vector per cell,
        Klindt et al. 2017: far fewer weights, so less overfitting on minutes of data); ``auto``:
        factorized for ``bn-cnn`` and ``rcnn``, dense for the published ``cnn``.
    first_layer : the CNN's first convolution on 2-D frames: ``full`` (one weight per frame of
        history and pixel, as published) or ``separable`` (each channel a spatial filter times a
        temporal filter, ``history + k*k`` weights instead of ``history * k*k``: far less to learn
        from minutes of data); ``auto``: separable for ``bn-cnn`` and ``rcnn``, full for the
        published ``cnn``.
    batch_size : bins per batch (default 2000 for ``cnn``, 500 for ``bn-cnn`` and ``ln``);
        ``chunk_len`` : bins per contiguous chunk of movie in a batch (short chunks: a batch is
        drawn from many places in the movie, so batch-norm statistics are representative); for
        ``rcnn`` the bins that carry the loss in each chunk, after the model's burn-in.
    max_steps, max_epochs, patience : the training budget is ``max_steps`` optimiser steps (so a
        short recording gets many epochs and a long one few), optionally capped at ``max_epochs``
        epochs (``None``: no cap); training stops earlier when converged: ``patience`` epochs
        without a lower validation loss. ``lr_patience``, ``lr_factor``: learning-rate reduction
        on plateau. The run records whether it stopped by convergence or by budget.
    val_fraction, val_blocks : fraction of the training bins held out for validation, as
        ``val_blocks`` contiguous blocks spread over the recording.
    weight_ema : horizon, in epochs, of the exponential moving average of the network's weights
        that is validated, kept and saved (Polyak averaging: the average of the last steps' weights
        is less noisy than the last step's, so validation is smooth and the learning rate is not
        cut by noise); 0: the last step's weights, as published; ``None``: 1 epoch for ``bn-cnn``
        and ``rcnn``, 0 for the published ``cnn`` and the gradient-descent LN.
    seed, deterministic : random seed; deterministic algorithms (slower on GPU).
    device : ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    mixed_precision : bf16 autocast on GPU (ignored on CPU).
    cells : ids of the cells to model (``None``: all).
    ln_method : how the LN model is fit: ``sta`` (spike-triggered average, for white noise),
        ``ridge`` (ridge-regularised least squares, for correlated stimuli), ``gd`` (end-to-end
        gradient descent on the Poisson loss), ``stc`` (two filters: the ``sta``/``ridge`` filter plus
        a spike-triggered-covariance filter, a monotone nonlinearity each, summed; for ON-OFF cells)
        or ``auto`` (``stc``, on an ``sta`` filter for white noise and full-field stimuli, ``ridge``
        otherwise: the fair opponent, which keeps the single filter wherever a second one does not
        help on the validation blocks; ``sta`` when ``ln_rank`` is 0). ``stc`` ignores ``ln_rank``
        (its filters are rank 1).
    ln_rank : 1 for a space x time separable filter, 0 for a full filter.
    ln_crop : side (pixels) of the square crop around the receptive-field centre; ``None``:
        chosen per cell on the validation blocks; 0: the whole frame.
    ln_bins : bins of the monotone static nonlinearity (``sta``/``ridge``/``stc``).
    min_reliability : cells whose repeat-average reliability is below this are flagged
        unreliable and left out of summary means.
    """

    model: str = "bn-cnn"
    history: int = 40
    filters: list[int] = field(default_factory=lambda: [8, 8])
    kernels: list[int] | None = None
    lr: float | None = None
    l2: float = 1e-3
    l1: float = 1e-3
    noise_std: float = 0.05
    readout: str = "auto"
    first_layer: str = "auto"
    batch_size: int | None = None
    chunk_len: int = 100
    max_steps: int = 4000
    max_epochs: int | None = None
    patience: int = 6
    lr_patience: int = 2
    lr_factor: float = 0.5
    val_fraction: float = 0.1
    val_blocks: int = 5
    weight_ema: float | None = None
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    mixed_precision: bool = True
    cells: list[int] | None = None
    ln_method: str = "auto"
    ln_rank: int = 1
    ln_crop: int | None = None
    ln_bins: int = 20
    min_reliability: float = 0.3

    @classmethod
    def keys(cls) -> list[str]:
        """All option names."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "FitConfig":
        """Validate ``d`` (missing keys take defaults) and return the config."""
        d = dict(d or {})
        known = cls.keys()
        for key in d:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"known options: {', '.join(known)}"
                raise ConfigError(f"unknown fit option '{key}'", "the fit options", hint)
        cfg = cls(**d)
        cfg.validate()
        return cfg

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> "FitConfig":
        """The config of an existing run folder: options the run predates take the value they
        had then (:data:`LEGACY_VALUES`), so resuming an old run rebuilds the same network."""
        return cls.from_dict({**LEGACY_VALUES, **d})

    def resolved_readout(self) -> str:
        """``readout`` with ``auto`` resolved for this model (``dense`` or ``factorized``)."""
        return AUTO_READOUT.get(self.model, "dense") if self.readout == "auto" else self.readout

    def resolved_first_layer(self) -> str:
        """``first_layer`` with ``auto`` resolved for this model (``full`` or ``separable``)."""
        return AUTO_FIRST_LAYER.get(self.model, "full") if self.first_layer == "auto" else self.first_layer

    def resolved_weight_ema(self) -> float:
        """``weight_ema`` with ``None`` resolved for this model (epochs; 0 = no averaging)."""
        return AUTO_WEIGHT_EMA.get(self.model, 0.0) if self.weight_ema is None else float(self.weight_ema)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dictionary of every option (round-trips through :meth:`from_dict`)."""
        return asdict(self)

    def with_updates(self, **updates: Any) -> "FitConfig":
        """A validated copy with some options changed."""
        d = self.to_dict()
        d.update(updates)
        return FitConfig.from_dict(d)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every option's type and range; raise :class:`ConfigError` naming the key."""
        self.model = _choice("model", self.model, MODELS)
        self.ln_method = _choice("ln_method", self.ln_method, LN_METHODS)
        self.readout = _choice("readout", self.readout, READOUTS)
        self.first_layer = _choice("first_layer", self.first_layer, FIRST_LAYERS)
        self.history = _int("history", self.history, 1, 2000)
        self.filters = _int_list("filters", self.filters, 2, 1, 512)
        self.kernels = None if self.kernels is None else _int_list("kernels", self.kernels, 2, 1, 200)
        if self.lr is None:
            self.lr = DEFAULT_LR["ln" if self.model == "ln" else "cnn"]
        self.lr = _float("lr", self.lr, 0.0, 10.0, lo_open=True)
        self.l2 = _float("l2", self.l2, 0.0, 1e3)
        self.l1 = _float("l1", self.l1, 0.0, 1e3)
        self.noise_std = _float("noise_std", self.noise_std, 0.0, 10.0)
        if self.batch_size is None:
            self.batch_size = DEFAULT_BATCH.get(self.model, 500)
        self.batch_size = _int("batch_size", self.batch_size, 1, 10_000_000)
        self.chunk_len = _int("chunk_len", self.chunk_len, 1, 1_000_000)
        self.max_steps = _int("max_steps", self.max_steps, 0, 100_000_000)
        self.max_epochs = None if self.max_epochs is None else _int("max_epochs", self.max_epochs, 0, 100_000)
        self.patience = _int("patience", self.patience, 1, 100_000)
        self.lr_patience = _int("lr_patience", self.lr_patience, 0, 100_000)
        self.lr_factor = _float("lr_factor", self.lr_factor, 0.0, 1.0, lo_open=True)
        self.val_fraction = _float("val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True)
        self.val_blocks = _int("val_blocks", self.val_blocks, 1, 1000)
        self.weight_ema = None if self.weight_ema is None else _float("weight_ema", self.weight_ema, 0.0, 1000.0)
        self.seed = _int("seed", self.seed, 0, 2**31 - 1)
        self.deterministic = _bool("deterministic", self.deterministic)
        self.mixed_precision = _bool("mixed_precision", self.mixed_precision)
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"option 'device' must be a string such as auto, cpu or cuda, got {self.device!r}", "the fit options")
        if self.cells is not None:
            if not isinstance(self.cells, (list, tuple)) or not self.cells:
                raise ConfigError(f"option 'cells' must be a non-empty list of cell ids or null, got {self.cells!r}", "the fit options", "e.g. cells = [1, 4, 7]")
            self.cells = [_int("cells", c, 0, 2**62) for c in self.cells]
            if len(set(self.cells)) != len(self.cells):
                raise ConfigError(f"option 'cells' lists a cell twice: {self.cells}", "the fit options")
        self.ln_rank = _int("ln_rank", self.ln_rank, 0, 1)
        self.ln_crop = None if self.ln_crop is None else _int("ln_crop", self.ln_crop, 0, 100_000)
        self.ln_bins = _int("ln_bins", self.ln_bins, 2, 1000)
        self.min_reliability = _float("min_reliability", self.min_reliability, -1.0, 1.0)


def _fail(key: str, msg: str, fix: str | None = None) -> ConfigError:
    return ConfigError(f"option '{key}' {msg}", "the fit options", fix)


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(allowed)}"
        raise _fail(key, f"must be one of {', '.join(allowed)}, got {value!r}", hint)
    return str(value)


def _int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (isinstance(value, float) and value.is_integer()):
        raise _fail(key, f"must be an integer, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise _fail(key, f"must be between {lo} and {hi}, got {v}")
    return v


def _float(key: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(key, f"must be a number, got {value!r}")
    v = float(value)
    if v != v or (v <= lo if lo_open else v < lo) or v > hi:
        side = ">" if lo_open else ">="
        raise _fail(key, f"must be {side} {lo} and <= {hi}, got {v}")
    return v


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, f"must be true or false, got {value!r}")
    return value


def _int_list(key: str, value: Any, n: int, lo: int, hi: int) -> list[int]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * n
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise _fail(key, f"must be a list of {n} integers, got {value!r}", f"e.g. {key} = [8, 8]" if key == "filters" else None)
    return [_int(key, v, lo, hi) for v in value]
