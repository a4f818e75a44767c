"""The study's findings checked on hand-made results (benchmark/findings.py)."""
import pytest

from detbench.benchmark import findings, report, tables


def _row(cid, meta_arch, latency_rel, latency_ms=None, num_proposals=None, output_stride=None,
         resolution=300, fpn=False, variant="", **extra):
    return {"cell_id": cid, "label": cid, "meta_arch": meta_arch, "variant": variant,
            "feature_extractor": "mobilenet_v2", "fpn": fpn, "resolution": resolution,
            "num_proposals": num_proposals, "output_stride": output_stride,
            "latency_ms": latency_ms if latency_ms is not None else 10.0 * latency_rel,
            "latency_rel": latency_rel, **extra}


def _proposal_rows(rfcn_at_100=1.5):
    return [_row("f10", "faster_rcnn", 2.0, num_proposals=10, output_stride=16),
            _row("f30", "faster_rcnn", 2.5, num_proposals=30, output_stride=16),
            _row("f100", "faster_rcnn", 4.0, num_proposals=100, output_stride=16),
            _row("r10", "rfcn", 1.4, num_proposals=10, output_stride=16),
            _row("r100", "rfcn", rfcn_at_100, num_proposals=100, output_stride=16)]


def _check(rows, name):
    return findings.CHECKS.get(name)(tables.to_frame(rows))


def test_proposals_reproduced_with_hand_worked_speedups():
    f = _check(_proposal_rows(), "proposals")
    # Faster R-CNN 4.0 / 2.0 = 2.00x >= 1.5; R-FCN 1.5 / 1.4 = 1.07x <= 1.25
    assert f.verdict == "reproduced"
    assert "100 -> 10 proposals 2.00x faster (latency_rel)" in f.measured
    assert "100 -> 10 proposals 1.07x faster (latency_rel)" in f.measured


def test_proposals_not_reproduced_when_rfcn_speeds_up_too():
    f = _check(_proposal_rows(rfcn_at_100=2.1), "proposals")      # 2.1 / 1.4 = 1.50x
    assert f.verdict == "not reproduced" and "1.50x" in f.measured


def test_proposals_not_measured_without_rfcn():
    f = _check([r for r in _proposal_rows() if r["meta_arch"] != "rfcn"], "proposals")
    assert f.verdict == "not measured" and "rfcn" in f.measured


def test_raw_latency_when_a_cell_lacks_the_drift_corrected_one():
    rows = _proposal_rows()
    rows[0] = {**rows[0], "latency_rel": None, "latency_ms": 30.0}   # 40 / 30 = 1.33x
    f = _check(rows, "proposals")
    assert "1.33x faster (latency_ms)" in f.measured and f.verdict == "not reproduced"


def test_stride_compares_only_otherwise_equal_cells():
    rows = [_row("s16", "faster_rcnn", 4.6, num_proposals=100, output_stride=16),
            _row("s8", "faster_rcnn", 5.9, num_proposals=100, output_stride=8),
            _row("s16b", "faster_rcnn", 2.0, num_proposals=10, output_stride=16)]
    f = _check(rows, "stride")
    assert f.verdict == "reproduced" and "1.28x" in f.measured          # 5.9 / 4.6
    rows[1]["latency_rel"] = 4.7                                        # 1.02x < 1.05
    assert _check(rows, "stride").verdict == "not reproduced"
    assert _check(rows[:1], "stride").verdict == "not measured"


def _resolution_rows(small_high=0.30):
    def acc(s, m, l):
        return {"mAP": (s + m + l) / 3, "mAP (small)": s, "mAP (medium)": m, "mAP (large)": l}
    return [_row("hi", "ssd", 2.0, resolution=256, fpn=True, variant="fpn_lite",
                 **acc(small_high, 0.50, 0.60)),
            _row("lo", "ssd", 1.0, resolution=128, fpn=True, variant="fpn_lite",
                 **acc(0.06, 0.40, 0.57)),
            # another recipe at one resolution only: not compared
            _row("other", "ssd", 1.0, resolution=128, **acc(0.0, 0.0, 0.0))]


def test_resolution_relative_losses_by_hand():
    f = _check(_resolution_rows(), "resolution")
    # small (0.30 - 0.06) / 0.30 = 80%, medium 20%, large 5%
    assert f.verdict == "reproduced"
    assert "small 0.300 -> 0.060 (-80%)" in f.measured
    assert "medium 0.500 -> 0.400 (-20%)" in f.measured
    assert "large 0.600 -> 0.570 (-5%)" in f.measured
    assert "256 -> 128 px:" in f.measured and "[fpn_lite]" in f.measured
    # one model tested at two resolutions says so
    rows = [dict(r, train_resolution=256) for r in _resolution_rows()]
    assert "256 -> 128 px (one model trained at 256 px, tested at both):" in \
        _check(rows, "resolution").measured


def test_resolution_inconclusive_when_small_objects_are_not_learnt():
    f = _check(_resolution_rows(small_high=0.01), "resolution")
    assert f.verdict == "inconclusive" and "too little trained" in f.measured


def test_resolution_not_reproduced_when_another_size_loses_more():
    rows = _resolution_rows(small_high=0.07)     # small (0.07 - 0.06) / 0.07 = 14% < 20%
    assert _check(rows, "resolution").verdict == "not reproduced"


def test_check_all_markdown_and_report(tmp_path):
    rows = _proposal_rows() + _resolution_rows()
    checked = findings.check_all(tables.to_frame(rows))
    assert [f.name for f in checked] == ["proposals", "resolution", "stride"]
    assert [f.verdict for f in checked] == ["reproduced", "reproduced", "not measured"]
    md = findings.markdown(checked)
    assert md.count("\n") == 5 and "**not measured**" in md
    df = tables.write_tables(rows, str(tmp_path), findings_md=md)
    assert "## The study's findings on these results" in open(tmp_path / "results.md").read()
    page = report.write_report(df, [], str(tmp_path), findings=checked)
    text = open(page).read()
    assert text.count('class="verdict reproduced"') == 2
    assert 'class="verdict not-measured"' in text


@pytest.mark.parametrize("name", ["proposals", "resolution", "stride"])
def test_every_check_handles_an_empty_table(name):
    df = tables.to_frame([_row("x", "ssd", 1.0)])
    assert findings.CHECKS.get(name)(df).verdict == "not measured"


def test_drift_corrected_latency_column():
    rows = [dict(_row("a", "ssd", 2.0), reference_ms=10.0), dict(_row("b", "ssd", 3.0), reference_ms=30.0),
            dict(_row("c", "ssd", 1.0), reference_ms=20.0)]
    df = tables.to_frame(rows)
    # latency_rel x the median reference (20 ms)
    assert list(df["latency_corrected_ms"]) == [40.0, 60.0, 20.0]
    assert tables.time_column(df)[0] == "latency_corrected_ms"
    rows[0]["latency_rel"] = None
    assert tables.time_column(tables.to_frame(rows))[0] == "latency_ms"
