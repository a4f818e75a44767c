"""The study's findings checked on hand-made results (benchmark/findings.py)."""

import pytest

from detbench.benchmark import findings, report, tables


def _row(
    cid,
    meta_arch,
    latency_rel,
    latency_ms=None,
    num_proposals=None,
    output_stride=None,
    resolution=300,
    fpn=False,
    variant="",
    **extra,
):
    return {
        "cell_id": cid,
        "label": cid,
        "meta_arch": meta_arch,
        "variant": variant,
        "feature_extractor": "mobilenet_v2",
        "fpn": fpn,
        "resolution": resolution,
        "num_proposals": num_proposals,
        "output_stride": output_stride,
        "latency_ms": latency_ms if latency_ms is not None else 10.0 * latency_rel,
        "latency_rel": latency_rel,
        # a tight 90% interval (+/-1%), so the hand-worked ratios decide; the
        # intervals' own effect is tested in test_latency.py
        "latency_rel_lo": None if latency_rel is None else 0.99 * latency_rel,
        "latency_rel_hi": None if latency_rel is None else 1.01 * latency_rel,
        "reference_ms": 10.0,
        **extra,
    }


def _proposal_rows(rfcn_at_100=1.5):
    return [
        _row("f10", "faster_rcnn", 2.0, num_proposals=10, output_stride=16),
        _row("f30", "faster_rcnn", 2.5, num_proposals=30, output_stride=16),
        _row("f100", "faster_rcnn", 4.0, num_proposals=100, output_stride=16),
        _row("r10", "rfcn", 1.4, num_proposals=10, output_stride=16),
        _row("r100", "rfcn", rfcn_at_100, num_proposals=100, output_stride=16),
    ]


def _check(rows, name):
    return findings.CHECKS.get(name)(tables.to_frame(rows))


def test_proposals_reproduced_with_hand_worked_speedups():
    f = _check(_proposal_rows(), "proposals")
    # Faster R-CNN 4.0 / 2.0 = 2.00x >= 1.5; R-FCN 1.5 / 1.4 = 1.07x <= 1.25
    assert f.verdict == "reproduced"
    assert "100 -> 10 proposals 2.00x faster (1.97-2.03, drift-corrected)" in f.measured
    assert "100 -> 10 proposals 1.07x faster (1.06-1.09, drift-corrected)" in f.measured


def test_proposals_not_reproduced_when_rfcn_speeds_up_too():
    f = _check(_proposal_rows(rfcn_at_100=2.1), "proposals")  # 2.1 / 1.4 = 1.50x
    assert f.verdict == "not reproduced" and "1.50x" in f.measured


def test_proposals_not_measured_without_rfcn():
    f = _check([r for r in _proposal_rows() if r["meta_arch"] != "rfcn"], "proposals")
    assert f.verdict == "not measured" and "rfcn" in f.measured


def test_raw_latency_when_a_cell_lacks_the_drift_corrected_one():
    rows = _proposal_rows()
    rows[0] = {**rows[0], "latency_rel": None, "latency_ms": 30.0}  # 40 / 30 = 1.33x
    f = _check(rows, "proposals")
    assert "1.33x faster (raw ms)" in f.measured and f.verdict == "not reproduced"


def test_stride_compares_only_otherwise_equal_cells():
    rows = [
        _row("s16", "faster_rcnn", 4.6, num_proposals=100, output_stride=16),
        _row("s8", "faster_rcnn", 5.9, num_proposals=100, output_stride=8),
        _row("s16b", "faster_rcnn", 2.0, num_proposals=10, output_stride=16),
    ]
    f = _check(rows, "stride")
    assert f.verdict == "reproduced" and "1.28x" in f.measured  # 5.9 / 4.6
    rows[1] = _row("s8", "faster_rcnn", 4.7, num_proposals=100, output_stride=8)  # 1.02x
    assert _check(rows, "stride").verdict == "not reproduced"
    assert _check(rows[:1], "stride").verdict == "not measured"


