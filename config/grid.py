"""Expand a Sweep into cells: the cross product of its axes over its base pipelines.

Training axes (meta-architecture, extractor, output stride, training
resolution, generic fields by default) change the model that must be
trained; test axes (number of proposals, test resolution, and the deployment
axes runtime, precision, batch_size) change only how the trained model is run.
Each cell carries both pipelines and a ``train_key``
(hash of the training pipeline) so cells that share a trained model share the
key. Combinations that cannot exist are skipped with a reason, counted once.
"""

import dataclasses
import hashlib
import itertools
import os

from google.protobuf import text_format

from detbench.config.checks import check_sweep_settings, resolved_resizer
from detbench.config.loader import load_text_proto
from detbench.config.overrides import apply_override, apply_overrides
from detbench.config.validate import TWO_STAGE, check_pipeline, meta_arch_config
from detbench.errors import ConfigError
from detbench.meta_arch_names import ALL_META_ARCHS
from detbench.registry import Registry


class Skip(Exception):
    """This combination cannot exist (e.g. stride 8 on VGG); the message says why."""


class NotApplicable(Exception):
    """The axis means nothing for this meta-architecture (e.g. proposals on SSD).

    The cell is kept once, with the value shown as ``-``; the other values of
    the axis are skipped as duplicates under this reason.
    """


NA = "-"


@dataclasses.dataclass
class Cell:
    meta_arch: str
    values: dict  # axis label -> value (strings, in axis order)
    train_pipeline: object  # pipeline_pb2.Pipeline
    test_pipeline: object
    train_key: str
    cell_id: str
    variant: str = ""  # the base pipeline's label ("" for the sweep's own bases)
    # The training steps in the labels: set where another cell differs only in them.
    show_steps: bool = False

    @property
    def model_label(self):
        """The trained model, for people: 'SSD MobileNet v2 FPN 160px'."""
        return model_label(self.train_pipeline, self.variant, self.show_steps)

    @property
    def label(self):
        """The cell, for people: the model, then how it is tested where that differs
        from its training ('tested at 80px', '100 proposals', 'stride 8', other axes)."""
        return cell_label(
            self.train_pipeline, self.test_pipeline, self.values, self.variant, self.show_steps
        )


ARCH_NAMES = {
    "ssd": "SSD",
    "faster_rcnn": "Faster R-CNN",
    "rfcn": "R-FCN",
    "cascade_rcnn": "Cascade R-CNN",
}
EXTRACTOR_NAMES = {
    "mobilenet_v1": "MobileNet v1",
    "mobilenet_v2": "MobileNet v2",
    "resnet50_v1": "ResNet-50",
    "resnet101_v1": "ResNet-101",
    "resnet152_v1": "ResNet-152",
    "inception_v2": "Inception v2",
    "inception_v3": "Inception v3",
    "inception_resnet_v2": "Inception-ResNet-v2",
    "vgg16": "VGG-16",
}
RUNTIME_NAMES = {"tf_function": "tf.function", "saved_model": "SavedModel", "tflite": "TFLite"}
# Axes the labels spell out themselves (other axes appear as 'name=value').
_LABELLED_AXES = (
    "runtime",
    "precision",
    "batch_size",
    "meta_arch",
    "feature_extractor",
    "resolution",
    "train_resolution",
    "test_resolution",
    "num_proposals",
    "output_stride",
    "test_output_stride",
)


def model_label(train, variant="", show_steps=False):
    from detbench.config.checks import min_resolution

    name, arch = meta_arch_config(train)
    fe = arch.feature_extractor
    parts = [ARCH_NAMES.get(name, name), EXTRACTOR_NAMES.get(fe.type, fe.type)]
    if fe.depth_multiplier != 1:
        parts.append(f"x{fe.depth_multiplier:g}")
    if fe.HasField("fpn"):
        parts.append("FPN")
    if variant:
        parts.append(f"[{variant}]")
    if name in TWO_STAGE and fe.output_stride != 16 and not fe.HasField("fpn"):
        parts.append(f"stride {fe.output_stride}")
    parts.append(f"{min_resolution(arch)[0]}px")
    if show_steps:
        parts.append(f"{train.train_config.num_steps} steps")
    return " ".join(parts)


