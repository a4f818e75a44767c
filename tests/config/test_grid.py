"""Grid expansion: cross product, skips with reasons, train/test scopes, cache keys."""

import os

import pytest

from detbench.config import load_sweep, parse_text
from detbench.config.grid import expand_grid
from detbench.errors import ConfigError
from detbench.protos import sweep_pb2

CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs"
)

SWEEP = f"""
base {{ meta_arch: "ssd" pipeline: "{CONFIGS}/ssd_mobilenet_v1_300.pbtxt" }}
base {{ meta_arch: "faster_rcnn" pipeline: "{CONFIGS}/faster_rcnn_resnet101_600.pbtxt" }}
base {{ meta_arch: "rfcn" pipeline: "{CONFIGS}/rfcn_resnet101_600.pbtxt" }}
axis {{ name: "meta_arch" values: "ssd" values: "faster_rcnn" values: "rfcn" }}
axis {{ name: "resolution" values: "300" values: "600" }}
axis {{ name: "num_proposals" values: "10" values: "50" values: "300" }}
axis {{ name: "output_stride" values: "8" values: "16" }}
train_steps: 7
override: "train_config.batch_size=1"
"""


def sweep(text=SWEEP):
    return parse_text(text, sweep_pb2.Sweep(), source="test.pbtxt")


def test_cross_product_and_skips():
    grid = expand_grid(sweep(), None, check_registry=False)
    # two-stage: 2 archs x 2 resolutions x 3 proposals x 2 strides; SSD: the
    # proposals and stride axes do not apply, so one cell per resolution.
    assert len(grid.cells) == 2 * 2 * 3 * 2 + 2
    ssd = [c for c in grid.cells if c.meta_arch == "ssd"]
    assert [c.values for c in ssd] == [
        {"meta_arch": "ssd", "resolution": r, "num_proposals": "-", "output_stride": "-"}
        for r in ("300", "600")
    ]
    # the other 2*3*2 - 2 SSD combinations are listed under one reason
    assert grid.skipped == {
        "num_proposals does not apply to ssd; output_stride does not apply to ssd": 2 * 3 * 2 - 2
    }
    assert [c.train_pipeline.model.ssd.image_resizer.fixed_shape.height for c in ssd] == [300, 600]


def test_train_and_test_scopes_share_trained_models():
    grid = expand_grid(sweep(), None, check_registry=False)
    frcnn = [c for c in grid.cells if c.meta_arch == "faster_rcnn"]
    keys = {c.train_key for c in frcnn}
    # training axes: resolution x stride -> 4 trainings; proposals are a test axis
    assert len(keys) == 4
    assert len({c.cell_id for c in grid.cells}) == len(grid.cells)
    assert len(grid.trainings()) == 4 + 4 + 2
    for c in frcnn:
        fr_train = c.train_pipeline.model.faster_rcnn
        fr_test = c.test_pipeline.model.faster_rcnn
        assert fr_test.rpn.max_proposals == int(c.values["num_proposals"])
        assert fr_train.rpn.max_proposals == 300  # training pipeline untouched
        assert fr_train.feature_extractor.output_stride == int(c.values["output_stride"])
        res = int(c.values["resolution"])
        assert fr_train.image_resizer.keep_aspect_ratio.min_dimension == res
        # the max dimension keeps the base ratio 1024/600
        assert fr_train.image_resizer.keep_aspect_ratio.max_dimension == round(res * 1024 / 600)
        assert c.train_pipeline.train_config.num_steps == 7
        assert c.train_pipeline.train_config.batch_size == 1


def test_generic_field_axis_and_scope():
    text = (
        SWEEP
        + """
axis { field: "model.faster_rcnn.second_stage_post_processing.batch_non_max_suppression.iou_threshold"
       values: "0.5" values: "0.6" scope: TEST }
"""
    )
    grid = expand_grid(sweep(text), None, check_registry=False)
    fr = [c for c in grid.cells if c.meta_arch == "faster_rcnn"]
    assert len(fr) == 2 * 3 * 2 * 2
    assert len({c.train_key for c in fr}) == 4  # a test axis: no new trainings
    rfcn = [c for c in grid.cells if c.meta_arch == "rfcn"]
    assert len(rfcn) == 12  # the field does not apply to rfcn
    assert any("does not apply to rfcn" in r for r in grid.skipped)


