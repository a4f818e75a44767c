"""Inception v3 extractor against keras.applications' InceptionV3 and the stride arithmetic."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.feature_extractors.inception_v3 import InceptionV3
from detbench.feature_extractors.weights import load_backbone_weights
from detbench.protos import feature_extractor_pb2


def config(**kwargs):
    return feature_extractor_pb2.FeatureExtractor(type="inception_v3", **kwargs)


def valid(n, k=3, s=2):
    return (n - k) // s + 1


def stride8_side(h):
    """Side after the VALID stem: 3x3/2, 3x3, (3x3 SAME), pool 3/2, (1x1), 3x3, pool 3/2."""
    return valid(valid(valid(h) - 2) - 2)


@pytest.fixture(scope="module")
def extractor():
    return InceptionV3(config())


def test_registered_with_its_capabilities():
    assert FEATURE_EXTRACTORS.get("inception_v3") is InceptionV3
    assert InceptionV3.supported_output_strides == (16,)
    assert InceptionV3.max_stride == 32
    assert InceptionV3.rfcn_bins_and_crop == (7, 21)
    assert InceptionV3.supports_fpn is False


def test_backbone_is_keras_inception_v3(extractor, tmp_path):
    ref = tf_keras.applications.InceptionV3(include_top=False, weights=None)
    backbone = extractor.build_backbone()
    assert ref.count_params() == 21_802_784  # keras.applications' documented number
    assert InceptionV3.parameter_count(backbone) == ref.count_params()
    assert [w.shape for w in backbone.weights] == [w.shape for w in ref.weights]
    # Same weights, same outputs: the same layers in the same order.
    # keras.applications' legacy .h5 weight files load layer by layer.
    ref.save_weights(str(tmp_path / "reference.h5"))
    assert load_backbone_weights(backbone, str(tmp_path / "reference.h5")).loaded == len(
        ref.weights
    )
    x = tf.random.uniform([1, 107, 107, 3], -1, 1, seed=1)
    expected = ref(x).numpy()
    assert expected.shape == (1, 2, 2, 2048)
    np.testing.assert_allclose(
        backbone(x).numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )


@pytest.mark.parametrize("side", [160, 43])
def test_first_stage_is_mixed_6e_at_stride_16(extractor, side):
    out = extractor.build_first_stage()(tf.random.uniform([1, side, side, 3], -1, 1))
    s16 = valid(stride8_side(side))
    assert out.shape == (1, s16, s16, 768)
    assert side != 43 or s16 == 1  # 43 px is the smallest input of the first stage


def test_box_classifier_is_mixed_7_and_shares_the_backbone(extractor):
    head = extractor.build_box_classifier()
    for shape in [(3, 7, 7), (2, 3, 5), (1, 1, 1)]:
        assert head(tf.zeros(shape + (768,))).shape == (shape[0], 2048)
    first = {id(w) for w in extractor.build_first_stage().weights}
    second = {id(w) for w in head.weights}
    assert not first & second
    assert first | second == {id(w) for w in extractor.build_backbone().weights}


@pytest.mark.parametrize("side", [160, 75])
def test_ssd_feature_maps(extractor, side):
    maps = extractor.build_ssd_feature_maps()(tf.random.uniform([1, side, side, 3], -1, 1))
    s16 = valid(stride8_side(side))
    s32 = valid(s16)
    sides = [s16, s32]
    for _ in range(4):
        sides.append(-(-sides[-1] // 2))  # 3x3 stride 2 SAME
    assert [m.shape[1] for m in maps] == sides
    assert [m.shape[3] for m in maps] == [768, 2048, 512, 256, 256, 128]
    if side == 160:
        assert sides == [8, 3, 2, 1, 1, 1]
    else:  # 75 px: the smallest input of the whole network
        assert sides[:2] == [3, 1]


def test_frozen_batchnorm():
    model = InceptionV3(config(freeze_batchnorm=True)).build_box_classifier()
    bns = [l for l in model.layers if isinstance(l, tf_keras.layers.BatchNormalization)]
    assert len(bns) == 6 + 9 + 9  # Mixed_7a, Mixed_7b, Mixed_7c
    assert all(not bn.trainable for bn in bns)
    trainable = {id(w) for w in model.trainable_weights}
    assert not any(id(w) in trainable for bn in bns for w in bn.weights)
    before = bns[-1].moving_variance.numpy().copy()
    model(tf.random.uniform([2, 7, 7, 768]), training=True)
    np.testing.assert_array_equal(bns[-1].moving_variance.numpy(), before)
