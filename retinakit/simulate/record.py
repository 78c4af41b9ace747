"""A simulated recording: training blocks and a repeated test segment, as a lab records them.

The session runs on one clock (seconds): each training block and each test repeat is preceded
by a lead-in of stimulus (shown to the retina, not recorded) and separated from the previous one
by a gap, so the frame times of a :class:`~retinakit.recording.Recording` are those a photodiode
would give. Every test repeat shows the same frames after the same lead-in, so the model rate is
identical across repeats and only the spikes differ (fresh noise); ``true_rate`` stores the
expected count per bin. :func:`export_spikes` writes the spikes as times in seconds plus the
frame times, the raw form the spike-time loaders read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..recording import Recording, Split
from .retina import CELL_TYPES, SIMULATOR_VERSION, CellType, Retina, RetinaParams, bin_spike_bins, poisson_dead_time, resolve_cell_types
from .stimuli import FLICKERS, STIMULI, make_stimulus

# Independent random streams, so that e.g. more repeats do not change the training stimulus.
_STREAM_TRAIN_STIM, _STREAM_TEST_STIM, _STREAM_TRAIN_SPIKES, _STREAM_TEST_SPIKES = 1, 2, 3, 4
RATE_WIDTHS_MS = (5, 10, 20)


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate. Defaults are the bundled natural-scene sample's starting point."""

    stimulus: str = "naturalscene"  # whitenoise | naturalscene | fullfield
    minutes: float = 10.0  # training duration
    n_cells: int = 8
    size: tuple[int, int] = (32, 32)  # frame size in pixels (checkers); ignored for full-field
    n_repeats: int = 10
    test_seconds: float = 20.0
    frame_rate: float = 100.0  # Hz; bins equal frames
    seed: int = 0
    flicker: str = "gaussian"  # full-field only: gaussian | binary
    block_minutes: float = 5.0  # training comes in blocks of at most this length
    lead_in_s: float = 1.0  # stimulus shown before each block / repeat, not recorded
    gap_s: float = 2.0  # time between segments on the session clock
    cell_types: tuple[str, ...] = ()  # cell mix, taken in turn (see resolve_cell_types); () = the five standard types
    flash_trains: float = 0.0  # natural scenes only: fraction of fixations shown as 6-20 Hz flash trains of the image
    slow_adaptation: float = 0.0  # strength of the retina's slow contrast adaptation relative to its fast one (0 = none; RetinaParams.slow_adaptation)

    def validate(self) -> "SimulationSpec":
        """Check every field; raise :class:`~retinakit.errors.ConfigError` naming the bad one."""
        if self.stimulus not in STIMULI:
            raise ConfigError(f"unknown stimulus '{self.stimulus}'", "--stimulus", f"use one of {', '.join(STIMULI)}")
        if self.flicker not in FLICKERS:
            raise ConfigError(f"unknown flicker '{self.flicker}'", "--flicker", f"use one of {', '.join(FLICKERS)}")
        if not (self.frame_rate > 0 and np.isfinite(self.frame_rate)) or self.frame_rate > 10000:
            raise ConfigError(f"frame rate must be between 0 and 10000 Hz, got {self.frame_rate}", "--frame-rate", "e.g. --frame-rate 100")
        if not (self.minutes > 0 and np.isfinite(self.minutes)) or self.minutes * 60 * self.frame_rate < 200:
            raise ConfigError(f"training must last at least 200 frames, got {self.minutes} min at {self.frame_rate:g} Hz", "--minutes", "e.g. --minutes 10")
        if not (self.test_seconds > 0 and np.isfinite(self.test_seconds)) or self.test_seconds * self.frame_rate < 10:
            raise ConfigError(f"the test segment must last at least 10 frames, got {self.test_seconds} s", "--test-seconds", "e.g. --test-seconds 20")
        if int(self.n_repeats) < 2:
            raise ConfigError(f"need at least 2 test repeats to measure reliability, got {self.n_repeats}", "--repeats", "e.g. --repeats 10")
        if int(self.n_cells) < 1 or int(self.n_cells) > 500:
            raise ConfigError(f"number of cells must be 1..500, got {self.n_cells}", "--cells")
        if self.stimulus != "fullfield" and (len(self.size) != 2 or min(self.size) < 8 or max(self.size) > 512):
            raise ConfigError(f"frame size must be 8..512 pixels a side, got {'x'.join(map(str, self.size))}", "--size", "e.g. --size 32 or --size 50x50")
        if not self.block_minutes > 0 or self.lead_in_s < 0 or self.gap_s < 0:
            raise ConfigError("block length must be positive, lead-in and gap not negative", "simulation spec")
        if self.cell_types:
            resolve_cell_types(self.cell_types)
        if not (0.0 <= self.flash_trains <= 1.0):
            raise ConfigError(f"the fraction of flash-train fixations must be within 0..1, got {self.flash_trains}", "--flash-trains", "e.g. --flash-trains 0.3")
        if self.flash_trains > 0 and self.stimulus != "naturalscene":
            raise ConfigError(f"flash trains are fixations of natural scenes, not of '{self.stimulus}'", "--flash-trains", "use --stimulus naturalscene or leave --flash-trains out")
        if not (np.isfinite(self.slow_adaptation) and 0.0 <= self.slow_adaptation <= 10.0):
            raise ConfigError(f"the slow adaptation strength must be within 0..10, got {self.slow_adaptation}", "--slow-adaptation", "e.g. --slow-adaptation 1")
        return self

    @property
    def types(self) -> tuple[CellType, ...]:
        """The cell types, in the order cells take them."""
        return resolve_cell_types(self.cell_types) if self.cell_types else CELL_TYPES

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """``()`` for full-field, else ``(H, W)``."""
        return () if self.stimulus == "fullfield" else (int(self.size[0]), int(self.size[1]))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (tuples as lists)."""
        d = asdict(self)
        d["size"] = [int(v) for v in self.size]
        if self.cell_types:
            d["cell_types"] = [str(v) for v in self.cell_types]
        else:
            del d["cell_types"]  # the default mix is not written, so default files stay as they were
        if not self.flash_trains:
            del d["flash_trains"]  # likewise
        if not self.slow_adaptation:
            del d["slow_adaptation"]  # likewise
        return d


@dataclass
class Simulation:
    """A simulated recording with its retina, spikes (seconds, session clock) and frame times."""

    recording: Recording
    retina: Retina
    train_frame_times: np.ndarray  # (T_train,)
    test_frame_times: np.ndarray  # (n_repeats, T_test)
    train_spikes: list[np.ndarray]  # per cell, seconds
    test_spikes: list[list[np.ndarray]]  # per repeat, per cell, seconds
    spec: SimulationSpec = field(default_factory=SimulationSpec)


def _smoothed(counts: np.ndarray, dt: float, starts: list[int]) -> dict[str, np.ndarray]:
    """Gaussian-smoothed rates (Hz) per block, as in the Baccus-lab files."""
    from ..spikes import smooth_rates

    edges = list(starts) + [counts.shape[0]]
    out = {}
    for w in RATE_WIDTHS_MS:
        parts = [smooth_rates(counts[a:b], dt, sigma_s=w / 1000.0) for a, b in zip(edges[:-1], edges[1:])]
        out[f"firing_rate_{w}ms"] = np.concatenate(parts, axis=0)
    return out


def _to_seconds(spike_bins: list[np.ndarray], frame_times: np.ndarray, dt: float) -> list[np.ndarray]:
    out = []
    for s in spike_bins:
        b = np.floor(s).astype(np.int64)
        out.append(frame_times[b] + (s - b) * dt)
    return out


def retina_params_json(params: RetinaParams) -> dict[str, Any]:
    """The retina's parameters for the provenance; the slow adaptation's only when it is on, so files
    simulated without it stay as they were."""
    d = asdict(params)
    if not params.slow_adaptation:
        del d["slow_adaptation"], d["slow_adapt_tau_s"]
    return d


def simulate(spec: SimulationSpec | None = None, progress: bool = True, params: RetinaParams | None = None) -> Simulation:
    """Simulate a recording for ``spec`` (deterministic for ``spec.seed``).

    The retina depends on the seed, cell count, frame size and frame rate only, so the same seed
    gives the same cells under white noise and natural scenes. Its output stage is adapted to the
    training stimulus (see :meth:`Retina.calibrate`) and the test segment is scored with it.
    """
    from tqdm import tqdm

    spec = (spec or SimulationSpec()).validate()
    dt = 1.0 / spec.frame_rate
    shape = spec.frame_shape
    if spec.slow_adaptation:
        params = replace(params or RetinaParams(), slow_adaptation=float(spec.slow_adaptation))
    retina = Retina.build(shape, int(spec.n_cells), seed=int(spec.seed), frame_rate=spec.frame_rate, params=params, types=spec.types)
    n_train = int(round(spec.minutes * 60.0 * spec.frame_rate))
    n_test = int(round(spec.test_seconds * spec.frame_rate))
    n_lead = int(round(spec.lead_in_s * spec.frame_rate))
    block = max(1, int(round(spec.block_minutes * 60.0 * spec.frame_rate)))
    sizes = [min(block, n_train - s) for s in range(0, n_train, block)]
    stim_opts: dict[str, Any] = {"frame_rate": spec.frame_rate, "flicker": spec.flicker}
    if spec.flash_trains > 0:
        stim_opts["flash_trains"] = float(spec.flash_trains)
    total = 2 * (sum(sizes) + n_lead * len(sizes)) + 2 * (n_test + n_lead)
    bar = tqdm(total=total, desc=f"simulate {spec.stimulus}", unit="frame", unit_scale=True, disable=not progress, leave=False)
    try:
        rng_stim = np.random.default_rng([int(spec.seed), _STREAM_TRAIN_STIM])
        stims, gens, starts, times = [], [], [], []
        clock = 0.0
        for n in sizes:
            s = make_stimulus(spec.stimulus, n_lead + n, shape, rng_stim, **stim_opts)
            bar.update(n_lead + n)
            g = retina.generator(s, progress=bar.update)
            stims.append(s[n_lead:])
            gens.append(g[n_lead:])
            starts.append(sum(len(x) for x in stims[:-1]))
            clock += spec.lead_in_s
            times.append(clock + np.arange(n) * dt)
            clock += n * dt + spec.gap_s
        train_stim = np.concatenate(stims, axis=0)
        train_gen = np.concatenate(gens, axis=0)
        train_time = np.concatenate(times)
        del stims, gens
        rng_test = np.random.default_rng([int(spec.seed), _STREAM_TEST_STIM])
        s = make_stimulus(spec.stimulus, n_lead + n_test, shape, rng_test, **stim_opts)
        bar.update(n_lead + n_test)
        test_gen = retina.generator(s, progress=bar.update)[n_lead:]
        test_stim = s[n_lead:]
        bar.set_postfix_str("spikes")
        retina.calibrate(train_gen)
        train_expected = (retina.rate_hz(train_gen) * dt).astype(np.float32)
        test_expected = (retina.rate_hz(test_gen) * dt).astype(np.float32)
        dead = retina.params.refractory_s / dt
        train_bins = poisson_dead_time(train_expected, np.random.default_rng([int(spec.seed), _STREAM_TRAIN_SPIKES]), dead)
        R = int(spec.n_repeats)
        tiled = np.tile(test_expected, (1, R))  # (T, R * n): all repeats at once
        test_bins_flat = poisson_dead_time(tiled, np.random.default_rng([int(spec.seed), _STREAM_TEST_SPIKES]), dead)
        n = retina.n_cells
        test_bins = [test_bins_flat[r * n : (r + 1) * n] for r in range(R)]
        train_counts = bin_spike_bins(train_bins, n_train)
        repeats = np.stack([bin_spike_bins(tb, n_test) for tb in test_bins], axis=0)
        test_times = []
        for _ in range(R):
            clock += spec.lead_in_s
            test_times.append(clock + np.arange(n_test) * dt)
            clock += n_test * dt + spec.gap_s
        test_frame_times = np.stack(test_times, axis=0)
    finally:
        bar.close()
    mean_counts = repeats.mean(axis=0)
    provenance = {
        "generator": "retinakit.simulate",
        "simulator_version": SIMULATOR_VERSION,
        "spec": spec.to_json(),
        "retina_params": retina_params_json(retina.params),
        "cells": retina.ground_truth(),
        "output_nonlinearity": retina.output.to_json() if retina.output else None,
        "train_block_starts": [int(v) for v in starts],
        **({"cell_type_table": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(t).items()} for t in spec.types]} if spec.cell_types else {}),
        "true_rate": "expected spike count per bin (model rate x bin width), before spiking noise",
    }
    rec = Recording(
        train=Split(stimulus=train_stim, time=train_time, counts=train_counts, rates=_smoothed(train_counts, dt, starts), true_rate=train_expected),
        test=Split(stimulus=test_stim, time=test_frame_times[0], counts=mean_counts, rates=_smoothed(mean_counts, dt, [0]), repeats=repeats, true_rate=test_expected),
        cell_ids=np.array([c.id for c in retina.cells], dtype=np.int64),
        frame_dt=dt,
        stimulus_kind=spec.stimulus,
        provenance=provenance,
    )
    return Simulation(
        recording=rec,
        retina=retina,
        train_frame_times=train_time,
        test_frame_times=test_frame_times,
        train_spikes=_to_seconds(train_bins, train_time, dt),
        test_spikes=[_to_seconds(tb, test_frame_times[r], dt) for r, tb in enumerate(test_bins)],
        spec=spec,
    )


def export_spikes(sim: Simulation, path: str | os.PathLike[str]) -> Path:
    """Write the spikes as times in seconds plus frame times, as an ``.npz`` (atomically).

    Keys: ``unit_ids`` (n,); ``spike_times`` (seconds, float64) and ``spike_units`` (unit id of
    each spike), sorted by unit then time, covering training and all test repeats on one session
    clock; ``frame_times`` (training frame onsets, seconds); ``test_frame_times``
    (n_repeats, T_test) and ``repeat_starts`` (n_repeats,); ``frame_dt``; ``stimulus`` and
    ``test_stimulus`` (as stored in the HDF5 file); ``train_block_starts``; ``meta`` (JSON text:
    stimulus kind, spec, ground truth). Binning ``spike_times`` on ``frame_times`` (and on each
    row of ``test_frame_times``) gives back the recording's counts exactly.
    """
    from ..atomic import atomic_path

    rec = sim.recording
    ids = rec.cell_ids
    times, units = [], []
    for k, cid in enumerate(ids):
        parts = [sim.train_spikes[k]] + [rep[k] for rep in sim.test_spikes]
        t = np.sort(np.concatenate(parts))
        times.append(t)
        units.append(np.full(t.size, int(cid), dtype=np.int64))
    meta = {"stimulus_kind": rec.stimulus_kind, **{k: v for k, v in rec.provenance.items() if k not in ("source", "sha256")}}
    target = Path(path)
    with atomic_path(target, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                unit_ids=ids.astype(np.int64),
                spike_times=np.concatenate(times).astype(np.float64),
                spike_units=np.concatenate(units),
                frame_times=sim.train_frame_times.astype(np.float64),
                test_frame_times=sim.test_frame_times.astype(np.float64),
                repeat_starts=sim.test_frame_times[:, 0].astype(np.float64),
                frame_dt=np.float64(rec.frame_dt),
                stimulus=rec.train.stimulus,
                test_stimulus=rec.test.stimulus if rec.test is not None else np.zeros(0),
                train_block_starts=np.asarray(rec.provenance.get("train_block_starts", [0]), dtype=np.int64),
                meta=np.array(json.dumps(meta, default=str)),
            )
    return target


def simulate_to_file(spec: SimulationSpec, out: str | os.PathLike[str], spikes_path: str | os.PathLike[str] | None = None, progress: bool = True) -> Simulation:
    """Simulate, save the recording in retinakit's HDF5 layout (atomically), optionally export spikes."""
    from ..io import save_recording

    sim = simulate(spec, progress=progress)
    save_recording(sim.recording, out)
    if spikes_path is not None:
        export_spikes(sim, spikes_path)
    return sim


