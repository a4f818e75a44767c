import numpy as np
import pytest
import tensorflow as tf

from detbench.core import samplers
from detbench.protos import sampler_pb2
from tests.numpy_reference import iou as np_iou


def np_greedy_nms(boxes, scores, iou_threshold, max_out):
    """Indices kept by greedy NMS (descending score, skip -inf)."""
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if not np.isfinite(scores[i]) or len(keep) == max_out:
            break
        if all(np_iou(boxes[i], boxes[j]) <= iou_threshold for j in keep):
            keep.append(i)
    return keep


def random_boxes(rng, n):
    yx = rng.uniform(0, 0.7, (n, 2))
    hw = rng.uniform(0.05, 0.3, (n, 2))
    return np.concatenate([yx, yx + hw], 1).astype(np.float32)


@pytest.mark.parametrize(
    "num_pos,num_neg,expect_pos,expect_neg",
    [
        (100, 500, 32, 32),  # enough of both: capped positives, filled negatives
        (10, 500, 10, 54),  # few positives: negatives fill the batch
        (100, 5, 32, 5),  # few negatives: positives still capped by the fraction
    ],
)
def test_balanced_sampler_counts(num_pos, num_neg, expect_pos, expect_neg):
    sampler = samplers.BalancedPositiveNegativeSampler(64, 0.5)
    n = 800
    labels = np.zeros(n, bool)
    labels[:num_pos] = True
    indicator = np.zeros(n, bool)
    indicator[: num_pos + num_neg] = True
    indicator[-50:] = False  # ineligible
    fn = tf.function(sampler.subsample)
    out = fn(tf.constant(indicator), tf.constant(labels), seed=3).numpy()
    assert out.shape == (n,)
    assert not np.any(out & ~indicator)
    assert np.sum(out & labels) == expect_pos
    assert np.sum(out & ~labels) == expect_neg


def test_balanced_sampler_is_random_and_seeded():
    sampler = samplers.BalancedPositiveNegativeSampler(10, 0.5)
    indicator = tf.ones([100], tf.bool)
    labels = tf.range(100) < 50
    a = sampler.subsample(indicator, labels, seed=1).numpy()
    b = sampler.subsample(indicator, labels, seed=1).numpy()
    c = sampler.subsample(indicator, labels, seed=2).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Unseeded draws cover every eligible index over many draws. Each index is
    # drawn with p = 0.1 per draw: with 60 draws some index of 100 was missed in
    # about 16% of runs (100 * 0.9**60); with 300 the chance is about 2e-12.
    hits = sum(sampler.subsample(indicator, labels).numpy().astype(int) for _ in range(300))
    assert np.all(hits > 0)


def test_balanced_sampler_batched_static_shape():
    sampler = samplers.build_sampler(
        sampler_pb2.BalancedSampler(batch_size=8, positive_fraction=0.25)
    )
    fn = tf.function(sampler.batch_subsample, input_signature=[tf.TensorSpec([3, 40], tf.bool)] * 2)
    labels = np.zeros((3, 40), bool)
    labels[0, :10] = True
    labels[1, :1] = True
    indicator = np.ones((3, 40), bool)
    out = fn(indicator, labels)
    assert out.shape == (3, 40)
    out = out.numpy()
    np.testing.assert_array_equal(np.sum(out & labels, 1), [2, 1, 0])
    np.testing.assert_array_equal(np.sum(out, 1), [8, 8, 8])


def np_hard_negative_mining(losses, positives, k, min_neg, cap, boxes=None, iou=1.0):
    out = np.zeros_like(losses)
    for b in range(losses.shape[0]):
        num_neg = max(int(np.floor(positives[b].sum() * k)), min_neg)
        if cap:
            num_neg = min(num_neg, cap)
        scores = np.where(positives[b], -np.inf, losses[b])
        if boxes is not None and iou < 1.0:
            chosen = np_greedy_nms(boxes[b], scores, iou, num_neg)
        else:
            chosen = [
                i for i in np.argsort(-scores, kind="stable")[:num_neg] if np.isfinite(scores[i])
            ]
        out[b, chosen] = 1.0
        out[b, positives[b]] = 1.0
    return out


