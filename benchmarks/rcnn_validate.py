"""The rcnn's contrast adaptation against the ground truth's and bn-cnn's, on a ``retinakit validate`` folder.

    retinakit validate --out V                       # first: the fits (cnn, ln and rcnn per case)
    python benchmarks/rcnn_validate.py V             # then: probes, the README's table, the gates
    python benchmarks/rcnn_validate.py V --block 6   # the same with 6-s contrast blocks (-p block=6)

For each case folder in V with both ``cnn`` and ``rcnn`` runs, it runs ``retinakit probe
V/data/<case>-*.h5 --stimulus contrast-adaptation -p seed=S --compare V/<case>/<model>`` (seeds 0, 1
and 2 for spatial models, seed 0 for full-field ones; a probe folder already written is reused)
and prints, over the (cell, seed) pairs with a gain ratio in the truth and in both models, the
median (and mean) of |model - truth|. Then the same with only the pairs whose nonlinearities
superpose (``nl_misfit`` at most 0.1, 0.2, 0.3 in truth and both models, ratio inside the search
grid), the median misfit of each, the median time constants of the rate after each switch
(``tau_high_s``, ``tau_low_s``), and the rcnn's learned gates: the divisive weights
softplus(Omega) and the update gates' time constants 1 / (rate sigmoid(b_z)) at rest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

WHO = ("cnn", "rcnn", "truth")


def probe(root: Path, case: str, model: str, seed: int, block: str | None) -> tuple[dict[int, dict], dict[int, dict]]:
    """The model's and the truth's per-cell results (runs the probe when not yet written)."""
    out = root / case / model / "probes" / (f"ca-s{seed}" + (f"-block{block}" if block else ""))
    if not (out / "model" / "result.json").is_file():
        (data,) = sorted((root / "data").glob(f"{case}-*.h5"))
        cmd = ["retinakit", "probe", str(data), "-s", "contrast-adaptation", "-p", f"seed={seed}", "--compare", str(root / case / model), "--out", str(out), "-q"]
        cmd += ["-p", f"block={block}"] if block else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    read = lambda who: {c["id"]: c for c in json.loads((out / who / "result.json").read_text())["cells"]}  # noqa: E731
    return read("model"), read("truth")


def gates(run: Path) -> str:
    """softplus(Omega)'s diagonal and the update gates' resting time constants of an rcnn run."""
    from retinakit.fitting.checkpoint import load_checkpoint

    import torch

    tensors, info = load_checkpoint(run / "model.pt")

    omega = torch.nn.functional.softplus(tensors["state_omega"])
    n, mid = omega.shape[0], omega.shape[2] // 2
    rate = torch.sigmoid(tensors["gate_in.bias"][:n])
    frame_rate = 1.0 / float(info["meta"]["frame_dt"])
    diag = [float(omega[k, k, mid, mid]) for k in range(n)]
    taus = [1.0 / float(r) / frame_rate for r in rate]
    return f"softplus(Omega) {min(diag):.2f}-{max(diag):.2f}, time constants {min(taus):.3f}-{max(taus):.3f} s ({', '.join(f'{t:.2f}' for t in taus)})"


def main() -> None:
    from retinakit.fitting.checkpoint import load_checkpoint

    args = sys.argv[1:]
    block = None
    if "--block" in args:
        k = args.index("--block")
        block, args = args[k + 1], args[:k] + args[k + 2 :]
    root = Path(args[0] if args else "V")
    cases = sorted(p.parent.parent.name for p in root.glob("*/rcnn/DONE") if (p.parent.parent / "cnn" / "DONE").is_file())
    if not cases:
        sys.exit(f"{root}: no case folder with finished cnn and rcnn runs; run `retinakit validate --out {root}` first")
    for case in cases:
        full_field = not load_checkpoint(root / case / "cnn" / "model.pt")[1]["meta"]["frame_shape"]
        seeds = [0] if full_field else [0, 1, 2]
        res = {(m, s): probe(root, case, m, s, block) for m in ("cnn", "rcnn") for s in seeds}
        pairs = []  # (seed, id) -> {who: cell}
        for s in seeds:
            truth = res[("cnn", s)][1]
            for i, t in truth.items():
                pairs.append({"cnn": res[("cnn", s)][0].get(i), "rcnn": res[("rcnn", s)][0].get(i), "truth": t})
        print(f"{case} ({'full field, seed 0' if full_field else 'seeds 0-2 pooled'}{f', blocks of {block} s' if block else ''}):")
        for limit in (None, 0.1, 0.2, 0.3):
            def ok(c: dict | None) -> bool:
                if c is None or c["gain_ratio"] is None:
                    return False
                return limit is None or (c["nl_misfit"] is not None and c["nl_misfit"] <= limit and 0.1 < c["gain_ratio"] < 10.0)
            kept = [p for p in pairs if all(ok(p[w]) for w in WHO)]
            if not kept:
                print(f"  misfit <= {limit}: no cell")
                continue
            d = {m: np.array([abs(p[m]["gain_ratio"] - p["truth"]["gain_ratio"]) for p in kept]) for m in ("cnn", "rcnn")}
            label = "all ratios" if limit is None else f"misfit <= {limit}"
            print(f"  {label:>14}: {len(kept)}/{len(pairs)} cells | bn-cnn {np.median(d['cnn']):.3f} ({d['cnn'].mean():.3f})"
                  f" | rcnn {np.median(d['rcnn']):.3f} ({d['rcnn'].mean():.3f}) | truth's median gain ratio {np.median([p['truth']['gain_ratio'] for p in kept]):.3f}")
        mis = {w: [p[w]["nl_misfit"] for p in pairs if p[w] is not None and p[w]["nl_misfit"] is not None] for w in WHO}
        print("  median nl_misfit: " + ", ".join(f"{w} {np.median(v):.3f}" for w, v in mis.items() if v))
        for key, what in (("tau_high_s", "after the switch to high"), ("tau_low_s", "after the switch to low")):
            taus = {w: [p[w][key] for p in pairs if p[w] is not None and p[w][key] is not None] for w in WHO}
            print(f"  median time constant of the rate {what} (s): " + ", ".join(f"{w} {np.median(v):.3f} ({len(v)} cells)" for w, v in taus.items() if v))
        print(f"  rcnn gates: {gates(root / case / 'rcnn')}")


if __name__ == "__main__":
    main()
