"""``detbench validate`` refuses exactly what building refuses, with the same
one-line message (issue 29, item 2).

Every shipped pipeline (its extractor swapped for the tiny test extractor, at
a tiny resolution, so that a build costs a fraction of a second) and a
generated set of mutations of tiny models of every meta-architecture: each
numeric field the meta-architecture's message reaches set to -1, each
oneof choice set, each enum value. Where ``check_pipeline`` (what
``validate`` runs) refuses, ``build_model`` must refuse with the same
message; where it passes, ``build_model`` (every variable created) must
succeed.
"""

import glob
import os

import pytest
from google.protobuf import text_format

from detbench.builders.model_builder import build_model
from detbench.config import grid, validate
from detbench.config.loader import load_text_proto
from detbench.errors import ConfigError
from detbench.protos import pipeline_pb2
from tests.conftest import REPO_ROOT
from tests.meta_arch.tiny_extractor import NAME as TINY, register

register()


def _fe(extra=""):
    return f'feature_extractor {{ type: "{TINY}" {extra} }}'


_FPN = "fpn { min_level: 3 max_level: 5 depth: 16 }"
_KEEP = "image_resizer { keep_aspect_ratio { min_dimension: 64 max_dimension: 64 } }"
_RPN = "rpn { conv_depth: 16 max_proposals_train: 32 max_proposals: 8 pre_nms_top_k: 64 }"
BASES = {
    "ssd": "ssd { num_classes: 2 image_resizer { fixed_shape { height: 64 width: 64 } } "
    f"{_fe()} box_predictor {{ depth: 16 }} }}",
    "ssd_fpn": "ssd { num_classes: 2 image_resizer { fixed_shape { height: 64 width: 64 } } "
    f"{_fe(_FPN)} box_predictor {{ depth: 16 }} }}",
    "faster_rcnn": f"faster_rcnn {{ num_classes: 2 {_KEEP} {_fe()} {_RPN} "
    "second_stage_sampler { batch_size: 16 } }",
    "faster_rcnn_fpn": f"faster_rcnn {{ num_classes: 2 {_KEEP} {_fe(_FPN)} "
    "rpn { max_proposals_train: 32 max_proposals: 8 pre_nms_top_k: 64 } "
    "second_stage_sampler { batch_size: 16 } fpn_head { fc_depth: 16 } }",
    "rfcn": f"rfcn {{ num_classes: 2 {_KEEP} {_fe()} {_RPN} reduction_depth: 16 }}",
    "cascade_rcnn": f"cascade_rcnn {{ num_classes: 2 {_KEEP} {_fe()} {_RPN} "
    "second_stage_sampler { batch_size: 16 } }",
}
_PYRAMID = ("feature_extractor", "anchor_generator", "conv_depth", "fpn_head", "box_predictor")
# Names, not numbers: the extractor's own registry checks them.
_SKIP = {"type", "weights_path"}


def _mutations(message, path):
    """(field path, action) for every field ``message`` reaches: numbers set
    to -1 (repeated: -1 appended), enums to each value, oneof choices set."""
    for f in message.DESCRIPTOR.fields:
        p = f"{path}.{f.name}"
        if f.name in _SKIP:
            continue
        if f.type == f.TYPE_MESSAGE:
            if f.is_repeated:
                continue
            if f.containing_oneof is not None:
                yield p, ("set", None)
            yield from _mutations(getattr(message, f.name), p)
        elif f.type == f.TYPE_ENUM:
            for v in f.enum_type.values:
                yield p, ("set", v.number)
        elif f.type == f.TYPE_BOOL:
            yield p, ("set", not f.default_value)
        elif f.type in (f.TYPE_FLOAT, f.TYPE_DOUBLE, f.TYPE_INT32, f.TYPE_INT64):
            yield p, ("append" if f.is_repeated else "set", -1)


def _apply(model, path, action):
    *parents, name = path.split(".")
    message = model
    for part in parents:
        message = getattr(message, part)
    kind, value = action
    if value is None:
        getattr(message, name).SetInParent()
    elif kind == "append":
        getattr(message, name).append(value)
    else:
        setattr(message, name, value)


def _refusal(fn):
    try:
        fn()
    except ConfigError as e:
        return str(e)
    return None


def _assert_validate_is_build(pipeline, build=True):
    validated = _refusal(lambda: validate.check_pipeline(pipeline))
    if validated is None:
        if build:
            build_model(pipeline.model)  # anything raised here is a check validate lacks
        return
    assert "\n" not in validated
    assert _refusal(lambda: build_model(pipeline.model)) == validated


