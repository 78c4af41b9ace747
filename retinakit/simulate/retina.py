"""The model retina: cell types, a mosaic of receptive fields, bipolar subunits, temporal
filters, contrast adaptation and spike generation.

Each ganglion cell has its own bipolar *subunits*: small centre-surround (difference of
Gaussians) spatial fields on a hexagonal lattice inside its receptive-field centre, plus a wider
lattice of bipolar units that feed its contrast estimate. The stimulus (as contrast, see
:func:`~retinakit.simulate.stimuli.to_contrast`) passes through

1. the units' spatial fields (a matrix product, one row per unit);
2. a biphasic photoreceptor/bipolar temporal filter ``f(t) = g4(t; tau1) - b g4(t; tau2)``
   (``g4`` a unit-area gamma kernel of order 4), sampled at lags 1..L frames (L = 300 ms):
   lag 0 has zero weight, so bin ``t`` depends only on frames ``t - 1`` and earlier;
3. contrast adaptation: the local contrast ``sigma(t)``, the square root of an exponential
   running mean (``adapt_tau_s``) of the pooled squared bipolar signals (Gaussian pool of
   ``adapt_pool_sd`` receptive-field s.d.), divides the bipolar signals by ``1 + a sigma(t)``
   and raises the subunit threshold to ``subunit_threshold_adaptive`` adapted s.d.; optionally
   (``slow_adaptation`` > 0, off by default) a second, slow estimate ``sigma_s(t)`` of the same
   energy (time constant ``slow_adapt_tau_s``, seconds) adds ``slow_adaptation * a * sigma_s(t)``
   to that divisor: the slow component of contrast adaptation (Baccus and Meister 2002), whose
   gain keeps changing for seconds after a contrast switch;
4. the pathway: ON subunits keep the sign, OFF subunits flip it; *nonlinear* cell types
   rectify each subunit above that threshold (ON-OFF cells add rectified ON and OFF subunits)
   before the ganglion cell pools them with Gaussian weights (nonlinear spatial summation,
   Y-like); *linear* types pool the bipolar signals first (X-like);
5. a softplus output nonlinearity adapted to the stimulus ensemble (:meth:`Retina.calibrate`:
   threshold and slope from the generator's mean and spread, amplitude set so that the cell
   fires at its target mean rate), with a soft saturation at 300 Hz;
6. spikes: an inhomogeneous Poisson process with an absolute refractory period
   (:func:`poisson_dead_time`). The intensity is raised so that the expected count per bin equals
   the model rate, which is what ``true_rate`` stores.

The parameters and their values are described in ``data/SIMULATION.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, ModelError
from .stimuli import contrast_affine, to_contrast

SIMULATOR_VERSION = "1"
VIRTUAL_FIELD = (16, 16)  # the retinal patch simulated under a full-field stimulus


@dataclass(frozen=True)
class CellType:
    """A ganglion-cell type: pathway, spatial summation, receptive-field size, kinetics, rate."""

    name: str
    polarity: str  # "ON", "OFF" or "ON-OFF"
    nonlinear: bool  # rectified subunits (nonlinear spatial summation) or linear pooling
    rf_sigma_px: float  # s.d. of the Gaussian pooling of subunits (receptive-field centre)
    t_peak_s: float  # time to peak of the first lobe of the temporal filter
    biphasic: float  # area of the second (opposite) lobe relative to the first, 0..1
    target_rate_hz: float  # mean firing rate the output nonlinearity is set to
    adaptation: float  # strength ``a`` of the contrast gain control


CELL_TYPES: tuple[CellType, ...] = (
    CellType("OFF transient", "OFF", True, 2.0, 0.060, 0.85, 8.0, 25.0),
    CellType("ON transient", "ON", True, 2.0, 0.065, 0.85, 6.0, 25.0),
    CellType("OFF sustained", "OFF", False, 1.6, 0.075, 0.40, 12.0, 8.0),
    CellType("ON sustained", "ON", False, 1.6, 0.080, 0.40, 10.0, 8.0),
    CellType("ON-OFF transient", "ON-OFF", True, 2.2, 0.060, 0.85, 7.0, 25.0),
)


@dataclass(frozen=True)
class OSRCellType(CellType):
    """A cell type with an omitted-stimulus pathway on top of its (ON, subunit) drive.

    A phenomenological ground truth for the OSR probe, after the resonance models of the OSR
    (Werner et al. 2008; Gao et al. 2009): the cell's pooled rectified subunit drive ``e(t)``
    without its slow mean (an exponential mean over the longest resonator period subtracted)
    feeds a bank of damped resonators (natural periods geometric in ``resonator_periods_s``,
    impulse response ``rho^n cos(2 pi n / P_i)``, all decaying with ``resonator_tau_s``, so that
    their ratios hold when the input stops). Their running energies (exponential mean of the
    squared output over ``energy_tau_s``) give the rhythm of the recent input ``P(t)``: the period of the most
    energetic resonator, refined by a parabola through the log energies of it and its two
    neighbours (in log period): the pathway adapts to the flash rhythm. It
    predicts the drive one rhythm period later, ``e(t - P(t))``, and this prediction is
    cancelled by inhibition from the actual drive (``inhibition`` x the larger of ``e`` and
    ``e`` smoothed over ``inhibition_tau_s``). While flashes keep coming the two coincide; when
    a flash is omitted the uncancelled prediction fires a burst at the latency of the flash
    response after the time the flash was due, so the latency from the last flash grows with
    the period with slope near 1 (Schwartz et al. 2007). The flash responses themselves are weak
    (``direct_weight``), as in the recordings. The generator is
    ``direct_weight * e + osr_weight * max(e(t - P(t)) - inhibition, 0)``.
    """

    resonator_periods_s: tuple[float, float] = (0.04, 0.25)
    n_resonators: int = 16
    resonator_tau_s: float = 0.2
    energy_tau_s: float = 0.1
    inhibition: float = 1.5
    inhibition_tau_s: float = 0.02
    direct_weight: float = 0.4
    osr_weight: float = 2.0


#: Opt-in cell types, not in the default mix (``SimulationSpec.cell_types`` / ``--cell-types``).
EXTRA_CELL_TYPES: tuple[CellType, ...] = (
    OSRCellType("ON omitted-stimulus", "ON", True, 2.0, 0.065, 0.85, 6.0, 25.0),
)


def type_slug(ct: CellType) -> str:
    """A cell type's name for the command line: ``ON transient`` -> ``on-transient``."""
    return ct.name.lower().replace(" ", "-")


