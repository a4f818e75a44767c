"""Inception-ResNet-v2 extractor against keras.applications' InceptionResNetV2, the
stride arithmetic and the a-trous identity (output stride 8 vs 16)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.feature_extractors.inception_resnet_v2 import InceptionResNetV2
from detbench.feature_extractors.layers import ConvView
from detbench.protos import feature_extractor_pb2


def config(**kwargs):
    return feature_extractor_pb2.FeatureExtractor(type="inception_resnet_v2", **kwargs)


def valid(n, k=3, s=2):
    return (n - k) // s + 1


def stride8_side(h):
    """Side after the VALID stem: 3x3/2, 3x3, (3x3 SAME), pool 3/2, (1x1), 3x3, pool 3/2."""
    return valid(valid(valid(h) - 2) - 2)


# The network is big: build each extractor once per module.
@pytest.fixture(scope="module")
def extractor():
    return InceptionResNetV2(config())


@pytest.fixture(scope="module")
def extractor_os8():
    return InceptionResNetV2(config(output_stride=8))


def test_registered_with_its_capabilities():
    assert FEATURE_EXTRACTORS.get("inception_resnet_v2") is InceptionResNetV2
    assert InceptionResNetV2.supported_output_strides == (8, 16)
    assert InceptionResNetV2.max_stride == 32
    assert InceptionResNetV2.rfcn_bins_and_crop == (7, 21)
    assert InceptionResNetV2.supports_fpn is False
    InceptionResNetV2.from_config(config(output_stride=8), meta_arch="rfcn")


def test_backbone_is_keras_inception_resnet_v2(extractor):
    ref = tf_keras.applications.InceptionResNetV2(include_top=False, weights=None)
    backbone = extractor.build_backbone()
    assert ref.count_params() == 54_336_736  # keras.applications' documented number
    assert InceptionResNetV2.parameter_count(backbone) == ref.count_params()
    assert [w.shape for w in backbone.weights] == [w.shape for w in ref.weights]
    # Same weights, same outputs: the same layers in the same order.
    backbone.set_weights(ref.get_weights())
    x = tf.random.uniform([1, 75, 75, 3], -1, 1, seed=1)
    expected = ref(x).numpy()
    assert expected.shape == (1, 1, 1, 1536)  # 75 px: the smallest input
    np.testing.assert_allclose(
        backbone(x).numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )


def test_first_stage_at_stride_16(extractor):
    out = extractor.build_first_stage()(tf.random.uniform([1, 160, 160, 3], -1, 1))
    s16 = valid(stride8_side(160))
    assert s16 == 8 and out.shape == (1, 8, 8, 1088)


def test_first_stage_at_stride_8_is_atrous_with_the_same_variables(extractor, extractor_os8):
    first16 = extractor.build_first_stage()
    first8 = extractor_os8.build_first_stage()  # built alone, as a two-stage model does
    assert [w.shape for w in first8.weights] == [w.shape for w in first16.weights]
    views = [l for l in first8.layers if isinstance(l, ConvView)]
    assert len(views) == 2 + 2 * 20  # Mixed_6a's two stride-2 convs, block17's 1x7 and 7x1
    assert all(v.weights == v.conv.weights for v in views)
    # A-trous identity: with the same variables, the stride-8 map sampled at odd
    # positions is the stride-16 map (exact when the stride-8 side is odd).
    first8.set_weights(first16.get_weights())
    x = tf.random.uniform([1, 160, 160, 3], -1, 1, seed=3)
    out16, out8 = first16(x).numpy(), first8(x).numpy()
    s8 = stride8_side(160)
    assert s8 % 2 == 1 and out8.shape == (1, s8, s8, 1088) and s8 == 2 * out16.shape[1] + 1
    np.testing.assert_allclose(
        out8[:, 1::2, 1::2], out16, rtol=1e-3, atol=1e-4 * np.abs(out16).max()
    )


def test_box_classifier_is_mixed_7a_to_conv_7b_and_shares_the_backbone(extractor):
    head = extractor.build_box_classifier()
    for shape in [(3, 7, 7), (1, 2, 5)]:
        assert head(tf.zeros(shape + (1088,))).shape == (shape[0], 1536)
    first = {id(w) for w in extractor.build_first_stage().weights}
    second = {id(w) for w in head.weights}
    assert not first & second
    assert first | second == {id(w) for w in extractor.build_backbone().weights}


def test_ssd_feature_maps(extractor):
    maps = extractor.build_ssd_feature_maps()(tf.random.uniform([1, 160, 160, 3], -1, 1))
    # stride 16 (Mixed_6a + block17s), Conv2d_7b (stride 32), 512/256/128 halving (SAME).
    assert [tuple(m.shape) for m in maps] == [
        (1, 8, 8, 1088),
        (1, 3, 3, 1536),
        (1, 2, 2, 512),
        (1, 1, 1, 256),
        (1, 1, 1, 128),
    ]


def test_frozen_batchnorm(extractor):
    frozen = InceptionResNetV2(config(freeze_batchnorm=True))
    model = frozen.build_box_classifier()  # the smaller half of the network
    bns = [l for l in model.layers if isinstance(l, tf_keras.layers.BatchNormalization)]
    assert len(bns) == 7 + 10 * 4 + 1  # Mixed_7a, block8 x 10, Conv2d_7b
    assert all(not bn.trainable for bn in bns)
    trainable = {id(w) for w in model.trainable_weights}
    assert not any(id(w) in trainable for bn in bns for w in bn.weights)
    assert all(
        bn.trainable
        for bn in extractor.build_box_classifier().layers
        if isinstance(bn, tf_keras.layers.BatchNormalization)
    )
    before = bns[0].moving_mean.numpy().copy()
    model(tf.random.uniform([2, 7, 7, 1088]), training=True)
    np.testing.assert_array_equal(bns[0].moving_mean.numpy(), before)
