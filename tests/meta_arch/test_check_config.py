"""Each meta-architecture checks its own message (``check_config``), which
``config/validate.py`` and ``build_model`` reach through the registry."""

import pytest

import detbench.meta_arch  # noqa: F401  (registers every meta-architecture)
from detbench.builders.model_builder import build_model
from detbench.errors import ConfigError
from detbench.meta_arch.base import META_ARCHITECTURES
from detbench.protos import model_pb2


@pytest.mark.parametrize("name", META_ARCHITECTURES.names())
def test_every_meta_architecture_refuses_no_classes(name):
    model = model_pb2.DetectionModel()
    getattr(model, name).num_classes = 0
    with pytest.raises(
        ConfigError, match=rf"^model\.{name}\.num_classes: must be positive, got 0$"
    ):
        META_ARCHITECTURES.get(name).check_config(getattr(model, name), f"model.{name}")
    with pytest.raises(ConfigError, match=rf"^model\.{name}\.num_classes"):
        build_model(model)


@pytest.mark.parametrize("name", ["faster_rcnn", "rfcn", "cascade_rcnn"])
def test_two_stage_models_check_their_rpn(name):
    model = model_pb2.DetectionModel()
    arch = getattr(model, name)
    arch.num_classes = 3
    arch.rpn.pre_nms_top_k = 100
    arch.rpn.max_proposals = 300
    with pytest.raises(ConfigError, match=rf"^model\.{name}\.rpn\.max_proposals: 300 test"):
        META_ARCHITECTURES.get(name).check_config(arch, f"model.{name}")


def test_ssd_and_cascade_check_their_own_fields():
    ssd = model_pb2.DetectionModel().ssd
    ssd.num_classes = 3
    ssd.matcher.argmax.matched_threshold = 0.3
    ssd.matcher.argmax.unmatched_threshold = 0.4
    with pytest.raises(ConfigError, match=r"^model\.ssd\.matcher\.argmax: unmatched_threshold"):
        META_ARCHITECTURES.get("ssd").check_config(ssd, "model.ssd")
    cascade = model_pb2.DetectionModel().cascade_rcnn
    cascade.num_classes = 3
    cascade.stage.add().box_coder_stddev.extend([1.0, 1.0])
    with pytest.raises(ConfigError, match=r"stage\[0\]\.box_coder_stddev: needs 4 values, got 2"):
        META_ARCHITECTURES.get("cascade_rcnn").check_config(cascade, "model.cascade_rcnn")
