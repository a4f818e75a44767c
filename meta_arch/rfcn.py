"""R-FCN (Dai et al., NIPS 2016) with the settings of Huang et al. (CVPR 2017).

First stage: the extractor's first-stage map and the RPN, exactly as Faster
R-CNN (``meta_arch/two_stage.py``, ``meta_arch/rpn.py``). Second stage: the
per-RoI work is moved before cropping. On the whole first-stage map::

    x = relu(conv1x1(fmap, reduction_depth))             # 1024 in the paper
    maps = conv1x1(x, k*k*(C+1) + k*k*4)                  # score + box maps

and then ONE ``position_sensitive_crop`` call (``core/roi_ops.py``: one
``crop_and_resize`` per bin over all RoIs) pools bin (i, j) of every RoI from
its own channel group and averages the k*k bins (voting): class logits
[B, N, C+1] and class-agnostic box encodings [B, N, 1, 4].  The score maps and
the box maps are one 1x1 convolution whose output channels are grouped per bin
as (C+1 class scores, 4 box codes) - the same arithmetic as two convolutions,
but it lets one crop call pool both.  k and the crop size default to the
extractor's ``rfcn_bins_and_crop`` (k = 7 with 21x21 crops for ResNet, k = 3
with 12x12 for Inception v2 / MobileNet).  Per RoI only the crops and the
averages remain, so the box classifier's cost barely grows with the number of
proposals.

Training: OHEM (Shrivastava et al.) with ``hard_example_miner`` (128 RoIs, NMS
dedupe at 0.7) over all proposals + groundtruth when ``use_ohem`` (the default),
else the random balanced ``second_stage_sampler``; both, the losses
(``rpn_*``, ``box_classifier_*``), post-processing, ``benchmark_mode`` and the
per-stage methods (``extract_features``, ``propose``, ``classify_boxes``,
``postprocess``) come from ``TwoStageDetectionModel``.
"""

import tensorflow as tf
import tf_keras

from detbench.core import roi_ops
from detbench.core.regularizers import l2_regularizer
from detbench.errors import ConfigError
from detbench.meta_arch import two_stage
from detbench.meta_arch.base import META_ARCHITECTURES
from detbench.protos import rfcn_pb2

_RFCN = rfcn_pb2.Rfcn()  # the constructor's defaults


def bins_and_crop(feature_extractor, num_spatial_bins=0, crop_size=0):
    """(k, crop) with 0 meaning the extractor's ``rfcn_bins_and_crop``; an
    explicit k without a crop size gets the extractor's pixels per bin."""
    default_k, default_crop = feature_extractor.rfcn_bins_and_crop
    k = int(num_spatial_bins) or int(default_k)
    crop = int(crop_size) or k * max(int(default_crop) // int(default_k), 1)
    if k <= 0:
        raise ConfigError(f"model.rfcn.num_spatial_bins: must be >= 0, got {num_spatial_bins}")
    if crop <= 0 or crop % k:
        raise ConfigError(
            f"model.rfcn.crop_size: {crop} must be a positive multiple of num_spatial_bins ({k})"
        )
    return k, crop


def _check_head(has_fpn, reduction_depth):
    if has_fpn:
        raise ConfigError(
            "model.rfcn.feature_extractor.fpn: R-FCN pools from the single "
            "first-stage map; remove fpn (FPN is for faster_rcnn / "
            "cascade_rcnn)"
        )
    if reduction_depth <= 0:
        raise ConfigError(f"model.rfcn.reduction_depth: must be > 0, got {reduction_depth}")


@META_ARCHITECTURES.register("rfcn")
class Rfcn(two_stage.TwoStageDetectionModel):
    """Two-stage detector: RPN proposals scored by position-sensitive crops of whole-map scores."""

    def __init__(
        self,
        num_classes,
        is_training,
        feature_extractor,
        rpn,
        num_spatial_bins=_RFCN.num_spatial_bins,
        crop_size=_RFCN.crop_size,
        reduction_depth=_RFCN.reduction_depth,
        **kwargs,
    ):
        """``num_spatial_bins`` / ``crop_size``: k and the crop side (0: the
        extractor's defaults); ``reduction_depth``: the 1x1 reduction before
        the score maps. Other keyword arguments: see ``TwoStageDetectionModel``
        (``hard_example_miner`` set means OHEM)."""
        _check_head(feature_extractor.config.HasField("fpn"), reduction_depth)
        super().__init__(num_classes, is_training, feature_extractor, rpn, **kwargs)
        self.num_spatial_bins, self.crop_size = bins_and_crop(
            feature_extractor, num_spatial_bins, crop_size
        )
        k = self.num_spatial_bins
        weight_decay = feature_extractor.config.weight_decay
        reg = l2_regularizer(weight_decay)
        self.reduction_conv = tf_keras.layers.Conv2D(
            int(reduction_depth),
            1,
            activation="relu",
            kernel_regularizer=reg,
            name="rfcn_reduction",
        )
        # Per bin: C+1 class scores then 4 box codes (class-agnostic).
        self.bin_depth = num_classes + 1 + 4
        self.score_map_conv = tf_keras.layers.Conv2D(
            k * k * self.bin_depth,
            1,
            kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
            kernel_regularizer=reg,
            name="rfcn_position_sensitive_maps",
        )

    @classmethod
    def check_config(cls, config, field):
        _check_head(config.feature_extractor.HasField("fpn"), config.reduction_depth)
        super().check_config(config, field)
        import detbench.feature_extractors  # noqa: F401  (registers the families)
        from detbench.feature_extractors.base import FEATURE_EXTRACTORS

        if config.feature_extractor.type in FEATURE_EXTRACTORS:  # else its own check refuses
            extractor = FEATURE_EXTRACTORS.get(config.feature_extractor.type)
            bins_and_crop(extractor, config.num_spatial_bins, config.crop_size)

    @classmethod
    def from_config(cls, config, is_training=True, benchmark_mode=False):
        """``Rfcn`` proto -> model (OHEM with the proto's ``hard_example_miner``
        settings when ``use_ohem``)."""
        kwargs = two_stage.common_kwargs(config, "rfcn", is_training, use_ohem=config.use_ohem)
        model = cls(
            config.num_classes,
            is_training,
            num_spatial_bins=config.num_spatial_bins,
            crop_size=config.crop_size,
            reduction_depth=config.reduction_depth,
            benchmark_mode=benchmark_mode,
            **kwargs,
        )
        kwargs["feature_extractor"].load_weights()
        return model

    def position_sensitive_maps(self, features):
        """First-stage map -> [B, H, W, k*k*(C+5)] score + box maps."""
        return self.score_map_conv(self.reduction_conv(features["roi_maps"]))

    def classify_boxes(self, features, rois, training=False):
        maps = self.position_sensitive_maps(features)
        pooled = roi_ops.position_sensitive_crop(
            maps, rois, self.crop_size, self.num_spatial_bins
        )  # [B*N, 1, 1, C+5]
        num_rois = rois.shape[1] if rois.shape[1] is not None else tf.shape(rois)[1]
        pooled = tf.reshape(pooled, [-1, num_rois, self.bin_depth])
        return {
            "class_predictions_with_background": pooled[..., : self.num_classes + 1],
            "refined_box_encodings": pooled[..., None, self.num_classes + 1 :],
        }