def cell_label(train, test, values, variant="", show_steps=False):
    from detbench.config.checks import min_resolution

    name, arch = meta_arch_config(test)
    train_arch = meta_arch_config(train)[1]
    out = [model_label(train, variant, show_steps)]
    resolution = min_resolution(arch)[0]
    if resolution != min_resolution(train_arch)[0]:
        out.append(f"tested at {resolution}px")
    if name in TWO_STAGE:
        out.append(f"{arch.rpn.max_proposals} proposals")
        stride = arch.feature_extractor.output_stride
        if stride != train_arch.feature_extractor.output_stride:
            out.append(f"tested at stride {stride}")
    d = test.deployment
    out += deployment_label(d.runtime, d.precision, d.batch_size)
    out += [f"{k}={v}" for k, v in values.items() if k not in _LABELLED_AXES and v != NA]
    return ", ".join(out)


def deployment_label(runtime="tf_function", precision="fp32", batch_size=1):
    """['TFLite int8'], ['SavedModel'], ['batch 8']: what differs from tf.function fp32 at
    batch 1 (empty or missing values: those defaults)."""
    runtime, precision = runtime or "tf_function", precision or "fp32"
    out = []
    if (runtime, precision) == ("saved_model", "fp32"):
        out.append(RUNTIME_NAMES[runtime])
    elif (runtime, precision) != ("tf_function", "fp32"):
        out.append(f"{RUNTIME_NAMES.get(runtime, runtime)} {precision}")
    if batch_size and batch_size > 1:
        out.append(f"batch {batch_size}")
    return out


@dataclasses.dataclass
class Grid:
    cells: list
    skipped: dict  # reason -> number of combinations skipped
    pretraining: object = None  # the sweep's train.pretrain.Recipe, None when off

    def trainings(self):
        """train_key -> the first cell that needs it (one training each)."""
        out = {}
        for c in self.cells:
            out.setdefault(c.train_key, c)
        return out


def digest(message):
    return hashlib.sha256(text_format.MessageToString(message).encode()).hexdigest()[:12]


# -- the study's axes ------------------------------------------------------------
AXES = Registry("sweep axis")
TRAIN, TEST = "train", "test"


def set_resolution(pipeline, value):
    """Input size ``value`` px: the fixed shape, or the shorter side (aspect ratio kept)."""
    name, arch = meta_arch_config(pipeline)
    side = int(value)
    arch.image_resizer.CopyFrom(resolved_resizer(arch))
    r = arch.image_resizer
    if r.WhichOneof("image_resizer") == "keep_aspect_ratio":
        k = r.keep_aspect_ratio
        ratio = k.max_dimension / k.min_dimension
        k.min_dimension = side
        k.max_dimension = int(round(side * ratio))
    else:
        r.fixed_shape.height = side
        r.fixed_shape.width = side


def _extractor(pipeline):
    return meta_arch_config(pipeline)[1].feature_extractor


@AXES.register("meta_arch")
def _meta_arch_axis(train, test, value):
    """Selects base pipelines (done by expand_grid before any other axis)."""


_meta_arch_axis.scope = TRAIN


def _feature_extractor_axis(train, test, value):
    for p in (train, test):
        _extractor(p).type = value


_feature_extractor_axis.scope = TRAIN
AXES.register("feature_extractor")(_feature_extractor_axis)


def _output_stride_axis(train, test, value):
    name = meta_arch_config(train)[0]
    if name not in TWO_STAGE:
        raise NotApplicable(f"output_stride does not apply to {name}")
    for p in (train, test):
        _extractor(p).output_stride = int(value)


_output_stride_axis.scope = TRAIN
AXES.register("output_stride")(_output_stride_axis)


def _test_output_stride_axis(train, test, value):
    """The model trained at its own stride, run dilated (or strided) at this one: the
    same weights (an atrous backbone's strides change no variable)."""
    name = meta_arch_config(train)[0]
    if name not in TWO_STAGE:
        raise NotApplicable(f"test_output_stride does not apply to {name}")
    _extractor(test).output_stride = int(value)


