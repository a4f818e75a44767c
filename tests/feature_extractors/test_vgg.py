"""VGG-16 extractor against keras.applications' VGG16, numpy and the stride arithmetic."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detbench.errors import ConfigError
from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.feature_extractors.vgg import VGG16
from detbench.feature_extractors.weights import load_backbone_weights
from detbench.protos import feature_extractor_pb2


def config(**kwargs):
    return feature_extractor_pb2.FeatureExtractor(type="vgg16", **kwargs)


def ceil_div(n, d):
    return -(-n // d)


@pytest.fixture(scope="module")
def extractor():
    return VGG16(config())


def test_registered_with_its_capabilities():
    assert FEATURE_EXTRACTORS.get("vgg16") is VGG16
    assert VGG16.supported_output_strides == (16,)
    assert VGG16.max_stride == 32
    assert VGG16.rfcn_bins_and_crop == (7, 21)
    assert VGG16.supports_fpn is False
    with pytest.raises(ConfigError, match="output_stride"):
        VGG16.from_config(config(output_stride=8), meta_arch="faster_rcnn")
    with pytest.raises(ConfigError, match="depth_multiplier"):
        VGG16.from_config(config(depth_multiplier=0.5), meta_arch="ssd")


def test_backbone_is_keras_vgg16(extractor, tmp_path):
    ref = tf_keras.applications.VGG16(include_top=False, weights=None)
    # The 13 3x3 convolutions with bias, computed by hand: 14,714,688.
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    by_hand = sum(9 * cin * cout + cout for cin, cout in zip(widths, widths[1:]))
    backbone = extractor.build_backbone()
    assert ref.count_params() == by_hand == 14_714_688
    assert VGG16.parameter_count(backbone) == ref.count_params()
    assert [w.shape for w in backbone.weights] == [w.shape for w in ref.weights]
    # Same weights, same outputs (at 64 px SAME and VALID pools agree).
    # keras.applications' legacy .h5 weight files load layer by layer.
    ref.save_weights(str(tmp_path / "reference.h5"))
    assert load_backbone_weights(backbone, str(tmp_path / "reference.h5")).loaded == len(
        ref.weights
    )
    x = tf.random.uniform([1, 64, 64, 3], -100, 100, seed=1)
    expected = ref(x).numpy()
    np.testing.assert_allclose(
        backbone(x).numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )


def test_preprocess_is_keras_caffe_mode(extractor):
    images = np.random.RandomState(0).uniform(0, 255, [2, 5, 7, 3]).astype(np.float32)
    expected = tf_keras.applications.vgg16.preprocess_input(images.copy())
    np.testing.assert_allclose(
        extractor.preprocess(tf.constant(images)).numpy(), expected, rtol=1e-6, atol=1e-4
    )


@pytest.mark.parametrize("side", [160, 150])
def test_first_stage_is_conv5_3_at_stride_16(extractor, side):
    first_stage = extractor.build_first_stage()
    out = first_stage(tf.zeros([1, side, side, 3]))
    assert out.shape == (1, ceil_div(side, 16), ceil_div(side, 16), 512)
    # The first stage is the backbone without pool5: exactly its variables.
    backbone = extractor.build_backbone()
    assert {id(w) for w in first_stage.weights} == {id(w) for w in backbone.weights}


def test_box_classifier_is_fc6_fc7_as_convolutions(extractor):
    head = extractor.build_box_classifier()
    fc6 = 7 * 7 * 512 * 4096 + 4096
    fc7 = 4096 * 4096 + 4096
    assert VGG16.parameter_count(head) == fc6 + fc7
    for shape in [(3, 7, 7), (2, 4, 5), (1, 14, 14), (1, 1, 1)]:
        assert head(tf.zeros(shape + (512,))).shape == (shape[0], 4096)
    # On a 7x7 crop fc6 is the original fully connected fc6 over the flattened crop.
    crops = np.random.RandomState(0).uniform(0, 1, [2, 7, 7, 512]).astype(np.float32)
    k6, b6, k7, b7 = [w.numpy() for w in head.weights]
    fc6_out = np.maximum(crops.reshape(2, -1) @ k6.reshape(-1, 4096) + b6, 0)
    expected = np.maximum(fc6_out @ k7.reshape(4096, 4096) + b7, 0)
    np.testing.assert_allclose(
        head(crops).numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )


def test_ssd_feature_maps_at_300(extractor):
    ssd = extractor.build_ssd_feature_maps()
    maps = ssd(extractor.preprocess(tf.random.uniform([1, 300, 300, 3], 0, 255, seed=2)))
    # conv4_3 (stride 8), fc7 (stride 16), then 5 extras halving with SAME padding.
    assert [m.shape[1] for m in maps] == [38, 19, 10, 5, 3, 2, 1]
    assert [m.shape[2] for m in maps] == [38, 19, 10, 5, 3, 2, 1]
    assert [m.shape[3] for m in maps] == [512, 1024, 512, 256, 256, 256, 256]
    # conv4_3 is L2-normalised over channels with a scale initialised at 20.
    scales = [w for w in ssd.weights if "l2_norm" in w.name]
    assert len(scales) == 1 and scales[0].shape == (512,)
    np.testing.assert_array_equal(scales[0].numpy(), np.full(512, 20.0, np.float32))
    norms = np.linalg.norm(maps[0].numpy(), axis=-1)
    live = norms > 1e-3
    assert live.mean() > 0.5
    np.testing.assert_allclose(norms[live], 20.0, rtol=1e-4)
    # The SSD maps reuse the backbone's convolutions.
    backbone_ids = {id(w) for w in extractor.build_backbone().weights}
    assert backbone_ids <= {id(w) for w in ssd.weights}


def test_ssd_feature_maps_at_128_end_at_1x1(extractor):
    maps = extractor.build_ssd_feature_maps()(tf.zeros([1, 128, 128, 3]))
    assert [m.shape[1] for m in maps] == [16, 8, 4, 2, 1, 1, 1]


def test_frozen_batchnorm_and_weight_decay():
    frozen = VGG16(config(freeze_batchnorm=True, weight_decay=0.001))
    ssd = frozen.build_ssd_feature_maps()
    bns = [l for l in ssd.layers if isinstance(l, tf_keras.layers.BatchNormalization)]
    assert len(bns) == 10  # VGG has none; two per extra layer
    assert all(not bn.trainable for bn in bns)
    trainable = {id(w) for w in ssd.trainable_weights}
    assert not any(id(w) in trainable for bn in bns for w in bn.weights)
    before = bns[0].moving_mean.numpy().copy()
    ssd(tf.random.uniform([1, 64, 64, 3], 0, 255), training=True)
    np.testing.assert_array_equal(bns[0].moving_mean.numpy(), before)
    # weight_decay / 2 * sum(w^2) per convolution kernel (slim / Model Garden convention).
    first_stage = frozen.build_first_stage()
    kernels = [w for w in first_stage.weights if "kernel" in w.name]
    assert len(kernels) == 13
    expected = sum(0.0005 * np.sum(k.numpy() ** 2) for k in kernels)
    np.testing.assert_allclose(float(tf.add_n(first_stage.losses)), expected, rtol=1e-4)
