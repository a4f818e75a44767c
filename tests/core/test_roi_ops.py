import numpy as np
import pytest
import tensorflow as tf

from detbench.core import roi_ops
from detbench.protos import rpn_pb2


def np_crop(image, box, crop_h, crop_w):
    """Bilinear crop of image [H, W, C] as crop_and_resize defines it: corner
    samples at y1 * (H - 1) and y2 * (H - 1), zero outside the image."""
    height, width, _ = image.shape
    y1, x1, y2, x2 = [float(v) for v in box]

    def coords(lo, hi, n, size):
        if n == 1:
            return [0.5 * (lo + hi) * (size - 1)]
        return [lo * (size - 1) + i * (hi - lo) * (size - 1) / (n - 1) for i in range(n)]

    out = np.zeros((crop_h, crop_w, image.shape[2]))
    for i, y in enumerate(coords(y1, y2, crop_h, height)):
        for j, x in enumerate(coords(x1, x2, crop_w, width)):
            if not (0 <= y <= height - 1 and 0 <= x <= width - 1):
                continue
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            ya, xa = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
            dy, dx = y - y0, x - x0
            top = image[y0, x0] * (1 - dx) + image[y0, xa] * dx
            bottom = image[ya, x0] * (1 - dx) + image[ya, xa] * dx
            out[i, j] = top * (1 - dy) + bottom * dy
    return out


def np_maxpool(x, k, s):
    out_h, out_w = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    return np.array(
        [
            [x[i * s : i * s + k, j * s : j * s + k].max((0, 1)) for j in range(out_w)]
            for i in range(out_h)
        ]
    )


def random_rois(rng, batch, num, lo=-0.1, hi=0.8):
    yx = rng.uniform(lo, hi, (batch, num, 2))
    hw = rng.uniform(0.1, 0.5, (batch, num, 2))
    return np.concatenate([yx, yx + hw], -1).astype(np.float32)


def test_crop_and_resize_rois_values_and_maxpool():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    boxes = random_rois(rng, 2, 3)
    out = tf.function(roi_ops.crop_and_resize_rois)(features, boxes, 4).numpy()
    assert out.shape == (6, 4, 4, 3)
    for b in range(2):
        for n in range(3):
            np.testing.assert_allclose(
                out[b * 3 + n], np_crop(features[b], boxes[b, n], 4, 4), atol=1e-5
            )
    crop_fn = roi_ops.build_roi_crop_fn(rpn_pb2.RoiCrop())  # 14 -> 2x2/2 -> 7
    pooled = crop_fn(features, boxes).numpy()
    assert pooled.shape == (6, 7, 7, 3)
    np.testing.assert_allclose(
        pooled[4], np_maxpool(np_crop(features[1], boxes[1, 1], 14, 14), 2, 2), atol=1e-5
    )


def test_crop_and_resize_rois_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(1, 5, 6, 2))
    boxes = np.array([[[0.13, 0.21, 0.71, 0.83]]])
    proj = rng.normal(size=(3, 3, 2))

    def np_objective(f, bx):
        return (np_crop(f[0], bx[0, 0], 3, 3) * proj).sum()

    f_var = tf.Variable(features.astype(np.float32))
    b_var = tf.Variable(boxes.astype(np.float32))

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            crops = roi_ops.crop_and_resize_rois(f_var, b_var, 3)
            value = tf.reduce_sum(crops[0] * proj.astype(np.float32))
        return tape.gradient(value, [f_var, b_var])

    g_features, g_boxes = [g.numpy() for g in grads()]
    eps = 1e-4
    fd_features = np.zeros_like(features)
    for idx in np.ndindex(features.shape):
        hi, lo = features.copy(), features.copy()
        hi[idx] += eps
        lo[idx] -= eps
        fd_features[idx] = (np_objective(hi, boxes) - np_objective(lo, boxes)) / (2 * eps)
    fd_boxes = np.zeros_like(boxes)
    for idx in np.ndindex(boxes.shape):
        hi, lo = boxes.copy(), boxes.copy()
        hi[idx] += eps
        lo[idx] -= eps
        fd_boxes[idx] = (np_objective(features, hi) - np_objective(features, lo)) / (2 * eps)
    assert np.all(np.isfinite(g_features)) and np.abs(g_features).sum() > 0
    np.testing.assert_allclose(g_features, fd_features, atol=1e-4)
    assert np.abs(g_boxes).sum() > 0
    np.testing.assert_allclose(g_boxes, fd_boxes, rtol=1e-3, atol=1e-3)


