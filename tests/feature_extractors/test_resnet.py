"""ResNet v1 extractors: parameter counts against independent references, shapes by arithmetic."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detbench.errors import ConfigError
from detbench.feature_extractors import resnet  # noqa: F401  (registers resnet*_v1)
from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.protos import feature_extractor_pb2 as pb


def make(name="resnet50_v1", meta_arch=None, **fields):
    fpn = fields.pop("fpn", None)
    config = pb.FeatureExtractor(type=name, **fields)
    if fpn is not None:
        config.fpn.CopyFrom(pb.Fpn(**fpn))
    return FEATURE_EXTRACTORS.get(name).from_config(config, meta_arch=meta_arch)


def slim_resnet_v1_params(units):
    """TF-slim resnet_v1 without logits, by hand: convs without bias, BN with 4 values/channel."""
    n = 7 * 7 * 3 * 64 + 4 * 64
    cin = 64
    for f, u in zip((64, 128, 256, 512), units):
        for i in range(u):
            n += cin * f + 4 * f + 9 * f * f + 4 * f + f * 4 * f + 4 * 4 * f
            if i == 0:
                n += cin * 4 * f + 4 * 4 * f  # projection shortcut + its BN
            cin = 4 * f
    return n


@pytest.fixture(scope="module")
def r50():
    return make()


@pytest.fixture(scope="module", params=["resnet101_v1", "resnet152_v1"])
def deep(request):
    return request.param, make(request.param)


def test_resnet50_parameter_count_matches_keras_applications_without_conv_biases(r50):
    # keras.applications.ResNet50 puts a bias on every conv (23,587,712 params);
    # slim resnet_v1_50 / the Model Garden ResNet-50 have none (BN follows):
    # 23,587,712 - 26,560 conv biases = 23,561,152.
    ref = tf_keras.applications.ResNet50(include_top=False, weights=None)
    conv_biases = sum(
        int(l.bias.shape[0])
        for l in ref.layers
        if isinstance(l, tf_keras.layers.Conv2D) and l.use_bias
    )
    ours = r50.parameter_count(r50.build_backbone())
    assert ref.count_params() - conv_biases == ours == 23_561_152
    assert slim_resnet_v1_params((3, 4, 6, 3)) == ours


def test_deep_resnet_parameter_counts(deep):
    # keras.applications ResNet101 / ResNet152 minus conv biases (checked once by hand:
    # 42,658,176 - 52,672 and 58,370,944 - 75,712) = the slim resnet_v1 counts.
    name, fe = deep
    expected = {
        "resnet101_v1": (42_605_504, (3, 4, 23, 3)),
        "resnet152_v1": (58_295_232, (3, 8, 36, 3)),
    }[name]
    assert (
        fe.parameter_count(fe.build_backbone()) == expected[0] == slim_resnet_v1_params(expected[1])
    )


def test_deep_resnet_two_stage_and_ssd_forward(deep):
    _, fe = deep
    x = fe.preprocess(tf.random.uniform([1, 64, 64, 3], 0, 255))
    assert fe.build_first_stage()(x).shape == (1, 4, 4, 1024)
    assert fe.build_box_classifier()(tf.zeros([2, 7, 7, 1024])).shape == (2, 2048)
    maps = fe.build_ssd_feature_maps()(x)
    assert [tuple(m.shape) for m in maps] == [
        (1, 4, 4, 1024),
        (1, 2, 2, 512),
        (1, 1, 1, 512),
        (1, 1, 1, 256),
        (1, 1, 1, 256),
        (1, 1, 1, 128),
    ]


def test_resnet50_two_stage_and_ssd_shapes(r50):
    x = r50.preprocess(tf.random.uniform([2, 128, 96, 3], 0, 255))
    assert r50.build_first_stage()(x).shape == (2, 8, 6, 1024)
    box = r50.build_box_classifier()
    assert box(tf.zeros([3, 7, 7, 1024])).shape == (3, 2048)
    assert box(tf.zeros([1, 5, 9, 1024])).shape == (1, 2048)  # any crop size
    maps = r50.build_ssd_feature_maps()(x)
    sides = [(math.ceil(128 / s), math.ceil(96 / s)) for s in (16, 32, 64, 128, 256, 512)]
    assert [tuple(m.shape[1:3]) for m in maps] == sides
    assert [m.shape[-1] for m in maps] == [1024, 512, 512, 256, 256, 128]


def test_subnetworks_share_the_backbone_variables(r50):
    backbone_ids = {id(v) for v in r50.build_backbone().variables}
    for model in (r50.build_first_stage(), r50.build_box_classifier()):
        assert {id(v) for v in model.variables} <= backbone_ids
    assert r50.build_first_stage() is r50.build_first_stage()  # cached


@pytest.fixture(scope="module")
def strided(r50):
    return {
        8: make(output_stride=8, meta_arch="faster_rcnn"),
        16: r50,
        32: make(output_stride=32, meta_arch="faster_rcnn"),
    }


def test_output_strides_follow_ceil_arithmetic(strided):
    x = tf.zeros([1, 100, 76, 3])
    for s, fe in strided.items():
        assert fe.build_first_stage()(x).shape == (1, math.ceil(100 / s), math.ceil(76 / s), 1024)
    x = tf.zeros([1, 128, 128, 3])
    assert (
        strided[8].build_first_stage()(x).shape[1]
        == 2 * strided[16].build_first_stage()(x).shape[1]
    )


def test_output_strides_keep_the_model_garden_variables(strided):
    # Same variables, in the same order, as official.vision.modeling.backbones.ResNet(50):
    # its weights load into every output stride.
    from official.vision.modeling.backbones import ResNet

    reference = [tuple(v.shape) for v in ResNet(50).variables]
    assert [tuple(v.shape) for v in strided[16].build_backbone().variables] == reference
    first_stage = [tuple(v.shape) for v in strided[16].build_first_stage().variables]
    for s in (8, 32):
        assert [tuple(v.shape) for v in strided[s].build_first_stage().variables] == first_stage


def test_unsupported_output_stride_is_a_config_error():
    with pytest.raises(ConfigError, match="output_stride"):
        make(output_stride=4, meta_arch="faster_rcnn")
    with pytest.raises(ConfigError, match="output_stride"):
        make(output_stride=8, meta_arch="faster_rcnn", fpn={})


def test_fpn_levels_and_fc_box_head(r50):
    fe = r50  # build_fpn needs only output_stride 16; reuses the built layers
    levels = fe.build_fpn(2, 6, 64)(tf.zeros([1, 128, 64, 3]))
    assert sorted(levels) == ["2", "3", "4", "5", "6"]
    for level, m in levels.items():
        assert tuple(m.shape) == (1, 128 // 2 ** int(level), 64 // 2 ** int(level), 64)
    p3_p7 = fe.build_fpn(3, 7, 32)(tf.zeros([1, 128, 128, 3]))
    assert {k: v.shape[1] for k, v in p3_p7.items()} == {"3": 16, "4": 8, "5": 4, "6": 2, "7": 1}
    fpn_configured = make(fpn={"min_level": 2, "max_level": 6, "depth": 64})
    with pytest.raises(ConfigError, match="fpn_head"):
        fpn_configured.build_box_classifier()
    with pytest.raises(ConfigError, match="min_level"):
        fe.build_fpn(1, 6, 64)


def test_freeze_batchnorm_and_weight_decay():
    fe = make(freeze_batchnorm=True, weight_decay=1e-4)
    model = fe.build_first_stage()
    bns = [l for l in model.submodules if isinstance(l, tf_keras.layers.BatchNormalization)]
    assert bns and not any(l.trainable for l in bns)
    assert not any("gamma" in v.name or "beta" in v.name for v in model.trainable_weights)
    mean_before = bns[0].moving_mean.numpy().copy()
    x = tf.random.uniform([1, 64, 64, 3], -2, 2)
    np.testing.assert_allclose(
        model(x, training=True), model(x, training=False), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(bns[0].moving_mean.numpy(), mean_before)
    kernels = [v for v in model.trainable_weights if "kernel" in v.name]
    assert (
        len(model.losses) == len(kernels) == 1 + 3 * (3 + 4 + 6) + 3
    )  # stem, 3 convs a unit, 3 shortcuts


def test_slim_atrous_rule_by_hand():
    """TF-slim's stack_blocks_dense for resnet_v1_50 (the stem strides by 4; blocks 1-3
    stride on their last unit): at output stride 8 block2 no longer strides and the
    later units dilate by what was skipped, the unit that would stride keeping the old
    rate (worked by hand)."""
    from detbench.feature_extractors.resnet import _slim_plan

    assert _slim_plan((3, 4, 6, 3), 8) == [
        [(1, 1), (1, 1), (2, 1)],
        [(1, 1), (1, 1), (1, 1), (1, 1)],
        [(1, 2)] * 6,
        [(1, 4)] * 3,
    ]
    assert _slim_plan((3, 4, 6, 3), 16) == [
        [(1, 1), (1, 1), (2, 1)],
        [(1, 1), (1, 1), (1, 1), (2, 1)],
        [(1, 1)] * 6,
        [(1, 2)] * 3,
    ]
    plain = _slim_plan((3, 4, 6, 3), 32)
    assert plain[2] == [(1, 1)] * 5 + [(2, 1)] and plain[3] == [(1, 1)] * 3


def test_stride_placement_is_resnets_only():
    config = pb.FeatureExtractor(type="mobilenet_v1", stride_placement=pb.FeatureExtractor.KERAS)
    with pytest.raises(ConfigError, match="stride_placement: only ResNet v1"):
        FEATURE_EXTRACTORS.get("mobilenet_v1").check_config(config)
