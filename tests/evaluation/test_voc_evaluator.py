"""PASCAL VOC AP@0.5 (all-point interpolation) on a hand-worked example."""

import json
import math

import numpy as np
import pytest

from detbench.evaluation import PascalVocEvaluator
from detbench.evaluation.voc import average_precision

CATEGORY_INDEX = {1: {"id": 1, "name": "a"}, 2: {"id": 2, "name": "b"}, 3: {"id": 3, "name": "c"}}


def _gt_file(tmp_path):
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in (1, 2)]
    anns = [  # class a: two boxes in image 1, one in image 2; class b: one box + one crowd box
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]},
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20]},
        {"image_id": 2, "category_id": 1, "bbox": [10, 10, 30, 30]},
        {"image_id": 2, "category_id": 2, "bbox": [60, 60, 20, 20]},
        {"image_id": 2, "category_id": 2, "bbox": [0, 60, 30, 30], "iscrowd": 1},
    ]
    for i, a in enumerate(anns):
        a.update(id=i + 1, area=a["bbox"][2] * a["bbox"][3], iscrowd=a.get("iscrowd", 0))
    path = tmp_path / "voc.json"
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": i, "name": n} for i, n in ((1, "a"), (2, "b"), (3, "c"))],
            }
        )
    )
    return str(path)


def _add(evaluator, image_id, dets):
    """dets: (x, y, w, h, score, label) in pixels of a 100x100 image."""
    boxes = [[y / 100, x / 100, (y + h) / 100, (x + w) / 100] for x, y, w, h, _, _ in dets]
    evaluator.add_detections(
        [str(image_id).encode()],
        {
            "detection_boxes": np.array([boxes], np.float32),
            "detection_scores": np.array([[d[4] for d in dets]], np.float32),
            "detection_classes": np.array([[d[5] for d in dets]], np.float32),
            "num_detections": np.array([len(dets)]),
        },
    )


def test_hand_worked_voc_map(tmp_path):
    evaluator = PascalVocEvaluator(_gt_file(tmp_path), CATEGORY_INDEX)
    _add(
        evaluator,
        1,
        [
            (0, 0, 20, 20, 0.9, 1),  # a: TP (IoU 1)
            (0, 0, 20, 18, 0.6, 1),  # a: duplicate of the matched box (IoU 0.9) -> FP
            (80, 0, 20, 20, 0.8, 1),  # a: no overlap -> FP
            (5, 5, 20, 20, 0.3, 2),  # b: no class-b box in image 1 -> FP
        ],
    )
    _add(
        evaluator,
        2,
        [
            (12, 12, 30, 30, 0.7, 1),  # a: IoU 28*28/(900+900-784) = 0.77 -> TP
            (0, 60, 30, 30, 0.95, 2),  # b: on the crowd box -> ignored
            (60, 64, 20, 20, 0.5, 2),  # b: IoU 16*20/(400+400-320) = 0.667 -> TP
        ],
    )
    metrics = evaluator.evaluate()
    # class a by score: TP(.9) FP(.8) TP(.7) FP(.6), 3 positives:
    # recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2; envelope 1 on (0,1/3], 2/3 on (1/3,2/3]
    ap_a = 1 / 3 * 1 + 1 / 3 * 2 / 3
    # class b: TP(.5) FP(.3), 1 positive: recall 1 at precision 1
    ap_b = 1.0
    assert metrics["VOC AP@.50/a"] == pytest.approx(ap_a)
    assert metrics["VOC AP@.50/b"] == pytest.approx(ap_b)
    assert math.isnan(metrics["VOC AP@.50/c"])  # no groundtruth: left out of the mean
    assert metrics["VOC mAP@.50"] == pytest.approx((ap_a + ap_b) / 2)


def test_below_half_iou_is_a_false_positive(tmp_path):
    evaluator = PascalVocEvaluator(_gt_file(tmp_path), CATEGORY_INDEX)
    # class b box [60,60,20,20] vs [60,70,20,20]: IoU 200/600 = 1/3
    _add(evaluator, 2, [(60, 70, 20, 20, 0.9, 2)])
    _add(evaluator, 1, [(0, 0, 20, 20, 0.9, 1)])
    metrics = evaluator.evaluate()
    assert metrics["VOC AP@.50/b"] == 0.0
    # class a over images 1 and 2: one TP of 3 positives at precision 1
    assert metrics["VOC AP@.50/a"] == pytest.approx(1 / 3)


def test_average_precision_all_point():
    # precision envelope [1, .8, .8, .5] at recalls [.2, .4, .6, .8]: 0.2*(1 + .8 + .8 + .5)
    ap = average_precision(np.array([0.2, 0.4, 0.6, 0.8]), np.array([1.0, 0.5, 0.8, 0.5]))
    assert ap == pytest.approx(0.2 * (1 + 0.8 + 0.8 + 0.5))
