"""Every file under configs/ validates (pipelines with the registries; sweeps expand)."""

import glob
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

CONFIG_FILES = sorted(
    glob.glob(os.path.join(REPO_ROOT, "configs", "*.pbtxt"))
    + glob.glob(os.path.join(REPO_ROOT, "configs", "*", "*.pbtxt"))
)


def test_configs_exist():
    names = {
        os.path.relpath(p, os.path.join(REPO_ROOT, "configs"))[: -len(".pbtxt")]
        for p in CONFIG_FILES
    }
    required = {
        "ssd_mobilenet_v1_300",
        "ssd_mobilenet_v2_300",
        "ssd_inception_v2_300",
        "faster_rcnn_resnet101_600",
        "faster_rcnn_resnet101_atrous_600",
        "faster_rcnn_inception_resnet_v2_atrous_600",
        "faster_rcnn_inception_v2_600",
        "rfcn_resnet101_600",
        "faster_rcnn_resnet50_fpn_640",
        "cascade_rcnn_resnet50_fpn_640",
        "ssd_resnet50_fpn_640",
        "faster_rcnn_vgg16_600",
        "train_accuracy/ssd_mobilenet_v2_fpn_160",
        "train_accuracy/faster_rcnn_resnet50_fpn_160",
    }
    assert required <= names


@pytest.mark.parametrize(
    "path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, os.path.join(REPO_ROOT, "configs"))
)
def test_config_validates(path):
    from detbench.config.__main__ import validate_file

    assert " OK " in validate_file(path)


def test_validate_cli_on_all_configs():
    out = subprocess.run(
        [sys.executable, "-m", "detbench.config", "validate"] + CONFIG_FILES,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == len(CONFIG_FILES)
