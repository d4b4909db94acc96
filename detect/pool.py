"""The vectors a guest's detector judged normal lately, kept as numpy blocks.

A detector refits on its baseline plus what it judged normal in the last ``keep_s``
seconds. Kept as one list per vector, every refit paid to convert thousands of Python
lists back into an array; here each batch's normal rows stay one block, and a refit
joins the blocks with one ``np.concatenate``.

    pool = NormalPool()
    pool.add(ts, X)                 # times (n,) and vectors (n, d), oldest first
    pool.forget_before(now - 600)
    ts, X = pool.arrays()
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np

__all__ = ["NormalPool"]


class NormalPool:
    """Timestamped vectors in arrival order, in blocks."""

    def __init__(self) -> None:
        self._blocks: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._rows = 0

    def add(self, ts: np.ndarray, X: np.ndarray) -> None:
        """Append rows ``X`` taken at ``ts`` (both in time order, after what is kept)."""
        if len(ts):
            self._blocks.append((np.asarray(ts, dtype=float), np.asarray(X, dtype=float)))
            self._rows += len(ts)

    def forget_before(self, t: float) -> None:
        """Drop the rows taken before ``t``."""
        blocks = self._blocks
        while blocks and blocks[0][0][-1] < t:
            self._rows -= len(blocks.popleft()[0])
        if blocks and blocks[0][0][0] < t:
            ts, X = blocks[0]
            cut = int(np.searchsorted(ts, t, side="left"))
            blocks[0] = (ts[cut:], X[cut:])
            self._rows -= cut

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The times (n,) and the vectors (n, d) kept, oldest first (n may be 0)."""
        if not self._blocks:
            return np.empty(0), np.empty((0, 0))
        ts = np.concatenate([b[0] for b in self._blocks])
        X = np.concatenate([b[1] for b in self._blocks])
        if len(self._blocks) > 1:  # one block from now on: the next join is cheap
            self._blocks = deque([(ts, X)])
        return ts, X

    def clear(self) -> None:
        self._blocks.clear()
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def __iter__(self) -> Iterator[tuple[float, list[float]]]:
        """(time, vector as a list) per row, oldest first."""
        for ts, X in self._blocks:
            yield from zip(ts.tolist(), X.tolist())
