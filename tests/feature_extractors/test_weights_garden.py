"""Model Garden classification backbones (official.vision.modeling.backbones) saved as
tf.train.Checkpoint, as its ImageNet checkpoints are, load into our extractors: the same
feature maps on the same preprocessed image, and end to end from raw pixels."""

import pytest
import tensorflow as tf
import tf_keras
from official.vision.modeling import backbones

from tests.feature_extractors.weights_helpers import (
    assert_same_map,
    extractor,
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


@pytest.mark.parametrize("name", ["resnet50_v1", "mobilenet_v1", "mobilenet_v2"])
def test_model_garden_checkpoint_end_to_end_from_raw_pixels(tmp_path, name):
    """``weights_path`` and nothing else: from the same raw [0, 255] image, our preprocess +
    backbone equal the Model Garden's classification preprocessing (``normalize_image``
    with its ImageNet mean / std, official.vision.dataloaders.classification_input) +
    network: every ResNet level, MobileNet's last map. The MobileNets then take the
    file's mean / std, not their family's [-1, 1]. One ResNet depth: the normalization
    and placement are the same at every depth."""
    from official.vision.ops import preprocess_ops

    theirs = CASES[name]()
    randomize(theirs.weights, seed=3)
    path = tf.train.Checkpoint(backbone=theirs).write(str(tmp_path / "ckpt"))
    fe = extractor(name, weights_path=path)
    report = fe.load_weights()
    assert report.format == "Model Garden checkpoint"
    assert fe.input_normalization == "MEAN_STD"
    assert "input normalization MEAN_STD" in report.summary()
    raw = image(64, seed=4)
    expected = theirs(
        preprocess_ops.normalize_image(
            tf.constant(raw), offset=preprocess_ops.MEAN_RGB, scale=preprocess_ops.STDDEV_RGB
        )
    )
    ours = fe.build_backbone()(fe.preprocess(raw))
    if isinstance(ours, dict):
        for level in expected:
            assert_same_map(ours[level], expected[level])
    else:
        assert_same_map(ours, expected[max(expected, key=int)])
