"""Training-step time of the CNN with the second convolution in channels-last vs the default layout.

    python benchmarks/conv2_layout.py                  # 50x50 frames, batch of 5 chunks x 100 bins, one thread
    python benchmarks/conv2_layout.py --threads 2 --steps 6

Both variants are the same model (same weights, same batch); the steps alternate, so background
load slows both alike. Prints the seconds per step of each and their ratio, and checks that the
two give the same outputs (they differ only in memory layout, so up to float rounding).
"""

from __future__ import annotations

import time
from unittest import mock

import torch

from _step_setup import default_cnn_and_batch
from retinakit.models import cnn as cnn_module


def plain_conv(conv: torch.nn.Module, a: torch.Tensor) -> torch.Tensor:
    """The second convolution in PyTorch's default (channels-first) layout."""
    return conv(a)


def main() -> None:
    a, model, z = default_cnn_and_batch(__doc__.splitlines()[0], steps=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: both variants keep the same weights

    def step() -> torch.Tensor:
        out = model.forward_chunks(z)
        opt.zero_grad()
        out.mean().backward()
        opt.step()
        return out.detach()

    model.eval()
    with torch.no_grad():
        fast_out = model.forward_chunks(z)
        with mock.patch.object(cnn_module, "conv_maps", plain_conv):
            plain_out = model.forward_chunks(z)
    model.train()
    times = {"channels_last": 0.0, "default": 0.0}
    for _ in range(a.steps):
        t = time.perf_counter()
        step()
        times["channels_last"] += time.perf_counter() - t
        with mock.patch.object(cnn_module, "conv_maps", plain_conv):
            t = time.perf_counter()
            step()
            times["default"] += time.perf_counter() - t
    per = {k: v / a.steps for k, v in times.items()}
    print(f"{a.size}x{a.size} frames, {a.chunks} chunks x {a.chunk_len} bins, {a.cells} cells, {a.threads} thread(s), torch {torch.__version__}")
    print(f"max |difference| of the outputs: {float((fast_out - plain_out).abs().max()):.2e}")
    print(f"seconds per training step: channels-last {per['channels_last']:.3f}, default layout {per['default']:.3f}, "
          f"ratio default / channels-last {per['default'] / per['channels_last']:.2f}")


if __name__ == "__main__":
    main()
