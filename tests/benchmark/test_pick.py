"""detbench.pick on hand-made rows: the expected picks are worked out by hand below."""

import pytest

from detbench import pick as pick_cli
from detbench.benchmark.pick import Budget, NothingWithin, pick
from detbench.benchmark.results import ResultsStore
from detbench.errors import run_cli


def _row(cid, p50, p90, p99, mem, ap, runtime="tf_function", **extra):
    return {
        "cell_id": cid,
        "train_key": cid,
        "label": f"cell {cid}",
        "meta_arch": "ssd",
        "mAP@.50": ap + 0.3,
        "feature_extractor": "mobilenet_v2",
        "resolution": 300,
        "latency_ms": p50,
        "latency_p90_ms": p90,
        "latency_p99_ms": p99,
        "peak_rss_mb": mem,
        "mAP": ap,
        "runtime": runtime,
        "error": "",
        "grid": "/g/sweep.pbtxt",
        "axis_values": {"meta_arch": "ssd", "runtime": runtime},
        **extra,
    }


def rows():
    return [
        _row("A", 10, 12, 15, 500, 0.20, "tflite"),
        _row("B", 20, 25, 40, 600, 0.30),
        _row("C", 30, 33, 35, 400, 0.35),
        _row("D", 25, 26, 28, 900, 0.35, "tflite"),
        _row("E", 5, 5, 5, 100, 0.90, error="OOM: killed"),  # failed: never wins
        # its model has not learnt the set (mAP@.5 under tables.LEARNT_MIN_MAP50): never wins
        _row("F", 8, 9, 9, 100, 0.05, **{"mAP@.50": 0.08}),
        _row("G", 50, 55, 60, 1000, 0.40),
    ]


def _pick(**kw):
    return pick(rows(), Budget(**kw), results_dir="out")


def test_most_accurate_within_latency_and_its_frontier_neighbours():
    # p50 <= 26: A (10), B (20), D (25); E and F are faster and better but excluded.
    c = _pick(max_latency_ms=26)
    assert c.best["cell_id"] == "D"
    # frontier by p50 over A, B, C, D, G: A .20, B .30, D .35 (C .35 slower), G .40
    assert c.faster["cell_id"] == "B" and c.slower["cell_id"] == "G"
    assert "--grid /g/sweep.pbtxt --out out --filter 'meta_arch=ssd,runtime=tflite'" in c.command


def test_percentile_memory_and_runtime_budgets():
    assert _pick(max_latency_ms=30, percentile=99).best["cell_id"] == "D"  # A 15, D 28
    # p90 <= 30 keeps A, B, D; <= 700 MiB drops D (900)
    assert _pick(max_latency_ms=30, percentile=90, max_memory_mb=700).best["cell_id"] == "B"
    c = _pick(max_latency_ms=100, runtime="tflite")
    assert c.best["cell_id"] == "D" and c.slower is None and c.faster["cell_id"] == "A"


def test_ties_on_map_go_to_the_faster_then_the_smaller():
    c = _pick(max_latency_ms=35)  # C and D both .35: D is faster (25 < 30)
    assert c.best["cell_id"] == "D" and [r["cell_id"] for r in c.ties] == ["C"]
    same = rows()[:2] + [_row("X", 20, 25, 40, 700, 0.30), _row("Y", 20, 25, 40, 650, 0.30)]
    got = pick(same, Budget(max_latency_ms=21))
    assert got.best["cell_id"] == "B"  # 600 MiB < 650 < 700 at equal mAP and latency
    assert [r["cell_id"] for r in got.ties] == ["Y", "X"]


def test_a_model_that_has_not_learnt_never_wins():
    with pytest.raises(NothingWithin, match=r"closest: 10 \(cell A\)"):
        _pick(max_latency_ms=8.5)  # F (8 ms) alone is within: not learnt
    assert _pick(max_latency_ms=10).best["cell_id"] == "A"


@pytest.mark.parametrize(
    "budget, words",
    [
        ({"max_latency_ms": 3}, ["--max-latency-ms 3", "p50", "closest: 10 (cell A)"]),
        ({"max_latency_ms": 100, "max_memory_mb": 100}, ["--max-memory-mb 100", "closest: 400"]),
        ({"max_latency_ms": 100, "min_map": 0.9}, ["--min-map 0.9", "closest: 0.4 (cell G)"]),
        (
            {"max_latency_ms": 100, "runtime": "saved_model"},
            ["runtime 'saved_model'", "tf_function, tflite"],
        ),
    ],
)
def test_nothing_within_names_the_constraint(budget, words):
    with pytest.raises(NothingWithin) as e:
        _pick(**budget)
    for w in words:
        assert w in str(e.value)


def test_cli_exit_codes(tmp_path, capsys):
    store = ResultsStore(str(tmp_path))
    for r in rows():
        store.add(r)
    assert run_cli(pick_cli.main, ["--results", str(tmp_path), "--max-latency-ms", "26"]) == 0
    out = capsys.readouterr().out
    assert "best within the budget: cell D" in out and "reproduce: python -m" in out
    assert run_cli(pick_cli.main, ["--results", str(tmp_path), "--max-latency-ms", "1"]) == 1
    assert "--max-latency-ms 1" in capsys.readouterr().out
    assert (
        run_cli(pick_cli.main, ["--results", str(tmp_path / "none"), "--max-latency-ms", "1"]) == 2
    )
    assert "no results.jsonl rows" in capsys.readouterr().err
    for bad in (["--max-latency-ms", "-1"], ["--max-latency-ms", "5", "--percentile", "75"]):
        with pytest.raises(SystemExit) as e:
            pick_cli.main(["--results", str(tmp_path)] + bad)
        assert e.value.code == 2
