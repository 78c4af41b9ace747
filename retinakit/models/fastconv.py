"""The fast first layer: one 3-D convolution over a contiguous stretch of movie instead of
one 2-D convolution per window.

The first layer of the CNN (and the linear filter of an LN model) is a ``Conv2d`` whose input
channels are the ``history`` frames of a window. Over a contiguous chunk of frames ``z`` that is
exactly a valid 3-D cross-correlation with the kernel ``w[f, j, a, b]``::

    y[f, l, p, q] = b[f] + sum_{j, a, b} w[f, j, a, b] * z[l + j, p + a, q + b]

where output row ``l`` is the window of frames ``l .. l + history - 1`` (it predicts the bin
right after them, see :mod:`retinakit.alignment`). Computed per window, every frame is
convolved ``history`` times over; computed over the chunk, each frame is transformed once.

Two exact ways to evaluate it are provided:

* ``"fft"``: real FFT of the chunk over time and space, a product with the (conjugate) spectra
  of the zero-padded filters, inverse FFT. Circular correlation of length ``n >= T`` equals the
  linear one on every valid output, so no output is polluted by wrap-around. The weights take
  part through ``torch.fft`` and autograd gives their exact gradients.
* ``"direct"``: ``conv3d`` over the chunk (for tiny kernels, e.g. full-field 1x1 frames, where the
  FFT has nothing to save).

Both equal ``Conv2d``-with-time-as-channels on every window up to float rounding; the tests check
outputs and gradients against :meth:`retinakit.models.cnn.CNN.forward`.

The module also holds a compact data path that does not depend on the model: the movie kept
in its own small dtype (uint8 for white noise), moved to the device once when it fits, and
z-scored chunk batches gathered from it (:class:`ChunkSource`, used by :mod:`retinakit.bench`;
usable by any training loop).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, ModelError

METHODS = ("auto", "fft", "direct")


def good_fft_size(n: int) -> int:
    """Smallest integer ``>= n`` whose prime factors are only 2, 3 and 5 (fast FFT lengths)."""
    n = max(1, int(n))
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def choose_method(history: int, kernel: tuple[int, int], frame_hw: tuple[int, int], filters: int, n_out: int) -> str:
    """Pick ``"fft"`` or ``"direct"`` for a chunk from an operation count.

    Direct: ``2 * filters * history * kh * kw`` multiply-adds per output pixel. FFT: about
    ``(filters + 1) * 2.5 * N * log2(N)`` per chunk of ``N`` samples, amortised over ``n_out``
    output rows (the constant favours the direct path a little, as its kernels are well tuned).
    """
    kh, kw = kernel
    H, W = frame_hw
    h1, w1 = H - kh + 1, W - kw + 1
    direct = 2.0 * filters * history * kh * kw * h1 * w1
    n = (n_out + history - 1) * H * W
    fft = (filters + 1) * 2.5 * n * math.log2(max(n, 2)) / max(n_out, 1)
    return "fft" if 4.0 * fft < direct else "direct"


def _weight_spectrum(weight: torch.Tensor, n_t: int, H: int, W: int) -> torch.Tensor:
    """rFFT of the filters ``(F, history, kh, kw)`` zero-padded to ``(n_t, H, W)``, ``(F, n_t, H, W//2+1)``.

    Done one axis at a time, padding each axis just before its transform, so the zeros of the
    small kernel are never transformed (same result as ``rfftn`` of the padded filters).
    """
    wf = torch.fft.rfft(weight, n=W, dim=3)
    wf = torch.fft.fft(wf, n=H, dim=2)
    return torch.fft.fft(wf, n=n_t, dim=1)


GROUP_ELEMENTS = 1 << 22  # complex spectrum entries per group of chunks (32 MiB in complex64)


def chunk_conv_fft(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, n_out: int) -> torch.Tensor:
    """Valid 3-D cross-correlation of chunks by FFT.

    Parameters
    ----------
    z : (K, T, H, W) float tensor, ``T >= n_out + history - 1``.
    weight : (F, history, kh, kw) filters (oldest frame first, as in the window ``Conv2d``).
    bias : (F,) or None.
    n_out : number of output rows per chunk (windows starting at frames ``0 .. n_out - 1``).

    Returns
    -------
    (K, n_out, F, H - kh + 1, W - kw + 1) tensor in ``weight``'s dtype.

    Chunks are transformed in groups of about :data:`GROUP_ELEMENTS` spectrum entries, so the
    transient spectra stay small (a few tens of MB) whatever the batch size.
    """
    K, _, H, W = z.shape
    F, h, kh, kw = weight.shape
    T = n_out + h - 1  # frames actually used
    n_t = good_fft_size(T)
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    wf = _weight_spectrum(weight.to(dtype), n_t, H, W).conj()  # (F, n_t, H, W//2+1)
    b = None if bias is None else bias.to(dtype).view(1, 1, F, 1, 1)
    group = max(1, GROUP_ELEMENTS // (F * n_t * H * (W // 2 + 1)))
    outs = []
    for g in range(0, K, group):
        x = z[g : g + group, :T].to(dtype)
        zf = torch.fft.rfftn(x, s=(n_t, H, W), dim=(1, 2, 3))  # (k, n_t, H, W//2+1)
        y = torch.fft.irfftn(zf.unsqueeze(1) * wf, s=(n_t, H, W), dim=(2, 3, 4))  # (k, F, n_t, H, W)
        y = y[:, :, :n_out, : H - kh + 1, : W - kw + 1].transpose(1, 2).contiguous()
        outs.append(y if b is None else y + b)
    y = outs[0] if len(outs) == 1 else torch.cat(outs)
    return y.to(weight.dtype)


def chunk_conv_direct(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, n_out: int) -> torch.Tensor:
    """Same as :func:`chunk_conv_fft`, computed with ``conv3d`` over the chunk (no windows copied)."""
    K, T, H, W = z.shape
    F, h, kh, kw = weight.shape
    x = z[:, : n_out + h - 1].to(weight.dtype).unsqueeze(1)  # (K, 1, T, H, W)
    y = torch.nn.functional.conv3d(x, weight.unsqueeze(1), bias)  # (K, F, n_out, h1, w1)
    return y.transpose(1, 2)


def chunk_conv(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, n_out: int, method: str = "auto") -> torch.Tensor:
    """Window-``Conv2d`` over all ``n_out`` windows of each chunk, ``(K, n_out, F, h1, w1)``.

    ``method`` is ``"fft"``, ``"direct"`` or ``"auto"`` (:func:`choose_method`). Under CUDA
    autocast the FFT runs in float32 (half-precision FFTs are restricted and lose accuracy).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown first-layer method '{method}'", fix=f"use one of {', '.join(METHODS)}")
    if z.ndim != 4:
        raise ModelError(f"chunks must be (K, T, H, W), got shape {tuple(z.shape)}")
    F, h, kh, kw = weight.shape
    if z.shape[1] < n_out + h - 1:
        raise ModelError(f"chunks of {z.shape[1]} frames are too short for {n_out} outputs with history {h}", fix="pass chunks of L + history frames")
    if method == "auto":
        method = choose_method(h, (kh, kw), (z.shape[2], z.shape[3]), F, n_out)
    if method == "fft":
        with torch.autocast(z.device.type, enabled=False):
            return chunk_conv_fft(z, weight.float() if weight.dtype in (torch.float16, torch.bfloat16) else weight, bias, n_out)
    return chunk_conv_direct(z, weight, bias, n_out)


# ------------------------------------------------------------------ data path (model-independent)
def fits_on_device(nbytes: int, device: torch.device, headroom: float = 0.5) -> bool:
    """Whether ``nbytes`` fit in ``headroom`` of the free memory of a CUDA ``device`` (CPU: always)."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= headroom * free


class ChunkSource:
    """A movie kept compact (its own dtype: uint8/int8/float16) that serves z-scored chunk batches.

    The movie is moved to ``device`` once when it fits (else it stays on the host and each
    batch's chunks are gathered there, then copied); each batch is gathered with one index
    operation into ``(K, L + history, H, W)`` float32 frames, z-scored on the fly. No per-window
    copy is ever made: a batch costs ``K * (L + history)`` frames, not ``K * L * history``.
    """

    def __init__(self, stimulus: Any, history: int, mean: float, std: float, device: torch.device | str = "cpu") -> None:
        arr = stimulus if isinstance(stimulus, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(stimulus))
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1, 1)
        if arr.ndim != 3:
            raise ModelError(f"the stimulus must be (T,) or (T, H, W), got shape {tuple(arr.shape)}")
        if not std > 0:
            raise ModelError(f"stimulus standard deviation must be > 0, got {std}", fix="a constant stimulus cannot be z-scored")
        self.device = torch.device(device)
        self.on_device = fits_on_device(arr.numel() * arr.element_size(), self.device)
        self.movie = arr.to(self.device) if self.on_device else arr
        self.history = int(history)
        self.mean, self.inv_std = float(mean), 1.0 / float(std)

    @property
    def n_frames(self) -> int:
        """Frames in the movie."""
        return int(self.movie.shape[0])

    def chunks(self, starts: torch.Tensor, length: int) -> torch.Tensor:
        """Z-scored frames ``starts[k] .. starts[k] + length + history - 1`` as ``(K, L + history, H, W)`` float32 on the device."""
        span = int(length) + self.history
        idx = starts.to(self.movie.device).view(-1, 1) + torch.arange(span, device=self.movie.device).view(1, -1)
        frames = self.movie[idx]  # (K, span, H, W), compact dtype
        frames = frames.to(self.device, non_blocking=True).float()
        return frames.sub_(self.mean).mul_(self.inv_std)
