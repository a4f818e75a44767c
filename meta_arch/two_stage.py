"""What every two-stage detector shares (Faster R-CNN, R-FCN, Cascade R-CNN).

``TwoStageDetectionModel`` implements the DetectionModel contract as four
stages a benchmark can also call (and time) one by one::

    inputs, true_shapes = model.preprocess(images)
    features = model.extract_features(inputs)            # backbone / FPN
    first = model.propose(features, true_shapes)         # RPN + proposal NMS
    second = model.classify_boxes(features, first["proposal_boxes"])
    detections = model.postprocess({**first, **second}, true_shapes)

``predict`` chains them (and in training samples RoIs against groundtruth);
subclasses implement ``classify_boxes`` (and ``from_config``).

Frames. Inside the model every box is normalized to the *network input*
(the resized image padded to a multiple of the stride): anchors, proposals,
RoIs, targets. Groundtruth arrives relative to the true image and detections
leave relative to it; ``image_frame`` (the module, shared with SSD) owns the
resize / pad and the conversions (the true image is the window
[0, 0, h/H, w/W] of the input).

Helpers for subclasses: ``common_kwargs`` (extractor, RPN, sampler, losses,
post-processing, OHEM from any two-stage proto), ``assign_roi_targets`` +
``sample_rois`` (second-stage targets with any matcher / coder, e.g. one per
cascade stage),
``crop_rois`` (one crop_and_resize, or FPN multilevel),
``BoxClassifierHead`` (pooled features -> class logits + class-specific box
codes), ``fc_box_head`` (FPN's fc head), ``per_roi_losses`` /
``reduce_roi_losses`` and ``detections_from_boxes`` (batched final NMS).
"""

import numpy as np
import tensorflow as tf
import tf_keras

from detbench.config import checks
from detbench.core import (
    box_coders,
    losses as losses_lib,
    matchers,
    post_processing,
    roi_ops,
    samplers,
    target_assigner as target_assigner_lib,
)
from detbench.core.regularizers import l2_regularizer
from detbench.errors import ConfigError
from detbench.feature_extractors.base import build_feature_extractor
from detbench.meta_arch.base import DetectionModel, buildable, no_autograph
from detbench.meta_arch.image_frame import (
    ImageFrame,
    groundtruth_in_input_frame,
    input_hw,
    to_true_frame,
    true_window,
)
from detbench.meta_arch.rpn import RegionProposalNetwork
from detbench.protos import (
    faster_rcnn_pb2,
    image_resizer_pb2,
    losses_pb2,
    matcher_pb2,
    post_processing_pb2,
    sampler_pb2,
)

# Lin et al.: RoIs are cropped from P2-P5 (P6 serves the RPN only).
FPN_MAX_ROI_LEVEL = 5
_FC_HEAD = faster_rcnn_pb2.FcHead()  # the fc head's defaults
_BOX_SAMPLER = sampler_pb2.BoxClassifierSampler()  # the second stage's: 64 RoIs at 0.25


# -- second-stage targets ------------------------------------------------------
def assign_roi_targets(rois, roi_valid, groundtruth, target_assigner):
    """Match RoIs [B, N, 4] against groundtruth (input frame) with any assigner.

    Returns dict: ``cls_targets`` int32 [B, N] (0 = background),
    ``reg_targets`` [B, N, 4] (encoded against the RoIs), ``positive`` and
    ``eligible`` bool [B, N] (valid and not ignored).
    """
    t = target_assigner.batch_assign(
        rois,
        groundtruth["boxes"],
        groundtruth["classes"],
        groundtruth["num"],
        gt_is_crowd=groundtruth.get("is_crowd"),
    )
    eligible = roi_valid & (t["cls_weights"] > 0)
    return {
        "cls_targets": t["cls_targets"],
        "reg_targets": t["reg_targets"],
        "positive": (t["match"] >= 0) & eligible,
        "eligible": eligible,
    }


