"""Regenerate the measured tables of the README, with the commands a user would type.

    python benchmarks/readme_tables.py                 # sample fits + compare-ln (tens of minutes on 2 CPU cores)
    python benchmarks/readme_tables.py --out DIR       # keep the runs; finished runs in DIR are reused
    python benchmarks/readme_tables.py --validate      # also `retinakit validate` (hours on 2 CPU cores)

Everything runs in a temporary folder (or ``--out``) through the ``retinakit`` command line with
its defaults, and the tables are printed as Markdown, with the commands and the machine. The fits
use ``--deterministic``, so on one machine and one torch build the numbers repeat exactly; they
vary slightly between torch versions and builds (CPU vs CUDA kernels sum in other orders) and with
the number of threads, and the times vary with the load of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def run(args: list[str]) -> Any:
    """Run ``retinakit ARGS --json`` and return its parsed output (stderr passes through)."""
    cmd = [sys.executable, "-m", "retinakit.cli", *args, "--json", "-q"]
    print("$ retinakit " + " ".join(args), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def fit_or_reuse(args: list[str], folder: Path) -> Any:
    """``retinakit fit ARGS --out FOLDER``, or the metrics of a finished run already in FOLDER
    (``--out`` kept between calls lets the tables be re-made after changing one side only)."""
    if (folder / "DONE").is_file():
        print(f"(reusing the finished run {folder})", file=sys.stderr)
        return json.loads((folder / "metrics.json").read_text())
    return run([*args, "--out", str(folder)])


def fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temporary folder)")
    ap.add_argument("--validate", action="store_true", help="also run `retinakit validate` (long)")
    a = ap.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="retinakit-readme-"))
    import torch

    print(f"Machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}\n")

    cnn = fit_or_reuse(["fit", "sample", "--deterministic"], out / "fit-bn-cnn")
    ln = fit_or_reuse(["fit", "sample", "--model", "ln", "--deterministic"], out / "fit-ln")
    print("Bundled natural-scene sample, defaults (`retinakit fit --deterministic`, `retinakit fit --model ln --deterministic`):\n")
    print("| model | mean r/ceiling | median r/ceiling | reliable cells | fit time | stopped |")
    print("| --- | --- | --- | --- | --- | --- |")
    for m in (cnn, ln):
        s, f = m["summary"], m.get("fit", {})
        print(f"| {m['model']} | {fmt(s['mean_r_norm'])} | {fmt(s['median_r_norm'])} | {s['n_reliable']}/{s['n_cells']} | "
              f"{f.get('fit_seconds', 0):.0f} s | {f.get('stopped') or 'closed form'} |")
    print()

    comp = run(["compare-ln", "sample", "--cnn-run", str(out / "fit-bn-cnn"), "--ln-run", str(out / "fit-ln"), "--out", str(out / "compare")])
    s = comp["summary"]
    print("`retinakit compare-ln sample --deterministic` (the two fits above, scored on the same cells and bins):\n")
    print(f"mean over {s['n_reliable']}/{s['n_cells']} reliable cells: LN r/ceiling {fmt(s['mean_ln_r_norm'])}, "
          f"CNN r/ceiling {fmt(s['mean_cnn_r_norm'])}, difference {fmt(s['mean_cnn_minus_ln_r_norm'])} (CNN better on {s['n_cnn_better']} cells)\n")
    print("| cell | LN r/c | CNN r/c | ceiling |")
    print("| --- | --- | --- | --- |")
    for c in comp["cells"]:
        print(f"| {c['cell']} | {fmt(c['ln_r_norm'])} | {fmt(c['cnn_r_norm'])} | {fmt(c['ceiling'])} |")
    print()

    if a.validate:
        v = run(["validate", "--out", str(out / "validate")])
        print("`retinakit validate` (defaults):\n")
        print("| case | cells | CNN r/ceiling | LN r/ceiling | CNN > LN | truth r/ceiling | CNN epochs | CNN stopped by | CNN fit | LN fit |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in v["cases"]:
            print(f"| {r['case']} | {r['n_reliable']}/{r['n_cells']} | {fmt(r['cnn_r_norm'])} | {fmt(r['ln_r_norm'])} | "
                  f"{r['n_cnn_better']}/{r['n_reliable']} | {fmt(r['truth_r_norm'])} | {r['cnn_epochs']} | "
                  f"{'convergence' if r['cnn_converged'] else 'budget'} | {r['cnn_fit_s'] or 0:.0f} s | {r['ln_fit_s'] or 0:.0f} s |")
    print(f"\n(runs in {out})")


if __name__ == "__main__":
    main()
