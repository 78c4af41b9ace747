"""The one definition of how stimulus frames line up with response bins.

Bins equal frames: bin ``t`` spans ``[time[t], time[t] + frame_dt)``, the interval during which
frame ``t`` is on screen. A causal model with a history of ``H`` frames predicts the response in
bin ``t`` from frames ``t - H, ..., t - 1`` (the ``H`` frames strictly before the bin), as in the
Baccus-lab code (window ``stim[i:i+H]`` predicts ``resp[i+H]``). Position ``j`` of a window (or of
a filter, or an STA) is the frame ``H - j`` bins before the response: position 0 is the oldest
frame, position ``H - 1`` the most recent (lag 1). So the first predictable bin is ``t = H``.
"""

from __future__ import annotations

import numpy as np

LAG_OF_NEWEST = 1  # frames between the newest frame in a window and the bin it predicts


def first_predicted_bin(history: int) -> int:
    """Index of the first bin that has a full history of ``history`` frames."""
    return int(history) - 1 + LAG_OF_NEWEST


def window_frames(t: int, history: int) -> np.ndarray:
    """Frame indices (oldest first) that the model sees when predicting bin ``t``."""
    end = int(t) - LAG_OF_NEWEST + 1
    return np.arange(end - int(history), end)


def lag_of_position(j: int | np.ndarray, history: int) -> int | np.ndarray:
    """How many frames before the predicted bin window position ``j`` lies (1 for the newest)."""
    return int(history) - 1 - j + LAG_OF_NEWEST


def mask_ranges(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a boolean mask over bins as ``[a, b)`` ranges."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))
