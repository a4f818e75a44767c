"""evaluate_model over a COCO-json eval set: metrics, outputs, num_examples; the CLI's errors."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detbench.errors import run_cli
from detbench.evaluation import evaluate_model, restore_model
from detbench.evaluation.coco import EvaluationError
from detbench.protos import pipeline_pb2
from tests.evaluation.coco_fixture import FixedBoxModel, set_eval_reader, write_coco_set


@pytest.fixture
def coco_set(tmp_path):
    return write_coco_set(str(tmp_path / "set"))


def _pipeline(coco_set, *metrics_set):
    pipeline = set_eval_reader(pipeline_pb2.Pipeline(), *coco_set)
    pipeline.eval_config.metrics_set.extend(metrics_set)
    return pipeline


def test_evaluate_model_writes_coco_results_and_matches_pycocotools(coco_set, tmp_path):
    pipeline = _pipeline(coco_set, "coco_detection_metrics", "pascal_voc_detection_metrics")
    out = tmp_path / "out"
    metrics = evaluate_model(FixedBoxModel(), pipeline, progress=False, out_dir=str(out))
    assert metrics["num_images"] == 3
    detections = json.loads((out / "detections.json").read_text())
    # FIXED_BOX in each original image: x = w/4, y = h/4, w/2 x h/2; label 1 -> category 5
    expected = {10: [15, 10, 30, 20], 11: [20, 20, 40, 40], 12: [10, 15, 20, 30]}
    assert sorted(d["image_id"] for d in detections) == [10, 11, 12]
    for d in detections:
        np.testing.assert_allclose(d["bbox"], expected[d["image_id"]], rtol=1e-6)
    assert {d["category_id"] for d in detections} == {5}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(coco_set[1])
        direct = COCOeval(gt, gt.loadRes(str(out / "detections.json")), "bbox")
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    assert metrics["mAP"] == pytest.approx(direct.stats[0])
    assert metrics["mAP@.50"] == pytest.approx(direct.stats[1])
    # by hand, class five: 2 positives; equal scores keep the image order: TP (10), FP (11),
    # TP (12) -> recall 1/2 1/2 1, precision 1 1/2 2/3 -> AP = 1/2 * 1 + 1/2 * 2/3
    assert metrics["VOC AP@.50/five"] == pytest.approx(5 / 6)
    assert metrics["VOC AP@.50/nine"] == 0.0
    assert metrics["VOC mAP@.50"] == pytest.approx(5 / 12)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["mAP"] == pytest.approx(metrics["mAP"])
    assert "| five " in (out / "per_category.md").read_text()


def test_num_examples_limits_the_images(coco_set):
    metrics = evaluate_model(FixedBoxModel(), _pipeline(coco_set), num_examples=1, progress=False)
    assert metrics["num_images"] == 1
    assert metrics["mAP"] == pytest.approx(1.0)  # image 10 alone: one perfect detection
    assert math.isnan(metrics["AP/nine"])


def test_restore_model_from_training_checkpoint(coco_set, tmp_path):
    trained = FixedBoxModel()
    trained.scale.assign(0.5)
    path = tf.train.Checkpoint(model=trained).save(str(tmp_path / "ckpt" / "ckpt"))
    model = FixedBoxModel()
    sample = {"image": tf.zeros([1, 32, 32, 3]), "true_shape": tf.constant([[32, 32, 3]])}
    assert restore_model(model, str(tmp_path / "ckpt"), sample) == path
    assert float(model.scale.numpy()) == 0.5
    with pytest.raises(EvaluationError, match="no checkpoint in this folder"):
        restore_model(model, str(tmp_path), sample)
    other = tf.train.Checkpoint(model=tf.train.Checkpoint(w=tf.Variable(1.0)))
    bad = other.save(str(tmp_path / "bad" / "ckpt"))
    with pytest.raises(EvaluationError, match="does not match the pipeline's model"):
        restore_model(FixedBoxModel(), bad, sample)


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import detbench.config
    from detbench.evaluate import main

    pipeline_file = tmp_path / "p.pbtxt"
    pipeline_file.write_text("")
    code = run_cli(main, ["--pipeline", str(pipeline_file), "--checkpoint", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    monkeypatch.setattr(
        detbench.config, "load_pipeline", lambda path, overrides=(), adjust=None: None
    )
    code = run_cli(main, ["--pipeline", str(pipeline_file), "--checkpoint", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip()
    assert (
        code == 2
        and err
        == f"error: --checkpoint {str(tmp_path / 'nope')!r}: not found "
        f"(no {tmp_path / 'nope'}.index)"
    )
