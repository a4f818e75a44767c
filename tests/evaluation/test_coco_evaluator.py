"""CocoEvaluator vs pycocotools run directly, hand-made cases, and box conversion."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detbench.errors import ConfigError
from detbench.evaluation import (
    CocoEvaluator,
    EvaluationError,
    build_evaluators,
    coco_to_normalized_boxes,
    normalized_to_coco_boxes,
)
from detbench.protos import eval_pb2

# original category ids are not the 1-based labels
CATEGORY_INDEX = {
    1: {"id": 3, "name": "cat"},
    2: {"id": 7, "name": "dog"},
    3: {"id": 11, "name": "bird"},
}
LABEL_OF = {3: 1, 7: 2, 11: 3}


def _write_gt(path, images, annotations):
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": v["id"], "name": v["name"]} for v in CATEGORY_INDEX.values()],
    }
    for i, ann in enumerate(data["annotations"]):
        ann.setdefault("id", i + 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    path.write_text(json.dumps(data))
    return str(path)


def _random_gt(tmp_path, rng, num_images=12):
    images, annotations = [], []
    for i in range(num_images):
        w, h = int(rng.integers(120, 400)), int(rng.integers(120, 400))
        images.append({"id": 100 + i, "width": w, "height": h, "file_name": f"{i}.jpg"})
        for _ in range(int(rng.integers(0, 6))):
            bw, bh = rng.uniform(8, w / 2), rng.uniform(8, h / 2)
            annotations.append(
                {
                    "image_id": 100 + i,
                    "category_id": int(rng.choice([3, 7, 11])),
                    "bbox": [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh],
                }
            )
    return _write_gt(tmp_path / "gt.json", images, annotations), images, annotations


def _detections_for(image, dets):
    """Hand conversion absolute [x,y,w,h] -> normalized, as the model would output them."""
    w, h = image["width"], image["height"]
    boxes = [
        [
            d["bbox"][1] / h,
            d["bbox"][0] / w,
            (d["bbox"][1] + d["bbox"][3]) / h,
            (d["bbox"][0] + d["bbox"][2]) / w,
        ]
        for d in dets
    ]
    n = max(len(dets), 1)
    out = {
        "detection_boxes": np.zeros([1, n, 4], np.float32),
        "detection_scores": np.zeros([1, n], np.float32),
        "detection_classes": np.zeros([1, n], np.float32),
        "num_detections": np.array([len(dets)], np.float32),
    }
    if dets:
        out["detection_boxes"][0] = boxes
        out["detection_scores"][0] = [d["score"] for d in dets]
        out["detection_classes"][0] = [LABEL_OF[d["category_id"]] for d in dets]
    return out


def _pycocotools_stats(gt_file, results, image_ids):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_file)
        coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        coco_eval.params.imgIds = image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_matches_pycocotools_on_random_detections(tmp_path):
    rng = np.random.default_rng(1)
    gt_file, images, annotations = _random_gt(tmp_path, rng)
    results, evaluator = [], CocoEvaluator(gt_file, CATEGORY_INDEX)
    for image in images:
        dets = []
        for ann in (a for a in annotations if a["image_id"] == image["id"]):
            if rng.uniform() < 0.8:  # a jittered true box, sometimes with the wrong class
                x, y, w, h = ann["bbox"]
                dets.append(
                    {
                        "image_id": image["id"],
                        "score": float(rng.uniform()),
                        "category_id": ann["category_id"] if rng.uniform() < 0.8 else 7,
                        "bbox": [
                            x + rng.normal(0, w / 8),
                            y + rng.normal(0, h / 8),
                            w * rng.uniform(0.8, 1.2),
                            h * rng.uniform(0.8, 1.2),
                        ],
                    }
                )
        for _ in range(int(rng.integers(0, 3))):  # false positives
            dets.append(
                {
                    "image_id": image["id"],
                    "score": float(rng.uniform()),
                    "category_id": int(rng.choice([3, 7, 11])),
                    "bbox": [
                        rng.uniform(0, 50),
                        rng.uniform(0, 50),
                        rng.uniform(5, 60),
                        rng.uniform(5, 60),
                    ],
                }
            )
        results.extend(dets)
        evaluator.add_detections(
            np.array([str(image["id"]).encode()]), _detections_for(image, dets)
        )
    assert len(evaluator.results) == len(results) > 20
    metrics = evaluator.evaluate()
    expected = _pycocotools_stats(gt_file, results, [im["id"] for im in images])
    names = [
        "mAP",
        "mAP@.50",
        "mAP@.75",
        "mAP (small)",
        "mAP (medium)",
        "mAP (large)",
        "AR@1",
        "AR@10",
        "AR@100",
        "AR@100 (small)",
        "AR@100 (medium)",
        "AR@100 (large)",
    ]
    for name, value in zip(names, expected):
        if value < 0:
            assert math.isnan(metrics[name]), name
        else:
            assert metrics[name] == pytest.approx(value, abs=1e-9), name
    assert 0.1 < metrics["mAP"] < 0.9
    table = evaluator.per_category
    assert list(table["category_id"]) == [3, 7, 11]
    assert metrics["AP/dog"] == pytest.approx(table.set_index("name").loc["dog", "AP"])
    assert "| cat " in evaluator.per_category_markdown()


def _one_box_gt(tmp_path):
    # one 100x100 box of class "dog" (id 7) in a 200x300 (w x h) image: a large object
    images = [{"id": 1, "width": 200, "height": 300, "file_name": "a.jpg"}]
    return _write_gt(
        tmp_path / "one.json",
        images,
        [{"image_id": 1, "category_id": 7, "bbox": [50.0, 60.0, 100.0, 100.0]}],
    )


def _evaluate_one(tmp_path, bbox, score=0.9, category_id=7):
    evaluator = CocoEvaluator(_one_box_gt(tmp_path), CATEGORY_INDEX)
    dets = [] if bbox is None else [{"bbox": bbox, "score": score, "category_id": category_id}]
    image = {"width": 200, "height": 300}
    evaluator.add_detections([b"1"], _detections_for(image, dets))
    return evaluator.evaluate()


def test_perfect_detection_is_one(tmp_path):
    metrics = _evaluate_one(tmp_path, [50.0, 60.0, 100.0, 100.0])
    for name in ("mAP", "mAP@.50", "mAP@.75", "mAP (large)", "AR@1", "AR@100"):
        assert metrics[name] == pytest.approx(1.0), name
    assert math.isnan(metrics["mAP (small)"]) and math.isnan(metrics["AP/cat"])
    assert metrics["AP/dog"] == pytest.approx(1.0)


def test_no_detection_is_zero(tmp_path):
    metrics = _evaluate_one(tmp_path, None)
    assert metrics["mAP"] == 0.0 and metrics["mAP@.50"] == 0.0 and metrics["AR@100"] == 0.0


def test_wrong_class_is_zero(tmp_path):
    assert _evaluate_one(tmp_path, [50.0, 60.0, 100.0, 100.0], category_id=3)["mAP"] == 0.0


def test_shifted_box_passes_half_the_thresholds(tmp_path):
    # shifted 16 px right: intersection 84x100, union 2*100*100 - 8400 -> IoU 84/116 = 0.724,
    # above 0.50 .. 0.70 (5 of the 10 thresholds), below 0.75 .. 0.95
    iou = 84 * 100 / (2 * 100 * 100 - 84 * 100)
    assert 0.70 < iou < 0.75
    metrics = _evaluate_one(tmp_path, [66.0, 60.0, 100.0, 100.0])
    assert metrics["mAP"] == pytest.approx(0.5)
    assert metrics["mAP@.50"] == pytest.approx(1.0)
    assert metrics["mAP@.75"] == pytest.approx(0.0)
    assert metrics["AR@100"] == pytest.approx(0.5)


def test_coordinate_conversion_round_trip_and_results_json(tmp_path):
    # by hand: (ymin, xmin, ymax, xmax) = (0.1, 0.2, 0.5, 0.6) in a 200 (w) x 100 (h) image
    np.testing.assert_allclose(
        normalized_to_coco_boxes([[0.1, 0.2, 0.5, 0.6]], 200, 100), [[40.0, 10.0, 80.0, 40.0]]
    )
    rng = np.random.default_rng(0)
    lo, size = rng.uniform(0, 0.5, (50, 2)), rng.uniform(0.01, 0.5, (50, 2))
    boxes = np.concatenate([lo, lo + size], axis=1)
    back = coco_to_normalized_boxes(normalized_to_coco_boxes(boxes, 640, 427), 640, 427)
    np.testing.assert_allclose(back, boxes, atol=1e-12)
    # the results json: absolute boxes of the original image, original category ids
    evaluator = CocoEvaluator(_one_box_gt(tmp_path), CATEGORY_INDEX)
    evaluator.add_detections(
        np.array([b"1"]),
        {
            "detection_boxes": np.array([[[0.2, 0.25, 0.5, 0.75], [0, 0, 1, 1]]], np.float32),
            "detection_scores": np.array([[0.8, 0.1]], np.float32),
            "detection_classes": np.array([[2.0, 3.0]], np.float32),
            "num_detections": np.array([1.0]),
        },
    )
    path = evaluator.write_results(str(tmp_path / "out" / "detections.json"))
    written = json.loads(open(path).read())
    assert len(written) == 1
    assert written[0]["image_id"] == 1 and written[0]["category_id"] == 7
    np.testing.assert_allclose(written[0]["bbox"], [50.0, 60.0, 100.0, 90.0], rtol=1e-6)


def test_errors(tmp_path):
    evaluator = CocoEvaluator(_one_box_gt(tmp_path), CATEGORY_INDEX)
    with pytest.raises(EvaluationError, match="image id 5 is not in"):
        evaluator.add_detections([b"5"], _detections_for({"width": 1, "height": 1}, []))
    with pytest.raises(EvaluationError, match="nothing to evaluate"):
        evaluator.evaluate()
    with pytest.raises(EvaluationError, match="not found"):
        CocoEvaluator(str(tmp_path / "missing.json"), CATEGORY_INDEX)
    config = eval_pb2.EvalConfig(metrics_set=["coco_detection_metrics", "voc"])
    with pytest.raises(
        ConfigError,
        match="unknown 'voc'; known: coco_detection_metrics, pascal_voc_detection_metrics",
    ):
        build_evaluators(config, _one_box_gt(tmp_path), CATEGORY_INDEX)
