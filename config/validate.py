"""Semantic checks of a Pipeline: each error names the field at fault.

Checks that need a feature extractor's capabilities (supported output
strides, FPN, total stride) ask the extractor class through its registry;
the registry is imported lazily so the config layer stays importable alone.
"""

from detbench.config.train_checks import check_train_config
from detbench.errors import ConfigError
from detbench.meta_arch_names import TWO_STAGE  # noqa: F401  (grid, sweep import it here)


def meta_arch_name(pipeline):
    return pipeline.model.WhichOneof("model")


def meta_arch_config(pipeline):
    name = meta_arch_name(pipeline)
    return name, (getattr(pipeline.model, name) if name else None)


def model_num_classes(pipeline, split):
    """(num_classes, 'model.X.num_classes vs <split>_input_reader') for data checks
    (num_classes None where the pipeline sets no model)."""
    name, arch = meta_arch_config(pipeline)
    if arch is None:
        return None, f"the model's num_classes vs {split}_input_reader"
    return arch.num_classes, f"model.{name}.num_classes vs {split}_input_reader"


def _unit_interval(value, field, closed_low=True):
    ok = (0.0 <= value <= 1.0) if closed_low else (0.0 < value <= 1.0)
    if not ok:
        raise ConfigError(f"{field}: {value:.6g} is outside {'[0' if closed_low else '(0'}, 1]")


def _positive(value, field):
    if value <= 0:
        raise ConfigError(f"{field}: must be positive, got {value}")


def _check_matcher(m, field):
    if m.WhichOneof("matcher") == "argmax":
        a = m.argmax
        _unit_interval(a.matched_threshold, f"{field}.argmax.matched_threshold")
        _unit_interval(a.unmatched_threshold, f"{field}.argmax.unmatched_threshold")
        if a.unmatched_threshold > a.matched_threshold:
            raise ConfigError(
                f"{field}.argmax: unmatched_threshold ({a.unmatched_threshold}) "
                f"exceeds matched_threshold ({a.matched_threshold})"
            )


def _check_nms(post, field):
    n = post.batch_non_max_suppression
    _unit_interval(n.score_threshold, f"{field}.batch_non_max_suppression.score_threshold")
    _unit_interval(n.iou_threshold, f"{field}.batch_non_max_suppression.iou_threshold")
    _positive(n.max_total_detections, f"{field}.batch_non_max_suppression.max_total_detections")
    _positive(
        n.max_detections_per_class, f"{field}.batch_non_max_suppression.max_detections_per_class"
    )


# Sides a model input may have: below, no feature map survives the strides; above,
# one image's activations outgrow any machine this runs on (10000 px: SIGSEGV at 8 GB).
MIN_SIDE, MAX_SIDE = 16, 4096


def _check_sides(arch, field):
    r = arch.image_resizer
    kind = r.WhichOneof("image_resizer")
    sides = {
        "fixed_shape": ("height", "width"),
        "keep_aspect_ratio": ("min_dimension", "max_dimension"),
    }.get(kind, ())
    for name in sides:
        value = getattr(getattr(r, kind), name)
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ConfigError(
                f"{field}.image_resizer.{kind}.{name}: {value} px is outside {MIN_SIDE}..{MAX_SIDE}"
            )


def min_resolution(arch):
    """The smallest side the model will see at its resizer's setting."""
    r = arch.image_resizer
    kind = r.WhichOneof("image_resizer")
    if kind == "fixed_shape":
        return min(r.fixed_shape.height, r.fixed_shape.width), "image_resizer.fixed_shape"
    if kind == "keep_aspect_ratio":
        return r.keep_aspect_ratio.min_dimension, "image_resizer.keep_aspect_ratio.min_dimension"
    return None, None