def _resolution_rows(small_high=0.30):
    def acc(s, m, l):
        return {"mAP": (s + m + l) / 3, "mAP (small)": s, "mAP (medium)": m, "mAP (large)": l}

    return [
        _row(
            "hi",
            "ssd",
            2.0,
            resolution=256,
            fpn=True,
            variant="fpn_lite",
            **acc(small_high, 0.50, 0.60),
        ),
        _row(
            "lo", "ssd", 1.0, resolution=128, fpn=True, variant="fpn_lite", **acc(0.06, 0.40, 0.57)
        ),
        # another recipe at one resolution only: not compared
        _row("other", "ssd", 1.0, resolution=128, **acc(0.0, 0.0, 0.0)),
    ]


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
    assert (
        "256 -> 128 px (one model trained at 256 px, tested at both):"
        in _check(rows, "resolution").measured
    )


def test_resolution_inconclusive_when_small_objects_are_not_learnt():
    f = _check(_resolution_rows(small_high=0.01), "resolution")
    assert f.verdict == "inconclusive" and "too little trained" in f.measured


def test_resolution_not_reproduced_when_another_size_loses_more():
    rows = _resolution_rows(small_high=0.0625)  # small (0.0625 - 0.06) / 0.0625 = 4% < 20% - 10
    assert _check(rows, "resolution").verdict == "not reproduced"


def test_resolution_inconclusive_inside_the_margin():
    rows = _resolution_rows(small_high=0.07)  # small 14%, medium 20%: within 10 points
    f = _check(rows, "resolution")
    assert f.verdict == "inconclusive" and "(-14%)" in f.measured


def test_check_all_markdown_and_report(tmp_path):
    rows = _proposal_rows() + _resolution_rows()
    checked = findings.check_all(tables.to_frame(rows))
    assert len(checked) == 8
    verdicts = {f.name: f.verdict for f in checked}
    assert verdicts["proposals"] == verdicts["resolution"] == "reproduced"
    assert verdicts["stride"] == "not measured"
    assert all(f.threshold for f in checked)
    md = findings.markdown(checked)
    assert md.count("\n") == 10 and "**not measured**" in md and "| threshold |" in md
    df = tables.write_tables(rows, str(tmp_path), findings_md=md)
    assert "## The study's findings on these results" in open(tmp_path / "results.md").read()
    page = report.write_report(df, [], str(tmp_path), findings=checked)
    text = open(page).read()
    assert text.count('class="verdict reproduced"') == 2
    assert 'class="verdict not-measured"' in text


@pytest.mark.parametrize("name", findings.CHECKS.names())
def test_every_check_handles_an_empty_table(name):
    df = tables.to_frame([_row("x", "ssd", 1.0)])
    assert findings.CHECKS.get(name)(df).verdict == "not measured"


def test_drift_corrected_latency_column():
    rows = [
        dict(_row("a", "ssd", 2.0), reference_ms=10.0),
        dict(_row("b", "ssd", 3.0), reference_ms=30.0),
        dict(_row("c", "ssd", 1.0), reference_ms=20.0),
    ]
    df = tables.to_frame(rows)
    # latency_rel x the median reference (20 ms), its interval likewise
    assert list(df["latency_corrected_ms"]) == [40.0, 60.0, 20.0]
    assert list(df["latency_corrected_lo_ms"]) == pytest.approx([39.6, 59.4, 19.8])
    assert list(df["latency_corrected_hi_ms"]) == pytest.approx([40.4, 60.6, 20.2])
    assert tables.time_column(df)[0] == "latency_corrected_ms"
    rows[0]["latency_rel"] = None
    assert tables.time_column(tables.to_frame(rows))[0] == "latency_ms"


# -- the accuracy and memory findings, on hand-made rows --------------------------
def _acc_row(
    cid,
    meta_arch,
    mAP,
    small=None,
    medium=None,
    large=None,
    latency=10.0,
    train_key=None,
    num_proposals=None,
    output_stride=None,
    resolution=256,
    train_resolution=None,
    train_output_stride=None,
    peak_rss_mb=None,
    map50=None,
):
    r = _row(
        cid,
        meta_arch,
        latency / 10.0,
        latency_ms=latency,
        num_proposals=num_proposals,
        output_stride=output_stride,
        resolution=resolution,
    )
    r.update(
        {
            "mAP": mAP,
            "mAP@.50": map50 if map50 is not None else 2 * mAP,
            "mAP (small)": small,
            "mAP (medium)": medium,
            "mAP (large)": large,
            "train_key": train_key or cid,
            "train_resolution": train_resolution or resolution,
            "train_output_stride": train_output_stride or output_stride,
            "peak_rss_mb": peak_rss_mb,
        }
    )
    return r


