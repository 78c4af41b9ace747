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


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) if root.params else False


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="retinakit")
def main(debug: bool) -> None:
    """retinakit: fit CNN and LN models to retinal ganglion-cell recordings, score them against
    each cell's reliability, and probe the fitted models with synthetic stimuli.

    \b
    Typical session:
      retinakit data inspect rec.h5      what is in a recording
      retinakit fit                      fit the CNN on the bundled sample
      retinakit compare-ln rec.h5        CNN vs LN, cell by cell
      retinakit probe RUN --stimulus osr omitted stimulus response of a fitted model
    """


# ----------------------------------------------------------------------------- data
@main.group(cls=_Group)
def data() -> None:
    """Inspect and import recordings."""


@data.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary instead of text.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder for STA figures (default: inspect-<file stem> in the current folder).")
@click.option("--cells", default=None, help="Comma-separated cell ids to include (default: all).")
@click.option("--history", default=40, show_default=True, type=click.IntRange(1, 1000), help="STA length in frames.")
@click.option("--sta/--no-sta", default=None, help="Compute STAs (default: only for white-noise and full-field recordings).")
def data_inspect(path: Path, as_json: bool, out: Path | None, cells: str | None, history: int, sta: bool | None) -> None:
    """Summarise a recording: stimulus, frame rate, durations, repeats, cells with their mean
    rates and split-half reliability; for white noise, the spike-triggered average of each cell
    (peak lag, location, polarity) and one STA figure per cell (PNG)."""
    from .io import load_recording
    from .summary import format_summary, summarize, write_sta_figures

    rec = load_recording(path, cells=_parse_cells(cells))
    summary, stas = summarize(rec, sta_history=history, with_sta=sta)
    if stas is not None:
        out_dir = out or Path(f"inspect-{path.stem}")
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


def run() -> None:
    """Entry point for the console script."""
    main(prog_name="retinakit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