def parse_size(text: str) -> tuple[int, int]:
    """``"50"`` -> (50, 50); ``"40x30"`` -> (40, 30) (rows x columns)."""
    parts = str(text).lower().replace(" ", "").replace("*", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"frame size must be N or HxW (integers), got '{text}'", "--size", "e.g. --size 32 or --size 50x50") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2:
        raise ConfigError(f"frame size must be N or HxW, got '{text}'", "--size", "e.g. --size 50x50")
    return vals[0], vals[1]


def summarize_simulation(sim: Simulation) -> dict[str, Any]:
    """A JSON-ready summary: geometry, durations, and per cell type, centre, rate and reliability."""
    from ..spikes import split_half_reliability

    rec = sim.recording
    dt = float(rec.frame_dt)  # type: ignore[arg-type]
    rel = split_half_reliability(rec.test.repeats) if rec.test is not None and rec.test.repeats is not None else None
    cells = []
    for k, truth in enumerate(rec.provenance["cells"]):
        row = dict(truth)
        row["mean_rate_hz"] = float(rec.train.counts[:, k].mean() / dt)
        if rel is not None:
            row["split_half_r"] = float(rel["r_half"][k])
            row["ceiling"] = float(rel["ceiling"][k])
        cells.append(row)
    return {
        "stimulus_kind": rec.stimulus_kind,
        "frame_shape": list(rec.frame_shape),
        "frame_rate_hz": rec.frame_rate,
        "train_s": rec.train.n_bins * dt,
        "train_blocks": len(rec.provenance.get("train_block_starts", [0])),
        "test_s": 0.0 if rec.test is None else rec.test.n_bins * dt,
        "n_repeats": 0 if rec.test is None else rec.test.n_repeats,
        "seed": sim.spec.seed,
        "flash_trains": sim.spec.flash_trains,
        "simulator_version": SIMULATOR_VERSION,
        "cells": cells,
    }


