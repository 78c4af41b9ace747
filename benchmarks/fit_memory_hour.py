"""Peak memory of the fitting loop's own data path on an hour of 50x50 uint8 frames.

Runs what ``retinakit.fitting.train.train`` does per batch, for a few steps only (one epoch
over an hour takes long on a CPU): it builds the recording, calls ``prepare_data`` (which
z-scores the movie once), and then runs ``make_chunks``, ``gather_chunks``,
``gather_targets``, ``forward_chunks``, the Poisson loss, backward and an Adam step with the
default batch (2000 = 8 chunks x 250 bins). Measure it with::

    /usr/bin/time -v python benchmarks/fit_memory_hour.py            # 360000 frames, 3 steps
    /usr/bin/time -v python benchmarks/fit_memory_hour.py 36000 2    # 6 minutes, 2 steps

The bound from issue 7 is 2 x the float32 stimulus + 1 GB (7890 MiB for an hour of 50x50).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from retinakit.bench import peak_rss_bytes, rss_bytes, simulate
from retinakit.fitting.config import FitConfig
from retinakit.fitting.train import gather_chunks, gather_targets, make_chunks, poisson_loss, prepare_data
from retinakit.models import build_model
from retinakit.recording import Recording, Split


def main(frames: int = 360_000, steps: int = 3, size: int = 50, cells: int = 10) -> None:
    """Build an hour-long recording, prepare it as the fit does, run ``steps`` training steps."""
    movie, counts = simulate(frames, size, cells, seed=0)
    rep = np.stack([counts[:300]] * 2)
    rec = Recording(
        train=Split(stimulus=movie, time=np.arange(frames) * 0.01, counts=counts),
        test=Split(stimulus=movie[:300], time=1e4 + np.arange(300) * 0.01, counts=rep.mean(0), repeats=rep),
        cell_ids=np.arange(1, cells + 1), frame_dt=0.01, stimulus_kind="whitenoise",
    )
    mib = 2**20
    print(f"stimulus {rec.train.stimulus.dtype} {movie.nbytes / mib:.0f} MiB ({movie.size * 4 / mib:.0f} MiB as float32); "
          f"bound {2 * movie.size * 4 / mib + 1024:.0f} MiB; RSS {rss_bytes() / mib:.0f} MiB", flush=True)
    cfg = FitConfig.from_dict({})
    data = prepare_data(rec, cfg)
    print(f"after prepare_data: z {data.z.dtype} {tuple(data.z.shape)}; RSS {rss_bytes() / mib:.0f} MiB", flush=True)
    h = cfg.history
    model = build_model("cnn", h, (size, size), cells)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    starts, weights, L = make_chunks(data.fit_mask, h, cfg.chunk_len)
    per = max(1, cfg.batch_size // L)
    t0 = time.perf_counter()
    for i in range(steps):
        st = starts[i * per : (i + 1) * per]
        zc = gather_chunks(data.z, st, h, L)
        tgt = gather_targets(data.y, st, L)
        w = torch.from_numpy(weights[i * per : (i + 1) * per])
        pred = model.forward_chunks(zc)
        loss = poisson_loss(pred, tgt, w) + cfg.l2 * model.weight_l2()
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {i}: batch {tuple(zc.shape)}; RSS {rss_bytes() / mib:.0f} MiB, peak {peak_rss_bytes() / mib:.0f} MiB", flush=True)
    print(f"{steps * per * L / (time.perf_counter() - t0):.0f} samples/s; peak RSS {peak_rss_bytes() / mib:.0f} MiB")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
