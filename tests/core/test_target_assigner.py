import numpy as np
import pytest
import tensorflow as tf

from detbench.core import box_coders, matchers, target_assigner as ta
from tests.numpy_reference import iou_matrix as np_iou


def np_encode(box, anchor):
    h, w = box[2] - box[0], box[3] - box[1]
    ha, wa = anchor[2] - anchor[0], anchor[3] - anchor[1]
    return [
        10 * ((box[0] + h / 2) - (anchor[0] + ha / 2)) / ha,
        10 * ((box[1] + w / 2) - (anchor[1] + wa / 2)) / wa,
        5 * np.log(h / ha),
        5 * np.log(w / wa),
    ]


def np_assign(anchors, boxes, labels, num_gt, weights, crowd, hi, lo, neg_w):
    """Reference: argmax matching (no force), then targets per anchor."""
    n = len(anchors)
    out = {
        "cls_targets": np.zeros(n, int),
        "cls_weights": np.full(n, neg_w),
        "reg_targets": np.zeros((n, 4)),
        "reg_weights": np.zeros(n),
        "match": np.full(n, -1),
    }
    if num_gt == 0:
        return out
    sim = np_iou(boxes[:num_gt], anchors)
    for c in range(n):
        r = int(np.argmax(sim[:, c]))
        if sim[r, c] >= hi and not crowd[r]:
            out["match"][c] = r
            out["cls_targets"][c] = labels[r]
            out["cls_weights"][c] = weights[r]
            out["reg_weights"][c] = weights[r]
            out["reg_targets"][c] = np_encode(boxes[r], anchors[c])
        elif sim[r, c] >= lo:  # the ignore band, or matched to a crowd box
            out["match"][c] = -2
            out["cls_weights"][c] = 0.0
    return out


ANCHORS = np.array(
    [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0], [0.25, 0.25, 0.75, 0.75]],
    np.float32,
)
GT = np.array(
    [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 0.9], [0.0, 0.5, 0.5, 1.0]], np.float32
)  # row 2: padding


def make_assigner(matcher=None, neg_w=1.0):
    return ta.TargetAssigner(
        matcher or matchers.ArgMaxMatcher(0.5, 0.15),
        box_coders.FasterRcnnBoxCoder(),
        negative_class_weight=neg_w,
    )


def test_assign_hand_example():
    # IoU(G0, A0) = 1, IoU(G0, A3) = .0625 / .4375 = 0.142857;
    # IoU(G1, A1) = .2 / .25 = 0.8, IoU(G1, A3) = .0625 / .3875 = 0.16129.
    # The padding row would match A2 perfectly but must not.
    out = make_assigner(neg_w=0.25).assign(
        ANCHORS, GT, [3, 1, 7], num_valid_gt=2, gt_weights=[1.0, 0.5, 1.0]
    )
    np.testing.assert_array_equal(out["match"], [0, 1, -1, -2])
    np.testing.assert_array_equal(out["cls_targets"], [3, 1, 0, 0])
    np.testing.assert_allclose(out["cls_weights"], [1.0, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(out["reg_weights"], [1.0, 0.5, 0.0, 0.0])
    # A1 centre (.75, .75) 0.5 x 0.5, G1 centre (.75, .7) 0.5 x 0.4:
    # tx = 10 * -0.05 / 0.5 = -1, tw = 5 * ln 0.8 = -1.115718.
    np.testing.assert_allclose(
        out["reg_targets"],
        [[0, 0, 0, 0], [0, -1.0, 0, -1.115718], [0, 0, 0, 0], [0, 0, 0, 0]],
        atol=1e-5,
    )
    assert out["cls_targets"].dtype == tf.int32 and out["match"].dtype == tf.int32


def test_crowd_boxes_are_ignored_never_positive():
    out = make_assigner(neg_w=0.25).assign(
        ANCHORS, GT, [3, 1, 7], num_valid_gt=2, gt_is_crowd=[False, True, False]
    )
    np.testing.assert_array_equal(out["match"], [0, -2, -1, -2])
    np.testing.assert_array_equal(out["cls_targets"], [3, 0, 0, 0])
    np.testing.assert_allclose(out["cls_weights"], [1.0, 0.0, 0.25, 0.0])
    np.testing.assert_allclose(out["reg_weights"], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(out["reg_targets"][1], [0, 0, 0, 0])


def random_batch(rng, b, m, n):
    yx = rng.uniform(0, 0.7, (b, m, 2))
    gt = np.concatenate([yx, yx + rng.uniform(0.1, 0.3, (b, m, 2))], -1)
    ayx = rng.uniform(0, 0.8, (n, 2))
    anchors = np.concatenate([ayx, ayx + rng.uniform(0.1, 0.3, (n, 2))], -1)
    labels = rng.integers(1, 5, (b, m))
    weights = rng.uniform(0.5, 1.0, (b, m))
    crowd = rng.uniform(size=(b, m)) < 0.2
    return (
        anchors.astype(np.float32),
        gt.astype(np.float32),
        labels,
        weights.astype(np.float32),
        crowd,
    )


@pytest.mark.parametrize("per_image_anchors", [False, True])
def test_batch_assign_matches_numpy(per_image_anchors):
    rng = np.random.default_rng(0)
    anchors, gt, labels, weights, crowd = random_batch(rng, 3, 5, 60)
    num_gt = np.array([2, 0, 5])
    if per_image_anchors:
        anchors = np.stack([anchors, anchors * 0.9, anchors[::-1]])
    out = make_assigner(matchers.ArgMaxMatcher(0.4, 0.2), neg_w=0.5).batch_assign(
        anchors, gt, labels, num_gt, weights, crowd
    )
    assert out["reg_targets"].shape == (3, 60, 4)
    assert out["cls_targets"].shape == (3, 60)
    for i in range(3):
        a = anchors[i] if per_image_anchors else anchors
        ref = np_assign(a, gt[i], labels[i], num_gt[i], weights[i], crowd[i], 0.4, 0.2, 0.5)
        for key, value in ref.items():
            np.testing.assert_allclose(out[key][i], value, atol=1e-4, err_msg=key)
    assert np.all(out["match"][1] == -1)  # image without groundtruth
    assert np.sum(out["match"] >= 0) > 3


def test_batch_assign_inside_tf_function():
    assigner = make_assigner(matchers.BipartiteMatcher())

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4]),
            tf.TensorSpec([None, None, 4]),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None], tf.int32),
        ]
    )
    def fn(anchors, gt, labels, num_gt):
        return assigner.batch_assign(anchors, gt, labels, num_gt)

    rng = np.random.default_rng(1)
    anchors, gt, labels, _, _ = random_batch(rng, 2, 4, 10)
    out = fn(anchors, gt, labels.astype(np.int32), np.array([3, 1], np.int32))
    for i, n in enumerate([3, 1]):
        match = out["match"][i].numpy()
        matched = match[match >= 0]
        # Bipartite: each valid gt gets exactly one anchor, padding none.
        np.testing.assert_array_equal(np.sort(matched), np.arange(n))
        np.testing.assert_array_equal(out["cls_targets"][i].numpy()[match >= 0], labels[i][matched])
        for c in np.nonzero(match >= 0)[0]:
            np.testing.assert_allclose(
                out["reg_targets"][i, c], np_encode(gt[i, match[c]], anchors[c]), atol=1e-4
            )
