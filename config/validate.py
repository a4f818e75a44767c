"""Semantic checks of a Pipeline: each error names the field at fault.

Each part checks its own config: the meta-architecture class (its
``check_config``, through ``META_ARCHITECTURES``) and the feature extractor
class (through ``FEATURE_EXTRACTORS``: supported output strides, FPN, total
stride). The registries are imported lazily so the config layer stays
importable alone; the field checks they share are in ``config/checks.py``.
"""

from detbench.config.checks import check_fpn_levels, min_resolution
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


def _check_extractor_fields(arch, field):
    """The extractor's fields every model reads."""
    fe = arch.feature_extractor
    if not fe.type:
        raise ConfigError(f"{field}.feature_extractor.type: empty")
    if fe.depth_multiplier <= 0:
        raise ConfigError(f"{field}.feature_extractor.depth_multiplier: must be positive")
    check_fpn_levels(fe, f"{field}.feature_extractor")


def _check_extractor(name, arch, field, check_registry):
    """The extractor class's own checks and the total stride against the input."""
    fe = arch.feature_extractor
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
    if side < needed:
        raise ConfigError(
            f"{field}.{side_field}: {side} px is smaller than the network's total "
            f"stride ({needed}) for {fe.type}"
        )


def check_model(pipeline, check_registry=True):
    """The pipeline's model (``check_model_config``)."""
    check_model_config(pipeline.model, check_registry)


def check_model_config(model, check_registry=True):
    """A ``DetectionModel`` message: its meta-architecture's own checks (its
    class's ``check_config``, found through the meta-architecture registry),
    then the extractor's (through the feature-extractor registry, when
    ``check_registry``). ``build_model`` runs the same function, so what
    validates builds."""
    name = model.WhichOneof("model")
    if name is None:
        raise ConfigError("model: no meta-architecture set (ssd, faster_rcnn, rfcn, cascade_rcnn)")
    arch = getattr(model, name)
    import detbench.meta_arch  # noqa: F401  (registers every meta-architecture)
    from detbench.meta_arch.base import META_ARCHITECTURES

    field = f"model.{name}"
    META_ARCHITECTURES.get(name).check_config(arch, field)
    _check_extractor_fields(arch, field)
    _check_extractor(name, arch, field, check_registry)


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