def resolve_cell_types(names: tuple[str, ...] | list[str]) -> tuple[CellType, ...]:
    """Cell types from slugs or names (``default`` = the five standard types); ConfigError if unknown."""
    table = {type_slug(t): t for t in CELL_TYPES + EXTRA_CELL_TYPES}
    out: list[CellType] = []
    for raw in names:
        key = str(raw).strip().lower().replace(" ", "-").replace("_", "-")
        if key == "default":
            out.extend(CELL_TYPES)
        elif key in table:
            out.append(table[key])
        else:
            import difflib

            near = difflib.get_close_matches(key, list(table) + ["default"], n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ConfigError(f"unknown cell type '{raw}'", "--cell-types", f"{hint}use default or any of {', '.join(table)}")
    if not out:
        raise ConfigError("no cell type given", "--cell-types", "e.g. --cell-types default,on-omitted-stimulus")
    return tuple(out)


def omission_pathway(e: np.ndarray, ct: OSRCellType, frame_rate: float) -> np.ndarray:
    """The generator of an :class:`OSRCellType` cell from its rectified subunit drive ``e`` ``(T,)``.

    Causal: ``out[t]`` depends on ``e[:t + 1]`` only (and ``e[t]`` on frames before ``t``).
    """
    from scipy.signal import lfilter

    x = np.asarray(e, dtype=np.float64)
    T = x.size
    dt = 1.0 / float(frame_rate)
    periods = np.geomspace(ct.resonator_periods_s[0], ct.resonator_periods_s[1], int(ct.n_resonators))
    c = 1.0 - math.exp(-dt / periods[-1])
    x_ac = x - lfilter([c], [1.0, -(1.0 - c)], x)  # the drive without its slow mean (which every resonator would pass)
    energies = []
    for P in periods:
        w = 2.0 * math.pi * dt / P
        rho = math.exp(-dt / ct.resonator_tau_s)
        # impulse response rho^n cos(w n): (1 - rho cos w z^-1) / (1 - 2 rho cos w z^-1 + rho^2 z^-2)
        y = lfilter([1.0, -rho * math.cos(w)], [1.0, -2.0 * rho * math.cos(w), rho * rho], x_ac)
        a = 1.0 - math.exp(-dt / ct.energy_tau_s)
        energies.append(lfilter([a], [1.0, -(1.0 - a)], y * y))
    logE = np.log(np.maximum(np.stack(energies, 1), 1e-300))
    j = np.clip(np.argmax(logE, axis=1), 1, periods.size - 2)  # the resonator with the most energy,
    rows = np.arange(T)
    a_, b_, c_ = logE[rows, j - 1], logE[rows, j], logE[rows, j + 1]
    den = a_ - 2.0 * b_ + c_
    shift = np.where(den < 0, 0.5 * (a_ - c_) / np.where(den < 0, den, -1.0), 0.0)  # refined by a parabola in log period
    logp = np.log(periods)
    step = logp[1] - logp[0]
    rhythm = np.exp(logp[j] + np.clip(shift, -1.0, 1.0) * step) / dt  # frames
    src = np.arange(T) - rhythm
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0
    xp = np.concatenate([[0.0], x])  # index -1 (before the start) reads 0
    prediction = (1.0 - frac) * xp[np.clip(i0, -1, T - 1) + 1] + frac * xp[np.clip(i0 + 1, -1, T - 1) + 1]
    b = 1.0 - math.exp(-dt / ct.inhibition_tau_s)
    inhibition = ct.inhibition * np.maximum(x, lfilter([b], [1.0, -(1.0 - b)], x))
    return ct.direct_weight * x + ct.osr_weight * np.maximum(prediction - inhibition, 0.0)



@dataclass(frozen=True)
class RetinaParams:
    """Parameters shared by all cells (see ``data/SIMULATION.md``)."""

    subunit_sigma_px: float = 1.0  # bipolar subunit centre s.d.
    subunit_surround_sigma_px: float = 2.5  # bipolar surround s.d.
    subunit_surround_weight: float = 0.2  # surround strength (volume relative to the centre)
    field_radius_sd: float = 3.0  # subunit fields are cut at this many surround s.d.
    subunit_spacing_px: float = 2.0  # hexagonal lattice spacing of a cell's subunits
    subunit_extent: float = 2.0  # subunits lie within this many rf_sigma of the centre
    filter_order: int = 4  # order of the gamma kernels of the temporal filter
    filter_tau_ratio: float = 1.6  # tau2 / tau1 (second lobe later and wider)
    filter_length_s: float = 0.30  # temporal filters end here (30 frames at 100 Hz)
    subunit_threshold: float = 0.0  # subunit rectification threshold, in units of 1 / adaptation
    subunit_threshold_adaptive: float = 1.0  # plus this many current (adapted) s.d. of the bipolar signal
    adapt_tau_s: float = 0.06  # time constant of the local contrast estimate
    slow_adaptation: float = 0.0  # strength of the slow contrast adaptation, relative to the fast one's a (0 = none)
    slow_adapt_tau_s: float = 3.0  # time constant of the slow contrast estimate
    adapt_pool_sd: float = 1.5  # the contrast estimate pools bipolar units over this many rf_sigma (s.d.)
    adapt_pool_spacing_px: float = 2.5  # lattice spacing of the units feeding the contrast estimate
    output_threshold_sd: float = 1.0  # output threshold above the generator mean, in s.d.
    output_sharpness: float = 4.0  # softplus slope per generator s.d.
    max_rate_hz: float = 300.0  # soft saturation of the firing rate
    refractory_s: float = 0.002  # absolute refractory period
    heterogeneity: float = 0.1  # relative cell-to-cell spread of size and kinetics
    margin_sd: float = 1.5  # receptive-field centres keep this many rf_sigma from the frame edge,
    margin_frac: float = 0.25  # and at least this fraction of the frame (cells well inside the stimulus)


@dataclass
class Cell:
    """Ground truth of one simulated ganglion cell (JSON-able through :meth:`to_json`)."""

    id: int
    type: CellType
    center: tuple[float, float]  # (row, col) in pixels
    rf_sigma_px: float
    t_peak_s: float
    target_rate_hz: float
    subunits: np.ndarray  # (k, 2) subunit centres (row, col)
    subunit_weights: np.ndarray  # (k,) pooling weights, sum 1
    pool_units: np.ndarray  # (m, 2) centres of the bipolar units feeding the contrast estimate
    pool_weights: np.ndarray  # (m,) their weights, sum 1
    pool_sigma_px: float  # s.d. of the contrast-adaptation pool

    @property
    def polarity(self) -> str:
        """``ON``, ``OFF`` or ``ON-OFF``."""
        return self.type.polarity

    def to_json(self, fullfield: bool = False) -> dict[str, Any]:
        """The cell's ground truth as plain JSON types."""
        return {
            "id": int(self.id),
            "type": self.type.name,
            "polarity": self.type.polarity,
            "nonlinear": bool(self.type.nonlinear),
            "center_px": None if fullfield else [round(float(self.center[0]), 3), round(float(self.center[1]), 3)],
            "rf_sigma_px": round(float(self.rf_sigma_px), 4),
            "t_peak_ms": round(1000.0 * float(self.t_peak_s), 2),
            "biphasic_index": float(self.type.biphasic),
            "adaptation": float(self.type.adaptation),
            "adaptation_pool_sigma_px": round(float(self.pool_sigma_px), 4),
            "target_rate_hz": round(float(self.target_rate_hz), 3),
            "n_subunits": int(self.subunits.shape[0]),
            **({"omitted_stimulus_pathway": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.type).items() if k not in asdict(CELL_TYPES[0])}}
               if isinstance(self.type, OSRCellType) else {}),
        }


