"""ConvolutionalBoxPredictor: shapes, anchor ordering, weight sharing, bias init."""

import math

import numpy as np
import pytest
import tensorflow as tf

from detbench.errors import ConfigError
from detbench.meta_arch.box_predictor import ConvolutionalBoxPredictor, build_box_predictor
from detbench.protos import ssd_pb2


def _maps(shapes, seed=0):
    rng = np.random.RandomState(seed)
    return [tf.constant(rng.normal(size=s).astype(np.float32)) for s in shapes]


def test_output_shapes_per_map_heads():
    # two maps of different depths and anchors per location, 4 class columns
    pred = ConvolutionalBoxPredictor(
        4, [3, 6], kernel_size=3, num_layers_before_predictor=1, depth=8
    )
    boxes, logits = pred(_maps([(2, 6, 5, 16), (2, 3, 3, 32)]))
    n = 6 * 5 * 3 + 3 * 3 * 6  # 90 + 54
    assert boxes.shape == (2, n, 4)
    assert logits.shape == (2, n, 4)
    # one tower conv + class conv + box conv per map, each kernel + bias
    assert len(pred.trainable_variables) == 2 * 3 * 2


def test_flattening_follows_anchor_order():
    """Output row (y * w + x) * A + a holds channels [a * C, (a + 1) * C) of cell (y, x)."""
    a, c = 2, 3
    pred = ConvolutionalBoxPredictor(c, [a], kernel_size=1)
    (fmap,) = _maps([(1, 2, 3, a * c)])
    pred([fmap])  # build
    pred.class_convs[0].kernel.assign(np.eye(a * c, dtype=np.float32)[None, None])
    box_kernel = np.zeros((1, 1, a * c, a * 4), np.float32)
    box_kernel[0, 0, :4, :4] = np.eye(4)  # anchor 0's box <- channels 0..3
    box_kernel[0, 0, 2:6, 4:8] = np.eye(4)  # anchor 1's box <- channels 2..5
    pred.box_convs[0].kernel.assign(box_kernel)
    boxes, logits = pred([fmap])
    f = fmap.numpy()[0]
    expected_logits = np.array(
        [f[y, x, k * c : (k + 1) * c] for y in range(2) for x in range(3) for k in range(a)]
    )
    expected_boxes = np.array(
        [
            f[y, x, 0:4] if k == 0 else f[y, x, 2:6]
            for y in range(2)
            for x in range(3)
            for k in range(a)
        ]
    )
    np.testing.assert_allclose(logits.numpy()[0], expected_logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(boxes.numpy()[0], expected_boxes, rtol=1e-5, atol=1e-6)


def test_shared_weights_across_levels():
    k, d, depth, layers, a, c = 3, 8, 16, 2, 9, 5
    pred = ConvolutionalBoxPredictor(
        c,
        [a] * 3,
        kernel_size=k,
        num_layers_before_predictor=layers,
        depth=depth,
        share_weights_across_levels=True,
    )
    boxes, logits = pred(_maps([(1, 8, 8, d), (1, 4, 4, d), (1, 2, 2, d)]))
    assert boxes.shape == (1, (64 + 16 + 4) * a, 4)
    assert logits.shape == (1, (64 + 16 + 4) * a, c)
    # one tower and one pair of outputs, whatever the number of levels
    expected = (
        (k * k * d * depth + depth)
        + (k * k * depth * depth + depth)
        + (k * k * depth * a * c + a * c)
        + (k * k * depth * a * 4 + a * 4)
    )
    assert sum(int(np.prod(v.shape)) for v in pred.trainable_variables) == expected
    assert len(pred.trainable_variables) == 2 * (layers + 2)


def test_shared_weights_need_equal_depths_and_anchors():
    with pytest.raises(ConfigError, match="anchors per location"):
        ConvolutionalBoxPredictor(3, [3, 6], share_weights_across_levels=True)
    pred = ConvolutionalBoxPredictor(3, [3, 3], share_weights_across_levels=True)
    with pytest.raises(ConfigError, match="equal depth"):
        pred(_maps([(1, 4, 4, 8), (1, 2, 2, 16)]))


def test_class_prior_bias_init():
    p = 0.01
    sigmoid = ConvolutionalBoxPredictor(3, [2], class_prior_probability=p)
    zeros = [tf.zeros([1, 2, 2, 4])]
    _, logits = sigmoid(zeros)
    np.testing.assert_allclose(tf.sigmoid(logits).numpy(), p, rtol=1e-5)
    softmax = ConvolutionalBoxPredictor(4, [2], class_prior_probability=p, background_column=True)
    _, logits = softmax(zeros)
    bias = softmax.class_convs[0].bias.numpy().reshape(2, 4)
    np.testing.assert_allclose(bias[:, 0], math.log(99.0), rtol=1e-6)
    np.testing.assert_allclose(bias[:, 1:], 0.0)
    # background starts at 99 / (99 + 3)
    np.testing.assert_allclose(tf.nn.softmax(logits)[..., 0].numpy(), 99.0 / 102.0, rtol=1e-5)
    _, logits = ConvolutionalBoxPredictor(3, [2])(zeros)
    np.testing.assert_allclose(logits.numpy(), 0.0)


def test_build_from_proto_defaults():
    config = ssd_pb2.ConvolutionalBoxPredictor()
    pred = build_box_predictor(config, 7, [4, 6])
    assert (pred.kernel_size, pred.num_layers_before_predictor, pred.depth) == (3, 0, 256)
    assert not pred.share_weights
    boxes, logits = pred(_maps([(1, 4, 4, 8), (1, 2, 2, 8)]))
    assert boxes.shape == (1, 16 * 4 + 4 * 6, 4) and logits.shape == (1, 16 * 4 + 4 * 6, 7)


def test_runs_under_tf_function_with_unknown_batch():
    pred = ConvolutionalBoxPredictor(3, [2, 2], num_layers_before_predictor=1, depth=8)

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 8]), tf.TensorSpec([None, 2, 2, 8])])
    def run(a, b):
        boxes, logits = pred([a, b])
        assert boxes.shape.as_list() == [None, 40, 4]  # anchor dim stays static
        return boxes, logits

    boxes, logits = run(tf.zeros([3, 4, 4, 8]), tf.zeros([3, 2, 2, 8]))
    assert boxes.shape == (3, 40, 4) and logits.shape == (3, 40, 3)


