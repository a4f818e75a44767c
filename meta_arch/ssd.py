"""SSD (Liu et al., ECCV 2016) as configured by Huang et al. (CVPR 2017), and
RetinaNet (Lin et al., ICCV 2017) as its FPN + focal-loss variant.

    image --fixed resize--> extractor --SSD maps | FPN levels--> conv box predictor
          --> (box encodings, class logits) per anchor
    training:  argmax matching -> targets -> smooth L1 + softmax / sigmoid / focal,
               hard negative mining (3:1), normalized by the number of matches
    inference: decode -> score converter -> one batched multi-class NMS

Class columns: a softmax classification loss predicts ``num_classes + 1``
columns, column 0 being background; sigmoid and focal losses predict
``num_classes`` columns (background = every class off).

Anchors depend only on the input and feature-map shapes, so they are computed
once per input shape, eagerly, and enter the graph as a constant
(``anchor_generators.AnchorCache``, shared with the RPN).
"""

import tensorflow as tf

from detbench.config import checks
from detbench.core import (
    anchor_generators as anchor_lib,
    box_coders,
    losses as losses_lib,
    matchers,
    post_processing,
    samplers,
    target_assigner as target_assigner_lib,
)
from detbench.errors import ConfigError
from detbench.feature_extractors.base import build_feature_extractor
from detbench.meta_arch.base import (
    META_ARCHITECTURES,
    DetectionModel,
    buildable,
    no_autograph,
)
from detbench.meta_arch.box_predictor import build_box_predictor, check_box_predictor
from detbench.meta_arch.image_frame import (
    ImageFrame,
    groundtruth_in_input_frame,
    input_hw,
    to_true_frame,
    true_window,
)
from detbench.protos import (
    anchor_generator_pb2,
    image_resizer_pb2,
    losses_pb2,
    matcher_pb2,
    post_processing_pb2,
    ssd_pb2,
)

_FIXED_SHAPE = image_resizer_pb2.FixedShapeResizer()  # its defaults: 300 x 300
DEFAULT_IMAGE_SIZE = (_FIXED_SHAPE.height, _FIXED_SHAPE.width)
_SSD = ssd_pb2.Ssd()  # the constructor's defaults
_LOSS = losses_pb2.Loss()
_PP = post_processing_pb2.PostProcessing


def _map_list(features):
    """The feature maps model's output (a map, a list, or a dict level -> map)
    -> list of maps, finest first."""
    if isinstance(features, dict):
        return [features[k] for k in sorted(features, key=int)]
    if isinstance(features, (list, tuple)):
        return list(features)
    return [features]


def _check_anchor_generator(config, fpn, field):
    """SSD's anchors are multiscale, or multilevel over the extractor's FPN levels."""
    which = config.anchor_generator.WhichOneof("anchor_generator")
    if which == "grid":
        raise ConfigError(
            f"{field}.anchor_generator: SSD uses multiscale (or, with FPN, "
            "multilevel) anchors, not grid"
        )
    if which == "multilevel":
        c = config.anchor_generator.multilevel
        if fpn is None:
            raise ConfigError(
                f"{field}.anchor_generator.multilevel needs feature_extractor.fpn (pyramid levels)"
            )
        if (c.min_level, c.max_level) != (fpn.min_level, fpn.max_level):
            raise ConfigError(
                f"{field}.anchor_generator.multilevel: levels {c.min_level}..{c.max_level} "
                f"differ from feature_extractor.fpn levels {fpn.min_level}..{fpn.max_level}"
            )


def _build_anchor_generator(config, num_maps, fpn):
    """anchor_generator proto (or its default) -> generator (``check_config`` passed)."""
    proto = config.anchor_generator
    if proto.WhichOneof("anchor_generator") is None:
        proto = anchor_generator_pb2.AnchorGenerator()
        if fpn is not None:  # RetinaNet: 3 scales per octave x 3 ratios, side 4 * stride
            proto.multilevel.min_level, proto.multilevel.max_level = fpn.min_level, fpn.max_level
            proto.multilevel.anchor_scale, proto.multilevel.scales_per_octave = 4.0, 3
        else:  # Liu et al.'s
            return anchor_lib.MultiscaleAnchorGenerator(num_layers=num_maps)
    return anchor_lib.build_anchor_generator(proto, num_layers=num_maps)


def _num_anchors_per_location(generator, num_maps):
    per = generator.num_anchors_per_location()
    return list(per) if isinstance(per, (list, tuple)) else [per] * num_maps


