"""PASCAL VOC detection metric: AP at IoU >= 0.5 per class, area under the
all-point interpolated precision/recall curve (VOC2010+, not the 11-point
VOC2007 one), and its mean over the classes with groundtruth.

Matching, per class over all images by descending score: a detection is a true
positive when its best-overlapping groundtruth box of that class in its image
has IoU >= 0.5 and was not already matched; a match with a crowd box
(``iscrowd``, VOC's "difficult") counts neither way; crowd boxes are not
counted as positives. IoU is on continuous coordinates (no +1 pixel).

Names: ``VOC mAP@.50`` and ``VOC AP@.50/<category name>``.
"""

import numpy as np

from detbench.evaluation.coco import DetectionCollector, EvaluationError

IOU_THRESHOLD = 0.5


def iou_xywh(box, boxes):
    """IoU of one [x,y,w,h] box with [N,4] boxes."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def average_precision(recall, precision):
    """All-point interpolated AP (VOC2010+): area under the monotone precision envelope."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


class PascalVocEvaluator(DetectionCollector):
    """VOC mAP@0.5 of the added detections over the images they were added for."""

    def __init__(
        self,
        annotations_file,
        category_index,
        max_detections=100,
        include_per_category=True,
        groundtruth=None,
    ):
        super().__init__(annotations_file, category_index, max_detections, groundtruth)
        self.include_per_category = include_per_category
        self.per_class = {}

    def _class_ap(self, cat_id, image_ids):
        gts = {}
        num_positives = 0
        for image_id in image_ids:
            anns = self.gt.imgToAnns.get(image_id, [])
            anns = [a for a in anns if a["category_id"] == cat_id]
            boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
            gts[image_id] = (boxes, crowd, np.zeros(len(anns), bool))
            num_positives += int((~crowd).sum())
        if num_positives == 0:
            return float("nan"), 0
        dets = [r for r in self.results if r["category_id"] == cat_id]
        dets.sort(key=lambda r: -r["score"])
        tp, fp = [], []
        for det in dets:
            boxes, crowd, matched = gts[det["image_id"]]
            if len(boxes) == 0:
                tp.append(0), fp.append(1)
                continue
            ious = iou_xywh(det["bbox"], boxes)
            best = int(np.argmax(ious))
            if ious[best] < IOU_THRESHOLD:
                tp.append(0), fp.append(1)
            elif crowd[best]:
                continue  # "difficult": ignored
            elif not matched[best]:
                matched[best] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        tp, fp = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
        if tp.size == 0:
            return 0.0, num_positives
        recall = tp / num_positives
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        return average_precision(recall, precision), num_positives

    def evaluate(self):
        if not self.image_ids:
            raise EvaluationError("no detections were added: nothing to evaluate")
        image_ids = set(self.image_ids)
        metrics, aps = {}, []
        self.per_class = {}
        for cat_id in sorted(self.gt.cats):
            ap, _ = self._class_ap(cat_id, image_ids)
            name = self.category_names.get(cat_id, self.gt.cats[cat_id].get("name", cat_id))
            self.per_class[name] = ap
            if not np.isnan(ap):
                aps.append(ap)
            if self.include_per_category:
                metrics[f"VOC AP@.50/{name}"] = ap
        metrics = {"VOC mAP@.50": float(np.mean(aps)) if aps else float("nan"), **metrics}
        return metrics
