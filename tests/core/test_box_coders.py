import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from detbench.core import box_coders
from detbench.protos import box_coder_pb2


def np_encode(boxes, anchors, mean, std):
    """Independent float64 reference of (t - mean) / std."""

    def cs(b):
        h, w = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
        return b[..., 0] + h / 2, b[..., 1] + w / 2, h, w

    ya, xa, ha, wa = cs(anchors.astype(np.float64))
    y, x, h, w = cs(boxes.astype(np.float64))
    t = np.stack([(y - ya) / ha, (x - xa) / wa, np.log(h / ha), np.log(w / wa)], -1)
    return (t - np.array(mean)) / np.array(std)


def random_pairs(rng, n):
    """Anchors plus boxes from tiny (1e-4) to very elongated (40:1) ones."""
    centre = rng.uniform(0.2, 0.8, (n, 2))
    anchor_hw = rng.uniform(0.05, 0.5, (n, 2))
    ratio = np.exp(rng.uniform(np.log(1 / 40), np.log(40), (n, 2)))
    box_hw = np.clip(anchor_hw * ratio, 1e-4, 1.0)
    box_hw[:5] = [[1e-4, 2e-4], [1e-3, 4e-2], [4e-2, 1e-3], [2e-4, 1e-4], [0.5, 0.0125]]
    anchor_hw[:5] = [[1e-3, 1e-3], [0.01, 0.05], [0.05, 0.01], [1e-3, 1e-3], [0.1, 0.1]]
    box_c = centre + rng.uniform(-0.1, 0.1, (n, 2))

    def mk(c, hw):
        return np.concatenate([c - hw / 2, c + hw / 2], 1).astype(np.float32)

    return mk(box_c, box_hw), mk(centre, anchor_hw)


def test_faster_rcnn_hand_example():
    coder = box_coders.FasterRcnnBoxCoder()
    # anchor centre (0.5, 0.5), size 1 x 1; box centre (0.3, 0.6), size 0.4 x
    # 0.8: ty = -0.2 * 10 = -2, tx = 0.1 * 10 = 1, th = 5 * ln 0.4 = -4.581454,
    # tw = 5 * ln 0.8 = -1.115718.
    codes = coder.encode([[0.1, 0.2, 0.5, 1.0]], [[0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(codes, [[-2.0, 1.0, -4.581454, -1.115718]], rtol=1e-5)
    assert coder.code_size == 4


@pytest.mark.parametrize(
    "coder,mean,std",
    [
        (box_coders.FasterRcnnBoxCoder(), (0, 0, 0, 0), (0.1, 0.1, 0.2, 0.2)),
        (box_coders.FasterRcnnBoxCoder((1, 2, 3, 4)), (0, 0, 0, 0), (1, 1 / 2, 1 / 3, 1 / 4)),
        (box_coders.MeanStddevBoxCoder(), (0, 0, 0, 0), (0.1, 0.1, 0.2, 0.2)),
        (
            box_coders.MeanStddevBoxCoder((0.1, -0.1, 0.2, 0.0), (0.05, 0.05, 0.1, 0.1)),
            (0.1, -0.1, 0.2, 0.0),
            (0.05, 0.05, 0.1, 0.1),
        ),
    ],
)
def test_encode_matches_numpy_and_round_trips(coder, mean, std):
    rng = np.random.default_rng(0)
    boxes, anchors = random_pairs(rng, 200)
    codes = coder.encode(boxes, anchors).numpy()
    np.testing.assert_allclose(codes, np_encode(boxes, anchors, mean, std), rtol=1e-4, atol=1e-4)
    decoded = coder.decode(codes, anchors).numpy()
    np.testing.assert_allclose(decoded, boxes, rtol=0, atol=2e-6)
    assert np.all(decoded[:, 2:] > decoded[:, :2])  # the tiny boxes survive


def test_arbitrary_leading_dims_and_broadcast_anchors():
    rng = np.random.default_rng(1)
    boxes, anchors = random_pairs(rng, 6)
    coder = box_coders.FasterRcnnBoxCoder()
    other = boxes * 0.9 + 0.05
    batched = np.stack([boxes, other])  # [2, 6, 4], anchors [6, 4]
    codes = coder.encode(batched, anchors)
    assert codes.shape == (2, 6, 4)
    np.testing.assert_allclose(codes[1], coder.encode(other, anchors), rtol=1e-6)
    np.testing.assert_allclose(coder.decode(codes, anchors), batched, atol=2e-6)


def test_zero_height_and_overflow_are_guarded():
    coder = box_coders.FasterRcnnBoxCoder()
    anchor = [[0.0, 0.0, 0.5, 0.5]]
    codes = coder.encode([[0.2, 0.2, 0.2, 0.3]], anchor).numpy()  # height 0
    assert np.all(np.isfinite(codes))
    # th = 5 * 100 would overflow exp; the clamp caps it at ln(1000 / 16):
    # height = 0.5 * 62.5 = 31.25 about centre 0.25.
    out = coder.decode([[0.0, 0.0, 500.0, -500.0]], anchor).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0, [0, 2]], [0.25 - 15.625, 0.25 + 15.625], rtol=1e-5)
    assert out[0, 3] - out[0, 1] < 1e-6  # very negative tw -> width ~0


def test_build_box_coder():
    def build(text):
        return box_coders.build_box_coder(text_format.Parse(text, box_coder_pb2.BoxCoder()))

    c = build("")
    assert isinstance(c, box_coders.FasterRcnnBoxCoder)
    assert c.scale_factors == (10.0, 10.0, 5.0, 5.0)
    c = build("faster_rcnn { y_scale: 1 x_scale: 2 }")
    assert c.scale_factors == (1.0, 2.0, 5.0, 5.0)
    c = build("mean_stddev { }")
    assert type(c) is box_coders.MeanStddevBoxCoder
    assert c.mean == (0.0,) * 4 and c.stddev == pytest.approx((0.1, 0.1, 0.2, 0.2))
    c = build("mean_stddev { stddev: [0.05, 0.05, 0.1, 0.1] }")
    assert c.stddev == pytest.approx((0.05, 0.05, 0.1, 0.1))
    with pytest.raises(ValueError, match="mean_stddev.stddev"):
        build("mean_stddev { stddev: [0.1, 0.1] }")


def test_inside_tf_function():
    coder = box_coders.MeanStddevBoxCoder()

    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, 4])])
    def round_trip(boxes, anchors):
        return coder.decode(coder.encode(boxes, anchors), anchors)

    boxes, anchors = random_pairs(np.random.default_rng(2), 10)
    np.testing.assert_allclose(round_trip(boxes[None], anchors)[0], boxes, atol=2e-6)
