"""Fixtures for the data tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from tests.data.data_helpers import CATEGORIES, ann, write_coco


@pytest.fixture
def small_coco(tmp_path):
    """Three PNG images (one without annotations), ids 3/7/12, one crowd box."""
    images = [(101, "a.png", 30, 40), (205, "b.png", 20, 50), (300, "empty.png", 25, 25)]
    annotations = [
        ann(1, 101, 7, [4, 3, 10, 6]),  # dog
        ann(2, 101, 12, [0, 0, 40, 30], iscrowd=1),  # kite, crowd, whole image
        ann(3, 205, 3, [10, 5, 25, 10]),  # cat
        ann(4, 101, 3, [20, 15, 8, 12]),  # cat
    ]
    image_dir, annotations_file = write_coco(str(tmp_path), images, annotations, CATEGORIES)
    return image_dir, annotations_file


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DETBENCH_CACHE_DIR", str(tmp_path / "cache"))