def test_test_resolution_axis_reuses_training():
    text = f"""
base {{ pipeline: "{CONFIGS}/ssd_mobilenet_v2_300.pbtxt" }}
axis {{ name: "test_resolution" values: "256" values: "300" values: "384" }}
"""
    grid = expand_grid(sweep(text), None, check_registry=False)
    assert len(grid.cells) == 3 and len(grid.trainings()) == 1
    sides = [c.test_pipeline.model.ssd.image_resizer.fixed_shape.height for c in grid.cells]
    assert sides == [256, 300, 384]
    assert {c.train_pipeline.model.ssd.image_resizer.fixed_shape.height for c in grid.cells} == {
        300
    }


@pytest.mark.parametrize(
    "extra,pattern",
    [
        ('axis { name: "resolution" }', r"axis\[4\].values: empty"),
        (
            'axis { name: "resolutoin" values: "3" }',
            r"axis\[4\].name: unknown sweep axis 'resolutoin'; "
            r"known: resolution",
        ),
        ('axis { values: "3" }', r"axis\[4\]: needs a name"),
        (
            'axis { name: "num_proposals" values: "10" scope: TRAIN }',
            r"num_proposals is a test axis",
        ),
        (
            'axis { field: "model.faster_rcnn.rpn.nms_iou_threshold" values: "2.0" }',
            r"cell .*rpn.nms_iou_threshold",
        ),
    ],
)
def test_bad_axes_name_the_axis(extra, pattern):
    with pytest.raises(ConfigError, match=pattern):
        expand_grid(sweep(SWEEP + extra), "test.pbtxt", check_registry=False)


def test_meta_arch_without_base():
    text = SWEEP.replace('values: "rfcn" }', 'values: "rfcn" values: "cascade_rcnn" }')
    with pytest.raises(ConfigError, match=r"axis\[0\].values: no base pipeline for cascade_rcnn"):
        expand_grid(sweep(text), "test.pbtxt", check_registry=False)


def test_missing_base_file(tmp_path):
    path = tmp_path / "s.pbtxt"
    path.write_text('base { pipeline: "missing.pbtxt" }\naxis { name: "resolution" values: "3" }')
    with pytest.raises(ConfigError, match="missing.pbtxt: cannot read"):
        expand_grid(load_sweep(str(path)), str(path), check_registry=False)


def test_impossible_stride_is_skipped_with_reason():
    from tests.meta_arch.tiny_extractor import register

    register()  # a real extractor supporting output strides 8 and 16 only
    text = f"""
base {{ pipeline: "{CONFIGS}/faster_rcnn_resnet101_600.pbtxt" }}
axis {{ name: "feature_extractor" values: "test_tiny" }}
axis {{ name: "output_stride" values: "8" values: "16" values: "32" }}
"""
    grid = expand_grid(sweep(text), None, check_registry=True)
    assert [c.values["output_stride"] for c in grid.cells] == ["8", "16"]
    assert grid.skipped == {
        "feature_extractor.output_stride: test_tiny supports output strides 8, 16, not 32": 1
    }


def test_unknown_extractor_in_axis_is_an_error():
    text = f"""
base {{ pipeline: "{CONFIGS}/faster_rcnn_resnet101_600.pbtxt" }}
axis {{ name: "feature_extractor" values: "resnet51" }}
"""
    with pytest.raises(
        ConfigError, match=r"feature_extractor.type: unknown feature extractor 'resnet51'"
    ):
        expand_grid(sweep(text), "test.pbtxt", check_registry=True)


PARTS = f"""
base {{ meta_arch: "ssd" pipeline: "{CONFIGS}/ssd_mobilenet_v1_300.pbtxt" }}
base {{ meta_arch: "faster_rcnn" pipeline: "{CONFIGS}/faster_rcnn_resnet101_600.pbtxt" }}
axis {{ name: "resolution" values: "300" }}
grid {{ name: "proposals"
  axis {{ name: "meta_arch" values: "ssd" values: "faster_rcnn" }}
  axis {{ name: "num_proposals" values: "10" values: "300" }} }}
grid {{ name: "stride"
  axis {{ name: "meta_arch" values: "faster_rcnn" }}
  axis {{ name: "output_stride" values: "8" values: "16" }} }}
"""


def test_sub_grids_are_a_union_and_shared_cells_count_once():
    grid = expand_grid(sweep(PARTS), None, check_registry=False)
    labels = [c.label for c in grid.cells]
    # part 1: SSD once (proposals do not apply) + Faster R-CNN at 10 and 300;
    # part 2: stride 8 and 16 at the base's 300 proposals; the base stride is 16,
    # so "stride 16" is part 1's 300-proposal cell and is not repeated.
    assert labels == [
        "SSD MobileNet v1 300px",
        "Faster R-CNN ResNet-101 300px, 10 proposals",
        "Faster R-CNN ResNet-101 300px, 300 proposals",
        "Faster R-CNN ResNet-101 stride 8 300px, 300 proposals",
    ]
    assert len(grid.trainings()) == 3  # SSD, Faster R-CNN stride 16, stride 8
    stride8 = grid.cells[-1].train_pipeline.model.faster_rcnn.feature_extractor
    assert stride8.output_stride == 8
    assert grid.skipped == {"num_proposals does not apply to ssd": 1}


