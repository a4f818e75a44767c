"""studies/peers.py builds our models and the Model Garden's to match.

The evidence is the parameter count: at 128x128 both sides of each pair
differ by exactly the layers the Model Garden has and we do not (see the
module docstring of ``studies/peers.py``): batch norm after its head convs
and fc, and a background column in its box regressor / RetinaNet classifier.
"""

import pytest
import tensorflow as tf

from detbench.studies import peers

SIZE = 128  # a multiple of 2**7 (RetinaNet's P7)


def _build_both(kind):
    ours = peers.build_ours(kind, SIZE, proposals=20)
    theirs = peers.build_theirs(kind, SIZE, proposals=20)
    image = tf.zeros([1, SIZE, SIZE, 3], tf.uint8)
    ours.detect(image)  # eager: creates the lazily built heads' variables
    theirs(
        tf.zeros([1, SIZE, SIZE, 3]),
        image_shape=tf.constant([[SIZE, SIZE]], tf.float32),
        training=False,
    )
    return peers.parameter_count(ours), peers.parameter_count(theirs)


def test_faster_rcnn_parameters_match():
    ours, theirs = _build_both("faster_rcnn")
    bn = 4 * 256  # gamma, beta, moving mean, moving variance of 256 channels
    extra = (
        5 * bn  # their RPN conv's batch norm, one per level P2-P6
        + 4 * bn  # batch norm after each of the 4 head convs
        + 4 * 1024  # batch norm after the fc layer
        + (1024 * 4 + 4)
    )  # box regressor's background column
    assert theirs - ours == extra
    assert abs(theirs - ours) / theirs < 0.001


def test_retinanet_parameters_match():
    ours, theirs = _build_both("retinanet")
    extra = (
        2 * 4 * 5 * 4 * 256  # batch norm after each tower conv, per level P3-P7
        + 9 * (3 * 3 * 256 + 1)
    )  # classifier's background column, 9 anchors
    assert theirs - ours == extra
    assert abs(theirs - ours) / theirs < 0.002


def test_pairs_share_proposal_and_nms_settings():
    c = peers.theirs_config("faster_rcnn", 640, 300)
    assert c.detection_generator.nms_version == "batched"
    assert (
        c.detection_generator.pre_nms_score_threshold,
        c.detection_generator.nms_iou_threshold,
        c.detection_generator.max_num_detections,
    ) == (0.05, 0.5, 100)
    assert c.roi_generator.test_num_proposals == 300
    # their proposal NMS sees the top 1000 per level: 1000 * 4 + P6's 10 * 10 * 3
    assert peers.rpn_candidates(640) == 4300
    overrides = " ".join(peers.ours_overrides("faster_rcnn", 640, 300))
    for text in (
        "rpn.max_proposals=300",
        "rpn.pre_nms_top_k=4300",
        "num_classes=90",
        "score_threshold: 0.05 iou_threshold: 0.5",
        "num_conv_layers: 4",
    ):
        assert text in overrides


@pytest.mark.parametrize("kind", ["faster_rcnn", "retinanet"])
def test_equalize_candidates_hits_the_target(kind):
    model = peers.build_ours(kind, SIZE, proposals=20)
    image = peers.timing_images(SIZE, 1)[0]
    target = 12  # of 20 RoIs x 90 classes, or of RetinaNet's 3069 anchors x 90
    scale, got = peers.equalize_candidates(kind, model, image, target)
    assert abs(got - target) <= 2
    assert scale > 0


def _pair(lat, gflops, first, rss):
    return {
        "latency_ours_s": lat[0],
        "latency_theirs_s": lat[1],
        "gflops_ours": gflops[0],
        "gflops_theirs": gflops[1],
        "first_call_ours_s": first[0],
        "first_call_theirs_s": first[1],
        "peak_rss_ours_mb": rss[0],
        "peak_rss_theirs_mb": rss[1],
    }


