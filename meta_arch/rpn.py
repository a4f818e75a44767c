"""Region proposal network (Ren et al.), shared by every two-stage model.

One object owns the whole first stage after the feature extractor:

* **anchors**: grid anchors on one feature map (Faster R-CNN, R-FCN) or
  multilevel anchors over an FPN pyramid (one anchor size per level), in
  normalized coordinates of the network input (the padded image).  They are
  computed once per input shape and cached as constants.
* **head**: a ``conv_kernel_size`` conv of ``conv_depth`` (ReLU), then a 1x1
  objectness conv (one sigmoid logit per anchor) and a 1x1 box conv (4 codes
  per anchor); on a pyramid the same head runs on every level.
* **targets and losses**: ArgMax matching at ``positive_iou_threshold`` /
  ``negative_iou_threshold`` (+ each groundtruth's best anchor when
  ``force_match``), a balanced minibatch of ``sampler.batch_size`` anchors per
  image; sigmoid objectness loss and smooth-L1 box loss, both normalized by
  the number of sampled anchors.  Anchors crossing the image boundary are
  *kept* (as in the TF Object Detection API, unlike Ren et al.), but anchors
  whose centre lies in the padding outside the true image are ignored.
* **proposals**: top ``pre_nms_top_k`` anchors by objectness (over all
  pyramid levels together with FPN), decoded and clipped to the true image
  (boxes clipped to nothing are dropped), then ONE batched single-class
  NMS call (``combined_non_max_suppression``) keeping
  exactly ``max_proposals`` slots per image (zero-padded; ``num_proposals``
  says how many are real).  ``benchmark_mode`` fills the empty slots with the
  best-scoring pre-NMS boxes and marks every slot valid, so later stages
  always see exactly ``max_proposals`` real-looking RoIs.
"""

import numpy as np
import tensorflow as tf
import tf_keras

from detbench.config import checks
from detbench.core import (
    anchor_generators,
    box_coders,
    losses as losses_lib,
    matchers,
    post_processing,
    samplers,
    target_assigner as target_assigner_lib,
)
from detbench.core.regularizers import l2_regularizer
from detbench.errors import ConfigError
from detbench.meta_arch.base import buildable, no_autograph
from detbench.protos import anchor_generator_pb2, rpn_pb2, sampler_pb2

# The constructor's defaults are the protos' (Ren et al.'s, as Huang et al. use them).
_RPN = rpn_pb2.RegionProposalNetwork()
_SAMPLER = sampler_pb2.BalancedSampler()


def _anchor_generator(config, levels):
    """The RPN's anchor generator: the proto's, or by default grid anchors on
    one map, multilevel anchors over the FPN ``levels`` (both at the protos'
    defaults); a grid's stride is left to the map when the proto gives none."""
    proto = config.anchor_generator
    if not config.HasField("anchor_generator"):
        proto = anchor_generator_pb2.AnchorGenerator()
        if levels is None:
            proto.grid.SetInParent()
        else:
            proto.multilevel.min_level, proto.multilevel.max_level = levels[0], levels[-1]
    return anchor_generators.build_anchor_generator(proto)