@META_ARCHITECTURES.register("ssd")
class SSDMetaArch(DetectionModel):
    """Single-shot detector over an extractor's SSD maps or FPN levels."""

    def __init__(
        self,
        num_classes,
        is_training,
        feature_extractor,
        feature_maps,
        anchor_generator,
        box_predictor,
        box_coder,
        matcher,
        classification_loss,
        localization_loss,
        nms_fn,
        score_converter,
        image_size=DEFAULT_IMAGE_SIZE,
        background_column=True,
        hard_negative_miner=None,
        classification_weight=_LOSS.classification_weight,
        localization_weight=_LOSS.localization_weight,
        normalize_loss_by_num_matches=_SSD.normalize_loss_by_num_matches,
        pad_multiple=1,
        **kwargs,
    ):
        """
        feature_maps: tf_keras.Model, preprocessed images -> list of maps (finest
          first) or dict {str(level): map}; box_predictor: maps -> (box
          encodings [B,N,4], class logits [B,N,C]), C = num_classes + 1 when
          ``background_column`` (softmax) else num_classes; score_converter:
          logits -> scores with ``num_classes`` columns; nms_fn(boxes [B,N,1,4],
          scores, clip_window=[B,4]) -> detections dict. pad_multiple: the
          resized image is zero-padded at the bottom / right to a multiple of
          it (an FPN's top-down pathway needs sides divisible by the backbone's
          largest stride); boxes stay relative to the true image.
        """
        super().__init__(num_classes, is_training, name=kwargs.pop("name", "ssd"), **kwargs)
        self.feature_extractor = feature_extractor
        self.feature_maps = feature_maps
        self.box_predictor = box_predictor
        self.image_size = tuple(int(s) for s in image_size)
        self.image_frame = ImageFrame(
            self.image_size, pad_multiple=pad_multiple, normalize=feature_extractor.preprocess
        )
        self.background_column = bool(background_column)
        self.box_coder = box_coder
        self.target_assigner = target_assigner_lib.TargetAssigner(matcher, box_coder)
        self.classification_loss = classification_loss
        self.localization_loss = localization_loss
        self.classification_weight = float(classification_weight)
        self.localization_weight = float(localization_weight)
        self.hard_negative_miner = hard_negative_miner
        self.normalize_loss_by_num_matches = bool(normalize_loss_by_num_matches)
        self.nms_fn = nms_fn
        self.score_converter = score_converter
        self.anchor_cache = anchor_lib.AnchorCache(anchor_generator)

    # -- building -------------------------------------------------------------
    @classmethod
    def check_config(cls, config, field):
        super().check_config(config, field)
        kind = checks.resolved_resizer(config).WhichOneof("image_resizer")
        if kind != "fixed_shape":
            raise ConfigError(f"{field}.image_resizer: SSD needs fixed_shape, not {kind}")
        fe = config.feature_extractor
        if fe.HasField("output_stride") and not fe.HasField("fpn"):
            raise ConfigError(
                f"{field}.feature_extractor.output_stride: SSD uses the backbone's own "
                "strides; output_stride applies to two-stage models only"
            )
        checks.check_fpn_levels(fe, f"{field}.feature_extractor")
        fpn = fe.fpn if fe.HasField("fpn") else None
        if config.box_predictor.share_weights_across_levels and fpn is None:
            raise ConfigError(
                f"{field}.box_predictor.share_weights_across_levels: needs "
                "feature_extractor.fpn (maps of equal depth)"
            )
        _check_anchor_generator(config, fpn, field)
        # Every SSD extractor gives at least two maps: enough to see anchors
        # per location differ between maps (shared predictor weights).
        num_maps = fpn.max_level - fpn.min_level + 1 if fpn is not None else 2
        generator = buildable(
            f"{field}.anchor_generator", _build_anchor_generator, config, num_maps, fpn
        )
        buildable(f"{field}.box_coder", box_coders.build_box_coder, config.box_coder)
        buildable(f"{field}.loss", losses_lib.build_loss, config.loss)
        if config.HasField("matcher"):
            checks.check_matcher(config.matcher, f"{field}.matcher")
        buildable(f"{field}.matcher", matchers.build_matcher, _matcher_config(config))
        if config.use_hard_negative_mining:
            buildable(
                f"{field}.hard_negative_miner",
                samplers.build_hard_negative_miner,
                config.hard_negative_miner,
            )
        if config.HasField("post_processing"):
            checks.check_nms(config.post_processing, f"{field}.post_processing")
        buildable(
            f"{field}.post_processing",
            post_processing.build_post_processing,
            config.post_processing,
        )
        background_column = _background_column(config)
        _check_score_converter(config.post_processing, background_column, field)
        try:
            check_box_predictor(
                config.box_predictor, _num_anchors_per_location(generator, num_maps)
            )
        except ConfigError as e:
            raise ConfigError(f"{field}.{e}") from None

    @classmethod
    def from_config(cls, config, is_training=True):
        """``config``: an ``ssd_pb2.Ssd`` message (checked first: a few
        milliseconds, so a direct call refuses what ``build_model`` refuses)."""
        cls.check_config(config, "model.ssd")
        fixed = checks.resolved_resizer(config).fixed_shape
        image_size = (fixed.height, fixed.width)
        fe_config = config.feature_extractor
        extractor = build_feature_extractor(fe_config, is_training=is_training, meta_arch="ssd")
        fpn = fe_config.fpn if fe_config.HasField("fpn") else None
        if fpn is not None:
            feature_maps = extractor.build_fpn(fpn.min_level, fpn.max_level, fpn.depth)
            num_maps = fpn.max_level - fpn.min_level + 1
        else:
            feature_maps = extractor.build_ssd_feature_maps()
            num_maps = len(feature_maps.outputs)
        extractor.load_weights()
        anchor_generator = _build_anchor_generator(config, num_maps, fpn)

        cls_loss, loc_loss, cls_weight, loc_weight = losses_lib.build_loss(config.loss)
        background_column = _background_column(config)

        nms_fn, _ = post_processing.build_post_processing(config.post_processing)
        score_converter = _score_converter(config.post_processing, background_column)

        matcher = matchers.build_matcher(_matcher_config(config))
        miner = (
            samplers.build_hard_negative_miner(config.hard_negative_miner)
            if config.use_hard_negative_mining
            else None
        )
        num_columns = config.num_classes + (1 if background_column else 0)
        box_predictor = build_box_predictor(
            config.box_predictor,
            num_columns,
            _num_anchors_per_location(anchor_generator, num_maps),
            background_column=background_column,
            weight_decay=fe_config.weight_decay,
        )
        return cls(
            num_classes=config.num_classes,
            is_training=is_training,
            feature_extractor=extractor,
            feature_maps=feature_maps,
            anchor_generator=anchor_generator,
            box_predictor=box_predictor,
            box_coder=box_coders.build_box_coder(config.box_coder),
            matcher=matcher,
            classification_loss=cls_loss,
            localization_loss=loc_loss,
            nms_fn=nms_fn,
            score_converter=score_converter,
            image_size=image_size,
            pad_multiple=extractor.input_multiple if fpn is not None else 1,
            background_column=background_column,
            hard_negative_miner=miner,
            classification_weight=cls_weight,
            localization_weight=loc_weight,
            normalize_loss_by_num_matches=config.normalize_loss_by_num_matches,
        )

    # -- DetectionModel (preprocess: the base class's, through image_frame) --
    def _build_heads(self):
        """The box predictor on 1x1 zero maps of the extractor's depths."""
        outputs = _map_list(self.feature_maps.output)
        self.box_predictor([tf.zeros([1, 1, 1, t.shape[-1]]) for t in outputs])

    @no_autograph
    def predict(self, inputs, true_shapes, training=False, groundtruth=None):
        features = _map_list(self.feature_maps(inputs, training=training))
        box_encodings, class_logits = self.box_predictor(features, training=training)
        anchors = self.anchor_cache(input_hw(inputs), features)
        if (
            box_encodings.shape[1] is not None
            and anchors.shape[0] is not None
            and box_encodings.shape[1] != anchors.shape[0]
        ):
            raise ValueError(
                f"SSD: the box predictor gives {box_encodings.shape[1]} anchors "
                f"but the anchor generator {anchors.shape[0]}"
            )
        return {
            "box_encodings": box_encodings,
            "class_logits": class_logits,
            "anchors": anchors,
            "image_shape": tf.shape(inputs)[1:3],
            "true_shapes": tf.cast(true_shapes, tf.int32),
        }

    @no_autograph
    def loss(self, predictions, groundtruth):
        box_encodings = predictions["box_encodings"]
        class_logits = predictions["class_logits"]
        anchors = predictions["anchors"]
        # groundtruth is relative to the true image; anchors to the (padded) input
        gt = groundtruth_in_input_frame(
            groundtruth, predictions["true_shapes"], predictions["image_shape"]
        )
        targets = self.target_assigner.batch_assign(
            anchors, gt["boxes"], gt["classes"], gt["num"], gt_is_crowd=gt.get("is_crowd")
        )

        positives = targets["match"] >= 0
        loc_losses = self.localization_loss(
            box_encodings, targets["reg_targets"], targets["reg_weights"]
        )
        one_hot = tf.one_hot(targets["cls_targets"], self.num_classes + 1, dtype=tf.float32)
        if not self.background_column:
            one_hot = one_hot[..., 1:]
        cls_losses = self.classification_loss(class_logits, one_hot, targets["cls_weights"])
        if self.hard_negative_miner is not None:
            decoded = None
            if self.hard_negative_miner.iou_threshold < 1.0:
                decoded = tf.stop_gradient(self.box_coder.decode(box_encodings, anchors[None]))
            mask = self.hard_negative_miner(
                tf.stop_gradient(cls_losses),
                positives,
                negatives=tf.equal(targets["match"], matchers.UNMATCHED),
                decoded_boxes=decoded,
            )
            cls_losses *= mask
            loc_losses *= mask

        if self.normalize_loss_by_num_matches:
            normalizer = tf.maximum(tf.reduce_sum(tf.cast(positives, tf.float32)), 1.0)
        else:  # the mean over the batch's images of the per-image sums
            normalizer = tf.cast(tf.shape(box_encodings)[0], tf.float32)
        return {
            "localization_loss": self.localization_weight * tf.reduce_sum(loc_losses) / normalizer,
            "classification_loss": self.classification_weight
            * tf.reduce_sum(cls_losses)
            / normalizer,
        }

    @no_autograph
    def postprocess(self, predictions, true_shapes):
        image_shape = predictions["image_shape"]
        boxes = self.box_coder.decode(predictions["box_encodings"], predictions["anchors"][None])
        scores = self.score_converter(predictions["class_logits"])
        window = true_window(true_shapes, image_shape)
        detections = self.nms_fn(boxes[:, :, None, :], scores, clip_window=window)
        # input-relative -> true-image-relative (padding kept at zero)
        detections["detection_boxes"] = to_true_frame(
            detections["detection_boxes"], true_shapes, image_shape
        )
        return detections

    def stage_functions(self):
        """feature extractor (preprocess included) -> box predictor; then NMS."""
        return [
            ("feature_extractor", self._prefix(lambda x, _: self.feature_maps(x))),
            ("box_predictor", self._prefix(self.predict)),
        ]

    def backbone_models(self):
        """The extractor's sub-network this model runs (SSD maps or FPN)."""
        return [self.feature_maps]

    @property
    def num_anchors_per_location(self):
        return list(self.box_predictor.num_anchors_per_location)


