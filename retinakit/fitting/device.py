"""The ONE place where the compute device, mixed precision and seeding are decided."""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import ConfigError


def choose_device(requested: str | None = "auto") -> torch.device:
    """The device to fit on: ``auto`` picks CUDA when present, else CPU; otherwise the one asked for.

    Raises :class:`ConfigError` when the requested device is not available on this machine.
    """
    req = (requested or "auto").strip().lower()
    if req == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(req)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown device '{requested}'", "--device", "use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{requested}' was requested but no CUDA GPU is available", "--device", "use --device cpu or --device auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{requested}' does not exist (this machine has {torch.cuda.device_count()} GPU(s))", "--device")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError("device 'mps' was requested but is not available", "--device", "use --device cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device '{requested}'", "--device", "use auto, cpu, cuda, cuda:N or mps")
    return dev


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when ``enabled``; a no-op on CPU (float32 there)."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms inside the block when ``enabled``; restores the previous setting."""
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn = torch.backends.cudnn
    old_bench, old_det = cudnn.benchmark, cudnn.deterministic
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        cudnn.benchmark, cudnn.deterministic = old_bench, old_det