def test_pair_targets_latency_at_equal_flops_first_call_and_memory():
    # ours 1.2 s for 120 GFLOP = 0.010 s/GFLOP, theirs 1.0 s for 125 = 0.008: 1.25x -> miss,
    # though the raw ratio (1.2x) is what it is; first call 2/5 = 0.4 <= 0.5; memory 0.9
    row = _pair((1.2, 1.0), (120, 125), (2.0, 5.0), (900, 1000))
    checks = dict(peers.pair_checks("faster_rcnn", 300, row))
    assert row["latency_flops_ratio"] == pytest.approx(1.25)
    assert checks == {
        "latency at equal FLOPs <= 1.0x": False,
        "first call <= 0.5x": True,
        "memory <= 1.0x": True,
    }
    # twice the FLOPs in twice the time: equal at equal FLOPs (met); first call only at 300
    row = _pair((2.0, 1.0), (200, 100), (3.0, 4.0), (1100, 1000))
    checks = dict(peers.pair_checks("retinanet", None, row))
    assert row["latency_flops_ratio"] == pytest.approx(1.0)
    assert checks == {"latency at equal FLOPs <= 1.0x": True, "memory <= 1.0x": False}
    assert "first call <= 0.5x" not in dict(peers.pair_checks("faster_rcnn", 1000, row))


# -- the training pair (studies/peers_training.py), on hand-made rows ---------------
def _training_row(ours, theirs, unlabelled):
    return {
        "pair": "retinanet training step, 256 px, batch 2",
        "params_ours": 34_110_000,
        "params_theirs": 34_170_000,
        "step_ours_s": ours,
        "step_theirs_s": theirs,
        "step_theirs_unlabelled_s": unlabelled,
        "step_p90_ours_s": ours + 0.1,
        "step_p90_theirs_s": theirs + 0.1,
        "first_step_ours_s": 9.0,
        "first_step_theirs_s": 21.0,
    }


def test_training_pair_target_is_the_step_ratio_against_theirs_with_labelling():
    from detbench.studies import peers_training

    # 1.8 / 2.0 = 0.9 met, though 1.8 s is 1.2x theirs without labelling (1.5 s)
    row = _training_row(1.8, 2.0, 1.5)
    assert peers_training.training_checks(row) == [("training step <= 1.0x", True)]
    assert row["step_ratio"] == pytest.approx(0.9)
    assert row["step_ratio_unlabelled"] == pytest.approx(1.2)
    # equal is met, 1% slower is missed
    assert peers_training.training_checks(_training_row(2.0, 2.0, 1.5))[0][1] is True
    assert peers_training.training_checks(_training_row(2.02, 2.0, 1.5))[0][1] is False


def test_training_pair_table_and_exit_status(monkeypatch, capsys):
    """peers.main --pairs training: the row built from the two sides' medians, its table
    line and exit status 1 on a miss, with the builders and the timing replaced."""
    import types

    import numpy as np

    from detbench.studies import peers_training

    def fake_model(n):  # parameter_count sums the variables' sizes
        return types.SimpleNamespace(variables=[np.zeros((n, 1000))])

    monkeypatch.setattr(
        peers_training, "our_training_model", lambda size, batch: (fake_model(34), "step", {})
    )
    monkeypatch.setattr(
        peers_training,
        "their_training_model",
        lambda size, batch: (fake_model(36), None, {"theirs": 0, "theirs without labelling": 0}),
    )
    medians = {"ours": 2.6, "theirs": 2.0, "theirs without labelling": 1.6}

    def fake_interleaved(fns, images, runs, warmup):
        assert set(fns) == set(medians) and len(images) == 1
        return {n: {"median_s": m, "p90_s": m + 0.5, "trace_s": 10 * m} for n, m in medians.items()}

    monkeypatch.setattr(peers, "interleaved", fake_interleaved)
    status = peers.main(["--pairs", "training", "--train-size", "192", "--train-batch", "4"])
    out = capsys.readouterr().out
    assert status == 1
    # 2.6 / 2.0 = 1.30 (missed), 2.6 / 1.6 = 1.62 without their labelling
    assert (
        "| retinanet training step, 192 px, batch 4 | 0.03 / 0.04 | 2.600 / 2.000 | 1.30 "
        "| 1.600 | 1.62 | 3.100 / 2.500 | 26.0 / 20.0 | training step <= 1.0x FAIL |"
    ) in out
    assert "- retinanet training step, 192 px, batch 4: training step <= 1.0x" in out
    medians["ours"] = 1.9  # 0.95: met
    assert peers.main(["--pairs", "training"]) == 0
    assert "training step <= 1.0x PASS" in capsys.readouterr().out