def _frcnn(n, mAP, key="f", learnt=True):
    return _acc_row(
        f"f{n}",
        "faster_rcnn",
        mAP,
        num_proposals=n,
        output_stride=16,
        train_key=key,
        map50=None if learnt else 0.05,
        latency=10 + n / 10,
    )


def test_proposals_accuracy_compares_the_fewest_within_a_sixth():
    # 10 < 100/6 is not compared; 30 keeps 0.28 / 0.30 = 93% >= 90%
    rows = [_frcnn(10, 0.10), _frcnn(30, 0.28), _frcnn(100, 0.30)]
    f = _check(rows, "proposals_accuracy")
    assert (
        f.verdict == "reproduced"
        and "0.300 at 100 -> 0.280 at 30 proposals (93% kept)" in f.measured
    )
    rows[1]["mAP"] = 0.25  # 83%
    assert _check(rows, "proposals_accuracy").verdict == "not reproduced"
    unlearnt = [_frcnn(30, 0.02, learnt=False), _frcnn(100, 0.03, learnt=False)]
    assert _check(unlearnt, "proposals_accuracy").verdict == "inconclusive"
    assert _check(rows[:1], "proposals_accuracy").verdict == "not measured"


def _stride_rows(a8, a16=0.300, a8_dilated=0.100):
    """A model trained at each stride, and the stride-16 one dilated to 8 at test
    time, which the accuracy finding must not count (the study trained a model per
    stride)."""
    return [
        _acc_row(
            "s16",
            "faster_rcnn",
            a16,
            num_proposals=100,
            output_stride=16,
            train_key="m16",
            train_output_stride=16,
            latency=10,
        ),
        _acc_row(
            "s8",
            "faster_rcnn",
            a8,
            num_proposals=100,
            output_stride=8,
            train_key="m8",
            train_output_stride=8,
            latency=16,
        ),
        _acc_row(
            "s16at8",
            "faster_rcnn",
            a8_dilated,
            num_proposals=100,
            output_stride=8,
            train_key="m16",
            train_output_stride=16,
            latency=16,
        ),
    ]


@pytest.mark.parametrize(
    "a8, verdict",
    [
        (0.306, "reproduced"),  # +2.0% >= +1%
        (0.302, "inconclusive"),  # +0.7%
        (0.290, "not reproduced"),
    ],
)  # -3.3%
def test_stride_accuracy_margins(a8, verdict):
    f = _check(_stride_rows(a8), "stride_accuracy")
    assert f.verdict == verdict
    assert f"trained at each stride: mAP 0.300 at 16 -> {a8:.3f} at 8" in f.measured


def test_stride_accuracy_inconclusive_when_not_learnt():
    rows = [dict(r, **{"mAP@.50": 0.05}) for r in _stride_rows(0.306)]
    assert _check(rows, "stride_accuracy").verdict == "inconclusive"
    assert _check(rows[:1], "stride_accuracy").verdict == "not measured"


def test_stride_accuracy_does_not_count_a_dilated_model():
    rows = _stride_rows(0.306)
    f = _check([rows[0], rows[2]], "stride_accuracy")  # stride 8 only by dilation
    assert f.verdict == "not measured" and "dilated at test time" in f.measured
    # the dilated cell's 0.100 beside the trained one's 0.306 changes nothing
    assert "-> 0.306 at 8 (+2.0%)" in _check(rows, "stride_accuracy").measured


def _sizes_rows(ssd_small, fpn_ssd_small=0.40):
    fpn_ssd = _acc_row(
        "ssd_fpn", "ssd", 0.45, small=fpn_ssd_small, medium=0.34, large=0.50, resolution=160
    )
    fpn_ssd.update(fpn=True, variant="fpn")
    return [
        _acc_row("ssd", "ssd", 0.30, small=ssd_small, medium=0.34, large=0.50, resolution=160),
        # today's FPN SSD, the better one: the finding compares the study's (no FPN)
        fpn_ssd,
        _acc_row(
            "frcnn",
            "faster_rcnn",
            0.35,
            small=0.20,
            medium=0.40,
            large=0.50,
            num_proposals=100,
            output_stride=16,
        ),
        # a test variant (fewer proposals) is not the model at its training configuration
        _acc_row(
            "frcnn10",
            "faster_rcnn",
            0.36,
            small=0.01,
            medium=0.01,
            large=0.01,
            num_proposals=10,
            output_stride=16,
            train_key="frcnn",
        ),
    ]


