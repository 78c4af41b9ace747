"""The `retinakit` command line. Commands are thin: they parse options and call the library.

Heavy modules (torch, matplotlib, h5py) are imported inside the commands so `--help` is fast.
Every :class:`~retinakit.errors.RetinakitError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import RetinakitError

EXIT_BAD_INPUT = 2
_OUTPUT_ERRNOS = (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


class _Group(click.Group):
    """A click group that turns retinakit errors into a one-line message and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RetinakitError as exc:
            if _debug(ctx):
                raise
            click.echo(f"error: {exc.one_line()}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except OSError as exc:
            if _debug(ctx) or exc.errno not in _OUTPUT_ERRNOS:
                raise
            from .atomic import output_error

            click.echo(f"error: {output_error(exc.filename or '?', exc).one_line()}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # a bug, not bad input: say so in one line
            if _debug(ctx):
                raise
            click.echo(f"error: internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it", err=True)
            ctx.exit(1)


class _AliasOption(click.Option):
    """An option whose later names are old spellings kept working but left out of --help."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def _print_version(ctx: click.Context) -> None:
    """`retinakit --version`: retinakit's version and which torch build is installed (CPU or CUDA)."""
    try:
        import torch

        cuda = torch.version.cuda
        build = f"torch {torch.__version__}, " + (f"CUDA {cuda} build, GPU {'available' if torch.cuda.is_available() else 'not available'}" if cuda else "CPU-only build")
    except ImportError:
        build = "torch not installed"
    click.echo(f"retinakit {__version__} ({build})")
    ctx.exit(0)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) if root.params else False


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=lambda ctx, _p, v: _print_version(ctx) if v else None,
              help="Show the version of retinakit and of the torch build (CPU or CUDA), and exit.")
def main(debug: bool) -> None:
    """retinakit: fit CNN and LN models to retinal ganglion-cell recordings, score them against
    each cell's reliability, and probe the fitted models with synthetic stimuli.

    \b
    Typical session (`sample` = the bundled simulated recording; or give your .h5):
      retinakit data inspect sample                what is in a recording
      retinakit fit                                fit the CNN on the bundled sample
      retinakit compare-ln sample                  CNN vs LN, cell by cell
      retinakit probe runs/bn-cnn-sample-1 -s osr  omitted stimulus response

    Results go to stdout; progress and notes to stderr (no progress bars when stderr is not a
    terminal, -q for none). `retinakit --version` also names the torch build (CPU or CUDA).
    """


# ----------------------------------------------------------------------------- data
@main.group(cls=_Group, short_help="Inspect, import and export recordings.")
def data() -> None:
    """Inspect and import recordings."""


@data.command("inspect", short_help="Summary of a recording: stimulus, repeats, cells, STAs.")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary instead of text.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder for STA figures [default: inspect-<data> in the current folder].")
@click.option("--cells", default=None, help="Comma-separated cell ids to include [default: all].")
@click.option("--history", default=40, show_default=True, type=click.IntRange(1, 1000), help="STA length in frames.")
@click.option("--sta/--no-sta", default=None, help="Compute STAs [default: only for white-noise and full-field recordings].")
def data_inspect(path: Path, as_json: bool, out: Path | None, cells: str | None, history: int, sta: bool | None) -> None:
    """Summarise a recording (PATH: a file, or `sample` / `sample:whitenoise` for the bundled
    samples): stimulus, frame rate, durations, repeats, cells with their mean
    rates and split-half reliability; for white noise, the spike-triggered average of each cell
    (peak lag, location, polarity) and one STA figure per cell (PNG)."""
    from .io import load_recording
    from .sample import resolve_sample
    from .summary import format_summary, summarize, write_sta_figures

    label = _data_stem(path)
    rec = load_recording(resolve_sample(path), cells=_parse_cells(cells))
    summary, stas = summarize(rec, sta_history=history, with_sta=sta)
    if stas is not None:
        out_dir = out or Path(f"inspect-{label}")
        figs = write_sta_figures(stas, rec, out_dir)
        summary["sta_figures"] = [str(p) for p in figs]
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(format_summary(summary))
        if stas is not None:
            click.echo(f"\nSTA figures: {out_dir}/sta_cellNN.png ({len(figs)} files)")


def _parse_cells(cells: str | None) -> list[int] | None:
    if not cells:
        return None
    try:
        return [int(c) for c in cells.replace(" ", "").split(",") if c]
    except ValueError:
        from .errors import ConfigError

        raise ConfigError(f"--cells must be comma-separated integers, got '{cells}'", fix="e.g. --cells 1,4,7") from None


# ----------------------------------------------------------------------------- fit / compare-ln
def _int_pair(value: str | None, name: str) -> list[int] | None:
    if value is None:
        return None
    from .errors import ConfigError

    try:
        parts = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"{name} must be two comma-separated integers, got '{value}'", fix=f"e.g. {name} 8,8") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ConfigError(f"{name} must be two comma-separated integers, got '{value}'", fix=f"e.g. {name} 8,8")
    return parts