_test_output_stride_axis.scope = TEST
AXES.register("test_output_stride")(_test_output_stride_axis)


def _num_proposals_axis(train, test, value):
    name, arch = meta_arch_config(test)
    if name not in TWO_STAGE:
        raise NotApplicable(f"num_proposals does not apply to {name}")
    arch.rpn.max_proposals = int(value)


_num_proposals_axis.scope = TEST
AXES.register("num_proposals")(_num_proposals_axis)


def _resolution_axis(train, test, value):
    set_resolution(train, value)
    set_resolution(test, value)


_resolution_axis.scope = TRAIN
AXES.register("resolution")(_resolution_axis)
AXES.register("train_resolution")(_resolution_axis)


def _test_resolution_axis(train, test, value):
    set_resolution(test, value)


_test_resolution_axis.scope = TEST
AXES.register("test_resolution")(_test_resolution_axis)


def _deployment_axis(field, convert=str):
    """A test-scope axis setting ``test.deployment.<field>`` (benchmark/runtimes.py):
    how the trained model is run, not which model is trained."""

    def apply(train, test, value):
        from detbench.benchmark.runtimes import check_value

        check_value(field, value)
        value = convert(value)
        if value == test.deployment.DESCRIPTOR.fields_by_name[field].default_value:
            test.deployment.ClearField(field)  # the default: the same cell as without the axis
        else:
            setattr(test.deployment, field, value)
        if not test.deployment.ListFields():
            test.ClearField("deployment")

    apply.scope = TEST
    return apply


AXES.register("runtime")(_deployment_axis("runtime"))
AXES.register("precision")(_deployment_axis("precision"))
AXES.register("batch_size")(_deployment_axis("batch_size", int))


def _field_axis(field, scope):
    def apply(train, test, value):
        name = meta_arch_config(train)[0]
        parts = field.split(".")
        if len(parts) > 2 and parts[0] == "model" and parts[1] != name:
            raise NotApplicable(f"{field} does not apply to {name}")
        targets = (test,) if scope == TEST else (train, test)
        for p in targets:
            apply_override(p, f"{field}={value}")

    apply.scope = scope
    return apply


def _axis_fn(axis, where):
    if axis.name and axis.field:
        raise ConfigError(f"{where}: set name or field, not both")
    if axis.field:
        scope = TEST if axis.scope == axis.TEST else TRAIN
        return axis.field, _field_axis(axis.field, scope)
    if not axis.name:
        raise ConfigError(f"{where}: needs a name ({', '.join(AXES.names())}) or a field")
    try:
        fn = AXES.get(axis.name)
    except KeyError as e:
        raise ConfigError(f"{where}.name: {e}") from None
    if axis.scope != axis.AUTO and axis.name != "meta_arch":
        forced = TEST if axis.scope == axis.TEST else TRAIN
        if forced != fn.scope:
            raise ConfigError(f"{where}.scope: {axis.name} is a {fn.scope} axis")
    return axis.name, fn


def addressed_to(override):
    """The meta-architecture an override names ('model.faster_rcnn.rpn...=50' ->
    'faster_rcnn'), or None for one that addresses every pipeline."""
    parts = override.split("=", 1)[0].strip().split(".")
    if len(parts) > 2 and parts[0] == "model" and parts[1] in ALL_META_ARCHS:
        return parts[1]
    return None


def _check_overrides_fit(sweep, names, where):
    """A sweep override addressed to one meta-architecture applies to its bases only;
    one whose meta-architecture no base has would apply to nothing: refused."""
    for o in sweep.override:
        arch = addressed_to(o)
        if arch is not None and arch not in names:
            raise ConfigError(
                f"{where}: override {o!r}: addresses {arch}, but no base pipeline is a "
                f"{arch} model (bases: {', '.join(sorted(names))})"
            )