@pytest.mark.parametrize(
    "ssd_small, verdict",
    [
        (0.10, "reproduced"),  # ratios small 0.50, medium 0.85, large 1.00
        (0.165, "inconclusive"),  # small 0.825 vs medium 0.85: inside 0.05
        (0.20, "not reproduced"),
    ],
)  # small 1.00 >= 0.85 + 0.05
def test_ssd_small_objects_ratios_by_hand(ssd_small, verdict):
    f = _check(_sizes_rows(ssd_small), "ssd_small_objects")
    assert f.verdict == verdict
    assert (
        f"small {ssd_small:.3f}/0.200" in f.measured and "medium 0.340/0.400 = 0.85" in f.measured
    )


def test_ssd_small_objects_needs_both_kinds():
    assert _check(_sizes_rows(0.1)[:1], "ssd_small_objects").verdict == "not measured"


def test_ssd_small_objects_with_only_an_fpn_ssd_is_inconclusive():
    f = _check(_sizes_rows(0.1)[1:], "ssd_small_objects")  # the FPN SSD and the two-stage
    assert f.verdict == "inconclusive" and "only SSDs with an FPN" in f.measured


def _rfcn_rows(rfcn_map, rfcn_latency):
    return [
        _acc_row("f", "faster_rcnn", 0.30, num_proposals=100, output_stride=16, latency=40),
        _acc_row("r", "rfcn", rfcn_map, num_proposals=100, output_stride=16, latency=rfcn_latency),
        # below 100 proposals: not compared
        _acc_row("r10", "rfcn", 0.01, num_proposals=10, output_stride=16, latency=1, train_key="r"),
    ]


def test_rfcn_close_and_faster():
    f = _check(_rfcn_rows(0.28, 20), "rfcn_vs_faster_rcnn")  # 93%, 40 / 20 = 2.00x
    assert f.verdict == "reproduced" and "(93%), R-FCN 2.00x faster (" in f.measured
    assert _check(_rfcn_rows(0.25, 20), "rfcn_vs_faster_rcnn").verdict == "not reproduced"
    assert _check(_rfcn_rows(0.29, 50), "rfcn_vs_faster_rcnn").verdict == "not reproduced"
    assert _check(_rfcn_rows(0.29, 50)[:1], "rfcn_vs_faster_rcnn").verdict == "not measured"


def test_spearman_by_hand():
    # ranks x 1 2 3 4, y 1 3 2 4: d = 0 1 1 0, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert findings.spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)


@pytest.mark.parametrize(
    "memories, verdict",
    [
        ([100, 200, 300, 400, 500], "reproduced"),  # rho 1.0
        ([500, 400, 300, 200, 100], "not reproduced"),  # rho -1.0
        ([300, 100, 500, 200, 400], "inconclusive"),
    ],
)  # rho 0.3
def test_memory_rank_correlation(memories, verdict):
    rows = [
        _acc_row(f"c{i}", "ssd", 0.3, latency=10 * (i + 1), peak_rss_mb=m)
        for i, m in enumerate(memories)
    ]
    f = _check(rows, "memory")
    assert f.verdict == verdict and "over 5 tf_function cells" in f.measured
    assert _check(rows[:4], "memory").verdict == "not measured"


def test_a_model_that_has_not_learnt_is_off_the_frontier():
    rows = [
        _acc_row("a", "ssd", 0.02, map50=0.05, latency=5),  # not learnt, fastest
        _acc_row("b", "faster_rcnn", 0.30, latency=50, num_proposals=100, output_stride=16),
    ]
    df = tables.to_frame(rows)
    assert list(df["learnt"]) == [False, True]
    assert list(df["frontier"]) == [False, True]


def test_memory_compares_cells_of_one_runtime():
    """TFLite cells (whose process also converts the model) do not enter the correlation
    of the most common runtime's cells."""
    rows = [
        _acc_row(f"c{i}", "ssd", 0.3, latency=10 * (i + 1), peak_rss_mb=100 * (i + 1))
        for i in range(5)
    ]
    rows += [
        dict(_acc_row(f"t{i}", "ssd", 0.3, latency=1 + i, peak_rss_mb=5000 + i), runtime="tflite")
        for i in range(2)
    ]
    f = _check(rows, "memory")
    assert f.verdict == "reproduced" and "rho 1.00 over 5 tf_function cells" in f.measured