def _fit_options(f: Any) -> Any:
    """The options shared by `fit` and `compare-ln` (all default to the FitConfig defaults)."""
    opts = [
        click.option("--history", type=int, default=None, help="Frames of stimulus history the model sees [default: 40]."),
        click.option("--cells", default=None, help="Comma-separated cell ids to model [default: all]."),
        click.option("--filters", default=None, help="CNN channels of the two conv layers, e.g. 8,8 [default: 8,8]."),
        click.option("--kernels", default=None, help="CNN kernel sizes, e.g. 15,11 [default: reference, scaled to small frames]."),
        click.option("--lr", type=float, default=None, help="Adam learning rate [default: 2e-3 for the CNNs, 3e-2 for the LN]."),
        click.option("--l2", type=float, default=None, help="L2 penalty on weights [default: 1e-3]."),
        click.option("--l1", type=float, default=None, help="L1 penalty on output activity [default: 1e-3]."),
        click.option("--noise-std", type=float, default=None, help="Gaussian noise s.d. on hidden layers while training [default: 0.05]."),
        click.option("--first-layer", type=click.Choice(["auto", "full", "separable"]), default=None, help="CNN first convolution on 2-D frames: full (as published) or separable (each channel a spatial filter x a temporal filter: far fewer weights to learn) [default: auto = separable for bn-cnn and rcnn, full for the published cnn]."),
        click.option("--readout", type=click.Choice(["auto", "dense", "factorized"]), default=None, help="CNN last layer on 2-D frames: dense (as published) or factorized (a spatial mask x features per cell) [default: auto = factorized for bn-cnn and rcnn, dense for the published cnn]."),
        click.option("--weight-ema", type=float, default=None, help="Keep an exponential moving average of the weights over this many epochs (validated and saved instead of the last step's weights); 0: off [default: 1 for bn-cnn and rcnn, 0 for the published cnn]."),
        click.option("--batch-size", type=int, default=None, help="Bins per batch [default: 500; 2000 for the published cnn]."),
        click.option("--chunk-len", type=int, default=None, help="Bins per contiguous movie chunk in a batch: a batch of 500 comes from 5 places in the movie [default: 100]."),
        click.option("--max-steps", type=int, default=None, help="Training budget in optimiser steps: a short recording gets many epochs, a long one few [default: 4000]."),
        click.option("--max-epochs", type=int, default=None, help="Epoch cap on top of --max-steps [default: none]."),
        click.option("--patience", type=int, default=None, help="Converged after this many epochs without a lower validation loss [default: 6]."),
        click.option("--val-fraction", type=float, default=None, help="Fraction of training bins held out as validation blocks [default: 0.1]."),
        click.option("--seed", type=int, default=None, help="Random seed [default: 0]."),
        click.option("--deterministic/--no-deterministic", default=None, help="Use deterministic algorithms [default: off]."),
        click.option("--device", default=None, help="auto, cpu, cuda, cuda:N or mps [default: auto: CUDA when present]."),
        click.option("--ln-method", type=click.Choice(["auto", "sta", "ridge", "gd", "stc"]), default=None, help="How the LN model is fit: sta, ridge (one filter), gd (gradient descent), stc (a second, spike-triggered-covariance filter where it helps on validation: ON-OFF cells) [default: auto = stc on an sta filter for white noise and full-field, on a ridge filter otherwise]."),
        click.option("--ln-rank", type=click.IntRange(0, 1), default=None, help="LN filter rank: 1 separable, 0 full [default: 1]."),
        click.option("--ln-crop", type=int, default=None, help="LN crop side in pixels around the RF centre, 0 = whole frame [default: chosen on validation]."),
        click.option("--min-reliability", type=float, default=None, help="Cells with a lower repeat reliability are flagged, not averaged [default: 0.3]."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _collect_options(kw: dict[str, Any]) -> dict[str, Any]:
    keys = ("history", "lr", "l2", "l1", "noise_std", "readout", "first_layer", "weight_ema", "batch_size", "chunk_len", "max_steps", "max_epochs", "patience", "val_fraction", "seed",
            "deterministic", "device", "ln_method", "ln_rank", "ln_crop", "min_reliability")
    out = {k: kw[k] for k in keys if kw.get(k) is not None}
    if kw.get("cells"):
        out["cells"] = _parse_cells(kw["cells"])
    for k in ("filters", "kernels"):
        v = _int_pair(kw.get(k), f"--{k}")
        if v is not None:
            out[k] = v
    return out


def _data_stem(data: Path | None) -> str:
    """The recording's name in run-folder names: ``sample`` for the bundled sample, else the file stem."""
    from .sample import data_label

    return data_label(data)


def _stderr_is_tty() -> bool:
    stream = click.get_text_stream("stderr")
    return bool(getattr(stream, "isatty", lambda: False)())


def _progress(quiet: bool) -> bool:
    """Progress bars only when stderr is a terminal: a redirected log gets no escape codes."""
    return not quiet and _stderr_is_tty()


def _note(text: str) -> None:
    click.echo(text, err=True)


def _epoch_line(max_epochs: int | None) -> Any:
    """An on_epoch callback printing one plain line per epoch on stderr (for logs, instead of bars)."""
    def show(e: dict[str, Any]) -> None:
        of = f"/{max_epochs}" if max_epochs else ""
        _note(f"epoch {e['epoch']}{of}: train loss {e['train_loss']:.4f}, validation loss {e['val_loss']:.4f}, "
              f"validation r {e['val_corr']:.3f}{' (best so far)' if e.get('best') else ''}, {e.get('seconds', 0):.1f} s")
    return show


@main.command("fit", short_help="Fit a CNN or the LN baseline; score it per cell.")
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--model", type=click.Choice(["cnn", "bn-cnn", "rcnn", "ln"]), default=None, help="Model to fit [default: bn-cnn]; rcnn = recurrent CNN.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder [default: runs/<model>-<data>-<n>, a new one each time].")
@click.option("--resume", "resume", type=click.Path(path_type=Path), default=None, help="Continue the unfinished run in this folder from its last checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of the table.")
@_fit_options
def fit_cmd(data: Path | None, model: str | None, out: Path | None, resume: Path | None, as_json: bool, quiet: bool, **kw: Any) -> None:
    """Fit a CNN (McIntosh et al. 2016), its batch-norm variant, or the LN baseline to DATA
    (a recording file, or `sample` / `sample:whitenoise`; default: the bundled natural-scene
    sample) and score it cell by cell on the repeated test segment against each cell's reliability.

    \b
    Writes a run folder (config.json, model.pt, checkpoint.pt, log.jsonl, metrics.json,
    cells.csv, figures/, DONE) and prints the per-cell table. Ctrl-C keeps the last finished
    epoch; --resume continues from it.

    \b
    Examples:
      retinakit fit                               batch-norm CNN on the bundled sample
      retinakit fit rec.h5 --model ln             LN baseline
      retinakit fit rec.h5 --model cnn            the CNN exactly as published
      retinakit fit --resume runs/bn-cnn-rec-1    continue an interrupted fit
    """
    from .fitting.config import FitConfig
    from .evaluation.tables import format_cell_table
    from .fitting.run_folder import checkpoint_epoch, next_run_dir, run_status
    from .pipeline.runs import find_unfinished_runs, run_fit
    from .sample import resolve_sample

    options = _collect_options(kw)
    if model is not None:
        options["model"] = model
    data = resolve_sample(data, progress=_progress(quiet))
    made_here = False
    start_note: str | None = None  # printed once the run is set up (data loaded, options checked)
    done_note: str | None = None
    if resume is not None:
        if out is not None and Path(out) != Path(resume):
            from .errors import ConfigError

            raise ConfigError("--out and --resume name different folders", fix="give only --resume RUN to continue a run")
        run_dir = resume
        st = run_status(resume)
        if st["finished"]:
            done_note = f"note: run {resume} is already finished (DONE{', ' + str(st['epoch']) + ' epochs' if st['epoch'] else ''}); printing its results, nothing is refit"
        elif st["is_run"]:
            if (Path(resume) / "checkpoint.pt").is_file():
                checkpoint_epoch(resume, strict=True)  # a damaged checkpoint is a one-line error before anything is printed
            limit = options.get("max_epochs", st["max_epochs"])
            start_note = (f"resuming {resume} from epoch {st['epoch']}" + (f" (of at most {limit})" if limit else "")
                          if st["epoch"] else f"resuming {resume}: no epoch had finished, starting at epoch 1")
    elif out is not None:
        run_dir = out
    else:
        cfg = FitConfig.from_dict(options)
        label = _data_stem(data)
        source = str(data) if data is not None else None
        if source is None:
            from .sample import sample_path

            source = str(sample_path(progress=_progress(quiet)))
        unfinished = find_unfinished_runs("runs", cfg.model, label, cfg.to_dict(), source)
        if unfinished:
            u = unfinished[-1]
            where = f"{u['run']} is an unfinished run of this fit (" + (f"epoch {u['epoch']} of {u['max_epochs']}" if u["epoch"] else "no epoch finished") + ")"
            if not as_json and sys.stdin.isatty() and _stderr_is_tty() and click.confirm(f"{where}. Resume it?", default=True, err=True):
                resume = Path(u["run"])
                run_dir = resume
                _note(f"resuming {resume} from epoch {u['epoch']}")
            else:
                _note(f"note: {where}; to continue it instead: retinakit fit --resume {u['run']}")
        if resume is None:
            run_dir = next_run_dir("runs", cfg.model, label)
            made_here = True
    show_bars = _progress(quiet)
    on_epoch = None if (quiet or show_bars) else _epoch_line(FitConfig.from_dict(options).max_epochs if resume is None else None)
    on_start = (lambda run: _note(start_note or f"run folder: {run}")) if (resume is None or start_note) else None
    try:
        metrics = run_fit(data, run_dir, options, resume=resume is not None, progress=show_bars, on_epoch=on_epoch, on_start=on_start)
    except KeyboardInterrupt:
        st = run_status(run_dir)
        if made_here and not any(Path(run_dir).iterdir()):
            Path(run_dir).rmdir()
            _note(f"interrupted before the fit started; nothing was kept (run folder {run_dir} removed)")
        elif st["finished"]:
            _note(f"interrupted after the run finished: {run_dir} is complete")
        else:
            kept = f"its checkpoint keeps epoch {st['epoch']}" if st["epoch"] else "no epoch had finished yet"
            _note(f"interrupted: run folder {run_dir} is not finished ({kept}); continue with: retinakit fit --resume {run_dir}")
        click.get_current_context().exit(130)
    except BaseException:
        if made_here:  # the folder named for this fit: drop it if nothing was written (bad data)
            import contextlib

            with contextlib.suppress(OSError):
                Path(run_dir).rmdir()  # only an empty folder is removed
        raise
    if done_note:
        _note(done_note)
    if as_json:
        click.echo(json.dumps(metrics, indent=2, default=str))
        return
    click.echo(format_cell_table(metrics))
    fit = metrics.get("fit", {})
    if fit.get("epochs"):
        click.echo(f"{fit['epochs']} epochs ({fit.get('stopped', '')}), best epoch {fit.get('best_epoch')}, {fit.get('fit_seconds', 0):.0f} s of training")
    checks = metrics.get("checks")
    if checks:
        failed = [name for name, c in checks.get("checks", {}).items() if not c.get("passed")]
        click.echo("causality/alignment checks: " + ("all passed" if not failed else f"FAILED: {', '.join(failed)}"))
    click.echo(f"run: {metrics['run']}")


@main.command("compare-ln", short_help="CNN vs LN on the same cells and bins, cell by cell.")
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--cnn-run", type=click.Path(path_type=Path), default=None, help="Reuse this finished CNN run instead of fitting one.")
@click.option("--ln-run", type=click.Path(path_type=Path), default=None, help="Reuse this finished LN run instead of fitting one.")
@click.option("--cnn-model", type=click.Choice(["cnn", "bn-cnn", "rcnn"]), default=None, help="CNN variant to fit [default: bn-cnn].")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder [default: runs/compare-<data>-<n>, a new one each time].")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON instead of the table.")
@_fit_options
def compare_ln_cmd(data: Path | None, cnn_run: Path | None, ln_run: Path | None, cnn_model: str | None, out: Path | None, as_json: bool, quiet: bool, **kw: Any) -> None:
    """Compare the CNN with the LN baseline on DATA (a recording file, or `sample` /
    `sample:whitenoise`; default: the bundled sample), cell by cell: the same cells, training
    split, test bins and ceiling. Fits whichever model is not given as a finished run.

    Writes compare.csv, compare.json and compare.png (LN vs CNN r/ceiling per cell) and the
    two runs (cnn/, ln/) to --out. Options such as --batch-size go to the fits it makes.

    \b
    Examples:
      retinakit compare-ln                       both fits on the bundled sample
      retinakit compare-ln rec.h5 --cnn-run runs/bn-cnn-rec-1
    """
    from .evaluation.compare import format_compare_table
    from .fitting.run_folder import is_finished, next_run_dir, not_a_finished_run
    from .pipeline.compare import compare_ln
    from .sample import resolve_sample

    options = _collect_options(kw)
    cnn_options = {"model": cnn_model} if cnn_model else {}
    for flag, run in (("--cnn-run", cnn_run), ("--ln-run", ln_run)):
        if run is not None and Path(run).is_dir() and not is_finished(run):
            raise not_a_finished_run(run, what=flag)
    data = resolve_sample(data, progress=_progress(quiet))
    made_here = out is None
    if out is None:
        out = next_run_dir("runs", "compare", _data_stem(data))
    _note(f"output folder: {out}")
    try:
        result = compare_ln(data, out, cnn_run=cnn_run, ln_run=ln_run, options=options, cnn_options=cnn_options, progress=_progress(quiet))
    except BaseException:
        if made_here:
            import contextlib

            with contextlib.suppress(OSError):
                Path(out).rmdir()  # only when nothing was written
        raise
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo(format_compare_table(result))
    click.echo(f"results: {result['out']}/compare.csv, compare.json, compare.png")


# ----------------------------------------------------------------------------- simulate
@main.command("simulate", short_help="Simulate a recording from a model retina.")
@click.option("--stimulus", type=click.Choice(["whitenoise", "naturalscene", "fullfield"]), default="naturalscene", show_default=True, help="White-noise checkerboard, dead-leaves natural scenes with fixational jitter, or full-field flicker.")
@click.option("--minutes", type=float, default=10.0, show_default=True, help="Training duration in minutes (in blocks of at most 5 min).")
@click.option("--cells", "n_cells", type=int, default=8, show_default=True, help="Number of ganglion cells (types taken in turn).")
@click.option("--size", default="32", show_default=True, help="Frame size in pixels (checkers): N or HxW, at least 8 (ignored for full-field).")
@click.option("--repeats", type=int, default=10, show_default=True, help="Repeats of the test segment.")
@click.option("--test-seconds", type=float, default=20.0, show_default=True, help="Length of the repeated test segment.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: the same seed gives identical files.")
@click.option("--frame-rate", type=float, default=100.0, show_default=True, help="Frames (= bins) per second.")
@click.option("--flicker", type=click.Choice(["gaussian", "binary", "contrast-steps"]), default="gaussian", show_default=True,
              help="Full-field flicker statistics: Gaussian (s.d. 0.35), binary, or Gaussian whose s.d. steps to a new value (0.1-0.45) every 2-8 s.")
@click.option("--cell-types", default=None, help="Cell mix, taken in turn: comma-separated types (default = the five standard ones; on-omitted-stimulus = an OSR cell). See data/SIMULATION.md.")
@click.option("--with-osr", is_flag=True, help="Add omitted-stimulus-response cells to the default mix (same as --cell-types default,on-omitted-stimulus).")
@click.option("--flash-trains", type=float, default=0.0, show_default=True, help="Natural scenes: fraction of fixations shown instead as the image flashed on grey at a 6-20 Hz rhythm (the stimulus that teaches a model rhythm-dependent responses such as the OSR).")
@click.option("--slow-adaptation", type=float, default=0.0, show_default=True,
              help="Give the retina slow contrast adaptation (time constant 3 s) of this strength relative to its fast one (e.g. 1; 0 = fast only). Shows under --flicker contrast-steps.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Recording to write [default: simulated-<stimulus>.h5].")
@click.option("--export-spikes", type=click.Path(path_type=Path), default=None, help="Also write spike times (s) and frame times to this .npz.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def simulate_cmd(stimulus: str, minutes: float, n_cells: int, size: str, repeats: int, test_seconds: float, seed: int, frame_rate: float,
                 flicker: str, cell_types: str | None, with_osr: bool, flash_trains: float, slow_adaptation: float, out: Path | None, export_spikes: Path | None, as_json: bool, quiet: bool) -> None:
    """Simulate a recording from a model retina with known ground truth (ON/OFF,
    transient/sustained, subunit and linear cells; contrast adaptation; refractory Poisson spikes) and
    write it in retinakit's HDF5 layout with the true rate. See data/SIMULATION.md.

    \b
    Examples:
      retinakit simulate                                   32x32 natural scenes, 8 cells, 10 min
      retinakit simulate --stimulus whitenoise --size 50 --cells 10 --out wn.h5
      retinakit simulate --stimulus fullfield --export-spikes spikes.npz
      retinakit simulate --with-osr --cells 12 --out osr_sim.h5       adds omitted-stimulus-response cells
      retinakit simulate --stimulus fullfield --flicker contrast-steps --slow-adaptation 1   slow contrast adaptation
    """
    from .simulate.record import SimulationSpec, format_simulation_summary, parse_size, simulate_to_file, summarize_simulation

    spec = SimulationSpec(stimulus=stimulus, minutes=minutes, n_cells=n_cells, size=parse_size(size), n_repeats=repeats,
                          test_seconds=test_seconds, frame_rate=frame_rate, seed=seed, flicker=flicker, flash_trains=flash_trains, slow_adaptation=slow_adaptation,
                          cell_types=tuple(t for t in (cell_types or "").split(",") if t.strip()) + (("default",) if with_osr and not cell_types else ()) + (("on-omitted-stimulus",) if with_osr else ()))
    target = out or Path(f"simulated-{stimulus}.h5")
    sim = simulate_to_file(spec, target, spikes_path=export_spikes, progress=_progress(quiet))
    summary = summarize_simulation(sim)
    summary["out"] = str(target)
    if export_spikes is not None:
        summary["spikes"] = str(export_spikes)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(format_simulation_summary(summary))
    click.echo(f"\nwrote {target}" + (f" and {export_spikes}" if export_spikes is not None else ""))


# ----------------------------------------------------------------------------- probe / check
@main.command("probe", short_help="Probe a fitted model or a simulated retina with synthetic stimuli: OSR, steps, gratings.")
@click.argument("run_path", metavar="[RUN]", required=False, type=click.Path(path_type=Path))
@click.option("--stimulus", "-s", default=None, help="Probe to run: osr, step, paired-flash, reversing-grating, contrast-adaptation, motion-anticipation, or all.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A probe parameter (repeatable); see --list for names, defaults and units.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder [default: RUN/probes/<stimulus>/].")
@click.option("--compare", type=click.Path(path_type=Path), default=None, help="Also probe this: the simulated recording RUN was fit to (or the run, when RUN is the recording); prints model vs truth per cell.")
@click.option("--list", "list_probes", is_flag=True, help="Describe the probes and their parameters (with --stimulus: just that one).")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of the summary.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def probe_cmd(run_path: Path | None, stimulus: str | None, params: tuple[str, ...], out: Path | None, compare: Path | None, list_probes: bool, as_json: bool, quiet: bool) -> None:
    """Show a fitted model (RUN: a run folder or its model.pt; CNN or LN) synthetic stimuli it
    was never trained on, built in its own frame rate, geometry and units, and measure what it does.
    RUN may also be a recording written by `retinakit simulate`: its simulated retina (the ground
    truth) goes through the identical protocol. Every probe reports a static-LN null next to
    the readout.

    Writes result.json (every number) and figures to --out, and prints a summary.

    \b
    Examples:
      retinakit probe --list
      retinakit probe runs/bn-cnn-sample-1 --stimulus osr
      retinakit probe runs/bn-cnn-sample-1 -s osr -p periods=0.05,0.08,0.1,0.125 -p polarity=dark
      retinakit probe sim.h5 -s osr                            the simulated retina itself
      retinakit probe sim.h5 -s all --compare runs/bn-cnn-sim-1 model vs truth, every probe
    """
    from .errors import ConfigError
    from .probes import describe_probes, get_probe
    from .probes.base import parse_param_args
    from .probes.command import ALL, probe_command

    if list_probes:
        click.echo(describe_probes(get_probe(stimulus).name if stimulus and stimulus != ALL else None))
        return
    if run_path is None:
        raise ConfigError("no RUN given", "retinakit probe", "give a run folder or model.pt, e.g. `retinakit probe runs/cnn-sample-1 --stimulus osr`")
    if stimulus is None:
        raise ConfigError("no --stimulus given", "retinakit probe", "choose one with --stimulus (see `retinakit probe --list`), or all")
    probe_command(run_path, stimulus, parse_param_args(params), out, compare, as_json, _progress(quiet), click.echo)


@main.command("check", short_help="Causality and alignment checks of a fitted model.")
@click.argument("run_path", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the result as JSON to this file.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random test stimulus.")
def check_cmd(run_path: Path, as_json: bool, out: Path | None, seed: int) -> None:
    """Causality and alignment checks on a fitted model (RUN: a run folder or its model.pt):
    changing future frames must not change the predicted response, a frame may only affect the
    response in the next HISTORY bins, and each bin's prediction must come from the frames just
    before it (README: Data formats). `retinakit fit` runs the same checks. Exit status 1 when a
    check fails."""
    from .probes import load_fitted
    from .probes.check import check_model, format_check

    result = check_model(load_fitted(run_path), seed=seed)
    if out is not None:
        from .atomic import write_json

        write_json(out, result)
    click.echo(json.dumps(result, indent=2) if as_json else format_check(result))
    if not result["passed"]:
        sys.exit(1)


@main.command("validate", short_help="Default CNN and LN on simulated retinas unlike the sample.")
@click.option("--case", "cases", multiple=True, metavar="NAME", help="Run only this case (repeatable): fullfield-30hz, whitenoise-16, naturalscene-50, fullfield-steps [default: all].")
@click.option("--quick", is_flag=True, help="Small versions of the cases and a small training budget: checks that the suite runs (for CI), not how good the defaults are.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/validate"), show_default=True, help="Folder for the recordings, fits and the table; finished fits are reused.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Training budget of every fit in optimiser steps [default: 4000; 150 with --quick].")
@click.option("--models", default="rcnn", show_default=True, help="Models fit besides the CNN and the LN and scored against the CNN, comma-separated (rcnn, cnn), or 'none'.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def validate_cmd(cases: tuple[str, ...], quick: bool, out: Path, max_steps: int | None, models: str, as_json: bool, quiet: bool) -> None:
    """Simulate retinas that differ from the bundled sample (full-field flicker at 30 Hz with 233
    cells, a 16x16 white-noise checkerboard, 50x50 natural scenes, full-field flicker with contrast
    steps shown to a retina that also adapts over seconds; other seeds and cell mixes), fit
    the default CNN and LN on each, and print their r/ceiling next to the ground truth's, with the
    time taken, and the recurrent CNN (rcnn) against the CNN on the same cells and bins. Writes
    validate.json, validate.csv and validate.png into --out.

    \b
    Examples:
      retinakit validate                              the whole suite (hours on 2 CPU cores; measured:
                                                      the natural-scene CNN alone took 40 min)
      retinakit validate --models none                without the rcnn (measured at 1.6-3.4x the CNN per epoch)
      retinakit validate --case fullfield-30hz        one case
      retinakit validate --quick                      a small smoke run (a minute or two)
      retinakit validate --quick --max-steps 1500     the small cases trained longer
    """
    from .validate import format_validation_table, run_validation, select_cases

    select_cases(list(cases))  # unknown names fail before anything runs
    show = _progress(quiet)

    extra = tuple(m.strip() for m in models.split(",") if m.strip() and m.strip() != "none")

    def on_case(row: dict[str, Any]) -> None:
        if not as_json and not quiet:
            more = "".join(f", {m} {row[f'{m}_r_norm']:.3f}" for m in extra if row.get(f"{m}_r_norm") is not None)
            _note(f"{row['case']}: CNN r/ceiling {row['cnn_r_norm']:.3f}, LN {row['ln_r_norm']:.3f}{more} ({row['seconds']:.0f} s)")

    options = {"max_steps": max_steps} if max_steps is not None else None
    result = run_validation(out, list(cases) or None, quick=quick, options=options, progress=show, on_case=on_case, models=extra)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_validation_table(result["cases"]))
        click.echo(f"written: {out}/validate.json, validate.csv, validate.png")


# ----------------------------------------------------------------------------- reduce
@main.command("reduce", short_help="Attribute a cell's response to model interneurons; reduce the CNN to the few that matter.")
@click.argument("run_path", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--stimulus", "-s", default="natural", show_default=True, help="osr, step, paired-flash, reversing-grating, motion, contrast, or natural (a stretch of the test movie).")
@click.option("--cell", type=int, default=None, help="Cell id to explain [required when the model has several cells].")
@click.option("--top", "-k", type=int, default=3, show_default=True, help="Channels the reduced model keeps (per reduced layer).")
@click.option("--layer", type=click.Choice(["1", "2", "both"]), default="2", show_default=True, help="Hidden layer(s) to reduce: the others keep every channel.")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A stimulus parameter (repeatable): period, flash, interval, duration, contrast, polarity, width, speed, low, high, start, seconds, seed.")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Recording for the test segment [default: the one the run was fit on].")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder [default: RUN/mechanisms/<stimulus>-cell<N>/].")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of the summary.")
@click.option("--quiet", "-q", is_flag=True, help="Accepted for symmetry with the other commands (reduce prints no progress).")
def reduce_cmd(run_path: Path, stimulus: str, cell: int | None, top: int, layer: str, params: tuple[str, ...], data: Path | None, out: Path | None, as_json: bool, quiet: bool) -> None:
    """Read a mechanism out of a fitted CNN (Tanaka et al. 2019): integrated gradients from cell
    CELL's output to every channel of both hidden layers over a stimulus (baseline: the mean
    stimulus; the attributions sum to the output change within 1 %), the channels ranked by their
    contribution, and the reduced model keeping the top K channels (the others clamped at their
    mean): its response to the same stimulus, its polarity and its r on the test segment next to
    the full model's. Writes result.json, channels.png and reduced.png. data/REDUCE.md has the details.

    \b
    Examples:
      retinakit reduce runs/bn-cnn-sample-1 --cell 4 --stimulus natural
      retinakit reduce runs/bn-cnn-sample-1 --cell 2 -s osr -p period=0.08 --top 2
      retinakit reduce runs/bn-cnn-sample-1 --cell 3 -s step --layer both
    """
    from .mechanisms import default_out_dir, format_summary, reduce
    from .probes.base import parse_param_args

    result = reduce(run_path, stimulus=stimulus, cell=cell, top=top, layer=layer, params=parse_param_args(params), data=data,
                    out=out if out is not None else default_out_dir(run_path, stimulus, cell))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(format_summary(result))
    click.echo(f"written: {result['out_dir']}/result.json, " + ", ".join(result["figures"]))


