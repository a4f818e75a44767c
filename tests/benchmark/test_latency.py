"""The latency figure that ranks cells (benchmark/latency.py), on hand-made noisy timings,
and the noise of accuracy (benchmark/spread.py) in the frontier and the findings."""

import json
import math
import time as time_module

import numpy as np
import pytest

from detbench.benchmark import findings, latency, spread, tables, timing
from detbench.errors import DetbenchError


def test_bracketed_ratios_by_hand():
    # run 1 between references 2 and 4 (mean 3): 6 / 3 = 2; run 2 between 4 and 6: 10 / 5
    assert list(latency.bracketed_ratios([6.0, 10.0], [2.0, 4.0, 6.0])) == [2.0, 2.0]
    with pytest.raises(ValueError):
        latency.bracketed_ratios([1.0, 2.0], [1.0, 2.0])


def test_interval_of_identical_ratios_is_the_between_process_spread():
    lo, hi = latency.relative_interval([2.0] * 10)
    width = math.exp(latency.Z * latency.BETWEEN_PROCESS_SPREAD)
    assert lo == pytest.approx(2.0 / width) and hi == pytest.approx(2.0 * width)


def test_interval_widens_with_the_spread_of_the_runs():
    rng = np.random.default_rng(1)
    tight = latency.relative_interval(2.0 * np.exp(rng.normal(0, 0.01, 20)))
    loose = latency.relative_interval(2.0 * np.exp(rng.normal(0, 0.20, 20)))
    assert (loose[1] - loose[0]) > 1.2 * (tight[1] - tight[0])
    assert loose[0] < 2.0 < loose[1] and tight[0] < 2.0 < tight[1]


class _Host:
    """A fake clock: each call of a workload advances it by cost x the host's slowness
    at that moment x a seeded jitter."""

    def __init__(self, slowness, jitter=0.03, seed=0):
        self.t, self.calls, self.slowness = 0.0, 0, slowness
        self.rng = np.random.default_rng(seed)
        self.jitter = jitter

    def workload(self, cost):
        def run(*_):
            self.calls += 1
            self.t += cost * self.slowness(self.calls) * math.exp(self.rng.normal(0, self.jitter))

        return run

    def time(self, model_cost, runs=15, reference_cost=0.005):
        real = time_module.perf_counter
        time_module.perf_counter = lambda: self.t
        try:
            return timing.time_function(
                self.workload(model_cost),
                [1],
                num_warmup=1,
                num_runs=runs,
                reference=self.workload(reference_cost),
            )
        finally:
            time_module.perf_counter = real


def _cell(label, mAP, latency_ms, rel, lo, hi, reference_ms, **extra):
    """A result row of one SSD cell with the given timing and accuracy."""
    return {
        "cell_id": label,
        "label": label,
        "meta_arch": "ssd",
        "feature_extractor": "mobilenet_v2",
        "resolution": 160,
        "error": "",
        "latency_ms": latency_ms,
        "latency_rel": rel,
        "latency_rel_lo": lo,
        "latency_rel_hi": hi,
        "reference_ms": reference_ms,
        "mAP": mAP,
        "mAP@.50": None if mAP is None else 2 * mAP,
        "train_key": label,
        **extra,
    }


def _row(label, result, mAP=None, **extra):
    """The row of a cell timed by time_function (``result``)."""
    return _cell(
        label,
        mAP,
        result["median"] * 1e3,
        result["relative_median"],
        result["relative_lo"],
        result["relative_hi"],
        result["reference_median"] * 1e3,
        **extra,
    )


