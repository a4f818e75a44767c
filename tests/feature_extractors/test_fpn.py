"""Shared multi-scale helpers: SSD extra layers, FPN level checks, the FPN fc box head."""

import pytest
import tensorflow as tf
import tf_keras

from detbench.errors import ConfigError
from detbench.feature_extractors import fpn as fpn_lib
from detbench.protos import feature_extractor_pb2 as pb


@pytest.mark.parametrize("use_depthwise", [False, True])
def test_ssd_extra_layers_halve_and_count_parameters(use_depthwise):
    config = pb.FeatureExtractor(use_depthwise=use_depthwise)
    extras = fpn_lib.SSDExtraLayers(config, [64, 32], "relu6")
    inputs = tf_keras.Input((None, None, 16))
    model = tf_keras.Model(inputs, extras(inputs))
    maps = model(tf.zeros([1, 9, 9, 16]))
    assert [tuple(m.shape) for m in maps] == [(1, 5, 5, 64), (1, 3, 3, 32)]  # ceil(9/2), ceil(5/2)

    # by hand: 1x1 (cin*d/2) + BN(4*d/2), then 3x3/2 (9*d/2*d) or dw 9*d/2 + BN + 1x1 (d/2*d), + BN(4*d)
    def extra(cin, d):
        n = cin * d // 2 + 4 * (d // 2)
        n += (9 * (d // 2) + 4 * (d // 2) + d // 2 * d) if use_depthwise else 9 * (d // 2) * d
        return n + 4 * d

    assert model.count_params() == extra(16, 64) + extra(64, 32)


def test_fpn_level_checks():
    with pytest.raises(ConfigError, match="min_level"):
        fpn_lib.check_fpn_levels("x", 1, 6, 256)
    with pytest.raises(ConfigError, match="max_level"):
        fpn_lib.check_fpn_levels("x", 4, 3, 256)
    with pytest.raises(ConfigError, match="depth"):
        fpn_lib.check_fpn_levels("x", 2, 6, 0)
    fpn_lib.check_fpn_levels("x", 3, 7, 256)


def test_fc_box_head_parameters():
    from detbench.meta_arch.two_stage import fc_box_head

    head = fc_box_head(num_fc_layers=2, fc_depth=32)
    assert head(tf.zeros([5, 7, 7, 8])).shape == (5, 32)
    assert head.count_params() == (7 * 7 * 8 * 32 + 32) + (32 * 32 + 32)


def test_fc_box_head_with_convs_from_config():
    """The Model Garden's 4conv1fc head: 3x3 convs on the crops, then the fc layers."""
    from detbench.meta_arch.two_stage import fc_box_head_from_config
    from detbench.protos import faster_rcnn_pb2

    head = fc_box_head_from_config(
        faster_rcnn_pb2.FcHead(num_conv_layers=2, conv_depth=4, num_fc_layers=1, fc_depth=16)
    )
    assert head(tf.zeros([5, 7, 7, 8])).shape == (5, 16)
    assert head.count_params() == (
        (3 * 3 * 8 * 4 + 4) + (3 * 3 * 4 * 4 + 4) + (7 * 7 * 4 * 16 + 16)
    )
    with pytest.raises(ValueError, match="fpn_head"):
        fc_box_head_from_config(faster_rcnn_pb2.FcHead(conv_depth=0))


def test_freeze_batchnorm_helper():
    inputs = tf_keras.Input((4, 4, 2))
    bn = tf_keras.layers.BatchNormalization()
    model = fpn_lib.freeze_batchnorm(tf_keras.Model(inputs, bn(inputs)))
    assert not bn.trainable and not model.trainable_weights
