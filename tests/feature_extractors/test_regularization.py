"""One weight-decay convention: every extractor's regularization loss by hand.

``weight_decay`` means slim's ``l2_regularizer``: ``wd / 2 * sum(w**2)`` over
every convolution and dense kernel (depthwise and pointwise kernels included),
never over biases or batch norm parameters. Before, ResNet, MobileNet and the
FPN used Keras ``L2(wd)``, twice that.
"""
import numpy as np
import pytest
import tensorflow as tf

from detbench.feature_extractors.base import FEATURE_EXTRACTORS, build_feature_extractor
from detbench.protos import feature_extractor_pb2

WD = 0.01
KERNELS = ("kernel:0", "depthwise_kernel:0", "pointwise_kernel:0")


def _hand_loss(variables):
    return WD / 2 * sum(float(np.sum(np.square(v.numpy()))) for v in variables
                        if v.name.split("/")[-1] in KERNELS)


def _model_loss(model):
    return float(tf.add_n(model.losses)) if model.losses else 0.0


@pytest.mark.parametrize("name", FEATURE_EXTRACTORS.names())
def test_backbone_regularization_loss_is_half_wd_sum_of_squares(name):
    config = feature_extractor_pb2.FeatureExtractor(type=name, weight_decay=WD)
    if name.startswith("mobilenet"):
        config.depth_multiplier = 0.25
        config.min_depth = 8
    backbone = build_feature_extractor(config).build_backbone()
    hand = _hand_loss(backbone.variables)
    assert hand > 0
    assert _model_loss(backbone) == pytest.approx(hand, rel=1e-4)


def test_fpn_decoder_and_ssd_extras_use_the_same_convention():
    config = feature_extractor_pb2.FeatureExtractor(type="mobilenet_v2", weight_decay=WD,
                                                    depth_multiplier=0.25, min_depth=8)
    extractor = build_feature_extractor(config, meta_arch="ssd")
    fpn = extractor.build_fpn(3, 6, 32)
    assert _model_loss(fpn) == pytest.approx(_hand_loss(fpn.variables), rel=1e-4)
    maps = extractor.build_ssd_feature_maps()
    assert _model_loss(maps) == pytest.approx(_hand_loss(maps.variables), rel=1e-4)
