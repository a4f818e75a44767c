"""MobileNet v1/v2 extractors: counts against keras.applications, shapes and channels by hand."""

import math

import pytest
import tensorflow as tf
import tf_keras

from detbench.errors import ConfigError
from detbench.feature_extractors import mobilenet  # noqa: F401  (registers mobilenet_v1/v2)
from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.protos import feature_extractor_pb2 as pb


def make(name, meta_arch=None, **fields):
    config = pb.FeatureExtractor(type=name, **fields)
    return FEATURE_EXTRACTORS.get(name).from_config(config, meta_arch=meta_arch)


# keras.applications, include_top=False, weights=None (the same BN placement, no conv biases).
KERAS = {
    "mobilenet_v1": tf_keras.applications.MobileNet,
    "mobilenet_v2": tf_keras.applications.MobileNetV2,
}
# channels: first stage, box classifier output, the 6 SSD maps
CHANNELS = {
    "mobilenet_v1": (512, 1024, [512, 1024, 512, 256, 256, 128]),
    "mobilenet_v2": (96, 1280, [576, 1280, 512, 256, 256, 128]),
}


@pytest.fixture(scope="module", params=["mobilenet_v1", "mobilenet_v2"])
def fe(request):
    return request.param, make(request.param)


def test_parameter_count_matches_keras_applications(fe):
    name, extractor = fe
    ref = KERAS[name](include_top=False, weights=None, alpha=1.0, input_shape=(224, 224, 3))
    expected = {"mobilenet_v1": 3_228_864, "mobilenet_v2": 2_257_984}[name]
    assert extractor.parameter_count(extractor.build_backbone()) == ref.count_params() == expected


def test_two_stage_and_ssd_shapes(fe):
    name, extractor = fe
    first, box, ssd = CHANNELS[name]
    x = extractor.preprocess(tf.random.uniform([1, 128, 96, 3], 0, 255))
    assert extractor.build_first_stage()(x).shape == (1, 8, 6, first)
    classifier = extractor.build_box_classifier()
    assert classifier(tf.zeros([2, 7, 7, first])).shape == (2, box)
    assert classifier(tf.zeros([1, 3, 5, first])).shape == (1, box)
    maps = extractor.build_ssd_feature_maps()(x)
    assert [m.shape[-1] for m in maps] == ssd
    assert [tuple(m.shape[1:3]) for m in maps] == [
        (math.ceil(128 / s), math.ceil(96 / s)) for s in (16, 32, 64, 128, 256, 512)
    ]
    assert extractor.rfcn_bins_and_crop == (3, 12)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_output_strides(name):
    fes = {s: make(name, output_stride=s, meta_arch="rfcn") for s in (8, 16, 32)}
    x = tf.zeros([1, 100, 76, 3])
    for s, extractor in fes.items():
        out = extractor.build_first_stage()(x)
        assert out.shape[1:3] == (math.ceil(100 / s), math.ceil(76 / s))
    shapes = {s: [tuple(v.shape) for v in e.build_first_stage().variables] for s, e in fes.items()}
    assert shapes[8] == shapes[16] == shapes[32]
    x = tf.zeros([1, 128, 128, 3])
    assert (
        fes[8].build_first_stage()(x).shape[1] == 16 == 2 * fes[16].build_first_stage()(x).shape[1]
    )
    with pytest.raises(ConfigError, match="output_stride"):
        make(name, output_stride=64, meta_arch="faster_rcnn")


def test_mobilenet_v1_depth_multiplier_half():
    extractor = make("mobilenet_v1", depth_multiplier=0.5)
    # keras MobileNet(alpha=0.5) uses int(d * 0.5); every layer stays >= min_depth 16.
    ref = tf_keras.applications.MobileNet(
        include_top=False, weights=None, alpha=0.5, input_shape=(224, 224, 3)
    )
    assert extractor.parameter_count(extractor.build_backbone()) == ref.count_params() == 829_536
    x = tf.zeros([1, 64, 64, 3])
    assert extractor.build_first_stage()(x).shape[-1] == 256  # 512 * 0.5
    assert extractor.build_box_classifier()(tf.zeros([1, 7, 7, 256])).shape[-1] == 512  # 1024 * 0.5
    maps = extractor.build_ssd_feature_maps()(x)
    assert [m.shape[-1] for m in maps] == [256, 512, 256, 128, 128, 64]


def test_mobilenet_v2_depth_multiplier_half_and_min_depth():
    extractor = make("mobilenet_v2", depth_multiplier=0.5, min_depth=8)
    # keras MobileNetV2(alpha=0.5): make_divisible(d * 0.5, 8), last conv kept at 1280.
    ref = tf_keras.applications.MobileNetV2(
        include_top=False, weights=None, alpha=0.5, input_shape=(224, 224, 3)
    )
    assert extractor.parameter_count(extractor.build_backbone()) == ref.count_params() == 706_224
    x = tf.zeros([1, 64, 64, 3])
    assert extractor.build_first_stage()(x).shape[-1] == 48  # 96 * 0.5
    maps = extractor.build_ssd_feature_maps()(x)
    assert [m.shape[-1] for m in maps] == [288, 1280, 256, 128, 128, 64]  # 48 * 6 expansion
    # min_depth 16 (the default) lifts spec 1 (16 * 0.5 = 8) to 16 channels.
    lifted = make("mobilenet_v2", depth_multiplier=0.5)
    assert lifted.depth(16, 1) == 16 and extractor.depth(16, 1) == 8


def test_mobilenet_v2_fpn_levels():
    extractor = make("mobilenet_v2")
    levels = extractor.build_fpn(3, 7, 32)(tf.zeros([1, 128, 128, 3]))
    assert {k: tuple(v.shape) for k, v in levels.items()} == {
        str(l): (1, 128 // 2**l, 128 // 2**l, 32) for l in range(3, 8)
    }


def test_mobilenet_v1_has_no_fpn_and_freezes_batchnorm():
    with pytest.raises(ConfigError, match="fpn"):
        FEATURE_EXTRACTORS.get("mobilenet_v1").from_config(
            pb.FeatureExtractor(type="mobilenet_v1", fpn=pb.Fpn())
        )
    extractor = make("mobilenet_v1", freeze_batchnorm=True)
    model = extractor.build_backbone()
    bns = [l for l in model.submodules if isinstance(l, tf_keras.layers.BatchNormalization)]
    assert len(bns) == 27 and not any(l.trainable for l in bns)  # 1 + 13 * 2
    # trainable = conv kernels only: 3,228,864 - 4 * (BN channels) = kernels
    ins = [32, 64, 128, 128, 256, 256] + [512] * 6 + [1024]  # depthwise BN of Conv2d_1..13
    outs = [64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]  # pointwise BN of Conv2d_1..13
    bn_channels = 32 + sum(ins) + sum(outs)
    assert extractor.parameter_count(model, trainable_only=True) == 3_228_864 - 4 * bn_channels
