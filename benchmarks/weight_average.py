"""Training-step time of the default CNN with and without the weight average (``--weight-ema``).

    python benchmarks/weight_average.py                # 50x50 frames, batch of 5 chunks x 100 bins, one thread
    python benchmarks/weight_average.py --threads 2 --steps 10

The same model and batch; a step is forward, Poisson loss, backward and an Adam step, plus (in the
"averaged" variant) the update of the exponential moving average of the weights. The steps of the
two variants alternate, so background load slows both alike. Prints the seconds per step of each
and their ratio.
"""

from __future__ import annotations

import time

import torch

from _step_setup import default_cnn_and_batch
from retinakit.fitting.train import WeightAverage


def main() -> None:
    a, model, z = default_cnn_and_batch(__doc__.splitlines()[0], steps=6)
    y = torch.poisson(torch.full((a.chunks, a.chunk_len, a.cells), 0.2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    average = WeightAverage(model, horizon_steps=50.0)

    def step(n: int, averaged: bool) -> float:
        t0 = time.perf_counter()
        pred = model.forward_chunks(z)
        loss = (pred - y * torch.log(pred + 1e-8)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if averaged:
            average.update(model, n)
        return time.perf_counter() - t0

    model.train()
    step(0, True)  # warm-up
    times: dict[bool, list[float]] = {False: [], True: []}
    for n in range(1, a.steps + 1):
        for averaged in (False, True) if n % 2 else (True, False):
            times[averaged].append(step(n, averaged))
    plain, avg = (sorted(times[k])[len(times[k]) // 2] for k in (False, True))
    print(f"{a.size}x{a.size} frames, {a.chunks} chunks x {a.chunk_len} bins, {a.cells} cells, {torch.get_num_threads()} thread(s), {a.steps} steps each")
    print(f"plain step    {plain * 1e3:8.1f} ms (median)")
    print(f"averaged step {avg * 1e3:8.1f} ms (median)")
    print(f"ratio averaged / plain: {avg / plain:.3f}   ({len(average.keys)} tensors averaged)")
    t0 = time.perf_counter()
    for n in range(200):
        average.update(model, n)
    upd = (time.perf_counter() - t0) / 200
    print(f"the average's update alone: {upd * 1e3:.3f} ms ({upd / plain:.4f} of a plain step)")


if __name__ == "__main__":
    main()
