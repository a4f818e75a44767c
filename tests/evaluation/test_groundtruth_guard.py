"""Item 1 of issue 27: repeated / missing annotation ids are refused, and every
evaluation checks that pycocotools holds the ground truth detbench read."""

import contextlib
import io
import json

import pytest
from pycocotools.coco import COCO

from detbench.data.coco import load_coco
from detbench.data.errors import DataError
from detbench.evaluation import evaluate_model, runner
from detbench.evaluation.coco import EvaluationError
from detbench.protos import pipeline_pb2
from tests.evaluation.coco_fixture import FixedBoxModel, set_eval_reader, write_coco_set


def _rewrite(path, change):
    data = json.loads(open(path).read())
    change(data["annotations"])
    with open(path, "w") as f:
        json.dump(data, f)


def test_a_repeated_annotation_id_is_refused_naming_file_and_id(tmp_path):
    image_dir, path = write_coco_set(str(tmp_path / "set"))

    def repeat(annotations):  # annotation 4 (image 12) takes id 3, pycocotools would keep one
        annotations[3]["id"] = annotations[2]["id"]

    _rewrite(path, repeat)
    with pytest.raises(DataError) as e:
        load_coco(path, image_dir)
    message = str(e.value)
    assert path in message and "annotation id 3 appears twice" in message
    assert "\n" not in message


def test_an_annotation_without_id_is_refused(tmp_path):
    image_dir, path = write_coco_set(str(tmp_path / "set"))
    _rewrite(path, lambda annotations: annotations[1].pop("id"))
    with pytest.raises(DataError, match=r"annotation #1 \(image id 11\) has no usable 'id'"):
        load_coco(path, image_dir)


def test_every_evaluation_fails_when_pycocotools_holds_other_objects(tmp_path, monkeypatch):
    image_dir, path = write_coco_set(str(tmp_path / "set"))
    pipeline = set_eval_reader(pipeline_pb2.Pipeline(), image_dir, path)

    def one_object_fewer(annotations_file):  # a crafted mismatch: image 12 loses a box
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(annotations_file)
        del gt.anns[4]
        return gt

    monkeypatch.setattr(runner, "load_groundtruth", one_object_fewer)
    with pytest.raises(EvaluationError) as e:
        evaluate_model(FixedBoxModel(), pipeline, progress=False)
    message = str(e.value)
    # the fixture has 4 boxes over 3 images; image 12 holds 1 of its 2
    assert "pycocotools holds 3 ground-truth objects" in message
    assert "detbench read 4" in message and "image id 12: 1 vs 2" in message
