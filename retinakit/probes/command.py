"""What `retinakit probe` does, kept out of the CLI module: one probe or all of them, on a fitted
model, on the simulated retina of a recording written by ``retinakit simulate``, or on both
side by side (``--compare``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

ALL = "all"


def _names(stimulus: str, spatial: bool) -> list[str]:
    from . import get_probe, probe_names

    if stimulus != ALL:
        return [get_probe(stimulus).name]
    spatial_only = {"reversing-grating", "motion-anticipation"}
    return [n for n in probe_names() if spatial or n not in spatial_only]


def _load(path: Path) -> tuple[Any, bool]:
    from ..simulate.truth import is_simulation, load_truth
    from . import load_fitted

    if is_simulation(path):
        return load_truth(path), True
    return load_fitted(path), False


def _out_dir(path: Path, name: str, is_truth: bool) -> Path:
    from . import default_out_dir

    if is_truth:
        return Path(path).parent / f"probes-{Path(path).stem}" / name
    return default_out_dir(path, name)


def probe_command(run_path: Path, stimulus: str, params: dict[str, str], out: Path | None, compare: Path | None, as_json: bool, progress: bool,
                  echo: Callable[[str], None]) -> None:
    """Run the probe(s) and print summaries (or JSON); with ``compare``, model vs truth per cell."""
    from ..sample import resolve_sample
    from . import get_probe
    from .compare import format_compare, load_pair

    run_path = Path(resolve_sample(run_path))  # `sample` / `sample:<kind>` name the bundled simulated recordings
    compare = None if compare is None else Path(resolve_sample(compare))
    if stimulus != ALL:
        get_probe(stimulus).resolve(params)  # validate before loading anything
    elif params:
        from ..errors import ConfigError

        raise ConfigError("--param cannot be combined with --stimulus all", "--param", "run the probe alone to set its parameters")
    if compare is None:
        fitted, is_truth = _load(run_path)
        results = {}
        for name in _names(stimulus, bool(fitted.frame_shape)):
            probe = get_probe(name)
            out_dir = (out / name if stimulus == ALL else out) if out else _out_dir(run_path, name, is_truth)
            res = probe.run(fitted, probe.resolve(params), out_dir, progress=progress, source=str(run_path))
            results[name] = res
            if not as_json:
                echo(("ground truth (the simulated retina of the recording)\n" if is_truth else "") + probe.summary(res))
                echo(f"results: {out_dir}/result.json; figures: {', '.join(res.get('figures', []))}\n")
        if as_json:
            echo(json.dumps(results if stimulus == ALL else next(iter(results.values())), indent=2, default=str))
        return
    model, truth, model_path, truth_path = load_pair(run_path, compare)
    both: dict[str, Any] = {}
    for name in _names(stimulus, bool(model.frame_shape)):
        probe = get_probe(name)
        base = (out / name if stimulus == ALL else out) if out else _out_dir(Path(model_path), name, False) / "vs-truth"
        rm = probe.run(model, probe.resolve(params), base / "model", progress=progress, source=model_path)
        rt = probe.run(truth, probe.resolve(params), base / "truth", progress=progress, source=truth_path)
        both[name] = {"model": rm, "truth": rt}
        if not as_json:
            echo(format_compare(name, probe.readout(rm), probe.readout(rt)))
            warn = [f"warning (model): {w}" for w in rm.get("warnings", [])] + [f"warning (truth): {w}" for w in rt.get("warnings", [])]
            echo("\n".join(warn + [f"results: {base}/model and {base}/truth\n"]))
    if as_json:
        echo(json.dumps(both, indent=2, default=str))
