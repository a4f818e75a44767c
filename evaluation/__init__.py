"""COCO and PASCAL VOC evaluation of detections (pycocotools for COCO)."""

from detbench.evaluation.coco import (
    CocoEvaluator,
    EvaluationError,
    coco_to_normalized_boxes,
    label_to_category,
    normalized_to_coco_boxes,
)
from detbench.evaluation.runner import (
    EVALUATORS,
    build_evaluators,
    evaluate_model,
    restore_model,
    write_outputs,
)
from detbench.evaluation.voc import PascalVocEvaluator

__all__ = [
    "CocoEvaluator",
    "PascalVocEvaluator",
    "EvaluationError",
    "EVALUATORS",
    "build_evaluators",
    "evaluate_model",
    "restore_model",
    "write_outputs",
    "normalized_to_coco_boxes",
    "coco_to_normalized_boxes",
    "label_to_category",
]