def test_separate_class_and_box_towers():
    """RetinaNet's two subnets: the box encodings do not depend on the class tower."""
    k, d, depth, layers, a, c = 3, 8, 16, 2, 9, 5
    pred = ConvolutionalBoxPredictor(
        c,
        [a] * 2,
        kernel_size=k,
        num_layers_before_predictor=layers,
        depth=depth,
        share_weights_across_levels=True,
        separate_class_and_box_towers=True,
    )
    maps = _maps([(1, 8, 8, d), (1, 4, 4, d)])
    boxes, logits = pred(maps)
    assert boxes.shape == (1, 80 * a, 4) and logits.shape == (1, 80 * a, c)
    tower = (k * k * d * depth + depth) + (k * k * depth * depth + depth)
    expected = 2 * tower + (k * k * depth * a * c + a * c) + (k * k * depth * a * 4 + a * 4)
    assert sum(int(np.prod(v.shape)) for v in pred.trainable_variables) == expected
    # zeroing the class tower changes the logits, not the boxes
    for conv in pred.towers[0]:
        conv.kernel.assign(tf.zeros_like(conv.kernel))
    boxes2, logits2 = pred(maps)
    np.testing.assert_array_equal(boxes2.numpy(), boxes.numpy())
    assert not np.allclose(logits2.numpy(), logits.numpy())
    config = ssd_pb2.ConvolutionalBoxPredictor(
        num_layers_before_predictor=1, separate_class_and_box_towers=True
    )
    assert build_box_predictor(config, 3, [2]).separate_towers