def _pipeline(model_text):
    pipeline = pipeline_pb2.Pipeline()
    text_format.Parse(model_text, pipeline.model)
    return pipeline


def _cases():
    for base, text in BASES.items():
        pipeline = _pipeline(text)
        name = pipeline.model.WhichOneof("model")
        for path, action in _mutations(getattr(pipeline.model, name), f"model.{name}"):
            yield pytest.param(base, path, action, id=f"{base}:{path}={action[1]}")


CASES = list(_cases())


@pytest.mark.parametrize("base", BASES)
def test_the_tiny_bases_validate_and_build(base):
    pipeline = _pipeline(BASES[base])
    validate.check_pipeline(pipeline)
    build_model(pipeline.model)


@pytest.mark.slow  # ~230 of the ~550 mutations validate, and each of those is built
def test_mutated_models_validate_as_they_build():
    """One test over every mutation (a parametrized case each would cost
    pytest's per-test overhead ~1000 times)."""
    assert len(CASES) > 500, len(CASES)
    failures, built = [], set()
    for case in CASES:
        base, path, action = case.values
        pipeline = _pipeline(BASES[base])
        _apply(pipeline.model, path.removeprefix("model."), action)
        # A mutation validate passes is built once per meta-architecture, or
        # on every base where the pyramid (FPN or not) changes its meaning.
        build = (path, action) not in built or any(p in path for p in _PYRAMID)
        built.add((path, action))
        try:
            _assert_validate_is_build(pipeline, build)
        except Exception as e:  # collected: one report of every disagreement
            failures.append(f"{case.id}: {type(e).__name__}: {str(e)[:200]}")
    assert not failures, "\n".join(failures)


def _shipped_pipelines():
    for path in sorted(
        glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.pbtxt"), recursive=True)
    ):
        text = open(path).read()
        if "model {" in text:
            yield pytest.param(path, id=os.path.relpath(path, REPO_ROOT))


@pytest.mark.parametrize("path", _shipped_pipelines())
def test_shipped_pipelines_validate_and_build(path):
    """Each shipped pipeline validates, and builds with the tiny extractor in
    place of its own at 64 px (its other settings kept)."""
    pipeline = load_text_proto(path, pipeline_pb2.Pipeline())
    _, arch = validate.meta_arch_config(pipeline)
    validate.check_pipeline(pipeline)
    arch.feature_extractor.type = TINY
    arch.feature_extractor.ClearField("weights_path")
    grid.set_resolution(pipeline, 64)
    _assert_validate_is_build(pipeline)


@pytest.mark.parametrize(
    "base, field, message",
    [
        (
            "ssd",
            "ssd.image_resizer.keep_aspect_ratio",
            "model.ssd.image_resizer: SSD needs fixed_shape, not keep_aspect_ratio",
        ),
        (
            "faster_rcnn",
            "faster_rcnn.rpn.anchor_generator.multilevel",
            "model.faster_rcnn.rpn.anchor_generator: multilevel anchors need an FPN "
            "extractor (feature_extractor.fpn)",
        ),
    ],
)
def test_what_validate_passed_and_build_refused_before(base, field, message):
    """Issue 29's two examples: validate said OK, then the build raised."""
    pipeline = _pipeline(BASES[base])
    _apply(pipeline.model, field, ("set", None))
    assert _refusal(lambda: validate.check_pipeline(pipeline)) == message
    assert _refusal(lambda: build_model(pipeline.model)) == message


def test_one_reader_resolves_an_unset_resizer_per_meta_architecture():
    """Unset: SSD 300 x 300 fixed, two-stage 600 / 1024 keep aspect ratio
    (the protos' defaults, ssd.proto and faster_rcnn.proto); what the image
    frames, the memory estimate and the checks read."""
    from detbench.config import checks, memory
    from detbench.meta_arch.image_frame import ImageFrame
    from detbench.protos import model_pb2

    model = model_pb2.DetectionModel()
    ssd, frcnn = model.ssd, model_pb2.DetectionModel().faster_rcnn
    assert checks.resolved_resizer(ssd).WhichOneof("image_resizer") == "fixed_shape"
    assert memory.input_side(ssd) == (300, 300)
    assert checks.min_resolution(frcnn) == (600, "image_resizer.keep_aspect_ratio.min_dimension")
    assert memory.input_side(frcnn) == (1024, 1024)
    frame = ImageFrame.from_resizer(checks.resolved_resizer(frcnn))
    assert frame.resized_size(300, 400) == (600, 800)
    assert frame.resized_size(300, 900) == (341, 1024)  # 1024 / 900 * 300 = 341.3
    frcnn.image_resizer.fixed_shape.height = 64
    assert memory.input_side(frcnn) == (64, 300)
