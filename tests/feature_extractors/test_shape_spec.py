"""An extractor's declared outputs (ShapeSpec: stride, channels) are what its
built networks give; the RPN's anchors and the input padding read them."""

import pytest
import tensorflow as tf

from detbench.feature_extractors.base import ShapeSpec, build_feature_extractor
from detbench.meta_arch.rpn import RegionProposalNetwork
from detbench.protos import feature_extractor_pb2 as pb, rpn_pb2
from tests.meta_arch.tiny_extractor import NAME, register


@pytest.mark.parametrize("kind, stride", [(NAME, 8), (NAME, 16), ("mobilenet_v2", 32)])
def test_first_stage_is_at_the_declared_stride(kind, stride):
    register()
    config = pb.FeatureExtractor(type=kind, output_stride=stride, depth_multiplier=0.25)
    extractor = build_feature_extractor(config, is_training=False, meta_arch="faster_rcnn")
    assert extractor.first_stage_shape() == ShapeSpec(stride)
    assert extractor.rpn_input_shape() == ShapeSpec(stride)
    fmap = extractor.build_first_stage()(tf.zeros([1, 64, 96, 3]))
    assert tuple(fmap.shape[1:3]) == (64 // stride, 96 // stride)
    # the padded input tiles every declared map
    assert extractor.input_multiple % stride == 0


def test_fpn_levels_are_at_the_declared_strides_and_depth():
    register()
    config = pb.FeatureExtractor(type=NAME)
    config.fpn.min_level, config.fpn.max_level, config.fpn.depth = 3, 6, 8
    extractor = build_feature_extractor(config, is_training=False, meta_arch="faster_rcnn")
    shapes = extractor.fpn_shapes()
    assert shapes == {
        3: ShapeSpec(8, 8),
        4: ShapeSpec(16, 8),
        5: ShapeSpec(32, 8),
        6: ShapeSpec(64, 8),
    }
    maps = extractor.build_fpn(3, 6, 8)(tf.zeros([1, 128, 128, 3]))
    for level, spec in shapes.items():
        assert tuple(maps[str(level)].shape[1:]) == (128 // spec.stride, 128 // spec.stride, 8)
    # the RPN over them: multilevel anchors on levels 3..6, head at the declared depth
    rpn = RegionProposalNetwork.from_config(rpn_pb2.RegionProposalNetwork(), shapes)
    assert rpn.anchor_generator.levels == [3, 4, 5, 6] and rpn.conv.filters == 8


def test_grid_anchors_take_the_declared_stride():
    rpn = RegionProposalNetwork.from_config(rpn_pb2.RegionProposalNetwork(), ShapeSpec(8))
    # first cell centred at 4 px of a 32 px input
    anchors = rpn.anchors(tf.zeros([1, 4, 4, 1]), (32, 32)).numpy()
    assert abs((anchors[0, 0] + anchors[0, 2]) / 2 * 32 - 4.0) < 1e-5