def test_sub_grid_axis_errors_name_the_part():
    bad = PARTS.replace('values: "8" values: "16"', "")
    with pytest.raises(ConfigError, match=r"grid\[1\] \(stride\)\.axis\[1\]\.values: empty"):
        expand_grid(sweep(bad), None, check_registry=False)
    twice = PARTS.replace('name: "output_stride"', 'name: "resolution"')
    with pytest.raises(
        ConfigError, match=r"grid\[1\] \(stride\)\.axis\[1\]: axis 'resolution' is given twice"
    ):
        expand_grid(sweep(twice), None, check_registry=False)


def test_sub_grid_own_base_and_train_steps():
    text = (
        PARTS.replace('axis { name: "resolution" values: "300" }', "")
        + f"""
train_steps: 7
grid {{ name: "accuracy" train_steps: 40
  base {{ pipeline: "{CONFIGS}/ssd_resnet50_fpn_640.pbtxt" label: "retina" }}
  axis {{ name: "meta_arch" values: "ssd" }}
  axis {{ name: "resolution" values: "128" values: "64" }} }}
"""
    )
    grid = expand_grid(sweep(text), None, check_registry=False)
    own = [c for c in grid.cells if c.variant]
    assert [c.label for c in own] == [
        "SSD ResNet-50 FPN [retina] 128px",
        "SSD ResNet-50 FPN [retina] 64px",
    ]
    for c in own:  # the part's base (an FPN SSD) and its steps; the sweep's override kept
        assert c.train_pipeline.model.ssd.feature_extractor.HasField("fpn")
        assert c.train_pipeline.train_config.num_steps == 40
    # the other parts keep the sweep's bases and train_steps
    others = [c for c in grid.cells if not c.variant]
    assert {c.train_pipeline.train_config.num_steps for c in others} == {7}
    assert not any(
        c.train_pipeline.model.ssd.feature_extractor.HasField("fpn")
        for c in others
        if c.meta_arch == "ssd"
    )
    assert len(grid.trainings()) == 3 + 2
    # a base's own overrides apply to it alone, before the train steps
    text2 = text.replace('label: "retina"', 'label: "retina" override: "train_config.batch_size=3"')
    cells = expand_grid(sweep(text2), None, check_registry=False).cells
    assert {c.train_pipeline.train_config.batch_size for c in cells if c.variant} == {3}
    # the others keep their files' (SSD MobileNet v1 16, Faster R-CNN R101 2)
    assert {c.train_pipeline.train_config.batch_size for c in cells if not c.variant} == {16, 2}
    # without a label, a part's base is named by its file
    unlabeled = expand_grid(sweep(text.replace(' label: "retina"', "")), None, check_registry=False)
    assert unlabeled.cells[-1].label == "SSD ResNet-50 FPN [ssd_resnet50_fpn_640] 64px"


def test_sweep_base_errors_name_the_file():
    text = f'''base {{ pipeline: "{CONFIGS}/ssd_mobilenet_v1_300.pbtxt" }}
base {{ pipeline: "{CONFIGS}/ssd_resnet50_fpn_640.pbtxt" }}'''
    with pytest.raises(ConfigError, match=r"^s\.pbtxt: base\[1\]: a second ssd base pipeline"):
        expand_grid(sweep(text), "s.pbtxt", check_registry=False)


def _one_part(part):
    return sweep(f"""
base {{ pipeline: "{CONFIGS}/ssd_mobilenet_v1_300.pbtxt" }}
grid {{ name: "acc" {part} }}
""")


