"""Cascade R-CNN (Cai and Vasconcelos, CVPR 2018).

An RPN (``meta_arch/rpn.py``) and T box-classifier stages (default three,
trained at IoU 0.5 / 0.6 / 0.7). Stage t crops its input boxes, runs its own
head (the extractor's box classifier, cloned per stage - crop 14, 2x2
max-pool -, or with FPN an fc head per stage on multilevel crops), and
predicts class logits [B, N, C+1] and ONE class-agnostic box code [B, N, 1, 4]
encoded by its own ``MeanStddevBoxCoder`` (stddev 0.1 0.1 0.2 0.2, then half,
then a third). Its decoded boxes, clipped to the true image and behind a
``stop_gradient``, are the input of stage t+1::

    rois_1 = proposals (test) | balanced minibatch of proposals + gt (training)
    rois_{t+1} = clip(decode_t(codes_t, rois_t))

Training: stage 1's minibatch is sampled by ``TwoStageDetectionModel``
against stage 1's IoU; stage t > 1 keeps every slot of that minibatch and
re-assigns targets to its (moved) boxes at its own IoU threshold with its own
coder (in ``loss``, as Detectron2's ``_match_and_label_boxes``). Losses
``stage{t}_classification_loss`` / ``stage{t}_localization_loss`` (weighted
by the stage's ``loss_weight``, default 1/T) plus the RPN's.

Inference: boxes are the last stage's, decoded against its input
``rois_T``. Scores follow the paper's classifier ensemble (the authors' Caffe
test nets): the mean over stages t of stage t's class probabilities *on the
last stage's input boxes* ``rois_T`` (heads 1..T-1 are re-applied to the
crops of ``rois_T``). Detectron2 differs: it averages each stage's scores on
that stage's own input boxes.

``benchmark_mode`` and the per-stage methods (``extract_features``,
``propose``, ``classify_boxes``, ``postprocess``) come from
``TwoStageDetectionModel``.
"""

from dataclasses import dataclass

import tensorflow as tf
import tf_keras

from detbench.config import checks
from detbench.core import (
    box_coders,
    matchers,
    post_processing,
    target_assigner as target_assigner_lib,
)
from detbench.errors import ConfigError
from detbench.meta_arch import two_stage
from detbench.meta_arch.base import META_ARCHITECTURES
from detbench.meta_arch.image_frame import groundtruth_in_input_frame
from detbench.protos import cascade_rcnn_pb2, faster_rcnn_pb2

DEFAULT_IOU_THRESHOLDS = (0.5, 0.6, 0.7)
BASE_STDDEV = (0.1, 0.1, 0.2, 0.2)


@dataclass
class CascadeStageSettings:
    iou_threshold: float
    box_coder_stddev: tuple
    loss_weight: float


def stage_settings(stages):
    """``CascadeStage`` protos -> settings; defaults when the list is empty
    (IoU 0.5 / 0.6 / 0.7) and per unset field: stddev BASE / t, weight 1/T."""
    stages = list(stages) or [cascade_rcnn_pb2.CascadeStage() for _ in DEFAULT_IOU_THRESHOLDS]
    out = []
    for i, stage in enumerate(stages):
        field = f"model.cascade_rcnn.stage[{i}]"
        if stage.HasField("iou_threshold"):
            iou = stage.iou_threshold
        elif i < len(DEFAULT_IOU_THRESHOLDS):
            iou = DEFAULT_IOU_THRESHOLDS[i]
        else:
            raise ConfigError(
                f"{field}.iou_threshold: needed beyond {len(DEFAULT_IOU_THRESHOLDS)} stages"
            )
        if not 0.0 < iou < 1.0:
            raise ConfigError(f"{field}.iou_threshold: must be in (0, 1), got {iou}")
        stddev = tuple(stage.box_coder_stddev) or tuple(s / (i + 1) for s in BASE_STDDEV)
        if len(stddev) != 4 or min(stddev) <= 0:
            raise ConfigError(
                f"{field}.box_coder_stddev: needs 4 positive values, got {list(stddev)}"
            )
        weight = stage.loss_weight if stage.HasField("loss_weight") else 1.0 / len(stages)
        if weight < 0:
            raise ConfigError(f"{field}.loss_weight: must be >= 0, got {weight}")
        out.append(CascadeStageSettings(float(iou), stddev, float(weight)))
    return out


