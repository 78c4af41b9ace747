"""A ground-truth retina: stimuli, a model retina, and simulated recordings.

* :mod:`.stimuli`: white-noise checkerboards, full-field flicker, dead-leaves natural scenes
  with fixational jitter, contrast-reversing gratings;
* :mod:`.retina`: the model retina (cell types, mosaic, bipolar subunits, temporal filters,
  contrast adaptation, refractory Poisson spikes);
* :mod:`.record`: a :class:`~retinakit.recording.Recording` with training blocks, a repeated test
  segment and the true rate; spike-time export.

See ``data/SIMULATION.md`` for the model and its parameters.
"""

from __future__ import annotations

from .record import Simulation, SimulationSpec, export_spikes, simulate, simulate_to_file
from .retina import CELL_TYPES, SIMULATOR_VERSION, CellType, Retina, RetinaParams

__all__ = [
    "CELL_TYPES", "SIMULATOR_VERSION", "CellType", "Retina", "RetinaParams",
    "Simulation", "SimulationSpec", "export_spikes", "simulate", "simulate_to_file",
]
