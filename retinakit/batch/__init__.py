"""Sweeps of fits on a cluster: parse a TOML sweep, submit one job per point, follow, collect.

* :mod:`.sweep` - the sweep file: validation and expansion into points with stable ids;
* :mod:`.executor` - submission through submitit (SLURM job arrays or a local pool), with a
  checkpointable job that resumes a pre-empted or timed-out fit from its last checkpoint;
* :mod:`.state` - done / running / failed (with the reason) / pending, from run folders, the
  jobs' own records and the scheduler;
* :mod:`.collect` - one table (CSV + JSON) of finished points and a comparison figure.

Nothing heavy is imported here; submitit is imported only by :mod:`.executor`.
"""

from __future__ import annotations

from .sweep import Point, Resources, Sweep, load_sweep

__all__ = ["Point", "Resources", "Sweep", "load_sweep"]
