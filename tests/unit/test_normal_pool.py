"""The detector's pool of vectors judged normal: blocks joined, old rows forgotten."""

from __future__ import annotations

import numpy as np

from vmroc.detect.pool import NormalPool


def rows(t0: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(t0, t0 + n, dtype=float)
    return ts, np.column_stack([ts, -ts])


def test_blocks_come_back_as_one_array_in_arrival_order():
    pool = NormalPool()
    pool.add(*rows(0, 3))
    pool.add(*rows(3, 2))
    ts, X = pool.arrays()
    assert ts.tolist() == [0, 1, 2, 3, 4] and X[:, 1].tolist() == [0, -1, -2, -3, -4]
    assert len(pool) == 5 and [t for t, _ in pool] == [0, 1, 2, 3, 4]


def test_forgetting_drops_whole_blocks_and_cuts_the_first_kept_one():
    pool = NormalPool()
    for t0 in (0, 10, 20):
        pool.add(*rows(t0, 5))
    pool.forget_before(12.0)
    ts, X = pool.arrays()
    assert ts.tolist() == [12, 13, 14, 20, 21, 22, 23, 24] and len(pool) == 8
    assert X[0].tolist() == [12, -12]
    pool.forget_before(100.0)
    assert len(pool) == 0 and pool.arrays()[0].size == 0


def test_an_empty_add_keeps_nothing_and_clear_empties():
    pool = NormalPool()
    pool.add(np.empty(0), np.empty((0, 2)))
    assert len(pool) == 0
    pool.add(*rows(0, 2))
    pool.clear()
    assert len(pool) == 0 and list(pool) == []
