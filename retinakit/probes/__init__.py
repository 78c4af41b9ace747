"""In-silico probes: synthetic stimuli shown to a fitted model, and what it does with them.

The registry maps a probe name to its module (one module per probe, imported on demand); each
probe has a description, documented parameters with defaults and units, and
``run(fitted, params, out_dir) -> dict`` which validates the parameters, runs the protocol,
writes ``result.json`` and the figures into ``out_dir`` and returns the result. Protocols and
criteria are in each module's docstring and in ``data/PROBES.md``.

Probes use only :meth:`FittedModel.predict` and the model's metadata (frame rate, geometry,
training stimulus statistics), so they work on CNN and LN models alike.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ConfigError
from .base import Param, resolve_params

#: probe name -> module, in the order `retinakit probe --list` shows them
REGISTRY: dict[str, str] = {
    "osr": "retinakit.probes.osr",
    "step": "retinakit.probes.step",
    "paired-flash": "retinakit.probes.paired_flash",
    "reversing-grating": "retinakit.probes.reversing_grating",
    "contrast-adaptation": "retinakit.probes.contrast_adaptation",
    "motion-anticipation": "retinakit.probes.motion_anticipation",
}

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Probe:
    """A registered probe: its module holds the protocol, parameters and summary."""

    name: str
    module: ModuleType

    @property
    def description(self) -> str:
        return str(self.module.DESCRIPTION)

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(self.module.PARAMS)

    def resolve(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with ``params``, validated (ConfigError naming the key)."""
        return resolve_params(self.name, self.params, params)

    def run(self, fitted: Any, params: dict[str, Any] | None, out_dir: str | Path, progress: bool = True, source: str | None = None) -> dict[str, Any]:
        """Run the probe on ``fitted``; write ``result.json`` and figures into ``out_dir``; return the result.

        ``params`` maps parameter names to values (strings as typed on the command line, or
        Python values); missing ones take their defaults. ``source`` (the run path) is recorded.
        """
        from .._version import __version__
        from ..atomic import write_json
        from .base import model_info

        from .base import RangeWatch, range_warnings

        resolved = self.resolve(params)
        out = Path(out_dir)
        watch = RangeWatch(fitted)
        body = self.module.run(watch, resolved, out, progress=progress)
        warnings, span = range_warnings(watch, fitted)
        result = {"probe": self.name, "description": self.description, "retinakit_version": __version__, "source": source,
                  "model": model_info(fitted), "params": resolved, **body, "warnings": warnings, "range": span}
        write_json(out / RESULT_FILE, result)
        result["out_dir"] = str(out)
        return result

    def summary(self, result: dict[str, Any]) -> str:
        """The result as one screen of text (warnings last)."""
        text = str(self.module.format_summary(result))
        return text + "".join(f"\nwarning: {w}" for w in result.get("warnings", []))

    def readout(self, result: dict[str, Any]) -> dict[int, dict[str, Any]]:
        """Per cell id, the few numbers that `probe --compare` sets side by side."""
        return dict(self.module.cell_readout(result))


def probe_names() -> list[str]:
    """Names of all probes, in listing order."""
    return list(REGISTRY)


def get_probe(name: str) -> Probe:
    """The probe called ``name``; :class:`ConfigError` with a suggestion for an unknown name."""
    if name not in REGISTRY:
        import difflib

        near = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ConfigError(f"unknown probe stimulus '{name}'", "--stimulus", f"{hint}choose one of {', '.join(REGISTRY)} (see `retinakit probe --list`)")
    return Probe(name, importlib.import_module(REGISTRY[name]))


def run_probe(fitted: Any, name: str, params: dict[str, Any] | None, out_dir: str | Path, progress: bool = True, source: str | None = None) -> dict[str, Any]:
    """Run probe ``name`` on a :class:`~retinakit.models.fitted.FittedModel` (see :meth:`Probe.run`)."""
    return get_probe(name).run(fitted, params, out_dir, progress=progress, source=source)


def describe_probes(name: str | None = None) -> str:
    """Text for `retinakit probe --list`: every probe (or one) with its parameters, defaults and units."""
    names = [name] if name else probe_names()
    blocks = []
    for n in names:
        p = get_probe(n)
        lines = [f"{n}: {p.description}"]
        lines += [f"    {prm.describe()}" for prm in p.params]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def default_out_dir(run_path: str | Path, name: str) -> Path:
    """``<RUN>/probes/<name>/`` (for a checkpoint file, beside it in its folder)."""
    p = Path(run_path)
    base = p.parent if p.is_file() else p
    return base / "probes" / name


def load_fitted(run_path: str | Path) -> Any:
    """Load a fitted model from a run folder or checkpoint (``retinakit.fitting.run_folder.load_run``)."""
    from ..fitting.run_folder import load_run

    return load_run(run_path)


__all__ = ["REGISTRY", "Probe", "Param", "get_probe", "probe_names", "run_probe", "describe_probes", "default_out_dir", "load_fitted"]
