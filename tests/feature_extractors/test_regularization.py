"""One weight-decay convention: every extractor's regularization loss by hand.

``weight_decay`` means slim's ``l2_regularizer``: ``wd / 2 * sum(w**2)`` over
every convolution and dense kernel, never over biases or batch norm
parameters. Depthwise kernels are regularized as the reference networks do:
not in the MobileNets (slim's ``mobilenet_v1_arg_scope`` and
``training_scope`` of v2: ``regularize_depthwise=False``; the Model Garden's
blocks likewise), yes in Inception v2's separable stem. Before, ResNet,
MobileNet and the FPN used Keras ``L2(wd)``, twice that.
"""

import numpy as np
import pytest
import tensorflow as tf

from detbench.feature_extractors.base import FEATURE_EXTRACTORS, build_feature_extractor
from detbench.protos import feature_extractor_pb2

WD = 0.01
KERNELS = ("kernel:0", "depthwise_kernel:0", "pointwise_kernel:0")
UNREGULARIZED_DEPTHWISE = ("mobilenet_v1", "mobilenet_v2")


def _hand_loss(variables, depthwise=True):
    kernels = KERNELS if depthwise else ("kernel:0", "pointwise_kernel:0")
    return (
        WD
        / 2
        * sum(
            float(np.sum(np.square(v.numpy())))
            for v in variables
            if v.name.split("/")[-1] in kernels
        )
    )


def _model_loss(model):
    return float(tf.add_n(model.losses)) if model.losses else 0.0


def _registered_by_detbench():
    """The package's own extractors (tests register tiny ones of their own)."""
    import detbench.feature_extractors  # noqa: F401  (registers every family)

    return [
        n
        for n in FEATURE_EXTRACTORS.names()
        if FEATURE_EXTRACTORS.get(n).__module__.startswith("detbench.feature_extractors.")
    ]


@pytest.mark.parametrize("name", _registered_by_detbench())
def test_backbone_regularization_loss_is_half_wd_sum_of_squares(name):
    config = feature_extractor_pb2.FeatureExtractor(type=name, weight_decay=WD)
    if name.startswith("mobilenet"):
        config.depth_multiplier = 0.25
        config.min_depth = 8
    backbone = build_feature_extractor(config).build_backbone()
    hand = _hand_loss(backbone.variables, depthwise=name not in UNREGULARIZED_DEPTHWISE)
    assert hand > 0
    assert _model_loss(backbone) == pytest.approx(hand, rel=1e-4)


def test_fpn_decoder_and_ssd_extras_use_the_same_convention():
    config = feature_extractor_pb2.FeatureExtractor(
        type="mobilenet_v2", weight_decay=WD, depth_multiplier=0.25, min_depth=8
    )
    extractor = build_feature_extractor(config, meta_arch="ssd")
    fpn = extractor.build_fpn(3, 6, 32)
    assert _model_loss(fpn) == pytest.approx(_hand_loss(fpn.variables, depthwise=False), rel=1e-4)
    maps = extractor.build_ssd_feature_maps()
    assert _model_loss(maps) == pytest.approx(_hand_loss(maps.variables, depthwise=False), rel=1e-4)