class RegionProposalNetwork(tf_keras.layers.Layer):
    """The first stage: anchors, RPN head, targets / losses and proposals.

    ``anchor_generator`` is a ``GridAnchorGenerator`` (single feature map) or a
    ``MultilevelAnchorGenerator`` (``feature_maps`` is then a dict level -> map).
    """

    def __init__(
        self,
        anchor_generator,
        box_coder=None,
        conv_depth=_RPN.conv_depth,
        conv_kernel_size=_RPN.conv_kernel_size,
        positive_iou_threshold=_RPN.positive_iou_threshold,
        negative_iou_threshold=_RPN.negative_iou_threshold,
        force_match=_RPN.force_match,
        batch_size=_SAMPLER.batch_size,
        positive_fraction=_SAMPLER.positive_fraction,
        nms_iou_threshold=_RPN.nms_iou_threshold,
        max_proposals_train=_RPN.max_proposals_train,
        max_proposals=_RPN.max_proposals,
        pre_nms_top_k=_RPN.pre_nms_top_k,
        localization_loss_weight=_RPN.localization_loss_weight,
        objectness_loss_weight=_RPN.objectness_loss_weight,
        weight_decay=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.anchor_generator = anchor_generator
        self.multilevel = isinstance(anchor_generator, anchor_generators.MultilevelAnchorGenerator)
        self.box_coder = box_coder or box_coders.FasterRcnnBoxCoder()
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.max_proposals_train = int(max_proposals_train)
        self.max_proposals = int(max_proposals)
        self.pre_nms_top_k = int(pre_nms_top_k)
        self.localization_loss_weight = float(localization_loss_weight)
        self.objectness_loss_weight = float(objectness_loss_weight)
        self.target_assigner = target_assigner_lib.TargetAssigner(
            matchers.ArgMaxMatcher(
                positive_iou_threshold, negative_iou_threshold, force_match_for_each_row=force_match
            ),
            self.box_coder,
        )
        self.sampler = samplers.BalancedPositiveNegativeSampler(batch_size, positive_fraction)
        self.objectness_loss = losses_lib.WeightedSigmoidClassificationLoss()
        self.localization_loss = losses_lib.WeightedSmoothL1LocalizationLoss()
        self.anchor_cache = anchor_generators.AnchorCache(anchor_generator)

        num_anchors = anchor_generator.num_anchors_per_location()
        reg = l2_regularizer(weight_decay)

        def init():
            return tf_keras.initializers.TruncatedNormal(stddev=0.01)

        self.conv = tf_keras.layers.Conv2D(
            conv_depth,
            conv_kernel_size,
            padding="same",
            activation="relu",
            kernel_initializer=init(),
            kernel_regularizer=reg,
            name="rpn_conv",
        )
        self.objectness_conv = tf_keras.layers.Conv2D(
            num_anchors, 1, kernel_initializer=init(), kernel_regularizer=reg, name="rpn_objectness"
        )
        self.box_conv = tf_keras.layers.Conv2D(
            4 * num_anchors, 1, kernel_initializer=init(), kernel_regularizer=reg, name="rpn_box"
        )

    @staticmethod
    def check_config(rpn, field, fpn=None):
        """Raise ConfigError naming the field (``field``: the RPN message's path;
        ``fpn``: the extractor's ``Fpn`` message, None without a pyramid)."""
        checks.unit_interval(rpn.nms_iou_threshold, f"{field}.nms_iou_threshold")
        checks.positive(rpn.max_proposals, f"{field}.max_proposals")
        checks.positive(rpn.max_proposals_train, f"{field}.max_proposals_train")
        if rpn.pre_nms_top_k and rpn.max_proposals > rpn.pre_nms_top_k:
            raise ConfigError(
                f"{field}.max_proposals: {rpn.max_proposals} test proposals exceed "
                f"the {rpn.pre_nms_top_k} the RPN keeps before NMS (rpn.pre_nms_top_k)"
            )
        if rpn.pre_nms_top_k and rpn.max_proposals_train > rpn.pre_nms_top_k:
            raise ConfigError(
                f"{field}.max_proposals_train: {rpn.max_proposals_train} exceeds "
                f"rpn.pre_nms_top_k ({rpn.pre_nms_top_k})"
            )
        if rpn.HasField("sampler"):
            checks.positive(rpn.sampler.batch_size, f"{field}.sampler.batch_size")
            checks.unit_interval(
                rpn.sampler.positive_fraction, f"{field}.sampler.positive_fraction", False
            )
        checks.unit_interval(rpn.positive_iou_threshold, f"{field}.positive_iou_threshold")
        if rpn.negative_iou_threshold > rpn.positive_iou_threshold:
            raise ConfigError(
                f"{field}.negative_iou_threshold: {rpn.negative_iou_threshold} "
                f"exceeds positive_iou_threshold ({rpn.positive_iou_threshold})"
            )
        levels = None if fpn is None else list(range(fpn.min_level, fpn.max_level + 1))
        which = rpn.anchor_generator.WhichOneof("anchor_generator")
        if which == "grid" and levels is not None:
            raise ConfigError(
                f"{field}.anchor_generator: an FPN extractor needs multilevel anchors"
            )
        if which == "multilevel" and levels is None:
            raise ConfigError(
                f"{field}.anchor_generator: multilevel anchors need an FPN "
                "extractor (feature_extractor.fpn)"
            )
        if which not in (None, "grid", "multilevel"):
            raise ConfigError(f"{field}.anchor_generator: use grid (or multilevel with FPN)")
        generator = buildable(f"{field}.anchor_generator", _anchor_generator, rpn, levels)
        if which == "multilevel" and (
            generator.min_level < levels[0] or generator.max_level > levels[-1]
        ):
            raise ConfigError(
                f"{field}.anchor_generator.multilevel: levels {generator.min_level}.."
                f"{generator.max_level} outside the FPN's {levels[0]}..{levels[-1]}"
            )
        if rpn.HasField("conv_depth") or levels is None:
            checks.positive(rpn.conv_depth, f"{field}.conv_depth")
        checks.positive(rpn.conv_kernel_size, f"{field}.conv_kernel_size")
        buildable(f"{field}.box_coder", box_coders.build_box_coder, rpn.box_coder)
        buildable(f"{field}.sampler", samplers.build_sampler, rpn.sampler)

    @classmethod
    def from_config(cls, config, input_shape, weight_decay=0.0):
        """``RegionProposalNetwork`` proto -> RPN over the maps the extractor
        declares (Detectron2's ``from_config(cfg, input_shape)``).

        ``input_shape``: a ``ShapeSpec`` (one first-stage map: its stride is
        the grid anchor stride when the proto leaves it 0), or {level:
        ``ShapeSpec``} (FPN levels: the default anchors are multilevel over
        them, anchor_scale 8, ratios 0.5 1 2, and ``conv_depth``, unless set,
        is their channels).
        """
        levels = sorted(input_shape) if isinstance(input_shape, dict) else None
        generator = _anchor_generator(config, levels)
        if isinstance(generator, anchor_generators.GridAnchorGenerator) and not generator.stride:
            generator.stride = int(input_shape.stride)
        sampler = config.sampler
        # Lin et al.'s FPN RPN head keeps the pyramid depth unless told otherwise.
        conv_depth = (
            input_shape[levels[0]].channels
            if levels is not None and not config.HasField("conv_depth")
            else config.conv_depth
        )
        return cls(
            generator,
            box_coder=box_coders.build_box_coder(config.box_coder),
            conv_depth=conv_depth,
            conv_kernel_size=config.conv_kernel_size,
            positive_iou_threshold=config.positive_iou_threshold,
            negative_iou_threshold=config.negative_iou_threshold,
            force_match=config.force_match,
            batch_size=sampler.batch_size,
            positive_fraction=sampler.positive_fraction,
            nms_iou_threshold=config.nms_iou_threshold,
            max_proposals_train=config.max_proposals_train,
            max_proposals=config.max_proposals,
            pre_nms_top_k=config.pre_nms_top_k,
            localization_loss_weight=config.localization_loss_weight,
            objectness_loss_weight=config.objectness_loss_weight,
            weight_decay=weight_decay,
            name="rpn",
        )

    # -- anchors ----------------------------------------------------------
    def levels(self, feature_maps):
        """The maps the RPN runs on, in anchor order (a list)."""
        if self.multilevel:
            return [feature_maps[level] for level in self.anchor_generator.levels]
        return [feature_maps]

    @no_autograph
    def anchors(self, feature_maps, image_shape):
        """[N, 4] anchors (normalized to the input) for these maps / input size.

        ``image_shape``: (height, width) of the network input, Python ints or
        scalar tensors. With static shapes the anchors are computed once
        (eagerly) per shape and cached, so the traced graph holds a constant.
        """
        return self.anchor_cache(image_shape, self.levels(feature_maps))

    def num_anchors(self, feature_maps):
        """Static anchor count (sum over maps of h * w * anchors per location)."""
        return sum(int(m.shape[1]) * int(m.shape[2]) for m in self.levels(feature_maps)) * (
            self.anchor_generator.num_anchors_per_location()
        )

    # -- head -------------------------------------------------------------
    def call(self, feature_maps):
        """-> (objectness_logits [B, N], box_encodings [B, N, 4]), anchor order."""
        logits, codes = [], []
        for fmap in self.levels(feature_maps):
            x = self.conv(fmap)
            batch = tf.shape(fmap)[0]
            logits.append(tf.reshape(self.objectness_conv(x), [batch, -1]))
            codes.append(tf.reshape(self.box_conv(x), [batch, -1, 4]))
        if len(logits) == 1:
            return logits[0], codes[0]
        return tf.concat(logits, 1), tf.concat(codes, 1)

    # -- training ---------------------------------------------------------
    @no_autograph
    def targets(self, anchors, gt_boxes, num_gt, true_window, gt_is_crowd=None, seed=None):
        """Sampled RPN targets.

        anchors [N, 4]; gt_boxes [B, M, 4] in the same (input) frame; num_gt
        [B]; true_window [B, 4] the true image in the input frame. Returns a
        dict: ``sampled`` bool [B, N], ``positive`` bool [B, N],
        ``reg_targets`` [B, N, 4].
        """
        labels = tf.ones(tf.shape(gt_boxes)[:2], tf.int32)
        assigned = self.target_assigner.batch_assign(
            anchors, gt_boxes, labels, num_gt, gt_is_crowd=gt_is_crowd
        )
        positive = assigned["match"] >= 0
        cy = 0.5 * (anchors[:, 0] + anchors[:, 2])
        cx = 0.5 * (anchors[:, 1] + anchors[:, 3])
        w = true_window[:, None, :]
        inside = (
            (cy[None] >= w[..., 0])
            & (cy[None] <= w[..., 2])
            & (cx[None] >= w[..., 1])
            & (cx[None] <= w[..., 3])
        )
        eligible = (assigned["cls_weights"] > 0) & inside
        sampled = self.sampler.batch_subsample(eligible, positive & eligible, seed=seed)
        return {
            "sampled": sampled,
            "positive": positive & sampled,
            "reg_targets": assigned["reg_targets"],
        }

    @no_autograph
    def loss(self, objectness_logits, box_encodings, targets):
        """-> {"rpn_localization_loss", "rpn_objectness_loss"} (scalars)."""
        sampled = tf.cast(targets["sampled"], tf.float32)
        positive = tf.cast(targets["positive"], tf.float32)
        normalizer = tf.maximum(tf.reduce_sum(sampled, 1), 1.0)
        obj = self.objectness_loss(objectness_logits[..., None], positive[..., None], sampled)
        loc = self.localization_loss(box_encodings, targets["reg_targets"], positive)
        return {
            "rpn_localization_loss": self.localization_loss_weight
            * tf.reduce_mean(tf.reduce_sum(loc, 1) / normalizer),
            "rpn_objectness_loss": self.objectness_loss_weight
            * tf.reduce_mean(tf.reduce_sum(obj, 1) / normalizer),
        }

    # -- proposals ----------------------------------------------------------
    @no_autograph
    def proposals(
        self,
        anchors,
        objectness_logits,
        box_encodings,
        true_window,
        max_proposals,
        benchmark_mode=False,
    ):
        """Decode + clip + NMS -> exactly ``max_proposals`` slots per image.

        Returns dict ``proposal_boxes`` [B, P, 4] (input frame, stop_gradient),
        ``proposal_scores`` [B, P], ``num_proposals`` int32 [B] and
        ``proposal_valid`` bool [B, P] (all True in benchmark mode).
        """
        scores = tf.sigmoid(tf.stop_gradient(objectness_logits))
        codes = tf.stop_gradient(box_encodings)
        num_anchors = anchors.shape[0]
        if num_anchors is not None:
            k = min(self.pre_nms_top_k or num_anchors, num_anchors)
        else:
            k = tf.minimum(self.pre_nms_top_k or tf.shape(anchors)[0], tf.shape(anchors)[0])
        top_scores, top_idx = tf.math.top_k(scores, k=k, sorted=True)
        boxes = self.box_coder.decode(
            tf.gather(codes, top_idx, batch_dims=1), tf.gather(anchors, top_idx)
        )
        boxes = post_processing.clip_to_window(boxes, true_window)
        # Boxes clipped to nothing (anchors in the padding) never become proposals.
        area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
        top_scores = tf.where(area > 0.0, top_scores, -np.inf)
        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :],
            top_scores[:, :, None],
            max_output_size_per_class=max_proposals,
            max_total_size=max_proposals,
            iou_threshold=self.nms_iou_threshold,
            score_threshold=-np.inf,
            pad_per_class=False,
            clip_boxes=False,
        )
        num = tf.cast(nms.valid_detections, tf.int32)
        valid = tf.range(max_proposals)[None, :] < num[:, None]
        out_boxes, out_scores = nms.nmsed_boxes, nms.nmsed_scores
        if benchmark_mode:
            fill_boxes, fill_scores = boxes, tf.maximum(top_scores, 0.0)
            if not (isinstance(k, int) and k >= max_proposals):
                fill_boxes = tf.pad(fill_boxes, [[0, 0], [0, max_proposals], [0, 0]])
                fill_scores = tf.pad(fill_scores, [[0, 0], [0, max_proposals]])
            fill_boxes = fill_boxes[:, :max_proposals]
            fill_scores = fill_scores[:, :max_proposals]
            out_boxes = tf.where(valid[..., None], out_boxes, fill_boxes)
            out_scores = tf.where(valid, out_scores, fill_scores)
            valid = tf.ones_like(valid)
            num = tf.fill(tf.shape(num), max_proposals)
        return {
            "proposal_boxes": tf.stop_gradient(out_boxes),
            "proposal_scores": tf.stop_gradient(out_scores),
            "num_proposals": num,
            "proposal_valid": valid,
        }