# ----------------------------------------------------------------------------- data import / export
@data.command("import", short_help="Spike times + frames + stimulus -> retinakit HDF5.")
@click.argument("mapping", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Recording to write (retinakit HDF5 layout) [default: <mapping stem>.h5 beside the mapping].")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--dry-run", is_flag=True, help="Read and check everything, print the summary, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary and notes as JSON.")
def data_import(mapping: Path, out: Path | None, force: bool, dry_run: bool, as_json: bool) -> None:
    """Import a lab recording described by MAPPING (a TOML file: where the spike times, frame
    onsets, stimulus and repeat starts are, and their units). Spikes are binned on the frames,
    checked for unit and alignment mistakes, split into training and repeated test parts and
    written in retinakit's HDF5 layout. Examples: data/import_examples/*.toml."""
    from .errors import OutputError
    from .io import save_recording
    from .io.importer import import_recording, mapping_path_or_error

    target = out or mapping.with_suffix(".h5")
    if not dry_run and target.exists() and not force:
        raise OutputError(f"'{target}' already exists", fix="choose another --out, or add --force to overwrite it")
    result = import_recording(mapping_path_or_error(mapping))
    if not dry_run:
        save_recording(result.recording, target)
    if as_json:
        click.echo(json.dumps({"out": None if dry_run else str(target), "summary": result.summary_lines(), "notes": result.notes}, indent=2))
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo("\n".join(result.summary_lines()))
    click.echo("dry run: nothing written" if dry_run else f"wrote {target}")


