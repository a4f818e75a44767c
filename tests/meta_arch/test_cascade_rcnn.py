"""Cascade R-CNN: plain and FPN variants train on drawn scenes, later stages
see better boxes, the inference ensemble and stage chaining match numpy
references, proposals honoured, builds from protos and the shipped configs."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from detbench.builders.model_builder import build_model
from detbench.config import parse_text
from detbench.errors import ConfigError
from detbench.meta_arch import cascade_rcnn
from detbench.meta_arch.cascade_rcnn import CascadeRcnn
from detbench.protos import cascade_rcnn_pb2, model_pb2
from tests.conftest import REPO_ROOT
from tests.meta_arch.test_rfcn import (
    IMAGE_SIZE,
    SCENES,
    TINY_RPN,
    assert_detects_every_box,
    config_smoke,
    converged,
    np_iou,
    scene_batch,
    train,
)

FPN_RPN = """
  conv_depth: 64
  anchor_generator { multilevel { min_level: 2 max_level: 5 anchor_scale: 4 } }
  max_proposals_train: 128
  max_proposals: 32
"""


def tiny_cascade_config(fpn=False, extra=""):
    fpn_field = "fpn { min_level: 2 max_level: 5 depth: 32 }" if fpn else ""
    return parse_text(
        f"""
        num_classes: 2
        image_resizer {{ fixed_shape {{ height: {IMAGE_SIZE} width: {IMAGE_SIZE} }} }}
        feature_extractor {{ type: "test_tiny" output_stride: 16 weight_decay: 0 {fpn_field} }}
        rpn {{ {FPN_RPN if fpn else TINY_RPN} }}
        fpn_head {{ fc_depth: 64 }}
        second_stage_sampler {{ batch_size: 32 }}
        {extra}""",
        cascade_rcnn_pb2.CascadeRcnn(),
    )


@pytest.fixture(scope="module")
def trained_plain():
    tf.random.set_seed(1)
    model = CascadeRcnn.from_config(tiny_cascade_config())
    images, gt = scene_batch()
    losses = train(model, images, gt, steps=300, until=converged(model, images, gt))
    return model, images, gt, losses


def test_plain_cascade_learns_drawn_scenes(trained_plain):
    model, images, gt, losses = trained_plain
    assert model.fpn is None and len(model.stage_heads) == 3
    # Each stage has its own copy of the extractor's box-classifier head.
    head_vars = [{id(v) for v in m.trainable_variables} for m in model.box_classifier_models]
    assert not (head_vars[0] & head_vars[1]) and not (head_vars[1] & head_vars[2])
    assert np.mean(losses[-10:]) < 0.15 * losses[0], losses[::25]
    assert_detects_every_box(model.detect(images), gt)


def _mean_best_iou(predictions, gt, key):
    """Mean over valid RoIs entering a stage of the IoU with their best
    groundtruth: (over all RoIs, over those at IoU >= 0.5)."""
    all_ious = []
    for i in range(int(gt["num_groundtruth_boxes"].shape[0])):
        n = int(gt["num_groundtruth_boxes"][i])
        valid = predictions["roi_valid"][i].numpy()
        rois = predictions[key][i].numpy()[valid]
        all_ious.append(np_iou(rois, gt["groundtruth_boxes"][i, :n].numpy()).max(1))
    ious = np.concatenate(all_ious)
    return ious.mean(), ious[ious >= 0.5].mean()


def test_later_stages_see_higher_iou_boxes(trained_plain):
    model, images, gt, _ = trained_plain
    inputs, true_shapes = model.preprocess(images)
    predictions = model.predict(inputs, true_shapes)  # fixed_shape: input frame == image
    stats = [_mean_best_iou(predictions, gt, f"stage{t}_rois") for t in (1, 2, 3)]
    for mean_all, mean_pos in stats[1:]:
        assert mean_all > stats[0][0] and mean_pos > stats[0][1], stats


def test_fpn_cascade_learns_drawn_scenes():
    tf.random.set_seed(2)
    model = CascadeRcnn.from_config(tiny_cascade_config(fpn=True))
    assert model.fpn is not None
    assert [h.feature_model.name for h in model.stage_heads] == [
        "stage1_fc_head",
        "stage2_fc_head",
        "stage3_fc_head",
    ]
    images, gt = scene_batch()
    losses = train(
        model, images, gt, steps=170, learning_rate=4e-3, until=converged(model, images, gt)
    )
    assert np.mean(losses[-10:]) < 0.15 * losses[0], losses[::25]
    assert_detects_every_box(model.detect(images), gt)


def test_stage_defaults_and_overrides():
    default = cascade_rcnn.stage_settings([])
    assert [s.iou_threshold for s in default] == [0.5, 0.6, 0.7]
    np.testing.assert_allclose(
        [s.box_coder_stddev for s in default],
        [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.1 / 3, 0.1 / 3, 0.2 / 3, 0.2 / 3]],
    )
    np.testing.assert_allclose([s.loss_weight for s in default], [1 / 3] * 3)
    config = tiny_cascade_config(
        extra="stage { iou_threshold: 0.55 loss_weight: 2.0 } "
        "stage { box_coder_stddev: [1, 1, 1, 1] }"
    )
    stages = cascade_rcnn.stage_settings(config.stage)
    np.testing.assert_allclose([s.iou_threshold for s in stages], [0.55, 0.6], rtol=1e-6)
    assert stages[0].loss_weight == 2.0 and stages[1].loss_weight == 0.5
    assert stages[1].box_coder_stddev == (1, 1, 1, 1)
    model = CascadeRcnn.from_config(config)
    assert len(model.stage_heads) == 2
    assert model.stage_target_assigners[0].matcher.matched_threshold == pytest.approx(0.55)
    with pytest.raises(ConfigError, match=r"stage\[0\].box_coder_stddev"):
        cascade_rcnn.stage_settings(
            parse_text("stage { box_coder_stddev: [1, 1] }", cascade_rcnn_pb2.CascadeRcnn()).stage
        )


def test_loss_names_weights_and_stop_gradient_between_stages():
    model = CascadeRcnn.from_config(tiny_cascade_config())
    images, gt = scene_batch()
    with tf.GradientTape(persistent=True) as tape:
        inputs, true_shapes = model.preprocess(images)
        predictions = model.predict(inputs, true_shapes, training=True, groundtruth=gt)
        losses = model.loss(predictions, gt)
        later = tf.add_n([v for k, v in losses.items() if k.startswith(("stage2", "stage3"))])
    assert sorted(losses) == sorted(
        ["rpn_localization_loss", "rpn_objectness_loss"]
        + [
            f"stage{t}_{kind}_loss"
            for t in (1, 2, 3)
            for kind in ("localization", "classification")
        ]
    )
    assert predictions["stage1_rois"].shape == (3, 32, 4)  # the sampled minibatch
    # Stage 1's head gets no gradient from later stages (their boxes are
    # stop_gradient'ed), stage 2's does.
    stage1_grads = tape.gradient(later, model.stage_heads[0].trainable_variables)
    assert all(g is None for g in stage1_grads)
    stage2_grads = tape.gradient(later, model.stage_heads[1].trainable_variables)
    assert all(g is not None for g in stage2_grads)
    # Stage loss weights scale the stage's losses.
    model.stages[1].loss_weight *= 4.0
    scaled = model.loss(predictions, gt)
    for kind in ("localization", "classification"):
        np.testing.assert_allclose(
            float(scaled[f"stage2_{kind}_loss"]),
            4.0 * float(losses[f"stage2_{kind}_loss"]),
            rtol=1e-5,
        )
        np.testing.assert_allclose(
            float(scaled[f"stage1_{kind}_loss"]), float(losses[f"stage1_{kind}_loss"]), rtol=1e-5
        )


def _np_decode(codes, rois, stddev):
    """MeanStddevBoxCoder.decode in numpy (mean 0)."""
    t = codes * np.asarray(stddev)
    ha, wa = rois[..., 2] - rois[..., 0], rois[..., 3] - rois[..., 1]
    ya, xa = rois[..., 0] + 0.5 * ha, rois[..., 1] + 0.5 * wa
    y, x = t[..., 0] * ha + ya, t[..., 1] * wa + xa
    h, w = np.exp(t[..., 2]) * ha, np.exp(t[..., 3]) * wa
    return np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], -1)


def test_inference_chains_stages_and_ensembles_scores():
    """Stage t+1's boxes are stage t's decoded boxes (clipped); scores are the
    mean over stages of each stage's softmax on the LAST stage's input boxes;
    boxes are the last stage's (numpy references)."""
    tf.random.set_seed(3)
    model = CascadeRcnn.from_config(tiny_cascade_config(), is_training=False)
    images, _ = scene_batch(SCENES[:1])
    inputs, true_shapes = model.preprocess(images)
    features = model.extract_features(inputs)
    first = model.propose(features, true_shapes)
    out = model.classify_boxes(features, first["proposal_boxes"])
    for t in (1, 2):
        expected = np.clip(
            _np_decode(
                out[f"stage{t}_refined_box_encodings"].numpy()[:, :, 0],
                out[f"stage{t}_rois"].numpy(),
                model.stages[t - 1].box_coder_stddev,
            ),
            0.0,
            1.0,
        )
        np.testing.assert_allclose(out[f"stage{t + 1}_rois"].numpy(), expected, atol=1e-5)
    # Each stage's classifier on the crops of the last stage's input boxes.
    crops = model.crop_rois(features, out["stage3_rois"], model.roi_crop)
    probs = []
    for head in model.stage_heads:
        logits = head(crops, 32)[0].numpy()
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probs.append((e / e.sum(-1, keepdims=True))[..., 1:])
    np.testing.assert_allclose(out["ensemble_class_scores"].numpy(), np.mean(probs, 0), atol=1e-5)
    detections = model.postprocess({**first, **out}, true_shapes)
    scores = np.where(first["proposal_valid"].numpy()[0, :, None], np.mean(probs, 0)[0], -np.inf)
    roi, cls = np.unravel_index(np.argmax(scores), scores.shape)
    box = np.clip(
        _np_decode(
            out["stage3_refined_box_encodings"].numpy()[0, roi, 0],
            out["stage3_rois"].numpy()[0, roi],
            model.stages[2].box_coder_stddev,
        ),
        0.0,
        1.0,
    )
    np.testing.assert_allclose(detections["detection_boxes"].numpy()[0, 0], box, atol=1e-5)
    assert detections["detection_scores"].numpy()[0, 0] == pytest.approx(scores[roi, cls], abs=1e-5)
    assert detections["detection_classes"].numpy()[0, 0] == cls + 1


