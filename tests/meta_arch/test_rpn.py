"""Region proposal network: anchors, targets, losses and proposals, checked
against hand-worked examples."""

import math

import numpy as np
import pytest
import tensorflow as tf

from detbench.core import anchor_generators
from detbench.feature_extractors.base import ShapeSpec
from detbench.meta_arch.rpn import RegionProposalNetwork
from detbench.protos import rpn_pb2


def _window(h, w):
    return tf.constant([[0.0, 0.0, h, w]], tf.float32)


def test_default_anchors_are_h_times_w_times_12():
    rpn = RegionProposalNetwork.from_config(rpn_pb2.RegionProposalNetwork(), ShapeSpec(16))
    fmap = tf.zeros([1, 5, 7, 8])
    anchors = rpn.anchors(fmap, (80, 112)).numpy()
    assert anchors.shape == (5 * 7 * 12, 4)
    # First anchor: cell (0, 0) centred at (8, 8) px, scale 0.25 * 256 = 64 px,
    # aspect ratio 0.5 -> height 64 / sqrt(.5), width 64 * sqrt(.5).
    h, w = 64 / math.sqrt(0.5), 64 * math.sqrt(0.5)
    expected = np.array([8 - h / 2, 8 - w / 2, 8 + h / 2, 8 + w / 2]) / [80, 112, 80, 112]
    np.testing.assert_allclose(anchors[0], expected, rtol=1e-5)
    # Last anchor: cell (4, 6) centred at (72, 104), scale 2 * 256, ratio 2.
    h, w = 512 / math.sqrt(2), 512 * math.sqrt(2)
    expected = np.array([72 - h / 2, 104 - w / 2, 72 + h / 2, 104 + w / 2]) / [80, 112, 80, 112]
    np.testing.assert_allclose(anchors[-1], expected, rtol=1e-5)
    # Cached: the same object comes back for the same shapes.
    assert len(rpn.anchor_cache) == 1
    rpn.anchors(fmap, (80, 112))
    assert len(rpn.anchor_cache) == 1
    logits, codes = rpn(tf.zeros([2, 5, 7, 8]))
    assert logits.shape == (2, 420) and codes.shape == (2, 420, 4)


def test_multilevel_anchors_one_size_per_level():
    gen = anchor_generators.MultilevelAnchorGenerator(2, 4, anchor_scale=8.0)
    rpn = RegionProposalNetwork(gen, conv_depth=8)
    maps = {2: tf.zeros([1, 16, 16, 4]), 3: tf.zeros([1, 8, 8, 4]), 4: tf.zeros([1, 4, 4, 4])}
    anchors = rpn.anchors(maps, (64, 64)).numpy()
    assert anchors.shape == ((256 + 64 + 16) * 3, 4)
    # 1:1 anchor of level 3 is 8 * 2^3 = 64 px.
    a = anchors[256 * 3 + 1] * 64
    np.testing.assert_allclose(a[2:] - a[:2], [64, 64], rtol=1e-5)
    logits, codes = rpn(maps)
    assert logits.shape == (1, 336 * 3) and codes.shape == (1, 336 * 3, 4)


def _unit_rpn(force_match=True):
    """16 px square anchors, one per cell of a 4x4 map over a 64x64 input."""
    gen = anchor_generators.GridAnchorGenerator((1.0,), (1.0,), base_size=16, stride=16)
    return RegionProposalNetwork(gen, conv_depth=4, force_match=force_match, batch_size=256)