def np_position_sensitive(features, box, crop_size, k):
    depth = features.shape[-1] // (k * k)
    y1, x1, y2, x2 = box
    step_y, step_x = (y2 - y1) / k, (x2 - x1) / k
    bins = np.zeros((k, k, depth))
    for i in range(k):
        for j in range(k):
            group = features[..., (i * k + j) * depth : (i * k + j + 1) * depth]
            sub = [y1 + i * step_y, x1 + j * step_x, y1 + (i + 1) * step_y, x1 + (j + 1) * step_x]
            bins[i, j] = np_crop(group, sub, crop_size // k, crop_size // k).mean((0, 1))
    return bins


@pytest.mark.parametrize("k,crop_size", [(3, 6), (2, 2)])
def test_position_sensitive_crop_matches_per_bin_reference(k, crop_size):
    rng = np.random.default_rng(2)
    depth = 2
    features = rng.normal(size=(2, 8, 10, k * k * depth)).astype(np.float32)
    boxes = random_rois(rng, 2, 3)
    fn = tf.function(roi_ops.position_sensitive_crop)
    pooled = fn(features, boxes, crop_size, k).numpy()
    bins = fn(features, boxes, crop_size, k, global_pool=False).numpy()
    assert pooled.shape == (6, 1, 1, depth) and bins.shape == (6, k, k, depth)
    for b in range(2):
        for n in range(3):
            expect = np_position_sensitive(features[b], boxes[b, n], crop_size, k)
            np.testing.assert_allclose(bins[b * 3 + n], expect, atol=1e-5)
            np.testing.assert_allclose(pooled[b * 3 + n, 0, 0], expect.mean((0, 1)), atol=1e-5)


def test_position_sensitive_crop_rejects_bad_sizes():
    with pytest.raises(ValueError, match="multiple of num_spatial_bins"):
        roi_ops.position_sensitive_crop(tf.zeros([1, 4, 4, 18]), tf.zeros([1, 1, 4]), 7, 3)
    with pytest.raises(ValueError, match="feature depth"):
        roi_ops.position_sensitive_crop(tf.zeros([1, 4, 4, 10]), tf.zeros([1, 1, 4]), 6, 3)


def test_fpn_level_assignment_hand_worked():
    pixels = np.array(
        [
            [0, 0, 224, 224],
            [0, 0, 112, 112],
            [10, 10, 458, 458],
            [0, 0, 2, 2],
            [0, 0, 3000, 3000],
            [5, 5, 5, 5],
            [0, 0, 112, 448],
            [0, 0, 223, 223],
        ],
        np.float32,
    )
    levels = roi_ops.fpn_levels_for_boxes(pixels, 2, 5).numpy()
    np.testing.assert_array_equal(levels, [4, 3, 5, 2, 5, 2, 4, 3])
    # Normalized boxes with the image size: 0.35 * 640 = 224 px -> level 4.
    normalized = np.array([[[0, 0, 0.35, 0.35], [0.1, 0.1, 0.275, 0.275]]], np.float32)
    levels = tf.function(roi_ops.fpn_levels_for_boxes)(normalized, 2, 6, (640, 640)).numpy()
    np.testing.assert_array_equal(levels, [[4, 3]])
    np.testing.assert_array_equal(
        roi_ops.fpn_levels_for_boxes(pixels[:3], 2, 5, k0=5).numpy(), [5, 4, 5]
    )


def test_multilevel_crop_and_resize_preserves_order():
    rng = np.random.default_rng(3)
    image = 256
    features = {
        level: rng.normal(size=(2, image >> level, image >> level, 3)).astype(np.float32)
        for level in range(2, 6)
    }
    sides = np.array([[20, 120, 250, 60, 180], [250, 10, 100, 40, 230]]) / image
    corners = rng.uniform(0, 0.1, (2, 5, 2))
    boxes = np.concatenate([corners, corners + sides[..., None]], -1).astype(np.float32)
    fn = tf.function(lambda f, b: roi_ops.multilevel_crop_and_resize(f, b, (image, image), 4))
    out = fn(features, boxes)
    assert out.shape.as_list()[1:] == [4, 4, 3]
    out = out.numpy()
    levels = roi_ops.fpn_levels_for_boxes(boxes, 2, 5, (image, image)).numpy()
    assert len(np.unique(levels)) >= 3  # the case spans several levels
    for b in range(2):
        for n in range(5):
            expect = np_crop(features[levels[b, n]][b], boxes[b, n], 4, 4)
            np.testing.assert_allclose(out[b * 5 + n], expect, atol=1e-5)
    # min/max level restrict the levels used; pooling is applied after the crop.
    pooled = roi_ops.multilevel_crop_and_resize(
        features,
        boxes,
        (image, image),
        4,
        min_level=2,
        max_level=3,
        maxpool_kernel_size=2,
        maxpool_stride=2,
    )
    expect = np_maxpool(np_crop(features[3][0], boxes[0, 2], 4, 4), 2, 2)
    np.testing.assert_allclose(pooled.numpy()[2], expect, atol=1e-5)
    with pytest.raises(ValueError, match="no features for levels"):
        roi_ops.multilevel_crop_and_resize(
            {2: features[2], 4: features[4]}, boxes, (image, image), 4
        )