def _load_bases(entries, sweep, sweep_path, where, train_steps, own_part=False, adjust=None):
    """{meta_arch: (pipeline, label)} of ``entries`` (BasePipeline messages), with the
    sweep's overrides, then the base's own, then ``adjust(pipeline)`` (the command
    line's ``--data`` / ``--set``), then ``train_steps`` (> 0) applied."""
    from detbench.protos import pipeline_pb2

    root = os.path.dirname(os.path.abspath(sweep_path)) if sweep_path else os.getcwd()
    bases = {}
    for i, b in enumerate(entries):
        at = f"{where}.base[{i}]" if own_part else f"{where}: base[{i}]"
        if not b.pipeline:
            raise ConfigError(f"{at}.pipeline: empty")
        path = b.pipeline if os.path.isabs(b.pipeline) else os.path.join(root, b.pipeline)
        if not os.path.exists(path) and os.path.exists(b.pipeline):
            path = b.pipeline  # relative to the working directory
        p = load_text_proto(path, pipeline_pb2.Pipeline())
        name = meta_arch_config(p)[0]
        if name is None:
            raise ConfigError(f"{path}: model: no meta-architecture set")
        if b.meta_arch and b.meta_arch != name:
            raise ConfigError(
                f"{at}.meta_arch: {b.meta_arch!r} but {b.pipeline} is a {name} pipeline"
            )
        if name in bases:
            raise ConfigError(
                f"{at}: a second {name} base pipeline; give a part its own bases instead"
            )
        try:
            apply_overrides(p, [o for o in sweep.override if addressed_to(o) in (None, name)])
        except ConfigError as e:
            raise ConfigError(f"{sweep_path}: {e}") from None
        try:
            apply_overrides(p, b.override)
        except ConfigError as e:
            raise ConfigError(f"{at}.override: {e}") from None
        if adjust is not None:
            adjust(p)
        if train_steps > 0:
            p.train_config.num_steps = train_steps
        label = b.label or (os.path.splitext(os.path.basename(b.pipeline))[0] if own_part else "")
        bases[name] = (p, label)
    return bases


def expand_grid(sweep, sweep_path=None, check_registry=True, adjust=None):
    """Return a Grid of the sweep's cells (raises ConfigError on bad axes).

    Without ``grid`` parts: the cross product of the top-level axes. With
    parts: the union over parts of (top-level axes x the part's axes), a cell
    that several parts produce counted once (the first part's labels kept).
    A part's own ``base`` pipelines replace the sweep's for their
    meta-architectures, and its ``train_steps`` the sweep's. ``adjust(pipeline)``
    changes every base pipeline after its overrides (``--data``, ``--set``).
    """
    where_file = sweep_path or "<sweep>"
    check_sweep_settings(sweep, where_file)
    if not sweep.base and not (sweep.grid and all(part.base for part in sweep.grid)):
        raise ConfigError(f"{where_file}: base: no base pipeline given")
    top = [(f"{where_file}: axis[{i}]", a) for i, a in enumerate(sweep.axis)]
    parts = [(where_file, top, sweep.train_steps, ())]
    if sweep.grid:
        parts = []
        for g, part in enumerate(sweep.grid):
            name = f" ({part.name})" if part.name else ""
            where = f"{where_file}: grid[{g}]{name}"
            parts.append(
                (
                    where,
                    top + [(f"{where}.axis[{i}]", a) for i, a in enumerate(part.axis)],
                    part.train_steps or sweep.train_steps,
                    part.base,
                )
            )
    recipe = pretraining_recipe(sweep, where_file)
    cells, skipped, ids, names = [], {}, set(), set()
    for where, axes, steps, own in parts:
        bases = _load_bases(sweep.base, sweep, sweep_path, where_file, steps, adjust=adjust)
        bases.update(
            _load_bases(own, sweep, sweep_path, where, steps, own_part=True, adjust=adjust)
        )
        names.update(bases)
        part = _expand_part(axes, bases, check_registry, recipe)
        for cell in part.cells:
            if cell.cell_id not in ids:
                ids.add(cell.cell_id)
                cells.append(cell)
        for reason, n in part.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    _check_overrides_fit(sweep, names, where_file)
    _show_steps_where_they_differ(cells)
    return Grid(cells, skipped, recipe)