def _check_extractor(name, arch, field, check_registry):
    fe = arch.feature_extractor
    if not fe.type:
        raise ConfigError(f"{field}.feature_extractor.type: empty")
    if fe.depth_multiplier <= 0:
        raise ConfigError(f"{field}.feature_extractor.depth_multiplier: must be positive")
    if fe.HasField("fpn") and fe.fpn.min_level >= fe.fpn.max_level:
        raise ConfigError(
            f"{field}.feature_extractor.fpn: min_level ({fe.fpn.min_level}) must be "
            f"below max_level ({fe.fpn.max_level})"
        )
    if name == "ssd" and fe.HasField("output_stride") and not fe.HasField("fpn"):
        raise ConfigError(
            f"{field}.feature_extractor.output_stride: SSD uses the backbone's own "
            "strides; output_stride applies to two-stage models only"
        )
    if not check_registry:
        return
    import detbench.feature_extractors  # noqa: F401  (registers the families)
    from detbench.feature_extractors.base import FEATURE_EXTRACTORS

    if fe.type not in FEATURE_EXTRACTORS:
        raise ConfigError(
            f"{field}.feature_extractor.type: {FEATURE_EXTRACTORS.unknown_message(fe.type)}"
        )
    cls = FEATURE_EXTRACTORS.get(fe.type)
    try:
        cls.check_config(fe, meta_arch=name)
    except ConfigError as e:
        raise ConfigError(f"{field}.{e}") from None
    side, side_field = min_resolution(arch)
    needed = cls.max_stride
    if side is not None and side < needed:
        raise ConfigError(
            f"{field}.{side_field}: {side} px is smaller than the network's total "
            f"stride ({needed}) for {fe.type}"
        )


def _check_rpn(rpn, field):
    _unit_interval(rpn.nms_iou_threshold, f"{field}.rpn.nms_iou_threshold")
    _positive(rpn.max_proposals, f"{field}.rpn.max_proposals")
    _positive(rpn.max_proposals_train, f"{field}.rpn.max_proposals_train")
    if rpn.pre_nms_top_k and rpn.max_proposals > rpn.pre_nms_top_k:
        raise ConfigError(
            f"{field}.rpn.max_proposals: {rpn.max_proposals} test proposals exceed "
            f"the {rpn.pre_nms_top_k} the RPN keeps before NMS (rpn.pre_nms_top_k)"
        )
    if rpn.pre_nms_top_k and rpn.max_proposals_train > rpn.pre_nms_top_k:
        raise ConfigError(
            f"{field}.rpn.max_proposals_train: {rpn.max_proposals_train} exceeds "
            f"rpn.pre_nms_top_k ({rpn.pre_nms_top_k})"
        )
    if rpn.HasField("sampler"):
        _positive(rpn.sampler.batch_size, f"{field}.rpn.sampler.batch_size")
        _unit_interval(
            rpn.sampler.positive_fraction, f"{field}.rpn.sampler.positive_fraction", False
        )
    _unit_interval(rpn.positive_iou_threshold, f"{field}.rpn.positive_iou_threshold")
    if rpn.negative_iou_threshold > rpn.positive_iou_threshold:
        raise ConfigError(
            f"{field}.rpn.negative_iou_threshold: {rpn.negative_iou_threshold} "
            f"exceeds positive_iou_threshold ({rpn.positive_iou_threshold})"
        )