@dataclass
class OutputNonlinearity:
    """Per-cell softplus output stage: ``rate = sat(amp * softplus(k * (g - theta) / scale))``."""

    theta: np.ndarray
    scale: np.ndarray
    amp: np.ndarray
    sharpness: float
    max_rate_hz: float

    def __call__(self, g: np.ndarray) -> np.ndarray:
        """Firing rate in Hz for generator signals ``g`` ``(T, n_cells)``."""
        z = self.sharpness * (np.asarray(g, dtype=np.float64) - self.theta) / self.scale
        raw = self.amp * np.logaddexp(0.0, z)
        return raw / (1.0 + raw / self.max_rate_hz)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "theta": [float(v) for v in self.theta],
            "scale": [float(v) for v in self.scale],
            "amp_hz": [float(v) for v in self.amp],
            "sharpness": float(self.sharpness),
            "max_rate_hz": float(self.max_rate_hz),
        }


def temporal_filter(t_peak_s: float, biphasic: float, frame_rate: float, params: RetinaParams = RetinaParams()) -> np.ndarray:
    """Weights of a biphasic filter at lags 1..L frames (``w[0]`` is lag 1; lag 0 has no weight).

    ``f(t) = g(t; tau1) - biphasic * g(t; tau2)`` with ``g(t; tau) = t^n exp(-t / tau) / (n! tau^(n+1))``
    (unit area, peak at ``n * tau``), ``tau1 = t_peak / n`` and ``tau2 = ratio * tau1``. Weights are
    ``f(lag * dt) * dt``, so the filter's area (``1 - biphasic``) does not depend on the frame rate.
    """
    dt = 1.0 / float(frame_rate)
    n = int(params.filter_order)
    L = max(2, int(round(params.filter_length_s * frame_rate)))
    t = np.arange(1, L + 1, dtype=np.float64) * dt
    tau1 = float(t_peak_s) / n
    tau2 = params.filter_tau_ratio * tau1

    def gam(tau: float) -> np.ndarray:
        return t**n * np.exp(-t / tau) / (math.factorial(n) * tau ** (n + 1))

    return (gam(tau1) - float(biphasic) * gam(tau2)) * dt