def sample_rois(rois, targets, sampler, num_samples, seed=None):
    """Balanced minibatch of ``num_samples`` RoIs per image (static shape).

    rois [B, N, 4] and ``assign_roi_targets`` output -> (rois [B, S, 4],
    targets gathered to [B, S] with a float ``weights`` 1/0 marking the
    slots that hold a sampled RoI), S = min(num_samples, N).
    """
    sampled = sampler.batch_subsample(targets["eligible"], targets["positive"], seed=seed)
    n = rois.shape[1]
    k = num_samples if n is None else min(num_samples, int(n))
    _, idx = tf.math.top_k(tf.cast(sampled, tf.float32), k=k)  # sampled ones first
    gathered = {key: tf.gather(value, idx, batch_dims=1) for key, value in targets.items()}
    gathered["weights"] = tf.cast(tf.gather(sampled, idx, batch_dims=1), tf.float32)
    gathered["positive"] = gathered["positive"] & (gathered["weights"] > 0)
    return tf.gather(rois, idx, batch_dims=1), gathered


def per_roi_losses(class_logits, box_encodings, targets, classification_loss, localization_loss):
    """Unreduced second-stage losses per RoI: (classification [B, N],
    localization [B, N]); the box loss uses the encodings of the target class
    (or the single class-agnostic encoding) and counts positives only."""
    cls_targets = targets["cls_targets"]
    cls = classification_loss(class_logits, cls_targets, tf.ones_like(class_logits[..., 0]))
    if box_encodings.shape[2] == 1:
        codes = box_encodings[:, :, 0]
    else:
        codes = tf.gather(box_encodings, tf.maximum(cls_targets - 1, 0), axis=2, batch_dims=2)
    loc = localization_loss(codes, targets["reg_targets"], tf.cast(targets["positive"], tf.float32))
    return cls, loc


def reduce_roi_losses(losses, mask):
    """Per-RoI losses [B, N] summed over ``mask`` [B, N] / number of masked
    RoIs (at least 1), averaged over the batch."""
    mask = tf.cast(mask, tf.float32)
    normalizer = tf.maximum(tf.reduce_sum(mask, 1), 1.0)
    return tf.reduce_mean(tf.reduce_sum(losses * mask, 1) / normalizer)


# -- second-stage heads ---------------------------------------------------------
def fc_box_head(
    num_fc_layers=_FC_HEAD.num_fc_layers,
    fc_depth=_FC_HEAD.fc_depth,
    weight_decay=0.0,
    name="fc_box_head",
    num_conv_layers=_FC_HEAD.num_conv_layers,
    conv_depth=_FC_HEAD.conv_depth,
):
    """FPN's box head: ``num_conv_layers`` 3x3 ReLU convs of ``conv_depth`` on
    the crops (0 by default; 4 with 1 fc is the Model Garden's / Mask R-CNN's
    "4conv1fc" head), flatten, then ``num_fc_layers`` ReLU fc layers."""
    reg = l2_regularizer(weight_decay)
    layers = [
        tf_keras.layers.Conv2D(
            conv_depth,
            3,
            padding="same",
            activation="relu",
            kernel_regularizer=reg,
            name=f"head_conv{i + 1}",
        )
        for i in range(num_conv_layers)
    ]
    layers.append(tf_keras.layers.Flatten())
    layers += [
        tf_keras.layers.Dense(
            fc_depth, activation="relu", kernel_regularizer=reg, name=f"fc{i + 6}"
        )
        for i in range(num_fc_layers)
    ]
    return tf_keras.Sequential(layers, name=name)


def check_fc_head(head, field):
    """An ``FcHead`` proto's layer counts and depths."""
    if (
        min(head.num_fc_layers, head.num_conv_layers) < 0
        or min(head.fc_depth, head.conv_depth) <= 0
    ):
        raise ConfigError(
            f"{field}: layer counts must be >= 0 and depths > 0, got "
            f"{head.num_conv_layers} convs x {head.conv_depth}, "
            f"{head.num_fc_layers} fc x {head.fc_depth}"
        )