def test_hard_negative_miner_matches_reference():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0, 5, (3, 60)).astype(np.float32)
    positives = np.zeros((3, 60), bool)
    positives[0, [1, 7, 20]] = True  # 3 positives -> 9 negatives
    positives[1, 5] = True  # 1 positive -> 3 < min 4 negatives
    miner = samplers.build_hard_negative_miner(
        sampler_pb2.HardNegativeMiner(
            max_negatives_per_positive=3,
            min_negatives_per_image=4,
            num_hard_examples=8,
            iou_threshold=1.0,
        )
    )
    out = tf.function(miner)(losses, positives).numpy()
    expect = np_hard_negative_mining(losses, positives, 3, 4, 8)
    np.testing.assert_array_equal(out, expect)
    assert out[0].sum() == 3 + 8  # capped by num_hard_examples
    assert out[1].sum() == 1 + 4
    assert out[2].sum() == 4  # no positives: min_negatives_per_image


def test_hard_negative_miner_hand_example():
    losses = np.array([[0.1, 0.9, 0.5, 0.7, 0.2, 0.3]], np.float32)
    positives = np.array([[True, False, False, False, False, False]])
    miner = samplers.HardNegativeMiner(max_negatives_per_positive=2, num_hard_examples=0)
    np.testing.assert_array_equal(miner(losses, positives).numpy(), [[1, 1, 0, 1, 0, 0]])
    # localization losses join the ranking; an explicit negatives mask limits it.
    loc = np.array([[0, 0, 0.5, 0, 0, 0]], np.float32)
    negatives = np.array([[False, True, True, True, False, True]])
    np.testing.assert_array_equal(
        miner(losses, positives, negatives, localization_losses=loc).numpy(), [[1, 1, 1, 0, 0, 0]]
    )


def test_hard_negative_miner_nms_dedupe():
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 80).reshape(2, 40, 4)
    boxes[0, 1] = boxes[0, 0] + [0, 0, 0.001, 0]  # near-duplicate of box 0
    losses = rng.uniform(0, 1, (2, 40)).astype(np.float32)
    losses[0, 0], losses[0, 1] = 5.0, 4.0
    positives = np.zeros((2, 40), bool)
    positives[:, 10:14] = True
    miner = samplers.HardNegativeMiner(3, 0, 3000, iou_threshold=0.5)
    out = tf.function(miner)(losses, positives, decoded_boxes=boxes).numpy()
    expect = np_hard_negative_mining(losses, positives, 3, 0, 3000, boxes, 0.5)
    np.testing.assert_array_equal(out, expect)
    assert out[0, 0] == 1 and out[0, 1] == 0


def test_ohem_select_matches_reference():
    rng = np.random.default_rng(2)
    boxes = random_boxes(rng, 64)
    losses = rng.uniform(0, 3, 64).astype(np.float32)
    valid = rng.uniform(size=64) > 0.2
    fn = tf.function(lambda l, b, v: samplers.ohem_select(l, b, v, 16, 0.7))
    out = fn(losses, boxes, valid).numpy()
    expect = np.zeros(64, np.float32)
    expect[np_greedy_nms(boxes, np.where(valid, losses, -np.inf), 0.7, 16)] = 1.0
    np.testing.assert_array_equal(out, expect)
    assert out.sum() == 16 and not np.any(out[~valid])


def test_ohem_hand_example_and_batched():
    boxes = np.array(
        [[0, 0, 1, 1], [0, 0, 0.95, 1], [0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], np.float32
    )
    losses = np.array([3.0, 2.0, 1.0, 0.5], np.float32)
    # box 1 overlaps the harder box 0 with IoU 0.95 -> suppressed.
    out = samplers.ohem_select(losses, boxes, [True] * 4, 2).numpy()
    np.testing.assert_array_equal(out, [1, 0, 1, 0])
    # Without NMS the two hardest are taken.
    out = samplers.ohem_select(losses, boxes, [True] * 4, 2, iou_threshold=1.0).numpy()
    np.testing.assert_array_equal(out, [1, 1, 0, 0])
    miner = samplers.build_ohem(sampler_pb2.Ohem(batch_size=2))
    batched = tf.function(miner)(
        np.stack([losses, losses[::-1]]), np.stack([boxes, boxes[::-1]])
    ).numpy()
    np.testing.assert_array_equal(batched, [[1, 0, 1, 0], [0, 1, 0, 1]])
