"""Synthetic metric tables with a known root cause: random lagged linear structural models.

    case = synthetic_case(seed=7)        # SyntheticCase(table, anomaly_start, root, kind)
    rank_table(case.table, case.anomaly_start)[0][0] == case.root   # hopefully

A case is a wide table as RCAEval's (``time`` in epoch seconds, one row per second, one
column per metric ``m00``..), drawn from a random lagged linear structural equation
model:

- 8-20 metrics in a random causal order; each metric has 0-3 parents among the metrics
  before it, each edge with a lag of 1-3 rows and a weight of +-0.5..1.5;
- each metric keeps some of its past (autoregression 0..0.9) and has its own Gaussian
  noise; then it is shown at its own scale and offset (so raw magnitudes mean nothing);
- at ``anomaly_start`` one root (a metric with at least one child, so the fault
  propagates) gets a level **shift**, a **spike** (1-3 rows) or a **variance** change of
  3-8 of its own normal standard deviations; the fault enters the root's equation, so
  its children follow after their lags, amplified or damped by their own dynamics.

The cases are seeded: the same seed, the same table. Nothing here looks at a ranker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SyntheticCase", "synthetic_case", "synthetic_cases", "KINDS"]

KINDS = ("shift", "spike", "variance")


@dataclass(frozen=True)
class SyntheticCase:
    table: dict[str, np.ndarray]   # "time" then the metrics, equal lengths
    anomaly_start: float           # epoch seconds of the first faulty row
    root: str                      # the metric the fault was put into
    kind: str                      # shift | spike | variance
    sigma: float                   # size of the fault, in the root's normal std
    parents: dict[str, list[tuple[str, int, float]]]  # metric -> (parent, lag, weight)


def synthetic_case(seed: int, *, n_metrics: tuple[int, int] = (8, 20),
                   before: tuple[int, int] = (120, 300), after: tuple[int, int] = (60, 120),
                   sigma: tuple[float, float] = (3.0, 8.0), lags: tuple[int, int] = (1, 3),
                   ar: tuple[float, float] = (0.0, 0.9), tails: float | None = None,
                   kind: str | None = None,
                   t0: float = 1_700_000_000.0) -> SyntheticCase:
    """One seeded case (see the module docstring); ``kind`` forces the fault kind;
    ``tails``: Student-t noise with that many degrees of freedom instead of Gaussian."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(n_metrics[0], n_metrics[1] + 1))
    n_before = int(rng.integers(before[0], before[1] + 1))
    n_after = int(rng.integers(after[0], after[1] + 1))
    burn = 100  # rows simulated and dropped, so the table starts in the stationary state
    rows = burn + n_before + n_after
    order = rng.permutation(n)  # causal order: node order[i] may only cause order[j > i]
    parents: dict[int, list[tuple[int, int, float]]] = {int(j): [] for j in range(n)}
    for pos in range(1, n):
        j = int(order[pos])
        k = int(rng.integers(0, min(3, pos) + 1))
        for i in rng.choice(order[:pos], size=k, replace=False):
            w = float(rng.uniform(0.5, 1.5) * rng.choice([-1, 1]))
            parents[j].append((int(i), int(rng.integers(lags[0], lags[1] + 1)), w))
    ar = rng.uniform(ar[0], ar[1], size=n)
    noise = rng.uniform(0.5, 2.0, size=n)
    with_children = sorted({i for ps in parents.values() for i, _, _ in ps})
    root = int(rng.choice(with_children))
    kind = kind or str(rng.choice(KINDS))
    size = float(rng.uniform(*sigma))
    start = burn + n_before

    def simulate(fault) -> np.ndarray:
        x = np.zeros((rows, n))
        e = (rng_noise.standard_normal((rows, n)) if tails is None
             else rng_noise.standard_t(tails, (rows, n))) * noise
        for t in range(max(3, lags[1]), rows):
            for j in order:
                v = ar[j] * x[t - 1, j] + e[t, j]
                for i, lag, w in parents[j]:
                    v += w * x[t - lag, i]
                if fault is not None and j == root and t >= start:
                    v = fault(t, v, e[t, j])
                x[t, j] = v
        return x

    # first without the fault, to measure the root's normal level and spread; then the
    # same noise again with it
    rng_noise = np.random.default_rng(seed + 1_000_003)
    clean = simulate(None)
    sd = float(clean[burn:start, root].std())
    spike_rows = int(rng.integers(1, 4))
    sign = float(rng.choice([-1, 1]))  # shifts and spikes go up or down
    if kind == "shift":
        # the level moves by size*sd: the equation's input by (1 - ar) of it
        def fault(t, v, e_t):
            return v + sign * size * sd * (1 - ar[root])
    elif kind == "spike":
        def fault(t, v, e_t):
            return v + sign * size * sd if t < start + spike_rows else v
    elif kind == "variance":
        def fault(t, v, e_t):
            return v + (size - 1) * e_t  # the root's own noise, size times as wide
    else:
        raise ValueError(f"unknown fault kind {kind!r}; use one of {', '.join(KINDS)}")
    rng_noise = np.random.default_rng(seed + 1_000_003)
    x = simulate(fault)[burn:]
    scale = 10.0 ** rng.uniform(-2, 3, size=n)
    offset = rng.uniform(0, 100, size=n) * scale
    x = x * scale + offset
    names = [f"m{j:02d}" for j in range(n)]
    table = {"time": t0 + np.arange(len(x), dtype=float)}
    table.update({names[j]: x[:, j] for j in range(n)})
    return SyntheticCase(
        table=table, anomaly_start=t0 + n_before, root=names[root], kind=kind,
        sigma=round(size, 2),
        parents={names[j]: [(names[i], lag, w) for i, lag, w in ps]
                 for j, ps in parents.items()})


def synthetic_cases(n: int = 40, seed: int = 0, **kw) -> list[SyntheticCase]:
    """``n`` cases with seeds ``seed``, ``seed + 1``...; the kinds take turns."""
    kind = kw.pop("kind", None)
    return [synthetic_case(seed + i, kind=kind or KINDS[(seed + i) % len(KINDS)], **kw)
            for i in range(n)]
