import numpy as np
import tensorflow as tf

from detbench.core import box_ops
from tests.numpy_reference import iou_matrix as np_iou


def random_boxes(rng, n):
    yx = rng.uniform(0, 1, (n, 2))
    hw = rng.uniform(0, 0.5, (n, 2))
    hw[: n // 4] = 0.0  # some zero-area boxes
    return np.concatenate([yx, yx + hw], 1).astype(np.float32)


def test_iou_ioa_hand_example():
    a = [[0.0, 0.0, 1.0, 1.0]]
    b = [[0.5, 0.5, 1.5, 1.5], [0.0, 0.0, 0.5, 0.25], [2.0, 2.0, 3.0, 3.0]]
    # inter 0.25, union 1 + 1 - 0.25 = 1.75 -> 1/7; b[1] inside a: area
    # 0.125 -> IoU 0.125; b[2] disjoint -> 0.
    np.testing.assert_allclose(box_ops.iou(a, b), [[1 / 7, 0.125, 0.0]], rtol=1e-6)
    # ioa = intersection / area(b): 0.25 / 1, 0.125 / 0.125, 0.
    np.testing.assert_allclose(box_ops.ioa(a, b), [[0.25, 1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(box_ops.intersection(a, b), [[0.25, 0.125, 0.0]])
    np.testing.assert_allclose(box_ops.area(b), [1.0, 0.125, 1.0])


def test_iou_matches_numpy_unbatched_and_batched():
    rng = np.random.default_rng(0)
    b1 = np.stack([random_boxes(rng, 7) for _ in range(3)])
    b2 = np.stack([random_boxes(rng, 5) for _ in range(3)])
    batched = box_ops.iou(b1, b2).numpy()
    assert batched.shape == (3, 7, 5)
    for k in range(3):
        expected = np_iou(b1[k], b2[k])
        np.testing.assert_allclose(box_ops.iou(b1[k], b2[k]), expected, atol=1e-6)
        np.testing.assert_allclose(batched[k], expected, atol=1e-6)


def test_zero_area_gives_zero_not_nan():
    z = tf.constant([[0.3, 0.3, 0.3, 0.3], [0.1, 0.2, 0.1, 0.5]])
    assert np.all(box_ops.iou(z, z).numpy() == 0.0)
    assert np.all(box_ops.ioa(z, z).numpy() == 0.0)
    # Inverted boxes count as zero area too.
    inv = [[0.5, 0.5, 0.2, 0.2]]
    assert box_ops.area(inv).numpy()[0] == 0.0
    assert box_ops.iou(inv, [[0.0, 0.0, 1.0, 1.0]]).numpy()[0, 0] == 0.0


def test_iou_gradient_finite_and_matches_finite_differences():
    b1 = np.array([[0.1, 0.1, 0.6, 0.5], [0.3, 0.3, 0.3, 0.3]], np.float64)
    b2 = np.array([[0.2, 0.0, 0.7, 0.4], [0.3, 0.3, 0.3, 0.3], [0.8, 0.8, 0.9, 0.9]], np.float64)
    x = tf.Variable(b1.astype(np.float32))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(box_ops.iou(x, b2.astype(np.float32)))
    grad = tape.gradient(total, x)
    assert grad is not None and np.all(np.isfinite(grad.numpy()))
    # Central differences on the numpy reference for the non-degenerate box.
    eps = 1e-5
    for c in range(4):
        plus, minus = b1.copy(), b1.copy()
        plus[0, c] += eps
        minus[0, c] -= eps
        fd = (np_iou(plus, b2).sum() - np_iou(minus, b2).sum()) / (2 * eps)
        np.testing.assert_allclose(grad.numpy()[0, c], fd, atol=1e-3)


def test_clip_and_prune():
    boxes = tf.constant(
        [[-0.1, 0.2, 0.5, 1.3], [0.1, 0.1, 0.4, 0.4], [0.2, 0.2, 0.2, 0.6], [1.2, 1.2, 1.5, 1.5]]
    )
    window = [0.0, 0.0, 1.0, 1.0]
    np.testing.assert_allclose(
        box_ops.clip_to_window(boxes, window),
        [[0.0, 0.2, 0.5, 1.0], [0.1, 0.1, 0.4, 0.4], [0.2, 0.2, 0.2, 0.6], [1.0, 1.0, 1.0, 1.0]],
    )
    kept, idx = box_ops.prune_outside_window(boxes, window)
    np.testing.assert_array_equal(idx, [1, 2])
    np.testing.assert_allclose(kept, boxes.numpy()[[1, 2]])
    np.testing.assert_array_equal(
        box_ops.inside_window_mask(boxes, window), [False, True, True, False]
    )
    kept, idx = box_ops.prune_zero_area(boxes)
    np.testing.assert_array_equal(idx, [0, 1, 3])
    np.testing.assert_array_equal(box_ops.nonzero_area_mask(boxes), [True, True, False, True])


def test_scale_and_coordinate_conversion():
    boxes = [[10.0, 20.0, 50.0, 80.0]]
    # 10 / 100, 20 / 200, 50 / 100, 80 / 200
    norm = box_ops.to_normalized_coordinates(boxes, 100, 200)
    np.testing.assert_allclose(norm, [[0.1, 0.1, 0.5, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(box_ops.to_absolute_coordinates(norm, 100, 200), boxes, rtol=1e-6)
    np.testing.assert_allclose(box_ops.scale(boxes, 2.0, 0.5), [[20.0, 10.0, 100.0, 40.0]])


def test_inside_tf_function():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, 4])])
    def fn(a, b):
        kept, _ = box_ops.prune_zero_area(a[0])
        return box_ops.iou(a, b), box_ops.ioa(a, b), kept

    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 8)[None], random_boxes(rng, 6)[None]
    iou, ioa, kept = fn(a, b)
    np.testing.assert_allclose(iou[0], np_iou(a[0], b[0]), atol=1e-6)
    assert ioa.shape == (1, 8, 6) and kept.shape == (6, 4)