def fc_box_head_from_config(head, weight_decay=0.0, name="fc_box_head"):
    """``FcHead`` proto -> ``fc_box_head``."""
    check_fc_head(head, "fpn_head")
    return fc_box_head(
        head.num_fc_layers,
        head.fc_depth,
        weight_decay,
        name=name,
        num_conv_layers=head.num_conv_layers,
        conv_depth=head.conv_depth,
    )


class BoxClassifierHead(tf_keras.layers.Layer):
    """Cropped RoI features [B*N, h, w, C] -> class logits [B, N, C+1] and
    box encodings [B, N, q, 4] (q = num_classes, or 1 when class-agnostic),
    through ``feature_model`` (the extractor's box classifier or an fc head,
    [B*N, ...] -> [B*N, D])."""

    def __init__(self, feature_model, num_classes, class_specific=True, weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.feature_model = feature_model
        self.num_classes = num_classes
        self.num_box_classes = num_classes if class_specific else 1
        reg = l2_regularizer(weight_decay)
        self.class_layer = tf_keras.layers.Dense(
            num_classes + 1,
            kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
            kernel_regularizer=reg,
            name="class_logits",
        )
        self.box_layer = tf_keras.layers.Dense(
            4 * self.num_box_classes,
            kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.001),
            kernel_regularizer=reg,
            name="box_encodings",
        )

    def call(self, crops, num_rois, training=False):
        x = self.feature_model(crops, training=training)
        if x.shape.rank > 2:  # e.g. a conv box classifier without pooling: flatten
            x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
        logits = tf.reshape(self.class_layer(x), [-1, num_rois, self.num_classes + 1])
        codes = tf.reshape(self.box_layer(x), [-1, num_rois, self.num_box_classes, 4])
        return logits, codes


# -- builders -------------------------------------------------------------------
def build_second_stage_post_processing(config, has_field):
    """PostProcessing proto (default: NMS 0.6, 100 detections, softmax)."""
    if not has_field:
        config = post_processing_pb2.PostProcessing(
            batch_non_max_suppression=post_processing_pb2.BatchNonMaxSuppression(),
            score_converter=post_processing_pb2.PostProcessing.SOFTMAX,
        )
    return post_processing.build_post_processing(config)


def build_second_stage_target_assigner(matcher_config, box_coder):
    """Second-stage assigner: the ``Matcher`` proto's (argmax at the proto's
    defaults, 0.5 / 0.5, when unset)."""
    return target_assigner_lib.TargetAssigner(matchers.build_matcher(matcher_config), box_coder)


def _has(config, field):
    return field in config.DESCRIPTOR.fields_by_name and config.HasField(field)


def common_kwargs(config, meta_arch, is_training=True, use_ohem=None):
    """Constructor arguments every two-stage model builds the same way from
    its proto (FasterRcnn, Rfcn, CascadeRcnn share these field names):
    ``feature_extractor``, ``rpn``, ``image_resizer``,
    ``second_stage_target_assigner`` (when the proto has a matcher / coder),
    ``second_stage_sampler``, ``second_stage_loss``, ``post_processing_fns``,
    ``hard_example_miner`` (when ``hard_example_miner`` is set, or
    ``use_ohem`` forces it on / off with the proto's or default settings)."""
    extractor = build_feature_extractor(config.feature_extractor, is_training, meta_arch=meta_arch)
    rpn = RegionProposalNetwork.from_config(
        config.rpn, extractor.rpn_input_shape(), weight_decay=config.feature_extractor.weight_decay
    )
    sampler = config.second_stage_sampler
    kwargs = dict(
        feature_extractor=extractor,
        rpn=rpn,
        image_resizer=checks.resolved_resizer(config),
        second_stage_sampler=samplers.BalancedPositiveNegativeSampler(
            sampler.batch_size, sampler.positive_fraction
        ),
        second_stage_loss=losses_lib.build_loss(config.second_stage_loss),
        post_processing_fns=build_second_stage_post_processing(
            config.second_stage_post_processing, _has(config, "second_stage_post_processing")
        ),
    )
    if "second_stage_matcher" in config.DESCRIPTOR.fields_by_name:
        coder = (
            box_coders.build_box_coder(config.second_stage_box_coder)
            if "second_stage_box_coder" in config.DESCRIPTOR.fields_by_name
            else box_coders.FasterRcnnBoxCoder()
        )
        kwargs["second_stage_target_assigner"] = build_second_stage_target_assigner(
            config.second_stage_matcher, coder
        )
    has_miner = _has(config, "hard_example_miner")
    if use_ohem if use_ohem is not None else has_miner:
        kwargs["hard_example_miner"] = samplers.build_ohem(config.hard_example_miner)
    return kwargs


