"""Model Garden classification backbones (official.vision.modeling.backbones) saved as
tf.train.Checkpoint, as its ImageNet checkpoints are, load into our extractors: the same
feature maps on the same preprocessed image."""

import pytest
import tensorflow as tf
import tf_keras
from official.vision.modeling import backbones

from tests.feature_extractors.weights_helpers import (
    assert_same_map,
    image,
    randomize,
    shared_extractor,
)

SPEC = tf_keras.layers.InputSpec(shape=[None, None, None, 3])
CASES = {
    "resnet50_v1": lambda: backbones.ResNet(model_id=50, input_specs=SPEC),
    "resnet101_v1": lambda: backbones.ResNet(model_id=101, input_specs=SPEC),
    "resnet152_v1": lambda: backbones.ResNet(model_id=152, input_specs=SPEC),
    "mobilenet_v1": lambda: backbones.MobileNet(model_id="MobileNetV1", input_specs=SPEC),
    "mobilenet_v2": lambda: backbones.MobileNet(model_id="MobileNetV2", input_specs=SPEC),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_garden_checkpoint_gives_the_reference_maps(tmp_path, name):
    theirs = CASES[name]()
    randomize(theirs.weights)
    head = tf.Variable(tf.zeros([7]))  # a classifier's variable beside the backbone
    path = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=theirs, head=head)).write(
        str(tmp_path / "ckpt")
    )
    fe = shared_extractor(name)
    fe.weights_path = path
    report = fe.load_weights()
    backbone = fe.build_backbone()
    assert report.format == "Model Garden checkpoint"
    assert (report.loaded, report.left_at_init) == (len(backbone.variables), 0)
    assert report.loaded == len(theirs.variables)
    x = fe.preprocess(image(64))
    expected = theirs(x)
    ours = backbone(x)
    if isinstance(ours, dict):  # ResNet: every level
        for level in expected:
            assert_same_map(ours[level], expected[level])
    else:  # MobileNet: the last map
        assert_same_map(ours, expected[max(expected, key=int)])