@data.command("export", short_help="Write a recording as NWB or retinakit HDF5.")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--to", "target", required=True, type=click.Path(path_type=Path), help="Output file; the format comes from the suffix (.nwb, or .h5 for retinakit's layout).")
@click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
def data_export(path: Path, target: Path, force: bool) -> None:
    """Write a recording (any format `data inspect` reads) as NWB (.nwb: units table, stimulus
    series, repeat intervals; needs pynwb) or in retinakit's HDF5 layout (.h5)."""
    from .errors import ConfigError, OutputError
    from .io import load_recording, save_recording

    suffix = target.suffix.lower()
    if suffix not in (".nwb", ".h5", ".hdf5"):
        raise ConfigError(f"--to: cannot tell the output format from '{target.name}'", fix="use a .nwb or .h5 file name")
    if target.exists() and not force:
        raise OutputError(f"'{target}' already exists", fix="choose another --to, or add --force to overwrite it")
    rec = load_recording(path)
    if suffix == ".nwb":
        from .io.nwb import export

        export(rec, target)
    else:
        save_recording(rec, target)
    click.echo(f"wrote {target} ({rec.n_cells} cells, {rec.train.n_bins} train bins, {0 if rec.test is None else rec.test.n_repeats} repeats)")


# ----------------------------------------------------------------------------- batch
@main.group(cls=_Group, short_help="Sweeps of fits on a SLURM cluster or a local pool.")
def batch() -> None:
    """Sweeps of fits on a SLURM cluster (job arrays) or a local pool, through submitit.

    \b
    A sweep file (TOML, see data/sweep_example.toml) names the recording(s), fixed fit options,
    a grid and/or a list of points, and the resources per job. Each point gets its own run
    folder (the same folder `retinakit fit` makes) under the sweep's output folder.
      retinakit batch run SWEEP.toml --executor slurm   submit what is not done (rerun = resume)
      retinakit batch status SWEEP.toml                 done / running / failed (why) / pending
      retinakit batch collect SWEEP.toml                table (CSV + JSON) and figure of finished points
    """


@batch.command("run", short_help="Submit every point that is not done.")
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--executor", type=click.Choice(["auto", "slurm", "local"]), default="auto", show_default=True,
              help="slurm: one job array on the cluster; local: a pool of processes on this machine; auto: slurm when a controller answers.")
