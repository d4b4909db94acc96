"""Root causes on any metric table: rank_table, its rankers, `vmroc rca rank --csv`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from vmroc.rca import TABLE_RANKERS, RCAError, rank_table
from vmroc.rca.synthetic import synthetic_case, synthetic_cases


def write_csv(path, table) -> str:
    names = list(table)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for i in range(len(table[names[0]])):
            w.writerow([table[n][i] if isinstance(table[n][i], str) else repr(float(table[n][i]))
                        for n in names])
    return str(path)


def rank_of(ranked, metric) -> int:
    return [m for m, _ in ranked].index(metric) + 1


def chain(n=200, start=150, seed=0) -> dict[str, np.ndarray]:
    """root -> mid (lag 1, x3) -> leaf (lag 2, x2), loud children; root shifts at start."""
    rng = np.random.default_rng(seed)
    root = rng.normal(0, 1, n)
    root[start:] += 6
    mid, leaf = rng.normal(0, 0.3, n), rng.normal(0, 0.3, n)
    mid[1:] += 3 * root[:-1]
    leaf[2:] += 2 * mid[:-2]
    return {"time": 1000.0 + np.arange(n), "leaf": leaf, "mid": mid, "root": root,
            "noise": rng.normal(0, 1, n)}


def test_the_root_of_a_clear_case_ranks_first():
    table = chain()
    ranked = rank_table(table, 1150)
    assert ranked[0][0] == "root" and ranked[0][1] > 2 * ranked[1][1]
    case = synthetic_case(1, kind="shift")  # a generated case with a clear root
    assert rank_table(case.table, case.anomaly_start)[0][0] == case.root


def test_the_generator_is_seeded_and_puts_the_fault_in_the_root():
    a, b = synthetic_case(5), synthetic_case(5)
    assert a.root == b.root and all(np.array_equal(a.table[k], b.table[k]) for k in a.table)
    assert 8 <= len(a.table) - 1 <= 20 and 3 <= a.sigma <= 8
    assert any(a.root == p for ps in a.parents.values() for p, _, _ in ps)  # it has children
    assert {c.kind for c in synthetic_cases(6)} == {"shift", "spike", "variance"}


def test_on_40_generated_cases_the_default_beats_baro():
    cases = synthetic_cases(40, seed=0)
    ranks = {r: np.array([rank_of(rank_table(c.table, c.anomaly_start, ranker=r), c.root)
                          for c in cases]) for r in ("residual", "baro")}
    ac1 = {r: float(np.mean(x == 1)) for r, x in ranks.items()}
    avg5 = {r: float(np.mean([np.mean(x <= k) for k in range(1, 6)])) for r, x in ranks.items()}
    assert ac1["residual"] >= ac1["baro"] and avg5["residual"] >= avg5["baro"], (ac1, avg5)
    assert ac1["residual"] >= 0.85, ac1


def test_with_few_normal_rows_the_default_scores_as_baro():
    table = {k: v[130:] for k, v in chain().items()}  # 20 rows: enough to fit the lags
    assert rank_table(table, 1150) != rank_table(table, 1150, ranker="baro")
    table = {k: v[135:] for k, v in chain().items()}  # 15: too few, so no regression
    assert rank_table(table, 1150) == rank_table(table, 1150, ranker="baro")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow, on purpose
def test_values_that_overflow_the_scaling_score_as_baro():
    """Cells near float64's limit make the normal median infinite (found by the fuzz
    test): the default ranker scores as baro instead of failing inside scikit-learn."""
    big = [1e308 if i in (0, *range(3, 11), 14, 15, 16) else 0.0 for i in range(21)]
    table = {"time": [float(i) for i in range(21)], "cpu": big,
             "mem": [float(i % 3) for i in range(21)]}
    assert rank_table(table, 20.0) == rank_table(table, 20.0, ranker="baro")


def test_constant_columns_rank_last_with_score_zero():
    table = chain()
    table["flat"] = np.full(200, 7.0)
    table["a_flat"] = np.zeros(200)
    for ranker in TABLE_RANKERS:
        ranked = rank_table(table, 1150, ranker=ranker)
        assert [m for m, _ in ranked[-2:]] == ["a_flat", "flat"], ranker
        assert [s for _, s in ranked[-2:]] == [0.0, 0.0]
    only_flat = {"time": np.arange(20.0), "x": np.ones(20)}
    assert rank_table(only_flat, 15) == [("x", 0.0)]


def test_a_metric_flat_before_the_start_that_moves_after_it_still_counts():
    table = chain()
    table["stuck"] = np.where(np.arange(200) >= 150, 5.0, 0.0)
    table["flat"] = np.ones(200)
    for ranker in ("residual", "baro"):  # scaled by its spread over the whole table
        ranked = dict(rank_table(table, 1150, ranker=ranker))
        assert ranked["stuck"] > 2 and ranked["flat"] == 0, ranker


def test_inputs_dict_structured_array_and_csv_agree(tmp_path):
    table = chain()
    rec = np.rec.fromarrays(list(table.values()), names=list(table))
    expected = rank_table(table, 1150)
    assert rank_table(rec, 1150) == expected
    csv_ranked = rank_table(write_csv(tmp_path / "t.csv", table), 1150)
    assert [m for m, _ in csv_ranked] == [m for m, _ in expected]
    lists = {k: list(v) for k, v in table.items()}
    shuffled = {k: v[::-1] for k, v in lists.items()}  # rows in any order: sorted by time
    assert [m for m, _ in rank_table(shuffled, 1150)] == [m for m, _ in expected]


class FakeFrame:
    """What rank_table uses of a pandas DataFrame (pandas is not a dependency)."""

    class Column:
        def __init__(self, values):
            self.values = values

        def to_numpy(self):
            return np.asarray(self.values)

    def __init__(self, columns):
        self._columns = columns
        self.columns = list(columns)

    def __getitem__(self, name):
        return self.Column(self._columns[name])


def test_a_dataframe_and_missing_cells():
    table = chain()
    expected = [m for m, _ in rank_table(table, 1150)]
    assert [m for m, _ in rank_table(FakeFrame(table), 1150)] == expected
    holes = {k: v.copy() for k, v in table.items()}
    holes["noise"][[0, 40, 170]] = [np.nan, np.inf, np.nan]
    holes["root"] = ["" if i == 3 else str(v) for i, v in enumerate(holes["root"])]
    ranked = rank_table(holes, 1150)
    assert ranked[0][0] == "root" and all(np.isfinite(s) for _, s in ranked)


@pytest.mark.parametrize("table, start, message", [
    ({"t": [1.0] * 20, "x": [1.0] * 20}, 15, "no 'time' column"),
    ({"time": list(range(20)), "x": list(range(20)), "host": ["a"] * 20}, 15,
     "column 'host' is not numeric"),
    ({"time": list(range(20)), "x": list(range(20))}, 25, "outside the data"),
    ({"time": list(range(20)), "x": list(range(20))}, 0, "outside the data"),
    ({"time": list(range(20)), "x": list(range(20))}, 9, "only 9 rows before"),
    ({"time": list(range(20))}, 15, "no metric columns"),
])
def test_bad_tables_raise_one_line_errors(table, start, message):
    with pytest.raises(RCAError, match=message) as err:
        rank_table(table, start)
    assert "\n" not in str(err.value)


def test_unknown_ranker_names_the_known_ones():
    with pytest.raises(RCAError, match="residual, baro, nsigma, dummy"):
        rank_table(chain(), 1150, ranker="magic")


def vmroc(*args):
    return subprocess.run([sys.executable, "-m", "vmroc.cli", "rca", "rank", *args],
                          capture_output=True, text=True)


def test_cli_ranks_a_csv_as_text_and_json(tmp_path):
    path = write_csv(tmp_path / "t.csv", {**chain(), "flat": np.ones(200)})
    text = vmroc("--csv", path, "--anomaly-start", "1150", "--top", "2")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and lines[0].split()[:2] == ["1.", "root"]
    out = vmroc("--csv", path, "--anomaly-start", "1150", "--top", "0", "--json",
                "--ranker", "baro")
    assert out.returncode == 0, out.stderr
    ranked = json.loads(out.stdout)
    assert [set(r) for r in ranked] == [{"metric", "score"}] * 5
    assert all(isinstance(r["score"], float) for r in ranked)
    assert ranked[-1] == {"metric": "flat", "score": 0.0}


def test_cli_bad_tables_fail_with_one_line(tmp_path):
    good = chain()
    cases = [
        ({k: v for k, v in good.items() if k != "time"}, "1150", "no 'time' column"),
        ({**good, "host": ["web-1"] * 200}, "1150", "column 'host' is not numeric"),
        (good, "5000", "outside the data"),
        (good, "1005", "only 5 rows before"),
    ]
    for i, (table, start, message) in enumerate(cases):
        proc = vmroc("--csv", write_csv(tmp_path / f"bad{i}.csv", table), "--anomaly-start", start)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.startswith("RCAError: ") and message in proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
    unknown = vmroc("--csv", write_csv(tmp_path / "good.csv", good), "--anomaly-start", "1150",
                    "--ranker", "pagerank")
    assert unknown.returncode == 1 and "unknown table ranker 'pagerank'" in unknown.stderr
    missing = vmroc("--csv", str(tmp_path / "none.csv"), "--anomaly-start", "1")
    assert missing.returncode == 1 and missing.stderr.startswith("RCAError: cannot read")