def test_sub_grid_base_errors_name_the_part():
    ssd = f'base {{ pipeline: "{CONFIGS}/ssd_mobilenet_v1_300.pbtxt" }}'
    fpn = f'base {{ pipeline: "{CONFIGS}/ssd_resnet50_fpn_640.pbtxt" }}'
    frcnn = f'base {{ meta_arch: "ssd" pipeline: "{CONFIGS}/faster_rcnn_resnet101_600.pbtxt" }}'
    for part, pattern in [
        (ssd + fpn, r"grid\[0\] \(acc\)\.base\[1\]: a second ssd base pipeline"),
        (fpn + " train_steps: -3", r"grid\[0\] \(acc\)\.train_steps: -3 is outside 0\.\.10000000"),
        (frcnn, r"grid\[0\] \(acc\)\.base\[0\]\.meta_arch: 'ssd' but .* faster_rcnn"),
        ('base { pipeline: "" }', r"grid\[0\] \(acc\)\.base\[0\]\.pipeline: empty"),
        (
            fpn.replace(" }", ' override: "train_config.bogus=1" }'),
            r"grid\[0\] \(acc\)\.base\[0\]\.override: .*bogus",
        ),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            expand_grid(_one_part(part), None, check_registry=False)


def test_shipped_sweeps_expand():
    """The default sweep and the study's grid: cells, trainings and skip reasons."""
    default = os.path.join(CONFIGS, "speed_accuracy.pbtxt")
    grid = expand_grid(load_sweep(default), default)
    # study part (MobileNet v2): SSD 1 + (Faster R-CNN, R-FCN) x 3 proposals; Cascade
    # at 100; extractors part: Faster R-CNN MobileNet v1 at 100; stride part: a
    # Faster R-CNN trained at stride 8 (16 is the study's cell); ssd_study part: the
    # SSD without FPN; the FPN SSD tested at 80 px (160 is the study's); deployment
    # part: the FPN SSD as TFLite fp32 and int8 (test axes: no training). 7 trainings:
    # one per meta-architecture, MobileNet v1, stride 8 and the SSD without FPN
    assert len(grid.cells) == 1 + 2 * 3 + 1 + 1 + 1 + 1 + 1 + 2
    assert len(grid.trainings()) == 3 + 1 + 1 + 1 + 1
    assert grid.skipped == {"num_proposals does not apply to ssd": 2}
    ssd = [c for c in grid.cells if c.meta_arch == "ssd"]
    assert [c.test_pipeline.model.ssd.image_resizer.fixed_shape.height for c in ssd] == [
        160,
        160,
        80,
        160,
        160,
    ]
    assert [c.train_pipeline.model.ssd.feature_extractor.HasField("fpn") for c in ssd] == [
        True,
        False,
        True,
        True,
        True,
    ]
    assert len({c.train_key for c in ssd}) == 2
    frcnn_v2 = [
        c
        for c in grid.cells
        if c.meta_arch == "faster_rcnn"
        and c.train_pipeline.model.faster_rcnn.feature_extractor.type == "mobilenet_v2"
    ]
    # proposals: a test axis; stride: a training axis (a model per stride)
    assert len({c.train_key for c in frcnn_v2}) == 2
    assert sorted(
        (
            c.train_pipeline.model.faster_rcnn.feature_extractor.output_stride,
            c.test_pipeline.model.faster_rcnn.feature_extractor.output_stride,
        )
        for c in frcnn_v2
    ) == [(8, 8), (16, 16), (16, 16), (16, 16)]
    # one recipe for every meta-architecture: steps and learning-rate schedule
    steps = {c.train_pipeline.train_config.num_steps for c in grid.cells}
    assert steps == {300}
    schedules = {
        str(c.train_pipeline.train_config.optimizer.adam.learning_rate) for c in grid.cells
    }
    assert len(schedules) == 1
    assert {c.test_pipeline.eval_config.batch_size for c in grid.cells} == {8}
    labels = [c.label for c in grid.cells]
    assert "SSD MobileNet v2 FPN 160px, tested at 80px" in labels
    assert "SSD MobileNet v2 FPN 160px, TFLite fp32" in labels
    assert "SSD MobileNet v2 FPN 160px, TFLite int8" in labels
    assert "Faster R-CNN MobileNet v2 stride 8 256px, 100 proposals" in labels
    assert "SSD MobileNet v2 [no_fpn] 160px" in labels
    study = os.path.join(CONFIGS, "huang2017.pbtxt")
    grid = expand_grid(load_sweep(study), study)
    # 3 archs x 6 extractors x 2 resolutions; two-stage x 6 proposals x 2 strides,
    # stride 8 skipped for the three extractors that cannot; SSD once per res
    two_stage = 2 * (3 * 2 * 6 * 2 + 3 * 2 * 6 * 1)
    assert len(grid.cells) == two_stage + 6 * 2
    assert sum(n for r, n in grid.skipped.items() if "supports output strides 16" in r) == 3 * 24


def test_deployment_labels_read_like_words():
    from detbench.config.grid import deployment_label as label

    assert label() == [] and label("", "") == []
    assert label(runtime="saved_model") == ["SavedModel"]
    assert label(runtime="tflite") == ["TFLite fp32"]
    assert label(runtime="tflite", precision="int8_dynamic", batch_size=1) == [
        "TFLite int8_dynamic"
    ]
    assert label(precision="bf16", batch_size=8) == ["tf.function bf16", "batch 8"]