# -- helpers ------------------------------------------------------------------
def _matcher_config(config):
    """The proto's matcher; unset: argmax at the proto's thresholds (0.5 / 0.5)
    with force match (Liu et al.: every groundtruth gets its best anchor)."""
    if config.HasField("matcher"):
        return config.matcher
    return matcher_pb2.Matcher(argmax=matcher_pb2.ArgMaxMatcher(force_match_for_each_row=True))


def _background_column(config):
    """A softmax classification loss predicts a background column."""
    return losses_lib.classification_loss_kind(config.loss.classification_loss) == "softmax"


def _score_converter_kind(pp_config, background_column):
    if not pp_config.HasField("score_converter"):
        return _PP.SOFTMAX if background_column else _PP.SIGMOID
    return pp_config.score_converter


def _check_score_converter(pp_config, background_column, field):
    converter = _score_converter_kind(pp_config, background_column)
    name = _PP.ScoreConverter.Name(converter)
    if background_column and converter == _PP.SIGMOID:
        raise ConfigError(
            f"{field}.post_processing.score_converter: SIGMOID does not fit a "
            "softmax classification loss (use SOFTMAX)"
        )
    if not background_column and converter == _PP.SOFTMAX:
        raise ConfigError(
            f"{field}.post_processing.score_converter: SOFTMAX needs a softmax "
            f"classification loss; with sigmoid or focal loss use SIGMOID, not {name}"
        )


def _score_converter(pp_config, background_column):
    """Score function logits [..., C(+1)] -> scores [..., num_classes]
    (``_check_score_converter`` passed)."""
    converter = _score_converter_kind(pp_config, background_column)
    fn = post_processing.build_score_converter(converter)
    if background_column and converter == _PP.IDENTITY:
        return lambda logits: fn(logits)[..., 1:]
    return fn
