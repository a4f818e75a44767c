"""Field checks the configurable classes share (each raises a one-line
ConfigError naming the field): ranges, matchers, NMS settings, the image
resizer. The meta-architectures' ``check_config`` class methods and
``config/validate.py`` use them; nothing here imports TensorFlow.
"""

from detbench.errors import ConfigError

# Sides a model input may have: below, no feature map survives the strides; above,
# one image's activations outgrow any machine this runs on (10000 px: SIGSEGV at 8 GB).
MIN_SIDE, MAX_SIDE = 16, 4096


def unit_interval(value, field, closed_low=True):
    ok = (0.0 <= value <= 1.0) if closed_low else (0.0 < value <= 1.0)
    if not ok:
        raise ConfigError(f"{field}: {value:.6g} is outside {'[0' if closed_low else '(0'}, 1]")


def positive(value, field):
    if value <= 0:
        raise ConfigError(f"{field}: must be positive, got {value}")


def check_matcher(m, field):
    if m.WhichOneof("matcher") == "argmax":
        a = m.argmax
        unit_interval(a.matched_threshold, f"{field}.argmax.matched_threshold")
        unit_interval(a.unmatched_threshold, f"{field}.argmax.unmatched_threshold")
        if a.unmatched_threshold > a.matched_threshold:
            raise ConfigError(
                f"{field}.argmax: unmatched_threshold ({a.unmatched_threshold}) "
                f"exceeds matched_threshold ({a.matched_threshold})"
            )


def check_nms(post, field):
    n = post.batch_non_max_suppression
    unit_interval(n.score_threshold, f"{field}.batch_non_max_suppression.score_threshold")
    unit_interval(n.iou_threshold, f"{field}.batch_non_max_suppression.iou_threshold")
    positive(n.max_total_detections, f"{field}.batch_non_max_suppression.max_total_detections")
    positive(
        n.max_detections_per_class, f"{field}.batch_non_max_suppression.max_detections_per_class"
    )


def check_fpn_levels(feature_extractor, field):
    """A ``FeatureExtractor`` message's pyramid levels (when it has ``fpn``):
    the models' checks read them before the extractor's own checks run."""
    fpn = feature_extractor.fpn
    if feature_extractor.HasField("fpn") and fpn.min_level >= fpn.max_level:
        raise ConfigError(
            f"{field}.fpn: min_level ({fpn.min_level}) must be below max_level ({fpn.max_level})"
        )


def resolved_resizer(arch):
    """The ``ImageResizer`` a meta-architecture message's model uses, its kind
    always set: the message's own, or when unset the meta-architecture's
    default (SSD: fixed_shape 300 x 300; a two-stage model, whose message has
    an ``rpn``: keep_aspect_ratio 600 / 1024), both at the proto's defaults.
    The one reader of ``image_resizer``: the checks, the memory estimate, the
    grid, the exporter and the models' image frames call it."""
    resizer = type(arch.image_resizer)()
    resizer.CopyFrom(arch.image_resizer)
    if resizer.WhichOneof("image_resizer") is None:
        two_stage = "rpn" in arch.DESCRIPTOR.fields_by_name
        (resizer.keep_aspect_ratio if two_stage else resizer.fixed_shape).SetInParent()
    return resizer


def min_resolution(arch):
    """The smallest side the model will see at its resizer's setting, and its field."""
    r = resolved_resizer(arch)
    if r.WhichOneof("image_resizer") == "fixed_shape":
        return min(r.fixed_shape.height, r.fixed_shape.width), "image_resizer.fixed_shape"
    return r.keep_aspect_ratio.min_dimension, "image_resizer.keep_aspect_ratio.min_dimension"


def check_image_resizer(arch, field):
    """A meta-architecture message's ``image_resizer`` (its default when unset)."""
    side, side_field = min_resolution(arch)
    if side <= 0:
        raise ConfigError(f"{field}.{side_field}: must be positive, got {side}")
    r = resolved_resizer(arch)
    kind = r.WhichOneof("image_resizer")
    if kind == "keep_aspect_ratio" and r.keep_aspect_ratio.max_dimension < (
        r.keep_aspect_ratio.min_dimension
    ):
        raise ConfigError(
            f"{field}.image_resizer.keep_aspect_ratio.max_dimension: "
            f"{r.keep_aspect_ratio.max_dimension} is below min_dimension "
            f"{r.keep_aspect_ratio.min_dimension}"
        )
    sides = {
        "fixed_shape": ("height", "width"),
        "keep_aspect_ratio": ("min_dimension", "max_dimension"),
    }[kind]
    for name in sides:
        value = getattr(getattr(r, kind), name)
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ConfigError(
                f"{field}.image_resizer.{kind}.{name}: {value} px is outside {MIN_SIDE}..{MAX_SIDE}"
            )


# Sweep settings: beyond these a value is a typo, not a plan (10 million steps at a
# second each is four months; a timing of 100000 runs of the slowest cell, a day).
MAX_TRAIN_STEPS = 10_000_000
BENCHMARK_BOUNDS = {
    "num_warmup": (0, 100_000),
    "num_runs": (1, 100_000),
    "intra_op_threads": (0, 1024),
    "inter_op_threads": (0, 1024),
    "num_timing_images": (1, 10_000),
}


def in_range(value, low, high, field):
    if not low <= value <= high:
        raise ConfigError(f"{field}: {value} is outside {low}..{high}")


def check_train_steps(value, field, low=0):
    """A sweep's (or part's, or --train-steps') number of training steps (0: the
    pipelines' own, where ``low`` allows it)."""
    in_range(value, low, MAX_TRAIN_STEPS, field)


def check_sweep_settings(sweep, where):
    """The Sweep message's own fields (benchmark settings, train_steps, out_dir), each
    error naming the field; the grid and the pretraining recipe are checked by
    ``config.grid.expand_grid``."""
    for name, (low, high) in BENCHMARK_BOUNDS.items():
        in_range(getattr(sweep.benchmark, name), low, high, f"{where}: benchmark.{name}")
    check_train_steps(sweep.train_steps, f"{where}: train_steps")
    for g, part in enumerate(sweep.grid):
        name = f" ({part.name})" if part.name else ""
        check_train_steps(part.train_steps, f"{where}: grid[{g}]{name}.train_steps")
    if not sweep.out_dir.strip():
        raise ConfigError(f"{where}: out_dir: empty")
