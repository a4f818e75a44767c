"""The shared image frame: resize, pad and boxes mapped between the true
image and the network input, against hand-worked numbers."""

import numpy as np
import tensorflow as tf

from detbench.meta_arch import image_frame
from detbench.protos import image_resizer_pb2


def test_keep_aspect_ratio_resize_pads_to_the_multiple():
    # 100 x 200 image, min 64 / max 100: the long side caps -> 50 x 100 true
    # image, padded to multiples of 32 -> 64 x 128 input.
    frame = image_frame.ImageFrame(min_dimension=64, max_dimension=100, pad_multiple=32)
    inputs, true_shapes = frame(tf.fill([2, 100, 200, 3], 7.0))
    assert tuple(inputs.shape) == (2, 64, 128, 3)
    np.testing.assert_array_equal(true_shapes.numpy(), [[50, 100, 3]] * 2)
    np.testing.assert_allclose(inputs[:, :50, :100].numpy(), 7.0)
    assert not inputs[:, 50:].numpy().any() and not inputs[:, :, 100:].numpy().any()


def test_fixed_size_pads_after_normalizing():
    # SSD's frame: a fixed 80 x 80 with an FPN's stride 32 -> 96 x 96; the
    # normalization applies to the image, the padding stays zero.
    frame = image_frame.ImageFrame((80, 80), pad_multiple=32, normalize=lambda x: x - 100.0)
    inputs, true_shapes = frame(tf.fill([1, 40, 60, 3], 100.0))
    assert tuple(inputs.shape) == (1, 96, 96, 3)
    np.testing.assert_array_equal(true_shapes.numpy(), [[80, 80, 3]])
    assert not inputs.numpy().any()
    inputs, _ = frame(tf.fill([1, 40, 60, 3], 110.0))
    np.testing.assert_allclose(inputs[0, :80, :80].numpy(), 10.0)
    assert not inputs[0, 80:].numpy().any() and not inputs[0, :, 80:].numpy().any()


def test_unknown_input_size_in_a_graph_gets_the_fixed_size():
    # tf.data and exported signatures see [None, None, 3] images: a fixed
    # 32 x 32 frame resizes them (same pixels as eagerly), static output shape.
    frame = image_frame.ImageFrame((32, 32), pad_multiple=1)
    traced = tf.function(frame, input_signature=[tf.TensorSpec([1, None, None, 3])])
    images = tf.reshape(tf.range(64 * 48 * 3, dtype=tf.float32), [1, 64, 48, 3])
    inputs, true_shapes = traced(images)
    assert traced.get_concrete_function().structured_outputs[0].shape.as_list() == [1, 32, 32, 3]
    np.testing.assert_allclose(inputs.numpy(), frame(images)[0].numpy())
    np.testing.assert_array_equal(true_shapes.numpy(), [[32, 32, 3]])


def test_from_resizer_defaults_and_square_padding():
    frame = image_frame.ImageFrame.from_resizer(image_resizer_pb2.ImageResizer())
    assert (frame.fixed_size, frame.min_dimension, frame.max_dimension) == (None, 600, 1024)
    resizer = image_resizer_pb2.ImageResizer()
    resizer.keep_aspect_ratio.min_dimension = 64
    resizer.keep_aspect_ratio.max_dimension = 100
    resizer.keep_aspect_ratio.pad_to_max_dimension = True
    frame = image_frame.ImageFrame.from_resizer(resizer, pad_multiple=32)
    inputs, true_shapes = frame(tf.zeros([1, 100, 150, 3]))
    # short side 64 -> 64 x 96, padded to the 100 square rounded up to 128
    assert tuple(inputs.shape) == (1, 128, 128, 3)
    np.testing.assert_array_equal(true_shapes.numpy(), [[64, 96, 3]])


def test_boxes_round_trip_through_the_input_frame():
    # Input 64 x 128 holding a 48 x 96 true image (and a 64 x 128 one).
    true_shapes = tf.constant([[48, 96, 3], [64, 128, 3]])
    boxes = np.array([[[0.5, 0.25, 1.0, 0.75]], [[0.1, 0.2, 0.3, 0.4]]], np.float32)
    inside = image_frame.to_input_frame(boxes, true_shapes, (64, 128)).numpy()
    # y: 24..48 px of 64; x: 24..72 px of 128
    np.testing.assert_allclose(inside[0, 0], [24 / 64, 24 / 128, 48 / 64, 72 / 128])
    np.testing.assert_allclose(inside[1], boxes[1])
    back = image_frame.to_true_frame(tf.constant(inside), true_shapes, tf.constant([64, 128]))
    np.testing.assert_allclose(back.numpy(), boxes, rtol=1e-6)
    # class-specific boxes [B, N, q, 4] map the same way
    four = image_frame.to_true_frame(tf.constant(inside[:, :, None]), true_shapes, (64, 128))
    np.testing.assert_allclose(four.numpy()[:, :, 0], boxes, rtol=1e-6)
    window = image_frame.true_window(true_shapes, (64, 128)).numpy()
    np.testing.assert_allclose(window, [[0, 0, 0.75, 0.75], [0, 0, 1, 1]])


def test_resize_pad_and_map_back_keeps_a_box_on_its_pixels():
    # A bright 20 x 40 px rectangle at rows 10..30, cols 40..80 of a 100 x 200
    # image -> a 50 x 100 true image padded to 64 x 128: the rectangle's box,
    # found in the input's pixels, maps back to the box it had.
    image = np.zeros([1, 100, 200, 3], np.float32)
    image[0, 10:30, 40:80] = 255.0
    frame = image_frame.ImageFrame(min_dimension=64, max_dimension=100, pad_multiple=32)
    inputs, true_shapes = frame(tf.constant(image))
    rows, cols = np.nonzero(inputs.numpy()[0, :, :, 0] > 127.5)
    found = np.array([[[rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]]], np.float32)
    found /= np.array([64, 128, 64, 128], np.float32)
    back = image_frame.to_true_frame(tf.constant(found), true_shapes, (64, 128)).numpy()
    np.testing.assert_allclose(back[0, 0], [0.1, 0.2, 0.3, 0.4], atol=1e-6)


def test_groundtruth_in_input_frame_defaults_the_count():
    gt = {
        "groundtruth_boxes": tf.constant([[[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]]]),
        "groundtruth_classes": tf.constant([[1, 2]]),
    }
    out = image_frame.groundtruth_in_input_frame(gt, tf.constant([[32, 64, 3]]), (64, 64))
    np.testing.assert_allclose(out["boxes"][0].numpy(), [[0, 0, 0.5, 1], [0.25, 0.5, 0.5, 1]])
    assert out["num"].numpy().tolist() == [2] and "is_crowd" not in out