@click.option("--wait/--no-wait", default=False, help="With slurm: wait until every submitted point has ended (local always waits).")
@click.option("--dry-run", is_flag=True, help="Only list what would be submitted.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def batch_run(ctx: click.Context, sweep_file: Path, executor: str, wait: bool, dry_run: bool, as_json: bool, quiet: bool) -> None:
    """Submit every point of SWEEP_FILE that is not finished, queued or running. Running it again
    skips finished points and resubmits failed or missing ones; a point that already has a
    checkpoint continues from it."""
    from .batch import load_sweep
    from .batch.executor import run_sweep

    sweep = load_sweep(sweep_file)
    summary = run_sweep(sweep, executor=executor, wait=wait, dry_run=dry_run, progress=_progress(quiet),
                        echo=(lambda s: click.echo(s, err=True)) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif dry_run:
        for p in sweep.points:
            mark = "submit" if p.id in summary["submitted"] else "skip"
            click.echo(f"{mark:<7} {p.id}  {p.label(sweep.swept_keys)}")
    final = summary.get("final")
    if final is not None and not as_json:
        click.echo(", ".join(f"{n} {s}" for s, n in final.items()) + f"  (details: retinakit batch status {sweep_file})")
    elif summary["submitted"] and not dry_run and not as_json:
        click.echo(f"follow with: retinakit batch status {sweep_file}")
    if final is not None and final.get("failed"):
        ctx.exit(1)


@batch.command("status", short_help="Each point: done, running, failed (why) or pending.")
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the states as JSON.")
def batch_status(sweep_file: Path, as_json: bool) -> None:
    """Show each point of SWEEP_FILE as done, running, failed (with the reason) or pending."""
    from .batch import load_sweep
    from .batch.state import count_states, format_status, sweep_status

    sweep = load_sweep(sweep_file, check_data=False)
    statuses = sweep_status(sweep)
    if as_json:
        click.echo(json.dumps({"sweep": str(sweep.path), "out": str(sweep.out), "counts": count_states(statuses),
                               "points": [s.to_dict() for s in statuses]}, indent=2, default=str))
    else:
        click.echo(format_status(sweep, statuses))


@batch.command("collect", short_help="Table and figure of the finished points.")
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder for results.csv, results.json and r_norm.png [default: <sweep out>/collect].")
@click.option("--json", "as_json", is_flag=True, help="Print the collected table as JSON.")
def batch_collect(sweep_file: Path, out: Path | None, as_json: bool) -> None:
    """Collect every finished point of SWEEP_FILE (runs without DONE are left out) into one table
    (CSV + JSON) of metrics and config, and a figure of r/ceiling per configuration."""
    from .batch import load_sweep
    from .batch.collect import collect_sweep, format_table

    sweep = load_sweep(sweep_file, check_data=False)
    doc = collect_sweep(sweep, out)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    click.echo(format_table(doc))
    left = f"; not finished: {len(doc['not_finished'])}" if doc["not_finished"] else ""
    click.echo(f"{doc['n_finished']} of {doc['n_points']} points collected{left}")
    click.echo(f"table: {doc['csv']} and {doc['json']}; figure: {doc.get('figure')}")


# ----------------------------------------------------------------------------- bench
@main.command("bench", short_help="Time the fast training path against the naive loop.")
@click.option("--frames", default=20000, show_default=True, type=click.IntRange(2), help="Frames of simulated white noise (360000 = an hour at 100 Hz).")
@click.option("--size", default=50, show_default=True, type=click.IntRange(1), help="Frame side in pixels (frames are size x size).")
@click.option("--history", default=40, show_default=True, type=click.IntRange(1), help="Frames per window.")
@click.option("--cells", default=10, show_default=True, type=click.IntRange(1), help="Simulated cells (model outputs).")
@click.option("--samples", default=1024, show_default=True, type=click.IntRange(1), help="Training samples each loop processes (whole batches).")
@click.option("--threads", default=None, type=click.IntRange(1), help="Torch CPU threads [default: torch's choice].")
@click.option("--batch-size", "--batch", "batch", cls=_AliasOption, default=256, show_default=True, type=click.IntRange(1), help="Samples (bins) per training step, as in `fit --batch-size`.")
@click.option("--chunk-len", "--chunk", "chunk", cls=_AliasOption, default=128, show_default=True, type=click.IntRange(1), help="Bins per contiguous chunk in the fast path (batch-size // chunk-len chunks per step), as in `fit --chunk-len`.")
@click.option("--model", "kind", default="cnn", show_default=True, type=click.Choice(["cnn", "bn-cnn"]), help="Model to train.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps.")
@click.option("--naive/--no-naive", default=True, show_default=True, help="Also run the naive loop (--no-naive: fast path only, e.g. to measure memory on an hour).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the simulated data and the initial weights.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench_cmd(frames: int, size: int, history: int, cells: int, samples: int, threads: int | None, batch: int, chunk: int, kind: str, device: str, naive: bool, seed: int, as_json: bool) -> None:
    """Time the naive training loop (one window sliced per sample, Conv2d with time as channels)
    against retinakit's fast path (chunks of movie, first layer over whole chunks) on the same
    simulated data and initial weights; check that outputs and gradients agree (float32,
    relative error < 1e-4); print samples/s of each, the ratio, peak memory, and GFLOP/s against
    a matmul measured in the same run. See benchmarks/README.md."""
    from .bench import format_bench, run_bench

    res = run_bench(frames=frames, size=size, history=history, cells=cells, samples=samples, threads=threads, batch=batch, chunk=chunk,
                    model=kind, device=device, naive=naive, seed=seed, progress=not as_json and _stderr_is_tty())
    click.echo(json.dumps(res, indent=2) if as_json else format_bench(res))
    if not res["check"]["passed"]:
        from .errors import ModelError

        raise ModelError("the fast path does not match the naive loop (see the equality line above)", fix="report this with the command line")


def run() -> None:
    """Entry point for the console script: usage errors, like all bad input, are one line and exit 2."""
    try:
        code = main.main(prog_name="retinakit", standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "retinakit"
        click.echo(f"error: {' '.join(exc.format_message().split()).rstrip('.')}; see '{where} --help'", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
