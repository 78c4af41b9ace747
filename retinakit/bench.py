"""``retinakit bench``: the naive training loop against retinakit's fast path, on the same data.

Both loops train the same model (same initial weights, same optimiser, same loss) on the same
simulated recording for the same number of samples:

* **naive**: the standard PyTorch recipe: for each sample slice its ``history``-frame window out
  of the movie, stack a batch, z-score it, run ``model.forward`` (``Conv2d`` with time as
  channels), Poisson loss, backward, Adam step;
* **fast**: batches of contiguous chunks gathered from the compact (uint8) movie kept on the
  device (:class:`retinakit.models.fastconv.ChunkSource`), ``model.forward_chunks`` (first layer
  over whole chunks, :mod:`retinakit.models.fastconv`), same loss and step.

Before timing, one batch is pushed through both with the same random state (so the hidden-layer
noise is identical): outputs and all parameter gradients must agree to a relative error below
``1e-4`` (float32). Reported: samples/s of each, their ratio, peak resident memory of each phase,
and the achieved GFLOP/s (direct-convolution operation count) against a float32 matmul measured
in the same run.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import numpy as np

from .alignment import first_predicted_bin
from .errors import ConfigError

TOLERANCE = 1e-4
MEAN, STD = 127.5, 127.5  # z-score of a binary {0, 255} movie


# ----------------------------------------------------------------------------- memory
def _read_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since start (or since :func:`reset_peak_rss`)."""
    hwm = _read_status("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def rss_bytes() -> int:
    """Current resident memory of this process (0 where unknown)."""
    return _read_status("VmRSS") or 0


# ----------------------------------------------------------------------------- data
def simulate(frames: int, size: int, cells: int, seed: int = 0, lag: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A binary white-noise movie ``(frames, size, size)`` uint8 in {0, 255} and Poisson counts ``(frames, cells)``.

    Cell ``k`` is an ON (even k) or OFF (odd k) unit driven by one pixel ``lag`` frames back
    through an exponential nonlinearity: cheap to make for an hour of frames, and learnable.
    The movie is generated in blocks so no float copy of it is ever made.
    """
    if frames < 2 or size < 1 or cells < 1:
        raise ConfigError(f"need frames >= 2, size >= 1 and cells >= 1, got {frames}, {size}, {cells}")
    rng = np.random.default_rng(seed)
    movie = np.empty((frames, size, size), dtype=np.uint8)
    block = max(1, 2_000_000 // (size * size))
    for s in range(0, frames, block):
        e = min(frames, s + block)
        movie[s:e] = rng.integers(0, 2, size=(e - s, size, size), dtype=np.uint8) * np.uint8(255)
    counts = np.zeros((frames, cells), dtype=np.float32)
    for k in range(cells):
        y, x = (3 + 7 * k) % size, (5 + 11 * k) % size
        drive = np.zeros(frames, dtype=np.float32)
        drive[lag:] = (movie[:-lag, y, x].astype(np.float32) - MEAN) / STD
        sign = 1.0 if k % 2 == 0 else -1.0
        counts[:, k] = rng.poisson(0.2 * np.exp(sign * drive - 0.5))
    return movie, counts


# ----------------------------------------------------------------------------- flops
def model_flops(model: Any) -> dict[str, float]:
    """Floating-point operations per sample of the direct (per-window) computation.

    ``forward``: conv1 + conv2 + dense multiply-adds x 2. ``train``: forward plus backward, where
    the first layer needs only its weight gradient (x2 of its forward) and the other layers weight
    and input gradients (x3).
    """
    if hasattr(model, "conv2"):
        (k1h, k1w), (k2h, k2w) = model.kernel_sizes
        H, W = model.input_hw
        h1, w1 = H - k1h + 1, W - k1w + 1
        h2, w2 = h1 - k2h + 1, w1 - k2w + 1
        f1, f2 = model.filters
        c1 = 2.0 * model.history * f1 * k1h * k1w * h1 * w1
        c2 = 2.0 * f1 * f2 * k2h * k2w * h2 * w2
        d = 2.0 * f2 * h2 * w2 * model.n_cells
        return {"conv1": c1, "conv2": c2, "dense": d, "forward": c1 + c2 + d, "train": 2 * c1 + 3 * (c2 + d)}
    n = float(sum(p.numel() for p in model.parameters()))
    return {"forward": 2 * n, "train": 6 * n}


def matmul_gflops(device: Any, n: int = 1024, seconds: float = 1.0) -> float:
    """Float32 matmul throughput measured now (GFLOP/s), the machine's yardstick."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        reps += 1
        _sync(device)
        dt = time.perf_counter() - t0
        if dt > seconds and reps >= 3:
            break
    return 2.0 * n**3 * reps / dt / 1e9


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- loops
def _poisson_loss(pred: Any, target: Any) -> Any:
    return (pred - target * (pred + 1e-8).log()).mean()


class _Naive:
    """The standard recipe: one window sliced per sample, stacked, z-scored, copied to the device."""

    def __init__(self, movie: np.ndarray, counts: np.ndarray, history: int, device: Any) -> None:
        import torch

        self.movie, self.history, self.device = movie, history, device
        self.counts = torch.from_numpy(counts)

    def batch(self, bins: np.ndarray) -> tuple[Any, Any]:
        import torch

        h = self.history
        x = torch.stack([torch.from_numpy(self.movie[t - h : t]) for t in bins]).float()
        x = x.sub_(MEAN).div_(STD)
        y = self.counts[torch.from_numpy(bins)]
        return x.to(self.device), y.to(self.device)


class _Fast:
    """Chunk batches from the compact movie on the device; targets gathered there too."""

    def __init__(self, movie: np.ndarray, counts: np.ndarray, history: int, device: Any) -> None:
        import torch

        from .models.fastconv import ChunkSource

        self.source = ChunkSource(movie, history, MEAN, STD, device)
        self.counts = torch.from_numpy(counts).to(device if self.source.on_device else "cpu")
        self.device, self.history = device, history

    def batch(self, starts: Any, length: int) -> tuple[Any, Any]:
        import torch

        zc = self.source.chunks(starts, length)
        first = first_predicted_bin(self.history)
        bins = starts.to(self.counts.device).view(-1, 1) + first + torch.arange(length, device=self.counts.device).view(1, -1)
        return zc, self.counts[bins].to(self.device, non_blocking=True)


def _rel_err(a: Any, b: Any, floor: float = 0.0) -> float:
    den = max(float(b.abs().max()), floor, 1e-30)
    return float((a - b).abs().max()) / den


VANISHING = 1e-5  # a gradient this small next to the largest one is rounding noise (e.g. a bias before batch norm)
KINK_MARGIN = 1e-4  # relative to the layer's largest |pre-activation|: "within float32 rounding of 0"


def check_equal(model_a: Any, model_b: Any, naive: _Naive, fast: _Fast, starts: np.ndarray, length: int, seed: int = 0) -> dict[str, Any]:
    """Outputs and gradients of ``forward`` (naive windows) vs ``forward_chunks`` on the same samples.

    The random state is reset before each pass so the hidden-layer noise is identical. Gradient
    errors are relative to the largest entry of each reference gradient; a gradient that vanishes
    identically (a bias just before batch norm: its largest entry is below ``VANISHING`` times
    the largest gradient entry of the model, i.e. rounding noise) is measured against that
    largest entry instead.

    ReLU kinks: two float32 computations of the same pre-activation differ by ~1e-7 relative, so
    among the ~10^6 hidden units of a batch a few that lie within rounding of 0 can land on
    different sides of the ReLU. The outputs barely notice, but the gradient of such a unit is
    switched on in one pass and off in the other, which moves a first-layer gradient by ~1e-4
    relative, whichever two implementations are compared (even two runs of the naive loop with
    different convolution algorithms). So, for CNNs, the check aligns exactly those units: where
    the signs differ *and* both values are within ``KINK_MARGIN`` of zero (relative to the
    layer's largest value), the fast pass's pre-activation is moved onto the naive one (a change
    of ~1e-7); the number aligned is reported. A real difference (a sign mismatch away from zero)
    is never aligned and fails the check.
    """
    import torch

    first = first_predicted_bin(naive.history)
    bins = (starts[:, None] + first + np.arange(length)[None, :]).reshape(-1)
    xb, yb = naive.batch(bins)
    zc, _ = fast.batch(torch.from_numpy(starts), length)
    layers = [n for n in ("bn1", "bn2") if hasattr(model_a, n)]
    noisy = bool(model_a.training and getattr(model_a, "noise_std", 0) > 0)
    pre: dict[str, Any] = {}
    aligned = {"units": 0, "far_mismatches": 0}

    def capture(name: str) -> Any:
        def hook(mod: Any, inp: Any, out: Any) -> None:
            pre[name] = out.detach()

        return hook

    def align(name: str) -> Any:
        def hook(mod: Any, inp: Any, out: Any) -> Any:
            ref, mine = pre[name] + noise[name], out.detach() + noise[name]
            if ref.shape != mine.shape:
                return None
            scale = KINK_MARGIN * float(ref.abs().max())
            flip = (ref > 0) != (mine > 0)
            near = flip & (ref.abs() <= scale) & (mine.abs() <= scale)
            aligned["units"] += int(near.sum())
            aligned["far_mismatches"] += int((flip & ~near).sum())
            return out + torch.where(near, ref - mine, torch.zeros_like(ref)) if bool(near.any()) else None

        return hook

    out = {}
    noise: dict[str, Any] = {}
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # true float32 on GPUs too
    try:
        for name, model in (("naive", model_a), ("fast", model_b)):
            if name == "fast":
                torch.manual_seed(seed)  # the noise the naive pass drew, in the same order
                noise.update({n: (model_a.noise_std * torch.randn_like(pre[n]) if noisy else torch.zeros_like(pre[n])) for n in layers})
            handles = [getattr(model, n).register_forward_hook(capture(n) if name == "naive" else align(n)) for n in layers]
            try:
                model.zero_grad(set_to_none=True)
                torch.manual_seed(seed)
                pred = model(xb) if name == "naive" else model.forward_chunks(zc).reshape(-1, model.n_cells)
                _poisson_loss(pred, yb).backward()
            finally:
                for h in handles:
                    h.remove()
            out[name] = (pred.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()})
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    (pa, ga), (pb, gb) = out["naive"], out["fast"]
    model_a.zero_grad(set_to_none=True)
    model_b.zero_grad(set_to_none=True)
    gmax = max(float(g.abs().max()) for g in ga.values())
    errs = {n: _rel_err(gb[n], ga[n], gmax if float(ga[n].abs().max()) < VANISHING * gmax else 0.0) for n in ga}
    worst = max(errs, key=errs.__getitem__)
    e_out = _rel_err(pb, pa)
    return {
        "samples": int(bins.size),
        "max_rel_err_output": e_out,
        "max_rel_err_grad": errs[worst],
        "worst_grad": worst,
        "relu_units_aligned": aligned["units"],
        "relu_mismatches_not_aligned": aligned["far_mismatches"],
        "tolerance": TOLERANCE,
        "passed": bool(e_out < TOLERANCE and errs[worst] < TOLERANCE),
    }


class _Trainer:
    """One training loop (naive or fast): Adam, Poisson loss, the same batch sampling scheme."""

    def __init__(self, kind: str, model: Any, loader: Any, batch: int, chunk: int, n_frames: int, history: int, seed: int, device: Any, amp: bool) -> None:
        import torch

        self.kind, self.model, self.loader, self.device = kind, model, loader, device
        self.chunk, self.n_frames, self.history = chunk, n_frames, history
        self.K = max(1, batch // chunk)
        self.batch = self.K * chunk  # the same number of samples per step in both loops
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator(device=device).manual_seed(seed)  # chunk starts drawn on the device: no host copy per batch
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.amp = amp
        self.seconds = 0.0
        self.steps = 0

    def step(self) -> None:
        """One optimiser step on a fresh random batch."""
        import torch

        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if self.kind == "naive":
                bins = self.rng.integers(first_predicted_bin(self.history), self.n_frames, size=self.batch)
                x, y = self.loader.batch(bins)
                pred = self.model(x)
            else:
                starts = torch.randint(0, self.n_frames - self.chunk - self.history + 1, (self.K,), device=self.device, generator=self.gen)
                zc, y = self.loader.batch(starts, self.chunk)
                pred = self.model.forward_chunks(zc)
        loss = _poisson_loss(pred.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed_step(self) -> None:
        """:meth:`step`, its wall-clock time added to :attr:`seconds`."""
        _sync(self.device)
        t0 = time.perf_counter()
        self.step()
        _sync(self.device)
        self.seconds += time.perf_counter() - t0
        self.steps += 1

    def peak_step(self) -> dict[str, float]:
        """One untimed step (warm-up) with the peak-memory counters reset around it."""
        import torch

        base = rss_bytes()
        reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.step()
        _sync(self.device)
        res = {"rss_before_mb": base / 2**20, "peak_rss_mb": peak_rss_bytes() / 2**20}
        if self.device.type == "cuda":
            res["peak_gpu_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return res

    def result(self) -> dict[str, Any]:
        """Samples, seconds and samples/s of the timed steps."""
        n = self.steps * self.batch
        return {"samples": n, "steps": self.steps, "batch": self.batch, "seconds": self.seconds, "samples_per_s": n / self.seconds if self.seconds > 0 else float("nan")}


def train_interleaved(trainers: list[_Trainer], n_samples: int, progress: bool = True) -> None:
    """Time the loops on the same number of samples, alternating steps (fair on a shared machine).

    Each loop runs ``ceil(n_samples / batch)`` timed steps; a step of one loop alternates with
    enough steps of the others to keep their sample counts level, so background load slows every
    loop alike.
    """
    from tqdm import tqdm

    targets = [max(1, math.ceil(n_samples / t.batch)) for t in trainers]
    total = sum(targets)
    with tqdm(total=total, desc="bench", unit="step", disable=not progress, file=sys.stderr, leave=False) as bar:
        while any(t.steps < n for t, n in zip(trainers, targets)):
            # the loop furthest behind (by fraction of its target) steps next
            i = min((k for k in range(len(trainers)) if trainers[k].steps < targets[k]), key=lambda k: trainers[k].steps / targets[k])
            trainers[i].timed_step()
            bar.set_postfix_str(trainers[i].kind)
            bar.update(1)


# ----------------------------------------------------------------------------- entry point
def run_bench(
    frames: int = 20_000,
    size: int = 50,
    history: int = 40,
    cells: int = 10,
    samples: int = 1024,
    threads: int | None = None,
    batch: int = 256,
    chunk: int = 128,
    model: str = "cnn",
    device: str | None = None,
    amp: bool | None = None,
    naive: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark the naive loop against the fast path; see the module docstring.

    Parameters
    ----------
    frames, size, cells : simulated recording (``frames`` of ``size x size`` binary white noise).
    history : frames per window.
    samples : training samples each loop processes (rounded up to whole batches).
    threads : torch intra-op threads (default: torch's choice).
    batch, chunk : samples per step, rounded down to whole chunks: the fast path uses
        ``batch // chunk`` chunks of ``chunk`` bins, the naive loop that many single windows.
    model : ``cnn`` or ``bn-cnn``.
    device : ``cpu``, ``cuda``... (default: chosen automatically).
    amp : bf16 autocast for training on CUDA (default: on for CUDA, off elsewhere).
    naive : also run the naive loop (off: fast path only, e.g. for memory on long recordings).

    Returns
    -------
    dict with ``config``, ``check``, ``naive``, ``fast``, ``speedup``, ``matmul_gflops``, ``flops_per_sample``.
    """
    import torch

    from .fitting.device import choose_device
    from .models import build_model
    from .models.fastconv import choose_method

    if model not in ("cnn", "bn-cnn"):
        raise ConfigError(f"the benchmark trains a CNN; got model '{model}'", fix="use --model cnn or bn-cnn")
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    if history < 1 or chunk < 1 or batch < chunk or samples < 1:
        raise ConfigError(f"need history >= 1, chunk >= 1, batch >= chunk and samples >= 1; got history={history}, chunk={chunk}, batch={batch}, samples={samples}", fix="e.g. --batch 256 with chunks of 64")
    if frames < chunk + history + 1:
        raise ConfigError(f"--frames {frames} is too short for chunks of {chunk} bins with history {history}", fix=f"use --frames >= {chunk + history + 1}")
    dev = choose_device(device)
    use_amp = (dev.type == "cuda") if amp is None else bool(amp)
    rss0 = rss_bytes()
    movie, counts = simulate(frames, size, cells, seed)
    data_mb = (rss_bytes() - rss0) / 2**20
    torch.manual_seed(seed)
    net_a = build_model(model, history, (size, size), cells).to(dev)
    net_b = build_model(model, history, (size, size), cells).to(dev)
    net_b.load_state_dict(net_a.state_dict())
    flops = model_flops(net_a)
    gemm = matmul_gflops(dev)

    naive_loader = _Naive(movie, counts, history, dev)
    fast_loader = _Fast(movie, counts, history, dev)
    rng = np.random.default_rng(seed + 1)
    k_check = max(1, min(batch // chunk, 2))
    starts = rng.integers(0, frames - chunk - history + 1, size=k_check)
    check = check_equal(net_a, net_b, naive_loader, fast_loader, starts, chunk, seed)
    setup_peak = peak_rss_bytes()

    result: dict[str, Any] = {
        "config": {
            "frames": frames, "size": size, "history": history, "cells": cells, "samples": samples,
            "batch": max(1, batch // chunk) * chunk, "chunk": chunk, "chunks_per_batch": max(1, batch // chunk), "model": model,
            "threads": torch.get_num_threads(), "device": str(dev), "amp_bf16": use_amp,
            "first_layer": choose_method(history, net_b.kernel_sizes[0], net_b.input_hw, net_b.filters[0], chunk) if hasattr(net_b, "kernel_sizes") else "n/a",
            "movie_mb_uint8": movie.nbytes / 2**20, "movie_mb_float32": movie.size * 4 / 2**20, "data_rss_mb": data_mb,
        },
        "check": check,
        "matmul_gflops": gemm,
        "flops_per_sample": flops,
    }
    runs = ["naive", "fast"] if naive else ["fast"]
    trainers = []
    for kind in runs:
        net = net_a if kind == "naive" else net_b
        loader = naive_loader if kind == "naive" else fast_loader
        trainers.append(_Trainer(kind, net, loader, batch, chunk, frames, history, seed + 2, dev, use_amp))
    peaks = {t.kind: t.peak_step() for t in trainers}
    train_interleaved(trainers, samples, progress)
    for t in trainers:
        r = t.result() | peaks[t.kind]
        r["gflops"] = flops["train"] * r["samples_per_s"] / 1e9
        r["fraction_of_matmul"] = r["gflops"] / gemm
        result[t.kind] = r
    if naive:
        result["speedup"] = result["fast"]["samples_per_s"] / result["naive"]["samples_per_s"]
    result["peak_rss_mb"] = max([setup_peak / 2**20] + [result[k]["peak_rss_mb"] for k in runs])
    result["load_average"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return result


def format_bench(res: dict[str, Any]) -> str:
    """The benchmark result as a short text table."""
    c, chk = res["config"], res["check"]
    verdict = "PASS" if chk["passed"] else "FAIL"
    kinks = chk.get("relu_units_aligned", 0)
    kink_note = f" ({kinks} ReLU unit(s) within float32 rounding of 0 aligned)" if kinks else ""
    lines = [
        f"retinakit bench: {c['model']}, {c['frames']} frames of {c['size']}x{c['size']}, history {c['history']}, {c['cells']} cells; "
        f"device {c['device']}, {c['threads']} threads{', bf16 autocast' if c['amp_bf16'] else ''}",
        f"batch {c['batch']} samples; fast path: {c['chunks_per_batch']} chunks x {c['chunk']} bins, first layer by {c['first_layer']}",
        f"movie {c['movie_mb_uint8']:.0f} MB as uint8 ({c['movie_mb_float32']:.0f} MB if float32)",
        "",
        f"equality on {chk['samples']} samples (float32, same weights, same noise): output rel err {chk['max_rel_err_output']:.1e}, "
        f"grad rel err {chk['max_rel_err_grad']:.1e} ({chk['worst_grad']}); tolerance {chk['tolerance']:.0e}: {verdict}{kink_note}",
        "",
        f"{'loop':<6} {'samples':>8} {'seconds':>8} {'samples/s':>10} {'GFLOP/s':>8} {'of matmul':>9} {'peak RSS MB':>11}",
    ]
    for kind in ("naive", "fast"):
        if kind in res:
            r = res[kind]
            extra = f"  (GPU peak {r['peak_gpu_mb']:.0f} MB)" if "peak_gpu_mb" in r else ""
            lines.append(
                f"{kind:<6} {r['samples']:>8d} {r['seconds']:>8.2f} {r['samples_per_s']:>10.1f} {r['gflops']:>8.1f} "
                f"{100 * r['fraction_of_matmul']:>8.0f}% {r['peak_rss_mb']:>11.0f}{extra}"
            )
    lines.append("")
    if "speedup" in res:
        lines.append(f"speedup (fast / naive samples/s): {res['speedup']:.1f}x")
    lines.append(
        f"float32 matmul in this run: {res['matmul_gflops']:.1f} GFLOP/s; model: {res['flops_per_sample']['train'] / 1e6:.0f} MFLOP "
        "per training sample (direct count; the fast path does less arithmetic, so its GFLOP/s is 'effective')"
    )
    if res.get("load_average") is not None:
        lines.append(f"1-minute load average at the end: {res['load_average']:.1f} (other processes slow both loops alike: steps alternate)")
    return "\n".join(lines)