# -- the model -----------------------------------------------------------------
class TwoStageDetectionModel(DetectionModel):
    """Shared two-stage machinery; subclasses implement ``classify_boxes``.

    Predictions (``predict``): the RPN's ``anchors``,
    ``rpn_objectness_logits`` [B, A], ``rpn_box_encodings`` [B, A, 4],
    ``proposal_boxes`` / ``proposal_scores`` / ``proposal_valid`` [B, P],
    ``num_proposals`` [B]; the RoIs the box classifier saw, ``rois`` [B, N, 4]
    and ``roi_valid`` [B, N] (test: the proposals; training: the sampled
    minibatch, or with OHEM all proposals + groundtruth), ``roi_targets``
    (training only), ``class_predictions_with_background`` [B, N, C+1],
    ``refined_box_encodings`` [B, N, q, 4]; ``image_shape`` [2] and
    ``true_shapes`` [B, 3].
    """

    def __init__(
        self,
        num_classes,
        is_training,
        feature_extractor,
        rpn,
        image_resizer=None,
        second_stage_target_assigner=None,
        second_stage_sampler=None,
        second_stage_loss=None,
        post_processing_fns=None,
        hard_example_miner=None,
        benchmark_mode=False,
        **kwargs,
    ):
        super().__init__(num_classes, is_training, **kwargs)
        self.feature_extractor = feature_extractor
        self.rpn = rpn
        self.image_resizer = image_resizer or image_resizer_pb2.ImageResizer()
        self.fpn = (
            feature_extractor.config.fpn if feature_extractor.config.HasField("fpn") else None
        )
        self.pad_multiple = feature_extractor.input_multiple
        self.image_frame = ImageFrame.from_resizer(
            self.image_resizer, self.pad_multiple, feature_extractor.preprocess
        )
        self.second_stage_target_assigner = second_stage_target_assigner or (
            build_second_stage_target_assigner(
                matcher_pb2.Matcher(), box_coders.FasterRcnnBoxCoder()
            )
        )
        self.second_stage_box_coder = self.second_stage_target_assigner.box_coder
        self.second_stage_sampler = second_stage_sampler or (
            samplers.BalancedPositiveNegativeSampler(
                _BOX_SAMPLER.batch_size, _BOX_SAMPLER.positive_fraction
            )
        )
        (
            self.classification_loss,
            self.localization_loss,
            self.classification_weight,
            self.localization_weight,
        ) = second_stage_loss or losses_lib.build_loss(losses_pb2.Loss())
        self.nms_fn, self.score_converter = post_processing_fns or (
            build_second_stage_post_processing(None, False)
        )
        self.hard_example_miner = hard_example_miner
        self.benchmark_mode = bool(benchmark_mode)
        if self.fpn is not None:
            self.fpn_model = feature_extractor.build_fpn(
                self.fpn.min_level, self.fpn.max_level, self.fpn.depth
            )
        else:
            self.first_stage_model = feature_extractor.build_first_stage()

    @classmethod
    def check_config(cls, config, field):
        """What every two-stage message shares: RPN, second-stage sampler,
        matcher and post-processing."""
        super().check_config(config, field)
        fe = config.feature_extractor
        checks.check_fpn_levels(fe, f"{field}.feature_extractor")
        fpn = fe.fpn if fe.HasField("fpn") else None
        RegionProposalNetwork.check_config(config.rpn, f"{field}.rpn", fpn)
        if config.HasField("second_stage_sampler"):
            s = config.second_stage_sampler
            checks.positive(s.batch_size, f"{field}.second_stage_sampler.batch_size")
            checks.unit_interval(
                s.positive_fraction, f"{field}.second_stage_sampler.positive_fraction", False
            )
            if s.batch_size > config.rpn.max_proposals_train:
                raise ConfigError(
                    f"{field}.second_stage_sampler.batch_size: {s.batch_size} exceeds "
                    f"rpn.max_proposals_train ({config.rpn.max_proposals_train})"
                )
        if _has(config, "second_stage_matcher"):
            checks.check_matcher(config.second_stage_matcher, f"{field}.second_stage_matcher")
        if config.HasField("second_stage_post_processing"):
            checks.check_nms(
                config.second_stage_post_processing, f"{field}.second_stage_post_processing"
            )
        cls._check_buildable_parts(config, field, fpn)

    @staticmethod
    def _check_buildable_parts(config, field, fpn):
        """What ``common_kwargs`` and the heads would refuse to build."""
        for name, build in (
            ("second_stage_box_coder", box_coders.build_box_coder),
            ("second_stage_matcher", matchers.build_matcher),
            ("second_stage_loss", losses_lib.build_loss),
            ("hard_example_miner", samplers.build_ohem),
        ):
            if name in config.DESCRIPTOR.fields_by_name:
                buildable(f"{field}.{name}", build, getattr(config, name))
        buildable(
            f"{field}.second_stage_post_processing",
            build_second_stage_post_processing,
            config.second_stage_post_processing,
            _has(config, "second_stage_post_processing"),
        )
        if _has(config, "roi_crop"):
            crop = config.roi_crop
            checks.positive(crop.initial_crop_size, f"{field}.roi_crop.initial_crop_size")
            # 0: no max-pooling (kernel), or a stride equal to the kernel (roi_ops._maxpool)
            for name in ("maxpool_kernel_size", "maxpool_stride"):
                if getattr(crop, name) < 0:
                    raise ConfigError(
                        f"{field}.roi_crop.{name}: must be >= 0 (0: none), got {getattr(crop, name)}"
                    )
        if fpn is not None and "fpn_head" in config.DESCRIPTOR.fields_by_name:
            check_fc_head(config.fpn_head, f"{field}.fpn_head")

    # -- knobs ----------------------------------------------------------------
    @property
    def max_proposals(self):
        """Proposals sent to the box classifier at test time (retrace after a change)."""
        return self.rpn.max_proposals

    @max_proposals.setter
    def max_proposals(self, value):
        self.rpn.max_proposals = int(value)

    def backbone_models(self):
        return [self._backbone()]

    # -- stage 0: preprocessing: the base class's, through image_frame ------

    # -- stage 1: features ------------------------------------------------------
    @no_autograph
    def extract_features(self, inputs, training=False):
        """inputs [B, H, W, 3] -> dict ``rpn_maps`` (what the RPN runs on),
        ``roi_maps`` (what RoIs are cropped from; a map, or level -> map with
        FPN) and ``image_shape`` (H, W)."""
        return self._features(self._backbone()(inputs, training=training), input_hw(inputs))

    def _backbone(self):
        return self.fpn_model if self.fpn is not None else self.first_stage_model

    def _features(self, backbone_out, image_shape):
        if self.fpn is not None:
            pyramid = {int(level): fmap for level, fmap in backbone_out.items()}
            roi_levels = range(self.fpn.min_level, min(self.fpn.max_level, FPN_MAX_ROI_LEVEL) + 1)
            return {
                "rpn_maps": pyramid,
                "roi_maps": {l: pyramid[l] for l in roi_levels},
                "image_shape": image_shape,
            }
        return {"rpn_maps": backbone_out, "roi_maps": backbone_out, "image_shape": image_shape}

    def _build_heads(self):
        """The RPN and the box classifier on 2x2 zero maps of the backbone's
        depths, with one whole-image RoI."""
        maps = tf.nest.map_structure(
            lambda t: tf.zeros([1, 2, 2, t.shape[-1]]), self._backbone().output
        )
        features = self._features(maps, (self.pad_multiple, self.pad_multiple))
        self.rpn(features["rpn_maps"])
        self.classify_boxes(features, tf.constant([[[0.0, 0.0, 1.0, 1.0]]]))

    # -- stage 2: proposals -----------------------------------------------------
    @no_autograph
    def propose(self, features, true_shapes, training=False):
        """RPN head + proposal decoding / NMS: exactly max_proposals (test) or
        max_proposals_train (training) slots per image; see ``rpn.proposals``."""
        anchors = self.rpn.anchors(features["rpn_maps"], features["image_shape"])
        logits, codes = self.rpn(features["rpn_maps"])
        window = true_window(true_shapes, features["image_shape"])
        # The true-image window travels with the features: box classifiers that
        # refine boxes (Cascade) clip them to it.
        features["true_window"] = window
        max_proposals = self.rpn.max_proposals_train if training else self.rpn.max_proposals
        out = self.rpn.proposals(
            anchors,
            logits,
            codes,
            window,
            max_proposals,
            benchmark_mode=self.benchmark_mode and not training,
        )
        out.update(
            anchors=anchors,
            rpn_objectness_logits=logits,
            rpn_box_encodings=codes,
            image_shape=tf.stack(list(features["image_shape"])),
        )
        return out

    # -- stage 3: box classifier ----------------------------------------------
    @no_autograph
    def crop_rois(self, features, rois, crop_config):
        """rois [B, N, 4] (input frame) -> [B*N, c, c, C]: one crop_and_resize
        (+ max-pool) from the first-stage map, or, with FPN, each RoI from its
        level (Lin et al. eq. 1) at the same crop settings."""
        maps = features["roi_maps"]
        if isinstance(maps, dict):
            return roi_ops.multilevel_crop_and_resize(
                maps,
                rois,
                features["image_shape"],
                crop_config.initial_crop_size,
                maxpool_kernel_size=crop_config.maxpool_kernel_size,
                maxpool_stride=crop_config.maxpool_stride,
            )
        return roi_ops.crop_and_resize_rois(
            maps,
            rois,
            crop_config.initial_crop_size,
            crop_config.maxpool_kernel_size,
            crop_config.maxpool_stride,
        )

    def classify_boxes(self, features, rois, training=False):
        """rois [B, N, 4] -> {"class_predictions_with_background" [B, N, C+1],
        "refined_box_encodings" [B, N, q, 4]} (encoded against the rois)."""
        raise NotImplementedError

    # -- predict ----------------------------------------------------------------
    @no_autograph
    def select_rois(self, proposals, groundtruth):
        """Training RoIs: proposals + groundtruth boxes, matched by the
        second-stage assigner, then the balanced minibatch (or, with OHEM,
        all of them; the miner picks the hard ones in ``loss``).
        -> (rois [B, N, 4], roi_valid [B, N], targets)."""
        num_gt = tf.shape(groundtruth["boxes"])[1]
        gt_valid = tf.range(num_gt)[None, :] < groundtruth["num"][:, None]
        rois = tf.concat([proposals["proposal_boxes"], groundtruth["boxes"]], axis=1)
        valid = tf.concat([proposals["proposal_valid"], gt_valid], axis=1)
        targets = assign_roi_targets(rois, valid, groundtruth, self.second_stage_target_assigner)
        if self.hard_example_miner is not None:
            targets["weights"] = tf.cast(targets["eligible"], tf.float32)
            return rois, targets["eligible"], targets
        rois, targets = sample_rois(
            rois, targets, self.second_stage_sampler, self.second_stage_sampler.batch_size
        )
        return rois, targets["weights"] > 0, targets

    @no_autograph
    def predict(self, inputs, true_shapes, training=False, groundtruth=None):
        features = self.extract_features(inputs, training=training)
        out = self.propose(features, true_shapes, training=training)
        out["true_shapes"] = true_shapes
        if training and groundtruth is not None:
            gt = groundtruth_in_input_frame(groundtruth, true_shapes, features["image_shape"])
            rois, roi_valid, targets = self.select_rois(out, gt)
            out["roi_targets"] = targets
        else:
            rois, roi_valid = out["proposal_boxes"], out["proposal_valid"]
        out.update(rois=rois, roi_valid=roi_valid)
        out.update(self.classify_boxes(features, rois, training=training))
        return out

    def stage_functions(self):
        """feature extractor (preprocess included) -> proposals (RPN head,
        decoding, NMS) -> box classifier (crops + head); then post-processing."""

        def proposals(inputs, true_shapes):
            return self.propose(self.extract_features(inputs), true_shapes)

        return [
            ("feature_extractor", self._prefix(lambda x, _: self.extract_features(x))),
            ("proposals", self._prefix(proposals)),
            ("box_classifier", self._prefix(self.predict)),
        ]

    # -- loss -------------------------------------------------------------------
    @no_autograph
    def rpn_loss(self, predictions, groundtruth):
        image_shape = tf.unstack(predictions["image_shape"])
        gt = groundtruth_in_input_frame(groundtruth, predictions["true_shapes"], image_shape)
        window = true_window(predictions["true_shapes"], image_shape)
        targets = self.rpn.targets(
            predictions["anchors"], gt["boxes"], gt["num"], window, gt_is_crowd=gt.get("is_crowd")
        )
        return self.rpn.loss(
            predictions["rpn_objectness_logits"], predictions["rpn_box_encodings"], targets
        )

    @no_autograph
    def box_classifier_loss(self, class_logits, box_encodings, rois, targets):
        """Second-stage losses over the sampled RoIs (``targets["weights"]``),
        or over the OHEM-selected ones when a hard example miner is set."""
        cls, loc = per_roi_losses(
            class_logits, box_encodings, targets, self.classification_loss, self.localization_loss
        )
        cls, loc = self.classification_weight * cls, self.localization_weight * loc
        mask = targets["weights"]
        if self.hard_example_miner is not None:
            mask = self.hard_example_miner(tf.stop_gradient(cls + loc), rois, mask > 0)
        return {
            "box_classifier_localization_loss": reduce_roi_losses(loc, mask),
            "box_classifier_classification_loss": reduce_roi_losses(cls, mask),
        }

    @no_autograph
    def loss(self, predictions, groundtruth):
        if "roi_targets" not in predictions:
            raise ValueError(
                "loss() needs predictions from predict(..., training=True, groundtruth=...)"
            )
        losses = self.rpn_loss(predictions, groundtruth)
        losses.update(
            self.box_classifier_loss(
                predictions["class_predictions_with_background"],
                predictions["refined_box_encodings"],
                predictions["rois"],
                predictions["roi_targets"],
            )
        )
        return losses

    # -- stage 4: post-processing -------------------------------------------
    @no_autograph
    def detections_from_boxes(self, boxes, scores, valid, true_shapes, image_shape):
        """boxes [B, N, q, 4] (input frame), scores [B, N, C] (no background),
        valid [B, N] -> detections relative to the true image (one batched
        NMS call; invalid RoIs never become detections)."""
        boxes = to_true_frame(boxes, true_shapes, image_shape)
        scores = tf.where(valid[..., None], scores, -np.inf)
        window = tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [tf.shape(boxes)[0], 1])
        return self.nms_fn(boxes, scores, clip_window=window)

    @no_autograph
    def postprocess(self, predictions, true_shapes):
        """Decode the box codes against the RoIs (``rois``, or the proposals
        when absent), softmax, mask invalid RoIs, batched per-class NMS."""
        rois = predictions.get("rois", predictions.get("proposal_boxes"))
        valid = predictions.get("roi_valid", predictions.get("proposal_valid"))
        codes = predictions["refined_box_encodings"]
        boxes = self.second_stage_box_coder.decode(codes, rois[:, :, None, :])
        scores = self.score_converter(predictions["class_predictions_with_background"])
        if scores.shape[-1] == self.num_classes + 1:
            scores = scores[..., 1:]
        return self.detections_from_boxes(
            boxes, scores, valid, true_shapes, tf.unstack(predictions["image_shape"])
        )
