"""Shared set-up of the training-step benchmarks: the command line and the default bn-cnn on a batch of chunks."""

from __future__ import annotations

import argparse

import torch

from retinakit.models.cnn import CNN


def default_cnn_and_batch(description: str, steps: int) -> tuple[argparse.Namespace, CNN, torch.Tensor]:
    """Parse ``--size --cells --chunks --chunk-len --steps --threads``; set the thread count and seed;
    return the arguments, the default bn-cnn (separable first layer, factorised readout) and a
    random batch of chunks ``(chunks, chunk_len + 40, size, size)``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--size", type=int, default=50)
    ap.add_argument("--cells", type=int, default=12)
    ap.add_argument("--chunks", type=int, default=5)
    ap.add_argument("--chunk-len", type=int, default=100)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = CNN(40, (a.size, a.size), a.cells, batchnorm=True, readout="factorized", first_layer="separable")
    z = torch.randn(a.chunks, a.chunk_len + 40, a.size, a.size)
    return a, model, z