def check_model(pipeline, check_registry=True):
    name, arch = meta_arch_config(pipeline)
    if name is None:
        raise ConfigError("model: no meta-architecture set (ssd, faster_rcnn, rfcn, cascade_rcnn)")
    field = f"model.{name}"
    if arch.num_classes <= 0:
        raise ConfigError(f"{field}.num_classes: must be positive, got {arch.num_classes}")
    if arch.HasField("image_resizer"):
        side, side_field = min_resolution(arch)
        if side is not None and side <= 0:
            raise ConfigError(f"{field}.{side_field}: must be positive, got {side}")
        r = arch.image_resizer
        if (
            r.WhichOneof("image_resizer") == "keep_aspect_ratio"
            and r.keep_aspect_ratio.max_dimension < r.keep_aspect_ratio.min_dimension
        ):
            raise ConfigError(
                f"{field}.image_resizer.keep_aspect_ratio.max_dimension: "
                f"{r.keep_aspect_ratio.max_dimension} is below min_dimension "
                f"{r.keep_aspect_ratio.min_dimension}"
            )
        _check_sides(arch, field)
    _check_extractor(name, arch, field, check_registry)
    if name in TWO_STAGE:
        _check_rpn(arch.rpn, field)
        if arch.HasField("second_stage_sampler"):
            s = arch.second_stage_sampler
            _positive(s.batch_size, f"{field}.second_stage_sampler.batch_size")
            _unit_interval(
                s.positive_fraction, f"{field}.second_stage_sampler.positive_fraction", False
            )
            if s.batch_size > arch.rpn.max_proposals_train:
                raise ConfigError(
                    f"{field}.second_stage_sampler.batch_size: {s.batch_size} exceeds "
                    f"rpn.max_proposals_train ({arch.rpn.max_proposals_train})"
                )
        if "second_stage_matcher" in arch.DESCRIPTOR.fields_by_name and arch.HasField(
            "second_stage_matcher"
        ):
            _check_matcher(arch.second_stage_matcher, f"{field}.second_stage_matcher")
        if arch.HasField("second_stage_post_processing"):
            _check_nms(arch.second_stage_post_processing, f"{field}.second_stage_post_processing")
    if name == "ssd":
        if arch.HasField("matcher"):
            _check_matcher(arch.matcher, f"{field}.matcher")
        if arch.HasField("post_processing"):
            _check_nms(arch.post_processing, f"{field}.post_processing")
    if name == "cascade_rcnn":
        for i, st in enumerate(arch.stage):
            _unit_interval(st.iou_threshold, f"{field}.stage[{i}].iou_threshold")
            if st.box_coder_stddev and len(st.box_coder_stddev) != 4:
                raise ConfigError(
                    f"{field}.stage[{i}].box_coder_stddev: needs 4 values, "
                    f"got {len(st.box_coder_stddev)}"
                )


def check_input(reader, field):
    if reader.WhichOneof("source") is None:
        raise ConfigError(f"{field}: no source set (synthetic_shapes, coco_json or tfrecord)")
    if reader.WhichOneof("source") == "coco_json":
        c = reader.coco_json
        if not c.annotations_file:
            raise ConfigError(f"{field}.coco_json.annotations_file: empty")
    if reader.WhichOneof("source") == "tfrecord" and not reader.tfrecord.input_path:
        raise ConfigError(f"{field}.tfrecord.input_path: empty")
    a = reader.augmentation
    if a.scale_jitter_min <= 0 or a.scale_jitter_max < a.scale_jitter_min:
        raise ConfigError(
            f"{field}.augmentation: scale_jitter_min/max must satisfy "
            f"0 < min <= max, got {a.scale_jitter_min}, {a.scale_jitter_max}"
        )


def check_pipeline(pipeline, check_registry=True):
    """Raise ConfigError (naming the field) on the first inconsistency."""
    check_model(pipeline, check_registry=check_registry)
    tc = pipeline.train_config
    check_train_config(tc)
    if tc.fine_tune_checkpoint_type not in ("classification", "detection"):
        raise ConfigError(
            "train_config.fine_tune_checkpoint_type: "
            f"{tc.fine_tune_checkpoint_type!r} is not classification or detection"
        )
    if pipeline.HasField("train_input_reader"):
        check_input(pipeline.train_input_reader, "train_input_reader")
    if pipeline.HasField("eval_input_reader"):
        check_input(pipeline.eval_input_reader, "eval_input_reader")
    known_metrics = ("coco_detection_metrics", "pascal_voc_detection_metrics")
    for i, m in enumerate(pipeline.eval_config.metrics_set):
        if m not in known_metrics:
            raise ConfigError(
                f"eval_config.metrics_set[{i}]: unknown {m!r}; known: {', '.join(known_metrics)}"
            )
    return pipeline