def test_test_time_proposals_honoured_exactly():
    model = build_model(
        model_pb2.DetectionModel(cascade_rcnn=tiny_cascade_config(fpn=True)), is_training=False
    )
    assert isinstance(model, CascadeRcnn)
    images, _ = scene_batch()
    for benchmark_mode, proposals in ((False, 7), (True, 19)):
        model.benchmark_mode = benchmark_mode
        model.max_proposals = proposals
        inputs, true_shapes = model.preprocess(images)
        predictions = model.predict(inputs, true_shapes)
        for t in (1, 2, 3):
            assert predictions[f"stage{t}_rois"].shape == (3, proposals, 4)
        assert predictions["ensemble_class_scores"].shape == (3, proposals, 2)
        if benchmark_mode:
            np.testing.assert_array_equal(predictions["num_proposals"], [proposals] * 3)
            assert predictions["roi_valid"].numpy().all()
        assert model.postprocess(predictions, true_shapes)["detection_boxes"].shape == (3, 100, 4)


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "cascade_rcnn_*.pbtxt")))
)
def test_cascade_configs_train_and_infer(path):
    model, losses = config_smoke(path, "cascade_rcnn")
    assert isinstance(model, CascadeRcnn)
    assert "stage3_classification_loss" in losses


def test_weights_path_initialises_backbone_and_every_stage_head(tmp_path):
    source = CascadeRcnn.from_config(tiny_cascade_config())
    path = str(tmp_path / "tiny_backbone.weights.h5")
    source.feature_extractor.build_backbone().save_weights(path)
    config = tiny_cascade_config()
    config.feature_extractor.weights_path = path
    model = CascadeRcnn.from_config(config)
    for saved, loaded in zip(
        source.feature_extractor.build_backbone().weights,
        model.feature_extractor.build_backbone().weights,
    ):
        np.testing.assert_array_equal(saved.numpy(), loaded.numpy())
    first = [w.numpy() for w in model.box_classifier_models[0].weights]
    for clone in model.box_classifier_models[1:]:
        for a, b in zip(first, clone.weights):
            np.testing.assert_array_equal(a, b.numpy())
