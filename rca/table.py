"""Root causes on any metric table: which column moved first, on its own?

    rank_table("metrics.csv", anomaly_start=1700000300)            # [(metric, score), ...]
    rank_table({"time": t, "cpu": cpu, "lat": lat}, 1700000300, ranker="baro")

A table is RCAEval's wide format: a ``time`` column of epoch seconds and one numeric
column per metric, as a pandas DataFrame, a dict of columns, a numpy structured array or
a CSV file. Rows before ``anomaly_start`` are normal (at least 10 of them); the rows from
it on are the anomaly. No lab and no feature names are needed. The rankers
(``TABLE_RANKERS``; scores are larger for likelier roots):

- ``residual`` (default): a metric whose change is explained by metrics that changed
  before it is an effect, not a cause. Each metric is predicted from the last 3 rows of
  itself and of a few other metrics (a greedy sparse lagged regression fitted on the
  normal rows), and scores how surprising its prediction errors are from
  ``anomaly_start`` on (the largest robust z of one row, or of the mean of the first
  rows for a level shift). The root's equation is where the fault enters, so its error
  jumps; its children follow the root with their lags and keep ordinary errors.
- ``baro``: BARO's root-cause stage (RCAEval): each metric scaled by the median and
  interquartile range of its normal rows (scikit-learn's ``RobustScaler``), scored by
  its largest |z| after ``anomaly_start``;
- ``nsigma``: the same with the mean and standard deviation;
- ``dummy``: a random order, seeded by the table (the floor).

Columns constant over the whole table score 0 and rank last. Missing cells (empty in a
CSV, NaN, infinite) take the previous value of their column. Lags are counted in rows.
Bad input raises ``RCAError`` with a one-line message.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Callable, Mapping

import numpy as np

from .errors import RCAError

__all__ = ["rank_table", "read_table", "TABLE_RANKERS", "MIN_NORMAL_ROWS"]

MIN_NORMAL_ROWS = 10
LAGS = 3            # rows of the past a metric is predicted from (residual)
MAX_PREDICTORS = 6  # lagged columns chosen per metric, at most one per 10 normal rows
SHIFT_ROWS = 30     # rows after the start in which a persistent shift of the error counts
MIN_FIT_ROWS = 20   # fewer normal rows than this: too few to learn from, residual is baro


def read_table(frame) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(time, metric names, values rows x metrics)`` of a table, sorted by time."""
    if isinstance(frame, (str, os.PathLike)):
        columns = _read_csv(os.fspath(frame))
    elif isinstance(frame, np.ndarray) and frame.dtype.names:
        columns = {n: frame[n] for n in frame.dtype.names}
    elif hasattr(frame, "columns") and hasattr(frame, "__getitem__"):  # pandas DataFrame
        columns = {str(c): frame[c].to_numpy() if hasattr(frame[c], "to_numpy")
                   else np.asarray(frame[c]) for c in frame.columns}
    elif isinstance(frame, Mapping):
        columns = {str(k): v for k, v in frame.items()}
    else:
        raise RCAError(f"a table is a DataFrame, a dict of columns, a numpy structured "
                       f"array or a CSV path, not {type(frame).__name__}")
    if "time" not in columns:
        raise RCAError(f"the table has no 'time' column (epoch seconds); its columns: "
                       f"{_names(list(columns))}")
    arrays = {name: _numeric(name, values) for name, values in columns.items()}
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        raise RCAError(f"the table's columns differ in length: {sorted(lengths)}")
    time = arrays.pop("time")
    if not len(time) or np.isnan(time).any():
        raise RCAError("the 'time' column is empty or has missing values")
    names = list(arrays)
    if not names:
        raise RCAError("the table has no metric columns besides 'time'")
    order = np.argsort(time, kind="stable")
    values = np.column_stack([_fill(arrays[n]) for n in names])[order]
    return time[order], names, values