def test_targets_hand_made():
    rpn = _unit_rpn()
    anchors = rpn.anchors(tf.zeros([1, 4, 4, 1]), (64, 64))
    # gt 0 == the anchor of cell (1, 1): IoU 1 -> positive, zero targets.
    # gt 1 = 16 x 24 px at (16, 40): IoU with the cell (1, 3) anchor
    # [16, 48, 32, 64] is 256 / 384 = 2/3 (ignored band), with cell (1, 2)
    # [16, 32, 32, 48] 128 / 512 = 0.25 (negative); force_match gives gt 1 its
    # best anchor, cell (1, 3).
    gt = tf.constant([[[16, 16, 32, 32], [16, 40, 32, 64]]], tf.float32) / 64.0
    t = rpn.targets(anchors, gt, tf.constant([2]), _window(1.0, 1.0))
    positive = t["positive"].numpy()[0]
    sampled = t["sampled"].numpy()[0]
    assert sorted(np.flatnonzero(positive)) == [5, 7]
    assert sampled.all()
    np.testing.assert_allclose(t["reg_targets"].numpy()[0, 5], [0, 0, 0, 0], atol=1e-6)
    # gt 1 vs anchor [16, 48, 32, 64]: ty 0, tx (52 - 56) / 16, th 0,
    # tw log(24 / 16); scaled by (10, 10, 5, 5).
    np.testing.assert_allclose(
        t["reg_targets"].numpy()[0, 7], [0, -10 * 4 / 16, 0, 5 * math.log(24 / 16)], rtol=1e-5
    )

    # Losses with zero predictions: sigmoid CE log(2) on each of the 16 sampled
    # anchors / 16; smooth L1 (delta 1) of the positive targets / 16.
    losses = rpn.loss(tf.zeros([1, 16]), tf.zeros([1, 16, 4]), t)
    np.testing.assert_allclose(losses["rpn_objectness_loss"].numpy(), math.log(2), rtol=1e-5)
    tx, tw = 10 * 4 / 16, 5 * math.log(1.5)
    smooth = (tx - 0.5) + (tw - 0.5)
    np.testing.assert_allclose(losses["rpn_localization_loss"].numpy(), smooth / 16, rtol=1e-5)

    # Without force_match gt 1's anchor is only in the ignored band.
    t = _unit_rpn(force_match=False).targets(anchors, gt, tf.constant([2]), _window(1.0, 1.0))
    assert list(np.flatnonzero(t["positive"].numpy()[0])) == [5]
    assert sorted(np.flatnonzero(~t["sampled"].numpy()[0])) == [7]


def test_targets_ignore_anchors_in_the_padding_and_padded_groundtruth():
    rpn = _unit_rpn()
    anchors = rpn.anchors(tf.zeros([1, 4, 4, 1]), (64, 64))
    # True image: the top-left 32 x 48 px of the 64 x 64 input.
    gt = tf.constant([[[0, 0, 16, 16], [40, 40, 60, 60]]], tf.float32) / 64.0
    t = rpn.targets(anchors, gt, tf.constant([1]), _window(0.5, 0.75))
    sampled = t["sampled"].numpy()[0].reshape(4, 4)
    # Anchor centres at 8, 24, 40, 56 px: rows 0-1 and columns 0-2 are inside.
    expected = np.zeros([4, 4], bool)
    expected[:2, :3] = True
    np.testing.assert_array_equal(sampled, expected)
    assert list(np.flatnonzero(t["positive"].numpy()[0])) == [0]


def test_sampler_caps_the_minibatch():
    gen = anchor_generators.GridAnchorGenerator((1.0,), (1.0,), base_size=16, stride=16)
    rpn = RegionProposalNetwork(gen, conv_depth=4, batch_size=8, positive_fraction=0.5)
    anchors = rpn.anchors(tf.zeros([1, 4, 4, 1]), (64, 64))
    gt = (
        tf.constant(
            [
                [
                    [0, 0, 16, 16],
                    [0, 16, 16, 32],
                    [0, 32, 16, 48],
                    [0, 48, 16, 64],
                    [16, 0, 32, 16],
                    [16, 16, 32, 32],
                ]
            ],
            tf.float32,
        )
        / 64.0
    )
    t = rpn.targets(anchors, gt, tf.constant([6]), _window(1.0, 1.0))
    assert t["sampled"].numpy().sum() == 8
    assert t["positive"].numpy().sum() == 4


_LOGITS = [5.0, 4.0, 3.0, 2.0] + list(np.linspace(-10.0, -20.0, 12))


def _proposal_case(rpn, benchmark_mode, max_proposals):
    anchors = rpn.anchors(tf.zeros([1, 4, 4, 1]), (64, 64))
    # Zero box codes: proposals are the anchors themselves, in score order
    # (here the anchor order); all 16 anchors are disjoint, so NMS removes nothing.
    logits = tf.constant([_LOGITS], tf.float32)
    out = rpn.proposals(
        anchors,
        logits,
        tf.zeros([1, 16, 4]),
        _window(1.0, 1.0),
        max_proposals,
        benchmark_mode=benchmark_mode,
    )
    return anchors.numpy(), {k: v.numpy() for k, v in out.items()}