def format_simulation_summary(s: dict[str, Any]) -> str:
    """The summary as a short text table."""
    shape = "full-field" if not s["frame_shape"] else "x".join(str(v) for v in s["frame_shape"]) + " px"
    lines = [
        f"simulated   {s['stimulus_kind']}, {shape}, {s['frame_rate_hz']:.4g} Hz, seed {s['seed']}"
        + (f"; {100 * s['flash_trains']:.0f} % of fixations are 6-20 Hz flash trains" if s.get("flash_trains") else ""),
        f"train       {s['train_s']:.1f} s in {s['train_blocks']} block(s); test {s['test_s']:.1f} s x {s['n_repeats']} repeats",
        "",
        f"{'cell':>5}  {'type':<17} {'centre (row, col)':>17} {'rate Hz':>8} {'split-half r':>13} {'ceiling':>8}",
    ]
    for c in s["cells"]:
        centre = "-" if c.get("center_px") is None else f"({c['center_px'][0]:.1f}, {c['center_px'][1]:.1f})"
        r = c.get("split_half_r")
        ceil = c.get("ceiling")
        lines.append(
            f"{c['id']:>5}  {c['type']:<17} {centre:>17} {c['mean_rate_hz']:>8.2f} "
            f"{('%.3f' % r) if r is not None and np.isfinite(r) else '-':>13} {('%.3f' % ceil) if ceil is not None and np.isfinite(ceil) else '-':>8}"
        )
    return "\n".join(lines)