def _stage_target_assigner(settings):
    return target_assigner_lib.TargetAssigner(
        matchers.ArgMaxMatcher(settings.iou_threshold, settings.iou_threshold),
        box_coders.MeanStddevBoxCoder(stddev=settings.box_coder_stddev),
    )


def _nonempty(boxes):
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


@META_ARCHITECTURES.register("cascade_rcnn")
class CascadeRcnn(two_stage.TwoStageDetectionModel):
    """Two-stage detector with a cascade of box heads trained at rising IoU (0.5/0.6/0.7)."""

    def __init__(
        self,
        num_classes,
        is_training,
        feature_extractor,
        rpn,
        stages=None,
        roi_crop=None,
        fpn_head=None,
        **kwargs,
    ):
        """``stages``: list of ``CascadeStageSettings`` (default: three at IoU
        0.5 / 0.6 / 0.7); ``roi_crop``: a ``RoiCrop`` proto (14 -> 2x2
        max-pool when None); ``fpn_head``: an ``FcHead`` proto for FPN
        extractors. Other keyword arguments: see ``TwoStageDetectionModel``
        (its second-stage assigner is stage 1's and must not be passed)."""
        stages = list(stages or stage_settings([]))
        assigners = [_stage_target_assigner(s) for s in stages]
        if "second_stage_target_assigner" in kwargs or kwargs.get("hard_example_miner"):
            raise ValueError("CascadeRcnn: the stages define the target assigners; no OHEM")
        super().__init__(
            num_classes,
            is_training,
            feature_extractor,
            rpn,
            second_stage_target_assigner=assigners[0],
            **kwargs,
        )
        self.stages = stages
        self.stage_target_assigners = assigners
        self.roi_crop = roi_crop or faster_rcnn_pb2.RoiCrop()
        weight_decay = feature_extractor.config.weight_decay
        self.stage_heads = []
        self.box_classifier_models = []
        for t in range(1, len(self.stages) + 1):
            if self.fpn is not None:
                head = fpn_head or faster_rcnn_pb2.FcHead()
                feature_model = two_stage.fc_box_head_from_config(
                    head, weight_decay, name=f"stage{t}_fc_head"
                )
            elif t == 1:
                feature_model = feature_extractor.build_box_classifier()
            else:  # same architecture, own weights
                first = self.box_classifier_models[0]
                clone = tf_keras.models.clone_model(first)
                feature_model = tf_keras.Model(
                    clone.inputs, clone.outputs, name=f"{first.name}_stage{t}"
                )
            self.box_classifier_models.append(feature_model)
            self.stage_heads.append(
                two_stage.BoxClassifierHead(
                    feature_model,
                    num_classes,
                    class_specific=False,
                    weight_decay=weight_decay,
                    name=f"stage{t}_box_classifier_head",
                )
            )

    @classmethod
    def check_config(cls, config, field):
        super().check_config(config, field)
        for i, st in enumerate(config.stage):
            checks.unit_interval(st.iou_threshold, f"{field}.stage[{i}].iou_threshold")
            if st.box_coder_stddev and len(st.box_coder_stddev) != 4:
                raise ConfigError(
                    f"{field}.stage[{i}].box_coder_stddev: needs 4 values, "
                    f"got {len(st.box_coder_stddev)}"
                )
        stage_settings(config.stage)  # what building the stages would refuse

    @classmethod
    def from_config(cls, config, is_training=True, benchmark_mode=False):
        """``CascadeRcnn`` proto -> model."""
        kwargs = two_stage.common_kwargs(config, "cascade_rcnn", is_training)
        model = cls(
            config.num_classes,
            is_training,
            stages=stage_settings(config.stage),
            roi_crop=config.roi_crop,
            fpn_head=config.fpn_head,
            benchmark_mode=benchmark_mode,
            **kwargs,
        )
        if kwargs["feature_extractor"].load_weights() and model.fpn is None:
            # Every stage's head starts from the pretrained box classifier.
            for clone in model.box_classifier_models[1:]:
                clone.set_weights(model.box_classifier_models[0].get_weights())
        return model

    def backbone_models(self):
        models = super().backbone_models()
        if self.fpn is None:
            models.append(self.box_classifier_models[0])
        return models

    # -- stages 2 and 3: proposals and box classifier ------------------------------
    def _scores(self, logits):
        """Logits [B, N, C+1] -> scores [B, N, C] (background dropped)."""
        scores = self.score_converter(logits)
        return scores[..., 1:] if scores.shape[-1] == self.num_classes + 1 else scores

    def classify_boxes(self, features, rois, training=False):
        """rois [B, N, 4] -> per stage t: ``stage{t}_rois`` (its input),
        ``stage{t}_class_predictions_with_background``,
        ``stage{t}_refined_box_encodings`` [B, N, 1, 4]; the last stage's as
        ``class_predictions_with_background`` / ``refined_box_encodings``;
        at test time also ``ensemble_class_scores`` [B, N, C]."""
        num_rois = rois.shape[1] if rois.shape[1] is not None else tf.shape(rois)[1]
        window = features.get("true_window")
        if window is None:
            window = tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [tf.shape(rois)[0], 1])
        out = {}
        crops = None
        for t, (head, _stage) in enumerate(zip(self.stage_heads, self.stages), 1):
            if t > 1:
                codes = tf.stop_gradient(out[f"stage{t - 1}_refined_box_encodings"][:, :, 0])
                coder = self.stage_target_assigners[t - 2].box_coder
                rois = post_processing.clip_to_window(coder.decode(codes, rois), window)
            crops = self.crop_rois(features, rois, self.roi_crop)
            logits, codes = head(crops, num_rois, training=training)
            out.update(
                {
                    f"stage{t}_rois": rois,
                    f"stage{t}_class_predictions_with_background": logits,
                    f"stage{t}_refined_box_encodings": codes,
                }
            )
        out["class_predictions_with_background"] = logits
        out["refined_box_encodings"] = codes
        if not training:
            scores = [self._scores(logits)]
            for head in self.stage_heads[:-1]:
                scores.append(self._scores(head(crops, num_rois, training=False)[0]))
            out["ensemble_class_scores"] = tf.add_n(scores) / len(scores)
        return out

    # -- loss -------------------------------------------------------------------
    def loss(self, predictions, groundtruth):
        if "roi_targets" not in predictions:
            raise ValueError(
                "loss() needs predictions from predict(..., training=True, groundtruth=...)"
            )
        losses = self.rpn_loss(predictions, groundtruth)
        gt = groundtruth_in_input_frame(
            groundtruth, predictions["true_shapes"], tf.unstack(predictions["image_shape"])
        )
        for t, stage in enumerate(self.stages, 1):
            rois = predictions[f"stage{t}_rois"]
            if t == 1:
                targets = predictions["roi_targets"]
                mask = targets["weights"]
            else:
                valid = predictions["roi_valid"] & _nonempty(rois)
                targets = two_stage.assign_roi_targets(
                    rois, valid, gt, self.stage_target_assigners[t - 1]
                )
                mask = targets["eligible"]
            cls, loc = two_stage.per_roi_losses(
                predictions[f"stage{t}_class_predictions_with_background"],
                predictions[f"stage{t}_refined_box_encodings"],
                targets,
                self.classification_loss,
                self.localization_loss,
            )
            w = stage.loss_weight
            losses[f"stage{t}_localization_loss"] = (
                w * self.localization_weight * (two_stage.reduce_roi_losses(loc, mask))
            )
            losses[f"stage{t}_classification_loss"] = (
                w * self.classification_weight * (two_stage.reduce_roi_losses(cls, mask))
            )
        return losses

    # -- post-processing --------------------------------------------------------
    def postprocess(self, predictions, true_shapes):
        """The last stage's boxes, the stage ensemble's scores (or, on
        training predictions, the last stage's)."""
        rois = predictions[f"stage{len(self.stages)}_rois"]
        boxes = self.stage_target_assigners[-1].box_coder.decode(
            predictions["refined_box_encodings"], rois[:, :, None, :]
        )
        scores = predictions.get("ensemble_class_scores")
        if scores is None:
            scores = self._scores(predictions["class_predictions_with_background"])
        valid = predictions.get("roi_valid", predictions.get("proposal_valid"))
        return self.detections_from_boxes(
            boxes, scores, valid, true_shapes, tf.unstack(predictions["image_shape"])
        )
