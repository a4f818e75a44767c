"""The generated modules match the .proto sources, and compile on demand."""

import glob
import importlib
import os
import shutil
import subprocess
import sys

from detbench.protos import protoc_build

PROTO_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "protos"
)


def test_every_proto_has_a_current_module():
    protos = sorted(glob.glob(os.path.join(PROTO_DIR, "*.proto")))
    assert len(protos) >= 15
    assert protoc_build.stale_protos(PROTO_DIR) == []


def test_generated_modules_match_sources(tmp_path):
    """Compile the sources afresh in a temp copy; the result equals the checkout's modules."""
    copy = tmp_path / "protos"
    copy.mkdir()
    for p in glob.glob(os.path.join(PROTO_DIR, "*.proto")):
        shutil.copy(p, copy)
    compiled = protoc_build.compile_protos(str(copy), force=True)
    assert len(compiled) == len(glob.glob(os.path.join(PROTO_DIR, "*.proto")))
    for gen in sorted(copy.glob("*_pb2.py")):
        with open(gen) as a, open(os.path.join(PROTO_DIR, gen.name)) as b:
            assert a.read() == b.read(), f"{gen.name} differs from its .proto source"


def test_descriptors_have_every_field_of_the_source():
    """Each message declared in a .proto exists in its module with the same field names."""
    import re

    for path in glob.glob(os.path.join(PROTO_DIR, "*.proto")):
        mod = importlib.import_module(
            "detbench.protos." + os.path.basename(path)[: -len(".proto")] + "_pb2"
        )
        text = open(path).read()
        for m in re.finditer(r"^message (\w+) \{(.*?)^\}", text, re.M | re.S):
            body = re.sub(r"^\s*enum \w+ \{.*?\}", "", m.group(2), flags=re.M | re.S)
            declared = set(
                re.findall(r"^\s*(?:optional|repeated|required)?\s*[\w.]+ (\w+) = \d+", body, re.M)
            )
            msg = getattr(mod, m.group(1))
            assert declared == {f.name for f in msg.DESCRIPTOR.fields}, m.group(1)


def test_stale_module_is_recompiled_at_import(tmp_path):
    """A checkout whose generated module is missing compiles it on import."""
    pkg = tmp_path / "detbench"
    shutil.copytree(
        PROTO_DIR, pkg / "protos", ignore=shutil.ignore_patterns("*_pb2.py", "__pycache__")
    )
    (pkg / "__init__.py").write_text("")
    code = (
        "import detbench.protos.pipeline_pb2 as p; "
        "print(p.Pipeline().model.faster_rcnn.rpn.max_proposals)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "300"
    assert (pkg / "protos" / "pipeline_pb2.py").exists()


def test_paper_defaults():
    from detbench.protos import cascade_rcnn_pb2, pipeline_pb2

    p = pipeline_pb2.Pipeline()
    fr = p.model.faster_rcnn
    assert fr.rpn.sampler.batch_size == 256 and fr.rpn.sampler.positive_fraction == 0.5
    assert abs(fr.rpn.nms_iou_threshold - 0.7) < 1e-7
    assert abs(fr.rpn.positive_iou_threshold - 0.7) < 1e-7
    assert abs(fr.rpn.negative_iou_threshold - 0.3) < 1e-7 and fr.rpn.force_match
    assert fr.second_stage_sampler.batch_size == 64
    assert fr.second_stage_sampler.positive_fraction == 0.25
    assert fr.roi_crop.initial_crop_size == 14 and fr.roi_crop.maxpool_stride == 2
    assert fr.feature_extractor.output_stride == 16
    assert p.model.ssd.image_resizer.fixed_shape.height == 300
    assert fr.image_resizer.keep_aspect_ratio.min_dimension == 600
    assert p.model.rfcn.hard_example_miner.batch_size == 128
    assert cascade_rcnn_pb2.CascadeStage().loss_weight == 0.0  # unset: defaults in the model
