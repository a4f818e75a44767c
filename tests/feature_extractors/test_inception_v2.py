"""Inception v2 (BN-Inception) extractor against TF-slim's layer table and the stride arithmetic.

keras.applications has no Inception v2, so the reference parameter count is
computed here from TF-slim's ``inception_v2_base`` (research/slim/nets/
inception_v2.py, defaults): every convolution without bias followed by batch
norm without scale (slim's ``inception_arg_scope``), i.e. beta, moving mean
and moving variance per channel.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.feature_extractors.inception_v2 import InceptionV2
from detbench.feature_extractors.layers import LayerBank, ssd_extra_layers
from detbench.protos import feature_extractor_pb2

# slim's inception_v2_base, module by module: depths of
# (Branch_0 1x1, Branch_1 1x1 -> 3x3, Branch_2 1x1 -> 3x3 -> 3x3, Branch_3 pool -> 1x1).
# Mixed_4a / Mixed_5a are the stride-2 modules: no 1x1 branch, a plain max pool.
SLIM_TABLE = [
    # name      b0    b1          b2          b3
    ("Mixed_3b", 64, (64, 64), (64, 96, 96), 32),
    ("Mixed_3c", 64, (64, 96), (64, 96, 96), 64),
    ("Mixed_4a", 0, (128, 160), (64, 96, 96), 0),
    ("Mixed_4b", 224, (64, 96), (96, 128, 128), 128),
    ("Mixed_4c", 192, (96, 128), (96, 128, 128), 128),
    ("Mixed_4d", 160, (128, 160), (128, 160, 160), 96),
    ("Mixed_4e", 96, (128, 192), (160, 192, 192), 96),
    ("Mixed_5a", 0, (128, 192), (192, 256, 256), 0),
    ("Mixed_5b", 352, (192, 320), (160, 224, 224), 128),
    ("Mixed_5c", 352, (192, 320), (192, 224, 224), 128),
]


def slim_parameter_count(first="Mixed_3b", last="Mixed_5c", with_stem=True):
    def conv_bn(k, cin, cout):
        return k * k * cin * cout + 3 * cout

    total, channels = 0, 192
    if with_stem:
        # Conv2d_1a_7x7: separable, depthwise 7x7x3x8 then pointwise 1x1x24x64; then
        # Conv2d_2b_1x1 64 and Conv2d_2c_3x3 192.
        total = 7 * 7 * 3 * 8 + 24 * 64 + 3 * 64 + conv_bn(1, 64, 64) + conv_bn(3, 64, 192)
    names = [row[0] for row in SLIM_TABLE]
    counted = names[names.index(first) : names.index(last) + 1]
    for name, b0, b1, b2, b3 in SLIM_TABLE[: names.index(last) + 1]:
        cin, params = channels, 0
        if b0:
            params += conv_bn(1, cin, b0)
        params += conv_bn(1, cin, b1[0]) + conv_bn(3, b1[0], b1[1])
        params += conv_bn(1, cin, b2[0]) + conv_bn(3, b2[0], b2[1]) + conv_bn(3, b2[1], b2[2])
        if b3:
            params += conv_bn(1, cin, b3)
        total += params if name in counted else 0
        channels = b0 + b1[-1] + b2[-1] + (b3 if b3 else cin)
    return total, channels


def config(**kwargs):
    return feature_extractor_pb2.FeatureExtractor(type="inception_v2", **kwargs)


def ceil_div(n, d):
    return -(-n // d)


@pytest.fixture(scope="module")
def extractor():
    return InceptionV2(config())


def test_registered_with_its_capabilities():
    assert FEATURE_EXTRACTORS.get("inception_v2") is InceptionV2
    assert InceptionV2.supported_output_strides == (16,)
    assert InceptionV2.max_stride == 32
    assert InceptionV2.rfcn_bins_and_crop == (3, 12)
    assert InceptionV2.supports_fpn is False


def test_backbone_has_slims_parameter_count(extractor):
    expected, channels = slim_parameter_count()
    assert (expected, channels) == (10_173_240, 1024)
    backbone = extractor.build_backbone()
    assert InceptionV2.parameter_count(backbone) == expected
    assert backbone.output_shape == (None, None, None, 1024)
    # slim's trainable variables: all but the two moving statistics per BN channel.
    bn_channels = sum(
        l.moving_mean.shape[0]
        for l in backbone.layers
        if isinstance(l, tf_keras.layers.BatchNormalization)
    )
    assert InceptionV2.parameter_count(backbone, trainable_only=True) == expected - 2 * bn_channels


def test_preprocess_scales_to_minus_one_one(extractor):
    images = np.random.RandomState(0).uniform(0, 255, [2, 5, 7, 3]).astype(np.float32)
    expected = tf_keras.applications.inception_v3.preprocess_input(images.copy())
    np.testing.assert_allclose(
        extractor.preprocess(tf.constant(images)).numpy(), expected, rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("side", [160, 150])
def test_first_stage_is_mixed_4e_at_stride_16(extractor, side):
    first_stage = extractor.build_first_stage()
    out = first_stage(extractor.preprocess(tf.random.uniform([1, side, side, 3], 0, 255)))
    assert out.shape == (1, ceil_div(side, 16), ceil_div(side, 16), 576)  # SAME padding
    stem_to_4e, _ = slim_parameter_count(last="Mixed_4e")
    assert InceptionV2.parameter_count(first_stage) == stem_to_4e


def test_box_classifier_is_mixed_5_and_shares_the_backbone(extractor):
    head = extractor.build_box_classifier()
    for shape in [(3, 7, 7), (2, 3, 5), (1, 1, 1)]:
        assert head(tf.zeros(shape + (576,))).shape == (shape[0], 1024)
    mixed_5, _ = slim_parameter_count("Mixed_5a", "Mixed_5c", with_stem=False)
    assert InceptionV2.parameter_count(head) == mixed_5
    first = {id(w) for w in extractor.build_first_stage().weights}
    second = {id(w) for w in head.weights}
    assert not first & second
    assert first | second == {id(w) for w in extractor.build_backbone().weights}


def test_ssd_feature_maps(extractor):
    ssd = extractor.build_ssd_feature_maps()
    maps = ssd(extractor.preprocess(tf.random.uniform([1, 160, 160, 3], 0, 255)))
    # Mixed_4c (stride 16), Mixed_5c (stride 32), then 512/256/256/128 halving (SAME).
    assert [tuple(m.shape) for m in maps] == [
        (1, 10, 10, 576),
        (1, 5, 5, 1024),
        (1, 3, 3, 512),
        (1, 2, 2, 256),
        (1, 1, 1, 256),
        (1, 1, 1, 128),
    ]
    # Extra layers: 1x1 conv d/2 and 3x3 conv d, each with a scaled BN (4 per channel).
    extras = sum(
        cin * (d // 2) + 4 * (d // 2) + 3 * 3 * (d // 2) * d + 4 * d
        for cin, d in zip([1024, 512, 256, 256], [512, 256, 256, 128])
    )
    assert InceptionV2.parameter_count(ssd) == 10_173_240 + extras


@pytest.mark.parametrize("freeze", [True, False])
def test_batchnorm_frozen_or_trained(freeze):
    extractor = InceptionV2(config(freeze_batchnorm=freeze))
    model = extractor.build_box_classifier()  # the smaller part of the network
    bns = [l for l in model.layers if isinstance(l, tf_keras.layers.BatchNormalization)]
    assert len(bns) == 5 + 7 + 7  # Mixed_5a, Mixed_5b, Mixed_5c
    assert all(bn.trainable is not freeze for bn in bns)
    bn_weights = {id(w) for bn in bns for w in bn.weights}
    assert any(id(w) in bn_weights for w in model.trainable_weights) is not freeze
    before = bns[0].moving_mean.numpy().copy()
    model(tf.random.uniform([2, 7, 7, 576]), training=True)
    changed = not np.array_equal(bns[0].moving_mean.numpy(), before)
    assert changed is not freeze


@pytest.mark.parametrize("use_depthwise", [False, True])
def test_ssd_extra_layers(use_depthwise):
    bank = LayerBank(config(use_depthwise=use_depthwise))
    maps = ssd_extra_layers(bank, tf.zeros([1, 5, 5, 64]), (32, 16), use_depthwise)
    assert [tuple(m.shape) for m in maps] == [(1, 3, 3, 32), (1, 2, 2, 16)]
    params = sum(int(np.prod(w.shape)) for layer in bank.layers.values() for w in layer.weights)
    bn = 4 * (16 + 32 + 8 + 16)  # scaled batch norm after every convolution
    if use_depthwise:  # 1x1 to d/2, depthwise 3x3 stride 2, pointwise to d
        assert params == 64 * 16 + 9 * 16 + 16 * 32 + 32 * 8 + 9 * 8 + 8 * 16 + bn
    else:  # 1x1 to d/2, 3x3 stride 2 to d
        assert params == 64 * 16 + 9 * 16 * 32 + 32 * 8 + 9 * 8 * 16 + bn