def _hex_lattice(center: tuple[float, float], radius: float, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Points of a randomly rotated and shifted hexagonal lattice within ``radius`` of ``center``."""
    n = int(math.ceil(radius / spacing)) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    pts = np.stack([(i + 0.5 * j).ravel() * spacing, (j * math.sqrt(3) / 2).ravel() * spacing], axis=1)
    ang = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    pts = pts @ rot.T + rng.uniform(-0.5, 0.5, 2) * spacing
    keep = np.hypot(pts[:, 0], pts[:, 1]) <= radius
    if not np.any(keep):
        keep = np.argmin(np.hypot(pts[:, 0], pts[:, 1])) == np.arange(pts.shape[0])
    return pts[keep] + np.asarray(center, dtype=np.float64)


def _mosaic(types: list[CellType], frame: tuple[int, int], params: RetinaParams, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Centres: per type a mosaic with an exclusion zone (best-candidate sampling)."""
    H, W = frame
    centres: list[tuple[float, float]] = []
    for k, ct in enumerate(types):
        m_r = min(max(params.margin_sd * ct.rf_sigma_px, params.margin_frac * H), 0.4 * (H - 1))
        m_c = min(max(params.margin_sd * ct.rf_sigma_px, params.margin_frac * W), 0.4 * (W - 1))
        cand = np.stack([rng.uniform(m_r, H - 1 - m_r, 30), rng.uniform(m_c, W - 1 - m_c, 30)], axis=1)
        same = np.array([centres[i] for i in range(k) if types[i].name == ct.name]).reshape(-1, 2)
        other = np.array(centres).reshape(-1, 2)
        score = np.zeros(cand.shape[0])
        if same.size:
            score += np.min(np.linalg.norm(cand[:, None] - same[None], axis=2), axis=1)
        if other.size:
            score += 0.25 * np.min(np.linalg.norm(cand[:, None] - other[None], axis=2), axis=1)
        best = cand[int(np.argmax(score))]
        centres.append((float(best[0]), float(best[1])))
    return centres


def _causal_filter(u: np.ndarray, w: np.ndarray, lag0: bool = False) -> np.ndarray:
    """Causal FIR filter along axis 0 by FFT, zeros before the start.

    ``y[t] = sum_j w[j] * u[t - 1 - j]`` (lags 1..L, the default), or ``u[t - j]`` (lags 0..L-1)
    when ``lag0``.
    """
    T = u.shape[0]
    kernel = np.asarray(w, dtype=np.float64) if lag0 else np.concatenate([[0.0], w])
    n = 1 << int(math.ceil(math.log2(T + kernel.size)))
    spec = np.fft.rfft(u, n=n, axis=0) * np.fft.rfft(kernel, n=n).reshape((-1,) + (1,) * (u.ndim - 1))
    return np.fft.irfft(spec, n=n, axis=0)[:T].astype(u.dtype, copy=False)


def _ema(x: np.ndarray, tau_bins: float) -> np.ndarray:
    """Causal exponential running mean along axis 0 (including the current sample; zeros before the start)."""
    a = 1.0 - math.exp(-1.0 / max(tau_bins, 1e-9))
    L = max(2, int(math.ceil(12.0 * max(tau_bins, 1.0))))  # truncated where the weight is < 1e-5
    kernel = a * (1.0 - a) ** np.arange(L)
    return _causal_filter(x, kernel, lag0=True)


class Retina:
    """A simulated patch of retina: ganglion cells over a frame of ``frame_shape`` pixels.

    Build with :meth:`build`; :meth:`generator` maps a stimulus to each cell's generator signal,
    :meth:`calibrate` adapts the output nonlinearity to a stimulus ensemble and
    :meth:`rate_hz` returns firing rates. ``frame_shape == ()`` means full-field stimuli.
    """

    def __init__(self, frame_shape: tuple[int, ...], cells: list[Cell], frame_rate: float, params: RetinaParams) -> None:
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.cells = cells
        self.frame_rate = float(frame_rate)
        self.params = params
        self.output: OutputNonlinearity | None = None
        self._grid = self.frame_shape if self.frame_shape else VIRTUAL_FIELD
        # bipolar units, cell by cell: the cell's subunits, then its contrast-pool units
        centres, owner, sub_w, pool_w = [], [], [], []
        for k, c in enumerate(cells):
            for pts, w, is_sub in ((c.subunits, c.subunit_weights, True), (c.pool_units, c.pool_weights, False)):
                centres.append(pts)
                owner.append(np.full(pts.shape[0], k))
                sub_w.append(w if is_sub else np.zeros(pts.shape[0]))
                pool_w.append(np.zeros(pts.shape[0]) if is_sub else w)
        self._unit_cell = np.concatenate(owner)
        n_units = self._unit_cell.size
        self._sub_w = np.zeros((n_units, len(cells)), dtype=np.float32)
        self._pool_w = np.zeros((n_units, len(cells)), dtype=np.float32)
        self._sub_w[np.arange(n_units), self._unit_cell] = np.concatenate(sub_w)
        self._pool_w[np.arange(n_units), self._unit_cell] = np.concatenate(pool_w)
        self._fields = self._unit_fields(np.concatenate(centres))  # (n_units, H*W)
        self._rowsum = self._fields.sum(axis=1)
        self._filters = [temporal_filter(c.t_peak_s, c.type.biphasic, self.frame_rate, params) for c in cells]

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, frame_shape: tuple[int, ...], n_cells: int, seed: int = 0, frame_rate: float = 100.0, params: RetinaParams | None = None, types: tuple[CellType, ...] = CELL_TYPES) -> "Retina":
        """A retina of ``n_cells`` cells, types taken in turn from ``types``, deterministic for ``seed``."""
        params = params or RetinaParams()
        if n_cells < 1:
            raise ConfigError(f"the retina needs at least one cell, got {n_cells}", fix="use --cells 1 or more")
        shape = tuple(int(v) for v in frame_shape)
        grid = shape if shape else VIRTUAL_FIELD
        if len(grid) != 2 or min(grid) < 8:
            raise ConfigError(f"frames must be at least 8x8 pixels, got {'x'.join(map(str, grid))}", fix="use --size 8 or larger (e.g. 32 or 50)")
        rng = np.random.default_rng([int(seed), 0])
        spread = params.heterogeneity
        sized = [replace(ct, rf_sigma_px=ct.rf_sigma_px * float(np.exp(rng.uniform(-spread, spread)))) for ct in (types[k % len(types)] for k in range(n_cells))]
        centres = _mosaic(sized, grid, params, rng)
        H, W = grid
        cells = []
        for k, (ct, c) in enumerate(zip(sized, centres)):
            base = next(t for t in types if t.name == ct.name)
            sub = _hex_lattice(c, params.subunit_extent * ct.rf_sigma_px, params.subunit_spacing_px, rng)
            w = np.exp(-0.5 * ((sub - np.asarray(c)) ** 2).sum(axis=1) / ct.rf_sigma_px**2)
            pool_sd = params.adapt_pool_sd * ct.rf_sigma_px
            pool = _hex_lattice(c, 2.0 * pool_sd, params.adapt_pool_spacing_px, rng)
            inside = (pool[:, 0] >= -0.5) & (pool[:, 0] <= H - 0.5) & (pool[:, 1] >= -0.5) & (pool[:, 1] <= W - 0.5)
            pool = pool[inside] if np.any(inside) else sub
            pw = np.exp(-0.5 * ((pool - np.asarray(c)) ** 2).sum(axis=1) / pool_sd**2)
            cells.append(
                Cell(
                    id=k + 1,
                    type=base,
                    center=c,
                    rf_sigma_px=ct.rf_sigma_px,
                    t_peak_s=ct.t_peak_s * float(np.exp(rng.uniform(-spread, spread))),
                    target_rate_hz=ct.target_rate_hz * float(np.exp(rng.uniform(-0.3, 0.3))),
                    subunits=sub,
                    subunit_weights=(w / w.sum()).astype(np.float32),
                    pool_units=pool,
                    pool_weights=(pw / pw.sum()).astype(np.float32),
                    pool_sigma_px=pool_sd,
                )
            )
        return cls(shape, cells, frame_rate, params)

    def _unit_fields(self, centres: np.ndarray) -> np.ndarray:
        """Difference-of-Gaussians spatial fields of bipolar units centred at ``centres``, ``(n, H*W)``."""
        p = self.params
        H, W = self._grid
        yy, xx = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
        d2 = (yy.ravel()[None, :] - centres[:, :1]) ** 2 + (xx.ravel()[None, :] - centres[:, 1:2]) ** 2
        sc, ss = p.subunit_sigma_px, p.subunit_surround_sigma_px
        centre = np.exp(-0.5 * d2 / sc**2) / (2 * math.pi * sc**2)
        surround = np.exp(-0.5 * d2 / ss**2) / (2 * math.pi * ss**2)
        fields = centre - p.subunit_surround_weight * surround
        # fields end at 3 surround s.d. (also keeps float32 denormals, which are very slow, out)
        fields[d2 > (p.field_radius_sd * max(sc, ss)) ** 2] = 0.0
        return fields.astype(np.float32)

    # ------------------------------------------------------------------ response
    @property
    def n_cells(self) -> int:
        """Number of ganglion cells."""
        return len(self.cells)

    @property
    def is_fullfield(self) -> bool:
        """True when the retina sees full-field (one value per frame) stimuli."""
        return not self.frame_shape

    def ground_truth(self) -> list[dict[str, Any]]:
        """Each cell's type, centre, polarity, size and kinetics as JSON-able dicts."""
        return [c.to_json(self.is_fullfield) for c in self.cells]

    def _check_stimulus(self, stimulus: np.ndarray) -> None:
        if stimulus.shape[1:] != self.frame_shape:
            want = "(T,)" if self.is_fullfield else f"(T, {self.frame_shape[0]}, {self.frame_shape[1]})"
            raise ModelError(f"the retina expects stimuli of shape {want}, got {stimulus.shape}", fix="build the retina for this frame size")

    def bipolar(self, stimulus: np.ndarray, chunk: int = 4096, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Linear bipolar signals ``(T, n_units)``: spatial fields, then each cell's temporal filter."""
        stim = np.asarray(stimulus)
        self._check_stimulus(stim)
        T = stim.shape[0]
        u = np.empty((T, self._unit_cell.size), dtype=np.float32)
        if self.is_fullfield:
            u[:] = to_contrast(stim)[:, None] * self._rowsum[None, :]
            if progress:
                progress(T)
        else:
            S = self._fields.T  # (H*W, n_units)
            scale, offset = contrast_affine(stim.dtype)  # contrast = x * scale + offset
            for s in range(0, T, chunk):
                e = min(T, s + chunk)
                u[s:e] = stim[s:e].reshape(e - s, -1).astype(np.float32) @ S
                if scale != 1.0 or offset != 0.0:
                    u[s:e] = u[s:e] * scale + offset * self._rowsum[None, :]
                if progress:
                    progress(e - s)
        x = np.empty_like(u)
        for k, w in enumerate(self._filters):
            cols = self._unit_cell == k
            x[:, cols] = _causal_filter(u[:, cols], w)
        return x

    def _adaptation(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Contrast gain ``1 / (1 + a sigma)`` (float32) and local contrast ``sigma``, ``(T, n_cells)`` each, from bipolar signals."""
        energy = (x * x) @ self._pool_w  # (T, n_cells) pooled squared bipolar signal
        sigma = np.sqrt(np.maximum(_ema(energy.astype(np.float64), self.params.adapt_tau_s * self.frame_rate), 0.0))
        a = np.array([c.type.adaptation for c in self.cells])
        divisor = 1.0 + a[None, :] * sigma
        if self.params.slow_adaptation > 0:
            sigma_slow = np.sqrt(np.maximum(_ema(energy.astype(np.float64), self.params.slow_adapt_tau_s * self.frame_rate), 0.0))
            divisor = divisor + self.params.slow_adaptation * a[None, :] * sigma_slow
        gain = (1.0 / divisor).astype(np.float32)
        return gain, sigma

    def contrast_gain(self, stimulus: np.ndarray) -> np.ndarray:
        """The contrast-adaptation gain ``1 / (1 + a sigma(t) [+ slow part])`` of every cell, ``(T, n_cells)``: the ground
        truth for contrast-adaptation probes (the bipolar signals are divided by ``1 / gain``)."""
        return self._adaptation(self.bipolar(stimulus))[0]

    def generator(self, stimulus: np.ndarray, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Generator signal of each cell, ``(T, n_cells)``: after adaptation and (sub)unit rectification."""
        x = self.bipolar(stimulus, progress=progress)
        gain, sigma = self._adaptation(x)
        g = np.empty((x.shape[0], self.n_cells), dtype=np.float64)
        for k, c in enumerate(self.cells):
            cols = np.flatnonzero(self._sub_w[:, k])
            v = x[:, cols] * gain[:, k : k + 1]
            if c.type.polarity == "OFF":
                v = -v
            if c.type.nonlinear:
                theta = self.params.subunit_threshold / c.type.adaptation + self.params.subunit_threshold_adaptive * (gain[:, k : k + 1] * sigma[:, k : k + 1])
                if c.type.polarity == "ON-OFF":
                    v = np.maximum(v - theta, 0.0) + np.maximum(-v - theta, 0.0)
                else:
                    v = np.maximum(v - theta, 0.0)
            g[:, k] = v @ self._sub_w[cols, k]
            if isinstance(c.type, OSRCellType):
                g[:, k] = omission_pathway(g[:, k], c.type, self.frame_rate)
        return g

    def calibrate(self, generator: np.ndarray) -> OutputNonlinearity:
        """Adapt the output stage to a stimulus ensemble (its generator signals ``(T, n_cells)``).

        Threshold ``theta = mean + output_threshold_sd * sd`` and slope per s.d. are set from the
        ensemble, and the amplitude so that each cell's mean rate equals its target rate. Stores
        and returns the result (used by :meth:`rate_hz`).
        """
        g = np.asarray(generator, dtype=np.float64)
        p = self.params
        mean = g.mean(axis=0)
        sd = g.std(axis=0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        theta = mean + p.output_threshold_sd * sd
        amp = np.ones(self.n_cells)
        targets = np.array([c.target_rate_hz for c in self.cells])
        z = p.output_sharpness * (g - theta) / sd
        soft = np.logaddexp(0.0, z)
        for k in range(self.n_cells):
            lo, hi = 1e-6, 10.0 * p.max_rate_hz
            for _ in range(60):  # bisection: the mean rate grows with the amplitude
                mid = math.sqrt(lo * hi)
                r = mid * soft[:, k]
                if np.mean(r / (1.0 + r / p.max_rate_hz)) < targets[k]:
                    lo = mid
                else:
                    hi = mid
            amp[k] = math.sqrt(lo * hi)
        self.output = OutputNonlinearity(theta=theta, scale=sd, amp=amp, sharpness=p.output_sharpness, max_rate_hz=p.max_rate_hz)
        return self.output

    def rate_hz(self, generator: np.ndarray) -> np.ndarray:
        """Firing rates in Hz ``(T, n_cells)`` through the calibrated output stage."""
        if self.output is None:
            raise ModelError("the retina's output stage is not calibrated", fix="call Retina.calibrate(generator) on a stimulus ensemble first")
        return self.output(generator)

    def respond(self, stimulus: np.ndarray) -> np.ndarray:
        """Firing rates in Hz for ``stimulus``; calibrates on this stimulus first if not yet calibrated."""
        g = self.generator(stimulus)
        if self.output is None:
            self.calibrate(g)
        return self.rate_hz(g)


def poisson_dead_time(expected: np.ndarray, rng: np.random.Generator, dead_bins: float) -> list[np.ndarray]:
    """Spike times (in bins, float64) of a Poisson process with an absolute refractory period.

    ``expected`` is ``(T, n)``: the expected spike count per bin of each train. Within bin ``t``
    the free intensity is ``lam = rho / (1 - rho * dead_bins)``, so that the renewal process with
    dead time ``dead_bins`` fires ``rho`` spikes per bin on average (``lam / (1 + lam d) = rho``).
    Spikes are drawn by time rescaling of the piecewise-constant intensity, all trains at once.
    A spike at time ``u`` lies in bin ``floor(u)``.
    """
    rho = np.asarray(expected, dtype=np.float64)
    if rho.ndim != 2:
        raise ModelError(f"expected counts must be (T, n), got shape {rho.shape}")
    T, n = rho.shape
    d = float(dead_bins)
    rho = np.clip(rho, 0.0, 0.9 / d if d > 0 else np.inf)
    lam = rho / (1.0 - rho * d) + 1e-12
    C = np.zeros((n, T + 1))
    np.cumsum(lam.T, axis=1, out=C[:, 1:])
    offsets = np.concatenate([[0.0], np.cumsum(C[:, -1] + 1.0)[:-1]])
    flat = (C + offsets[:, None]).ravel()
    lam_t = lam.T
    base = np.arange(n) * (T + 1)
    trains = np.arange(n)
    y = rng.exponential(size=n)  # target of the integrated intensity, per train
    out_train: list[np.ndarray] = []
    out_time: list[np.ndarray] = []
    while trains.size:
        pos = np.searchsorted(flat, y + offsets[trains], side="right") - 1 - base[trains]
        alive = pos < T
        trains, pos, y = trains[alive], pos[alive], y[alive]
        if not trains.size:
            break
        frac = (y - C[trains, pos]) / lam_t[trains, pos]
        u = pos + np.clip(frac, 0.0, 1.0 - 1e-6)
        out_train.append(trains)
        out_time.append(u)
        u0 = u + d
        b0 = np.floor(u0).astype(np.int64)
        alive = b0 < T
        trains, u0, b0 = trains[alive], u0[alive], b0[alive]
        y = C[trains, b0] + lam_t[trains, b0] * (u0 - b0) + rng.exponential(size=trains.size)
    if not out_train:
        return [np.zeros(0) for _ in range(n)]
    tr = np.concatenate(out_train)
    tm = np.concatenate(out_time)
    order = np.lexsort((tm, tr))
    tr, tm = tr[order], tm[order]
    splits = np.searchsorted(tr, np.arange(1, n))
    return np.split(tm, splits)


def bin_spike_bins(spikes: list[np.ndarray], n_bins: int) -> np.ndarray:
    """Counts ``(n_bins, n)`` of spike times given in bins (a spike at ``u`` counts in ``floor(u)``)."""
    out = np.zeros((int(n_bins), len(spikes)), dtype=np.float32)
    for k, s in enumerate(spikes):
        out[:, k] = np.bincount(np.floor(s).astype(np.int64), minlength=n_bins)[:n_bins]
    return out
