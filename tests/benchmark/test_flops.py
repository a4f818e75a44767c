"""count_flops against FLOPs worked out by hand (multiply-add = 2 FLOPs)."""

import numpy as np
import tensorflow as tf
import tf_keras

from detbench.benchmark.flops import count_flops


def test_conv2d_with_bias_by_hand():
    # one 3x3 conv 8->16, 'same', on 32x32: 2*3*3*8 FLOPs per output value, 16*32*32 values;
    # BiasAdd adds one FLOP per output value.
    kernel = tf.random.normal([3, 3, 8, 16])
    bias = tf.zeros([16])

    @tf.function
    def conv(x):
        return tf.nn.bias_add(tf.nn.conv2d(x, kernel, 1, "SAME"), bias)

    expected = 2 * 3 * 3 * 8 * 16 * 32 * 32 + 16 * 32 * 32
    assert count_flops(conv, tf.TensorSpec([1, 32, 32, 8])) == expected == 2_375_680


def test_strided_dilated_and_depthwise_convs():
    kernel = tf.random.normal([3, 3, 8, 16])
    dw = tf.random.normal([3, 3, 8, 1])
    x = tf.zeros([2, 32, 32, 8])
    strided = count_flops(lambda x: tf.nn.conv2d(x, kernel, 2, "SAME"), x)
    assert strided == 2 * 3 * 3 * 8 * 16 * 2 * 16 * 16  # output 16x16, batch 2
    dilated = count_flops(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME", dilations=2), x)
    assert dilated == 2 * 3 * 3 * 8 * 16 * 2 * 32 * 32  # dilation: same MACs
    depthwise = count_flops(lambda x: tf.nn.depthwise_conv2d(x, dw, [1, 1, 1, 1], "SAME"), x)
    assert depthwise == 2 * 3 * 3 * 8 * 2 * 32 * 32  # one filter per channel


def test_matmul_and_batch_matmul():
    a, b = np.ones([4, 5], np.float32), np.ones([5, 3], np.float32)
    assert count_flops(lambda a, b: tf.matmul(a, b), (a, b)) == 2 * 4 * 3 * 5
    a3, b3 = np.ones([6, 4, 5], np.float32), np.ones([6, 5, 3], np.float32)
    assert count_flops(lambda a, b: tf.matmul(a, b), [a3, b3]) == 6 * 2 * 4 * 3 * 5


def test_keras_model_inference():
    # conv 3x3 3->4 no bias, BN (folded scale + shift: 2 per value), ReLU (0), dense 4->2 with bias
    inputs = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf_keras.layers.Dense(2)(x)
    model = tf_keras.Model(inputs, outputs)
    got = count_flops(lambda x: model(x, training=False), tf.TensorSpec([1, 8, 8, 3]))
    conv = 2 * 3 * 3 * 3 * 4 * 8 * 8
    bn = 2 * 4 * 8 * 8
    mean = 4 * 8 * 8  # Mean: one per input value
    dense = 2 * 4 * 2 + 2  # MatMul + BiasAdd
    assert got == conv + bn + mean + dense