def test_proposals_sorted_decoded_and_padded():
    rpn = _unit_rpn()
    anchors, out = _proposal_case(rpn, False, 20)
    assert out["proposal_boxes"].shape == (1, 20, 4)
    assert out["num_proposals"][0] == 16
    np.testing.assert_allclose(out["proposal_boxes"][0, :4], anchors[:4], atol=1e-6)
    np.testing.assert_allclose(
        out["proposal_scores"][0, :4], 1 / (1 + np.exp(-np.array([5.0, 4, 3, 2]))), rtol=1e-5
    )
    np.testing.assert_array_equal(out["proposal_valid"][0], np.arange(20) < 16)


def test_proposal_nms_suppresses_overlaps():
    gen = anchor_generators.GridAnchorGenerator((1.0,), (1.0,), base_size=64, stride=16)
    rpn = RegionProposalNetwork(gen, conv_depth=4, nms_iou_threshold=0.7, pre_nms_top_k=0)
    anchors = rpn.anchors(tf.zeros([1, 4, 4, 1]), (64, 64))
    clipped_anchors = np.clip(anchors.numpy(), 0, 1)
    logits = tf.constant([np.linspace(3, -3, 16)], tf.float32)
    out = rpn.proposals(anchors, logits, tf.zeros([1, 16, 4]), _window(1.0, 1.0), 16)
    # Independent greedy NMS in numpy on the clipped anchors.
    order, keep = np.argsort(-logits.numpy()[0]), []
    for i in order:
        b = clipped_anchors[i]
        ok = True
        for j in keep:
            k = clipped_anchors[j]
            inter = max(0, min(b[2], k[2]) - max(b[0], k[0])) * max(
                0, min(b[3], k[3]) - max(b[1], k[1])
            )
            union = (b[2] - b[0]) * (b[3] - b[1]) + (k[2] - k[0]) * (k[3] - k[1]) - inter
            ok &= inter / union <= 0.7
        if ok:
            keep.append(i)
    n = int(out["num_proposals"][0])
    assert n == len(keep) < 16
    np.testing.assert_allclose(out["proposal_boxes"][0, :n], clipped_anchors[keep], atol=1e-6)


@pytest.mark.parametrize("max_proposals", [3, 20])
def test_benchmark_mode_always_gives_exactly_max_proposals(max_proposals):
    rpn = _unit_rpn()
    anchors, out = _proposal_case(rpn, True, max_proposals)
    assert out["proposal_boxes"].shape == (1, max_proposals, 4)
    assert out["num_proposals"][0] == max_proposals
    assert out["proposal_valid"].all()
    # Slots past the 16 NMS survivors are filled with the best pre-NMS boxes
    # (here only 16 anchors exist, so the rest are zero boxes).
    np.testing.assert_allclose(
        out["proposal_boxes"][0, : min(16, max_proposals)], anchors[:max_proposals], atol=1e-6
    )
    if max_proposals > 16:
        assert not out["proposal_boxes"][0, 16:].any()


def test_benchmark_mode_fills_with_top_scoring_boxes():
    gen = anchor_generators.GridAnchorGenerator((1.0,), (1.0,), base_size=64, stride=16)
    rpn = RegionProposalNetwork(gen, conv_depth=4, nms_iou_threshold=0.5, pre_nms_top_k=0)
    anchors = rpn.anchors(tf.zeros([1, 4, 4, 1]), (64, 64))
    logits = tf.constant([np.linspace(3, -3, 16)], tf.float32)
    normal = rpn.proposals(anchors, logits, tf.zeros([1, 16, 4]), _window(1.0, 1.0), 12)
    bench = rpn.proposals(
        anchors, logits, tf.zeros([1, 16, 4]), _window(1.0, 1.0), 12, benchmark_mode=True
    )
    n = int(normal["num_proposals"][0])
    assert n < 12 and int(bench["num_proposals"][0]) == 12
    np.testing.assert_allclose(bench["proposal_boxes"][0, :n], normal["proposal_boxes"][0, :n])
    filled = bench["proposal_boxes"].numpy()[0, n:]
    np.testing.assert_allclose(filled, np.clip(anchors.numpy(), 0, 1)[:12][n:], atol=1e-6)