def test_a_drifting_host_does_not_reorder_two_cells():
    # Cell A truly costs 30 ms, cell B 24 ms (B is 1.25x faster). A is timed on a quiet
    # host; B minutes later while another process slows the host 1.8x, and its speed
    # also wanders within the cell (a slow drift plus 3% jitter per call).
    a = _Host(lambda n: 1.0, seed=1).time(0.030)
    b = _Host(lambda n: 1.8 * (1 + 0.15 * math.sin(n / 5)), seed=2).time(0.024)
    assert b["median"] > a["median"]  # the raw medians read B as the slower one
    df = tables.to_frame([_row("A", a), _row("B", b)])
    fig = df.set_index("label")[latency.FIGURE]
    assert fig["B"] < fig["A"]  # the figure keeps the true order
    verdict, ratio, lo, hi = latency.compare(
        latency.interval(df.iloc[1]), latency.interval(df.iloc[0])
    )
    assert verdict == "faster" and ratio == pytest.approx(0.8, rel=0.05) and hi < 1
    # and the table, the plots' axis and the frontier rank on the figure
    assert tables.time_column(df)[0] == latency.FIGURE


def test_a_difference_inside_the_noise_is_inconclusive():
    a = _Host(lambda n: 1.0, seed=3).time(0.030)
    b = _Host(lambda n: 1.5, seed=4).time(0.0303)  # 1% slower in truth
    df = tables.to_frame([_row("A", a), _row("B", b)])
    verdict, ratio, lo, hi = latency.compare(
        latency.interval(df.iloc[1]), latency.interval(df.iloc[0])
    )
    assert verdict == "inconclusive" and lo < 1 < hi


def _fixed(label, rel, mAP, spread_rel=0.01):
    """A row with a hand-set latency ratio and interval (+/- spread_rel)."""
    return _cell(label, mAP, 10 * rel, rel, rel * (1 - spread_rel), rel * (1 + spread_rel), 10.0)


def test_frontier_keeps_cells_inside_each_others_noise():
    # B is 2% slower than A (inside A's and B's +/-5% intervals) and 0.01 more accurate
    rows = [_fixed("A", 1.00, 0.30, spread_rel=0.05), _fixed("B", 1.02, 0.31, spread_rel=0.05)]
    front = tables.to_frame(rows).set_index("label")["frontier"]
    # without an accuracy spread, B is more accurate and not slower beyond the noise:
    # B dominates A
    assert not front["A"] and front["B"]
    # with a run-to-run spread of 0.02 mAP on both, 0.01 is noise: neither dominates
    store = spread.Spread(
        300,
        [
            {"source": s, "rows": [dict(r, mAP=r["mAP"] + d) for r in rows]}
            for s, d in (("r1", -0.02), ("r2", 0.0), ("r3", 0.02))
        ],
    )
    front = tables.to_frame(rows, store).set_index("label")["frontier"]
    assert front["A"] and front["B"]
    # a cell conclusively slower and not more accurate is off the frontier
    rows.append(_fixed("C", 2.0, 0.30))
    assert not tables.to_frame(rows, store).set_index("label")["frontier"]["C"]


def _rfcn_rows(rfcn_map, faster_map=0.20):
    common = dict(
        feature_extractor="mobilenet_v2",
        resolution=256,
        output_stride=16,
        num_proposals=100,
        fpn=False,
        variant="",
    )
    f = dict(_fixed("f", 4.0, faster_map), meta_arch="faster_rcnn", **common)
    r = dict(_fixed("r", 1.5, rfcn_map), meta_arch="rfcn", **common)
    return [f, r]


