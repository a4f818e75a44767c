"""Faster R-CNN (Ren et al.) with the settings of Huang et al. (CVPR 2017).

First stage: the extractor's first-stage map (output stride 16, or 8 with
atrous convolution) -> RPN (``meta_arch/rpn.py``). Second stage: each RoI is
cropped with ONE ``crop_and_resize`` to 14x14, max-pooled 2x2 to 7x7, and run
through the extractor's box classifier (e.g. ResNet conv5 + average pool),
then a (num_classes + 1)-way classifier and class-specific box regression
(num_classes * 4). With an FPN extractor (Lin et al.): RPN on every pyramid
level (shared head, one anchor size per level), each RoI cropped from its
level (P2-P5) at the same crop settings (14 -> max-pool -> 7), and a 2-fc
head (``fpn_head``). OHEM (Shrivastava et al.) replaces the random
second-stage sampler when ``hard_example_miner`` is set.

Everything else - preprocessing, proposals, sampling, losses, final NMS, the
per-stage methods a benchmark can time (``extract_features``, ``propose``,
``classify_boxes``, ``postprocess``) and ``benchmark_mode`` - lives in
``meta_arch/two_stage.py``.
"""

import tensorflow as tf

from detbench.meta_arch import two_stage
from detbench.meta_arch.base import META_ARCHITECTURES, no_autograph
from detbench.protos import faster_rcnn_pb2


@META_ARCHITECTURES.register("faster_rcnn")
class FasterRcnn(two_stage.TwoStageDetectionModel):
    """Two-stage detector: RPN proposals, per-RoI crops through the box classifier."""

    def __init__(
        self,
        num_classes,
        is_training,
        feature_extractor,
        rpn,
        roi_crop=None,
        fpn_head=None,
        **kwargs,
    ):
        """``roi_crop``: a ``RoiCrop`` proto (14 -> 2x2 max-pool when None);
        ``fpn_head``: an ``FcHead`` proto used with FPN extractors. Other
        keyword arguments: see ``TwoStageDetectionModel``."""
        super().__init__(num_classes, is_training, feature_extractor, rpn, **kwargs)
        self.roi_crop = roi_crop or faster_rcnn_pb2.RoiCrop()
        weight_decay = feature_extractor.config.weight_decay
        if self.fpn is not None:
            head = fpn_head or faster_rcnn_pb2.FcHead()
            feature_model = two_stage.fc_box_head_from_config(head, weight_decay)
        else:
            feature_model = feature_extractor.build_box_classifier()
        self.box_classifier_model = feature_model
        self.box_head = two_stage.BoxClassifierHead(
            feature_model,
            num_classes,
            class_specific=True,
            weight_decay=weight_decay,
            name="box_classifier_head",
        )

    @classmethod
    def from_config(cls, config, is_training=True, benchmark_mode=False):
        """``FasterRcnn`` proto -> model (backbone initialised from the extractor's
        ``weights_path`` when set)."""
        kwargs = two_stage.common_kwargs(config, "faster_rcnn", is_training)
        model = cls(
            config.num_classes,
            is_training,
            roi_crop=config.roi_crop,
            fpn_head=config.fpn_head,
            benchmark_mode=benchmark_mode,
            **kwargs,
        )
        kwargs["feature_extractor"].load_weights()
        return model

    def backbone_models(self):
        models = super().backbone_models()
        if self.fpn is None:
            models.append(self.box_classifier_model)
        return models

    @no_autograph
    def classify_boxes(self, features, rois, training=False):
        crops = self.crop_rois(features, rois, self.roi_crop)
        num_rois = rois.shape[1] if rois.shape[1] is not None else tf.shape(rois)[1]
        logits, codes = self.box_head(crops, num_rois, training=training)
        return {"class_predictions_with_background": logits, "refined_box_encodings": codes}