def _names(names: list[str], most: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _numeric(name: str, values) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise RCAError(f"column {name!r} is not one value per row (shape {a.shape})")
    if a.dtype.kind in "biuf":
        a = a.astype(float)
        a[np.isinf(a)] = math.nan  # as missing: a robust scale cannot hold infinities
        return a
    try:  # objects/strings: numbers as text are fine, empty cells are missing
        return _numeric(name, np.array(
            [math.nan if v is None or (isinstance(v, str) and not v.strip()) else float(v)
             for v in a.tolist()], dtype=float))
    except (TypeError, ValueError):
        bad = next(v for v in a.tolist() if not _is_number(v))
        raise RCAError(f"column {name!r} is not numeric (e.g. {bad!r}); keep only "
                       f"'time' and numeric metric columns") from None


def _is_number(v) -> bool:
    if v is None or (isinstance(v, str) and not v.strip()):
        return True
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _fill(a: np.ndarray) -> np.ndarray:
    """Missing cells take the previous value (the first ones the next value)."""
    missing = np.isnan(a)
    if not missing.any():
        return a
    if missing.all():
        return np.zeros_like(a)
    idx = np.where(~missing, np.arange(len(a)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = a[idx]
    first = int(np.argmax(~missing))
    out[:first] = a[first]
    return out


def _read_csv(path: str) -> dict[str, list[str]]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise RCAError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RCAError(f"{path} is not a CSV text file: {exc}") from exc
    if not rows:
        raise RCAError(f"{path} is empty; a header line with 'time' and metrics comes first")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) < len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise RCAError(f"{path}: duplicate column names {_names(dup)}")
    body = [r for r in rows[1:] if r]
    for line, r in enumerate(body, 2):
        if len(r) != len(header):
            raise RCAError(f"{path} line {line}: {len(r)} fields, the header has {len(header)}")
    return {h: [r[i] for r in body] for i, h in enumerate(header)}


def _split(time: np.ndarray, anomaly_start: float) -> int:
    """How many rows come before ``anomaly_start`` (checked)."""
    try:
        t = float(anomaly_start)
    except (TypeError, ValueError):
        raise RCAError(f"anomaly start {anomaly_start!r} is not epoch seconds") from None
    if not time[0] < t <= time[-1]:
        raise RCAError(f"anomaly start {t:.15g} is outside the data ({time[0]:.15g} .. "
                       f"{time[-1]:.15g}); give a time with normal rows before it")
    before = int(np.searchsorted(time, t, side="left"))
    if before < MIN_NORMAL_ROWS:
        raise RCAError(f"only {before} rows before the anomaly start {t:.15g}; need at "
                       f"least {MIN_NORMAL_ROWS} normal rows to learn from")
    return before


def _robust_z(x: np.ndarray, before: int) -> np.ndarray:
    """Columns centred on their normal median and divided by their normal IQR (as
    ``RobustScaler``); a column flat before the anomaly is divided by its spread over the
    whole table instead, so a move away from a constant level still counts."""
    normal = x[:before]
    centre = np.median(normal, axis=0)
    q75, q25 = np.percentile(normal, [75, 25], axis=0)
    scale = q75 - q25
    flat = scale <= 0
    if flat.any():
        spread = x[:, flat].std(axis=0)
        scale[flat] = np.where(spread > 0, spread, 1.0)
    return (x - centre) / scale


def _max_abs_after(z: np.ndarray, before: int) -> np.ndarray:
    return np.abs(z[before:]).max(axis=0)


def baro(x: np.ndarray, before: int, names: list[str]) -> np.ndarray:
    """Largest |z| after the start, scaled by the normal median and IQR (BARO)."""
    return _max_abs_after(_robust_z(x, before), before)


def nsigma(x: np.ndarray, before: int, names: list[str]) -> np.ndarray:
    """Largest |z| after the start, scaled by the normal mean and std (n-sigma)."""
    normal = x[:before]
    sd = normal.std(axis=0)
    sd[sd <= 0] = 1.0
    return _max_abs_after((x - normal.mean(axis=0)) / sd, before)


def dummy(x: np.ndarray, before: int, names: list[str]) -> np.ndarray:
    """A random order, seeded by the table's metrics and split."""
    order = list(range(len(names)))
    random.Random(f"{','.join(names)}:{before}:{len(x)}").shuffle(order)
    scores = np.empty(len(names))
    scores[order] = (len(names) - np.arange(len(names))) / len(names)
    return scores


def residual(x: np.ndarray, before: int, names: list[str]) -> np.ndarray:
    """How surprising each metric's lagged-regression errors are from the start on.

    1. Every column is robustly scaled on the normal rows (``_robust_z``).
    2. The candidate predictors of a metric are every column's values 1..3 rows earlier
       (its own past included). Orthogonal matching pursuit picks the best few on the
       normal rows: at most ``MAX_PREDICTORS``, and one per 10 normal rows, so short
       normal periods are not overfit.
    3. The error (actual - predicted) of every row is robustly scaled on the normal
       rows; the metric scores the larger of its largest |z| from the anomaly start on
       (a spike, a wider spread) and the largest |mean z| of the first w <= 30 rows
       after the start times sqrt(w) (a level shift: in a metric that keeps much of its
       past, a shift adds only a little to each row's error, but in every row).

    A child moved by its parent is predicted from the parent's earlier (already moved)
    values, so its error stays ordinary; the root's error carries the fault itself.
    With fewer than ``MIN_FIT_ROWS`` normal rows there is too little to learn the
    lags from (on synthetic tables with 10-12 it did worse than BARO): it scores as baro;
    so does a table whose values overflow the scaling (cells near 1e308).
    """
    import warnings

    from sklearn.linear_model import orthogonal_mp_gram

    if before < MIN_FIT_ROWS:
        return baro(x, before, names)

    z = _robust_z(x, before)
    rows, n = z.shape
    lagged = np.zeros((rows, n * LAGS))
    for lag in range(1, LAGS + 1):
        lagged[lag:, (lag - 1) * n:lag * n] = z[:-lag]
    fit_rows = slice(LAGS, before)
    centre, spread = lagged[fit_rows].mean(axis=0), lagged[fit_rows].std(axis=0)
    spread[spread <= 0] = 1.0
    lagged = (lagged - centre) / spread
    targets = z[fit_rows]
    target_centre = targets.mean(axis=0)
    k = max(1, min(MAX_PREDICTORS, (before - LAGS) // 10, n * LAGS))
    # every metric's pursuit from one Gram matrix (as OrthogonalMatchingPursuit with an
    # intercept, for all metrics at once)
    fit = lagged[fit_rows]
    if not (np.isfinite(fit).all() and np.isfinite(targets).all()):
        return baro(x, before, names)  # values near float64's limit overflow the scaling
    with warnings.catch_warnings():  # "ended prematurely": fewer useful columns than k
        warnings.simplefilter("ignore", RuntimeWarning)
        coef = orthogonal_mp_gram(fit.T @ fit, fit.T @ (targets - target_centre),
                                  n_nonzero_coefs=k)
    coef = np.nan_to_num(np.asarray(coef).reshape(n * LAGS, n))
    errors = z[LAGS:] - (lagged[LAGS:] @ coef + target_centre)
    errors = _robust_z(errors, before - LAGS)[before - LAGS:]
    scores = np.array([_surprise(errors[:, j]) for j in range(n)])
    flat = np.ptp(targets, axis=0) == 0  # flat before the start: nothing to predict from
    scores[flat] = np.abs(z[before:, flat]).max(axis=0)
    return scores


def _surprise(after: np.ndarray) -> float:
    """The larger of the largest |z| of one row and the largest |mean z| of the first
    ``w <= SHIFT_ROWS`` rows times sqrt(w): how unlikely a spike, or a level shift that
    is small in each row but persistent from the start on, is for standard noise."""
    first = after[:SHIFT_ROWS]
    shift = np.abs(np.cumsum(first)) / np.sqrt(np.arange(1, len(first) + 1))
    return float(max(np.abs(after).max(), shift.max()))


TABLE_RANKERS: dict[str, Callable[[np.ndarray, int, list[str]], np.ndarray]] = {
    "residual": residual,
    "baro": baro,
    "nsigma": nsigma,
    "dummy": dummy,
}


def rank_table(frame, anomaly_start: float, ranker: str = "residual",
               ) -> list[tuple[str, float]]:
    """The table's metrics as ``(metric, score)``, likeliest root first.

    ``frame``: a pandas DataFrame, a dict of columns, a numpy structured array or a CSV
    path, with a ``time`` column in epoch seconds; ``anomaly_start``: epoch seconds of the
    first anomalous row; ``ranker``: a name in ``TABLE_RANKERS``. Columns constant over
    the whole table score 0 and come last.
    """
    if ranker not in TABLE_RANKERS:
        raise RCAError(f"unknown table ranker {ranker!r}; use one of "
                       f"{', '.join(TABLE_RANKERS)}")
    time, names, x = read_table(frame)
    before = _split(time, anomaly_start)
    constant = np.ptp(x, axis=0) == 0
    scores = np.zeros(len(names))
    if (~constant).any():
        live = np.flatnonzero(~constant)
        with np.errstate(all="ignore"):
            got = np.asarray(TABLE_RANKERS[ranker](x[:, live], before,
                                                   [names[j] for j in live]), dtype=float)
        scores[live] = np.nan_to_num(got, nan=0.0, posinf=np.finfo(float).max)
    order = sorted(range(len(names)), key=lambda j: (bool(constant[j]), -scores[j], names[j]))
    return [(names[j], float(scores[j])) for j in order]