def test_an_accuracy_finding_inside_the_seed_spread_is_inconclusive():
    # measured: R-FCN 0.174 / 0.207 = 84% of Faster R-CNN (threshold 90%)
    rows = _rfcn_rows(0.174, 0.207)
    df = tables.to_frame(rows)
    assert findings.rfcn_vs_faster_rcnn(df).verdict == "not reproduced"  # no spread
    # three stored runs at 92%, 98%, 93%: the statistic's sd is 3.2%, its band
    # Z x sd = 5.3%: 84% + 5.3% < 90% is still below ...
    runs = [tables.to_frame(_rfcn_rows(0.20 * k, 0.20)) for k in (0.92, 0.98, 0.93)]
    sd = float(np.std([0.92, 0.98, 0.93], ddof=1))
    f = findings.rfcn_vs_faster_rcnn(df, runs)
    assert f.verdict == "not reproduced" and f"+/-{latency.Z * sd:.0%}" in f.measured
    # ... but runs spread as 0.80 / 0.92 / 0.98 (sd 9.2%, band 15%) make 84% inconclusive
    runs = [tables.to_frame(_rfcn_rows(0.20 * k, 0.20)) for k in (0.80, 0.92, 0.98)]
    assert findings.rfcn_vs_faster_rcnn(df, runs).verdict == "inconclusive"
    # and 98% with that band too; 98% with the tight band is reproduced
    df98 = tables.to_frame(_rfcn_rows(0.196, 0.20))
    assert findings.rfcn_vs_faster_rcnn(df98, runs).verdict == "inconclusive"
    tight = [tables.to_frame(_rfcn_rows(0.20 * k, 0.20)) for k in (0.97, 0.98, 0.99)]
    assert findings.rfcn_vs_faster_rcnn(df98, tight).verdict == "reproduced"


def test_decide_by_hand():
    assert findings.decide(0.95, 0.04, 0.90, 0.90) == "reproduced"  # 0.91 >= 0.90
    assert findings.decide(0.93, 0.04, 0.90, 0.90) == "inconclusive"
    assert findings.decide(0.85, 0.04, 0.90, 0.90) == "not reproduced"  # 0.89 < 0.90
    assert findings.decide(0.0, 0.0, 0.01, -0.01) == "inconclusive"
    assert findings.decide(-0.02, 0.005, 0.01, -0.01) == "not reproduced"


def test_spread_file_applies_at_its_train_steps_only(tmp_path):
    grid = tmp_path / "g.pbtxt"
    grid.write_text("")
    assert spread.load(str(grid), 300)[0] is None
    path = tmp_path / "g.spread.json"
    rows = [{"label": "A", "mAP": v} for v in (0.2, 0.3)]
    path.write_text(json.dumps({"train_steps": 300, "runs": [{"source": "x", "rows": rows}]}))
    found, note = spread.load(str(grid), 300)
    assert found is not None and "1 runs" in note
    assert found.values("A", "mAP") == [0.2, 0.3]
    assert found.sd("A", "mAP") == pytest.approx(np.std([0.2, 0.3], ddof=1))
    assert found.sd("B", "mAP") is None
    missing, note = spread.load(str(grid), 900)
    assert missing is None and "900" in note and "300" in note
    path.write_text("{not json")
    with pytest.raises(DetbenchError, match="g.spread.json"):
        spread.load(str(grid), 300)


def _resolution_rows(small_low):
    """One SSD tested at 160 and 80 px: small 0.30 -> small_low, medium 0.50 -> 0.40
    (-20%), large 0.60 -> 0.57 (-5%)."""

    def row(label, res, s, m, l):
        r = _fixed(label, 1.0, (s + m + l) / 3)
        r.update(
            {
                "resolution": res,
                "train_resolution": 160,
                "train_key": "ssd",
                "mAP (small)": s,
                "mAP (medium)": m,
                "mAP (large)": l,
            }
        )
        return r

    return [row("hi", 160, 0.30, 0.50, 0.60), row("lo", 80, small_low, 0.40, 0.57)]


def test_resolution_band_from_the_stored_runs():
    # small loses (0.30 - 0.18) / 0.30 = 40%, 20 points more than medium: reproduced
    df = tables.to_frame(_resolution_rows(0.18))
    assert findings.resolution(df).verdict == "reproduced"
    # stored runs where small lost 20% / 40% / 60% (margins 0, 20, 40 points: sd 20,
    # band 33 points): 20 - 33 < 10 points: inconclusive
    runs = [tables.to_frame(_resolution_rows(0.30 * (1 - k))) for k in (0.2, 0.4, 0.6)]
    f = findings.resolution(df, runs)
    assert (
        f.verdict == "inconclusive" and "noise band +/-33 points over 3 stored runs" in f.measured
    )
