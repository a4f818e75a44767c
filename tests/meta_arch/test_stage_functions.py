"""Per-stage timing functions: each is a prefix of the model's own inference."""

import numpy as np
import tensorflow as tf

from tests.meta_arch.test_faster_rcnn import _model as faster_rcnn_model


def test_two_stage_prefixes_end_in_predict():
    model = faster_rcnn_model()
    model.is_training = False
    images = tf.random.stateless_uniform([1, 96, 128, 3], [1, 2], 0, 255)
    stages = model.stage_functions()
    assert [name for name, _ in stages] == ["feature_extractor", "proposals", "box_classifier"]
    features = stages[0][1](images)
    inputs, shapes = model.preprocess(images)
    np.testing.assert_allclose(
        features["rpn_maps"].numpy(), model.extract_features(inputs)["rpn_maps"].numpy(), atol=1e-5
    )
    last = stages[-1][1](images)
    full = model.predict(inputs, shapes, training=False)
    np.testing.assert_allclose(
        last["class_predictions_with_background"].numpy(),
        full["class_predictions_with_background"].numpy(),
        atol=1e-5,
    )
    assert stages[1][1](images)["proposal_boxes"].shape[1] == model.max_proposals