def _show_steps_where_they_differ(cells):
    """Cells that share a label but train for different numbers of steps (grid parts
    that differ only in train_steps) say their steps, so a label tells cells apart."""
    by_label = {}
    for c in cells:
        by_label.setdefault(c.label, []).append(c)
    for group in by_label.values():
        if len({c.train_pipeline.train_config.num_steps for c in group}) > 1:
            for c in group:
                c.show_steps = True


def pretraining_recipe(sweep, where="<sweep>"):
    """The sweep's pretraining recipe (``train.pretrain.Recipe``), or None when off."""
    from detbench.train.pretrain import check_recipe, recipe_from_proto

    if not sweep.pretraining.enabled:
        return None
    recipe = recipe_from_proto(sweep.pretraining)
    try:
        check_recipe(recipe)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return recipe


def _expand_part(sweep_axes, bases, check_registry, recipe=None):
    """The cross product of [(where, Axis)] over the base pipelines."""
    axes, meta_values, labels = [], None, set()
    for where, axis in sweep_axes:
        if not axis.values:
            raise ConfigError(f"{where}.values: empty; give at least one value")
        label, fn = _axis_fn(axis, where)
        if label in labels:
            raise ConfigError(f"{where}: axis {label!r} is given twice")
        labels.add(label)
        if label == "meta_arch":
            missing = [v for v in axis.values if v not in bases]
            if missing:
                raise ConfigError(
                    f"{where}.values: no base pipeline for {', '.join(missing)}; "
                    f"bases: {', '.join(sorted(bases))}"
                )
            meta_values = list(axis.values)
            continue
        axes.append((label, fn, list(axis.values), where))
    order = meta_values or list(bases)
    cells, skipped, seen = [], {}, set()

    def skip(reason):
        skipped[reason] = skipped.get(reason, 0) + 1

    for name in order:
        for combo in itertools.product(*[a[2] for a in axes]):
            base, variant = bases[name]
            train, test = type(base)(), type(base)()
            train.CopyFrom(base)
            test.CopyFrom(base)
            values, not_applicable = {"meta_arch": name}, []
            try:
                for (label, fn, _, where), value in zip(axes, combo):
                    values[label] = value
                    try:
                        fn(train, test, value)
                    except NotApplicable as na:
                        values[label] = NA
                        not_applicable.append(str(na))
                    except ConfigError as e:
                        raise ConfigError(f"{where} value {value!r}: {e}") from None
                key = tuple(values.items())
                if key in seen:
                    skip("; ".join(not_applicable))
                    continue
                seen.add(key)
                if recipe is not None:
                    from detbench.train.pretrain import start_from_pretrained

                    start_from_pretrained(train, recipe)
                _check_cell(train, test, values, check_registry)
            except Skip as s:
                skip(str(s))
                continue
            tkey = digest(train)
            cid = hashlib.sha256((tkey + digest(test)).encode()).hexdigest()[:12]
            cells.append(Cell(name, values, train, test, tkey, cid, variant))
    return Grid(cells, skipped)


def _check_cell(train, test, values, check_registry):
    """Impossible extractor and deployment combinations are skips; other problems are
    errors."""
    from detbench.benchmark.runtimes import skip_reason

    reason = skip_reason(meta_arch_config(test)[0], test.deployment)
    if reason:
        raise Skip(reason)
    if check_registry:
        import detbench.feature_extractors  # noqa: F401
        from detbench.feature_extractors.base import FEATURE_EXTRACTORS

        name, arch = meta_arch_config(train)
        fe = arch.feature_extractor
        if fe.type in FEATURE_EXTRACTORS:
            try:
                FEATURE_EXTRACTORS.get(fe.type).check_config(fe, meta_arch=name)
            except ConfigError as e:
                raise Skip(str(e)) from None
    for p, which in ((train, "training"), (test, "test")):
        try:
            check_pipeline(p, check_registry=check_registry)
        except ConfigError as e:
            cell = " ".join(f"{k}={v}" for k, v in values.items())
            raise ConfigError(f"cell {cell} ({which} pipeline): {e}") from None
