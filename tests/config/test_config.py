"""The config layer: loading, one-line errors, overrides, validation."""

import subprocess
import sys

import pytest

from detbench.config import apply_override, load_pipeline, parse_text
from detbench.errors import ConfigError
from detbench.protos import pipeline_pb2

FASTER_RCNN = """
model {
  faster_rcnn {
    num_classes: 6
    image_resizer { keep_aspect_ratio { min_dimension: 600 max_dimension: 1024 } }
    feature_extractor { type: "resnet101_v1" output_stride: 16 }
    second_stage_post_processing {
      batch_non_max_suppression { iou_threshold: 0.6 max_total_detections: 100 }
    }
  }
}
train_config { batch_size: 2 num_steps: 10 }
train_input_reader { synthetic_shapes { num_images: 16 } }
eval_input_reader { synthetic_shapes { num_images: 8 split: "val" } }
"""

SSD = """
model {
  ssd {
    num_classes: 6
    image_resizer { fixed_shape { height: 300 width: 300 } }
    feature_extractor { type: "mobilenet_v1" }
  }
}
"""


def write(tmp_path, text, name="p.pbtxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(tmp_path, text, overrides=()):
    return load_pipeline(write(tmp_path, text), overrides, check_registry=False)


def test_load_valid(tmp_path):
    p = load(tmp_path, FASTER_RCNN)
    assert p.model.faster_rcnn.feature_extractor.type == "resnet101_v1"
    assert p.model.faster_rcnn.rpn.max_proposals == 300


def test_malformed_file_names_file_line_column(tmp_path):
    bad = FASTER_RCNN.replace("num_classes: 6", "num_classes: : 6")
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as e:
        load_pipeline(path, check_registry=False)
    msg = str(e.value)
    assert msg.startswith(f"{path}:4:")
    assert "\n" not in msg


def test_unknown_field_lists_names_nearest_first(tmp_path):
    bad = FASTER_RCNN.replace("num_classes: 6", "num_clases: 6")
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as e:
        load_pipeline(path, check_registry=False)
    msg = str(e.value)
    assert msg.startswith(f"{path}:4:")
    assert 'unknown field "num_clases" in FasterRcnn' in msg
    fields = msg.split("fields there: ")[1].split(", ")
    assert fields[0] == "num_classes"
    assert "image_resizer" in fields and "rpn" in fields


def test_bad_value_type(tmp_path):
    path = write(tmp_path, FASTER_RCNN.replace("batch_size: 2", 'batch_size: "two"'))
    with pytest.raises(ConfigError, match=r"p.pbtxt:\d+:\d+: .*batch_size"):
        load_pipeline(path, check_registry=False)


def test_missing_file():
    with pytest.raises(ConfigError, match="nowhere.pbtxt: cannot read"):
        load_pipeline("nowhere.pbtxt")


def test_overrides_any_field(tmp_path):
    p = load(
        tmp_path,
        FASTER_RCNN,
        [
            "model.faster_rcnn.second_stage_post_processing.batch_non_max_suppression.max_total_detections=50",
            "model.faster_rcnn.rpn.max_proposals=10",
            "model.faster_rcnn.feature_extractor.freeze_batchnorm=true",
            "model.faster_rcnn.second_stage_post_processing.score_converter=SIGMOID",
            "model.faster_rcnn.rpn.anchor_generator.grid.scales=0.5,1.0",
            "model.faster_rcnn.image_resizer={fixed_shape {height: 128 width: 96}}",
            "train_input_reader.synthetic_shapes.split=val",
        ],
    )
    fr = p.model.faster_rcnn
    assert fr.second_stage_post_processing.batch_non_max_suppression.max_total_detections == 50
    assert fr.rpn.max_proposals == 10
    assert fr.feature_extractor.freeze_batchnorm is True
    assert fr.second_stage_post_processing.score_converter == 1
    assert list(fr.rpn.anchor_generator.grid.scales) == [0.5, 1.0]
    assert fr.image_resizer.WhichOneof("image_resizer") == "fixed_shape"
    assert (fr.image_resizer.fixed_shape.height, fr.image_resizer.fixed_shape.width) == (128, 96)
    assert p.train_input_reader.synthetic_shapes.split == "val"


def test_override_selects_oneof_and_indexes_repeated():
    p = pipeline_pb2.Pipeline()
    apply_override(p, "model.cascade_rcnn.stage[0].iou_threshold=0.55")
    apply_override(p, "model.cascade_rcnn.stage[1].iou_threshold=0.65")
    apply_override(p, "model.cascade_rcnn.stage[0].box_coder_stddev=0.1,0.1,0.2,0.2")
    assert p.model.WhichOneof("model") == "cascade_rcnn"
    stages = p.model.cascade_rcnn.stage
    assert [round(s.iou_threshold, 2) for s in stages] == [0.55, 0.65]
    assert [round(v, 2) for v in stages[0].box_coder_stddev] == [0.1, 0.1, 0.2, 0.2]


@pytest.mark.parametrize(
    "override,pattern",
    [
        (
            "model.faster_rcnn.rpn.max_proposal=3",
            r"no field 'max_proposal' in RegionProposalNetwork; "
            r"fields there: max_proposals",
        ),
        ("model.faster_rcnn.rpn.max_proposals=many", r"'many' is not an integer"),
        ("model.faster_rcnn.rpn.nms_iou_threshold=x", r"'x' is not a number"),
        ("model.faster_rcnn.feature_extractor.freeze_batchnorm=maybe", "not true or false"),
        (
            "model.faster_rcnn.second_stage_post_processing.score_converter=TANH",
            "not one of IDENTITY, SIGMOID, SOFTMAX",
        ),
        ("model.faster_rcnn.rpn", "expected path=value"),
        ("model.faster_rcnn.num_classes.x=1", "not a message"),
        ("model.cascade_rcnn.stage[5].iou_threshold=0.5", r"index it as stage\[0..0\]"),
    ],
)
def test_override_errors_name_the_override(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        apply_override(pipeline_pb2.Pipeline(), override)
    assert str(e.value).startswith(f"override {override!r}")


@pytest.mark.parametrize(
    "override,field",
    [
        ("model.faster_rcnn.num_classes=0", "model.faster_rcnn.num_classes"),
        ("model.faster_rcnn.rpn.max_proposals=7000", "model.faster_rcnn.rpn.max_proposals"),
        ("model.faster_rcnn.rpn.nms_iou_threshold=1.5", "model.faster_rcnn.rpn.nms_iou_threshold"),
        (
            "model.faster_rcnn.second_stage_sampler.batch_size=3000",
            "model.faster_rcnn.second_stage_sampler.batch_size",
        ),
        (
            "model.faster_rcnn.image_resizer.keep_aspect_ratio.max_dimension=100",
            "model.faster_rcnn.image_resizer.keep_aspect_ratio.max_dimension",
        ),
        ("train_config.batch_size=0", "train_config.batch_size"),
        (
            "train_config.fine_tune_checkpoint_type=imagenet",
            "train_config.fine_tune_checkpoint_type",
        ),
        ("eval_config.metrics_set=coco_metrics", "eval_config.metrics_set[0]"),
        ("train_input_reader.augmentation.scale_jitter_min=2", "train_input_reader.augmentation"),
        (
            "model.faster_rcnn.rpn.negative_iou_threshold=0.9",
            "model.faster_rcnn.rpn.negative_iou_threshold",
        ),
        (
            "model.faster_rcnn.second_stage_matcher.argmax.unmatched_threshold=0.9",
            "model.faster_rcnn.second_stage_matcher.argmax",
        ),
    ],
)
def test_semantic_errors_name_the_field(tmp_path, override, field):
    path = write(tmp_path, FASTER_RCNN)
    with pytest.raises(ConfigError) as e:
        load_pipeline(path, [override], check_registry=False)
    assert str(e.value).startswith(f"{path}: {field}")


def test_ssd_rejects_output_stride(tmp_path):
    with pytest.raises(ConfigError, match="model.ssd.feature_extractor.output_stride: SSD"):
        load(tmp_path, SSD.replace('type: "mobilenet_v1"', 'type: "mobilenet_v1" output_stride: 8'))


def test_no_model(tmp_path):
    with pytest.raises(ConfigError, match="model: no meta-architecture set"):
        load(tmp_path, "train_config { batch_size: 1 }")


def test_parse_text_unknown_nested_message():
    with pytest.raises(
        ConfigError, match='unknown field "heigth" in FixedShapeResizer; fields there: height'
    ):
        parse_text(
            "model { ssd { image_resizer { fixed_shape { heigth: 3 } } } }",
            pipeline_pb2.Pipeline(),
            source="x.pbtxt",
        )


def test_validate_cli_exit_codes(tmp_path):
    good = write(tmp_path, FASTER_RCNN.replace("resnet101_v1", "resnet101_v1"), "good.pbtxt")
    bad = write(tmp_path, FASTER_RCNN.replace("num_classes: 6", "num_classes: -1"), "bad.pbtxt")
    out = subprocess.run(
        [sys.executable, "-m", "detbench.config", "validate", bad], capture_output=True, text=True
    )
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert lines == [f"error: {bad}: model.faster_rcnn.num_classes: must be positive, got -1"]
    del good
