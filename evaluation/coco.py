"""COCO detection metrics through pycocotools, with readable names.

Detections arrive as the model gives them: boxes normalized [ymin, xmin, ymax,
xmax] relative to the true image, 1-based label ids. They are converted to
COCO results: absolute [x, y, w, h] in pixels of the *original* image (width
and height from the groundtruth json, by image id) and the original category
ids (through ``category_index``).

``category_index``: ``{label: {"id": coco_category_id, "name": ...}}`` (a plain
``{label: name}`` means the label is the category id).

Metric names (``-1`` of pycocotools, "no groundtruth in this range", is NaN)::

    mAP  mAP@.50  mAP@.75  mAP (small)  mAP (medium)  mAP (large)
    AR@1  AR@10  AR@100  AR@100 (small)  AR@100 (medium)  AR@100 (large)
    AP/<category name>  (per category, mAP@[.5:.95])
"""

import collections
import contextlib
import copy
import io
import json
import logging
import os
import tempfile

import numpy as np
import pandas as pd
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detbench.errors import DetbenchError

log = logging.getLogger("detbench.evaluation")


class EvaluationError(DetbenchError):
    """Detections or groundtruth that cannot be evaluated (unknown image id, bad file)."""


# -- coordinates -------------------------------------------------------------
def normalized_to_coco_boxes(boxes, width, height):
    """[N,4] normalized (ymin, xmin, ymax, xmax) -> [N,4] absolute (x, y, w, h)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ymin, xmin, ymax, xmax = boxes.T
    return np.stack(
        [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height], axis=1
    )


def coco_to_normalized_boxes(boxes, width, height):
    """[N,4] absolute (x, y, w, h) -> [N,4] normalized (ymin, xmin, ymax, xmax)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x, y, w, h = boxes.T
    return np.stack([y / height, x / width, (y + h) / height, (x + w) / width], axis=1)


def label_to_category(category_index):
    """``{label: (category_id, name)}`` from either form of ``category_index``."""
    out = {}
    for label, entry in category_index.items():
        if isinstance(entry, dict):
            out[int(label)] = (int(entry.get("id", label)), str(entry.get("name", label)))
        else:
            out[int(label)] = (int(label), str(entry))
    return out


def _image_id(source_id):
    if isinstance(source_id, (bytes, np.bytes_)):
        source_id = source_id.decode()
    try:
        return int(source_id)
    except (TypeError, ValueError):
        raise EvaluationError(f"source_id {source_id!r} is not a COCO image id") from None


def load_groundtruth(annotations_file):
    """A pycocotools ``COCO`` of ``annotations_file`` (its chatter silenced)."""
    if not os.path.exists(annotations_file):
        raise EvaluationError(f"annotations file {annotations_file!r} not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(annotations_file)
    except (ValueError, KeyError, TypeError) as e:
        raise EvaluationError(
            f"annotations file {annotations_file!r}: not a COCO instances json ({e})"
        ) from None


def check_groundtruth_count(groundtruth, image_ids, box_counts, annotations_file):
    """The objects pycocotools holds for ``image_ids`` must be the ones detbench read
    (``box_counts``: image id -> boxes); else the metric would be silently wrong (a
    repeated annotation id, for one, makes pycocotools keep one box of several)."""
    ids = set(image_ids)
    held = collections.Counter(
        a.get("image_id") for a in groundtruth.anns.values() if a.get("image_id") in ids
    )
    read = {i: int(box_counts.get(i, 0)) for i in ids}
    differ = sorted(i for i in ids if held[i] != read[i])
    if differ:
        first = differ[0]
        raise EvaluationError(
            f"{annotations_file}: pycocotools holds {sum(held.values())} ground-truth "
            f"objects for the {len(ids)} evaluated images but detbench read "
            f"{sum(read.values())} ({len(differ)} images differ; image id {first}: "
            f"{held[first]} vs {read[first]}); the metric would be wrong"
        )


class DetectionCollector:
    """Holds the groundtruth and the detections converted to COCO results."""

    def __init__(self, annotations_file, category_index, max_detections=100, groundtruth=None):
        self.annotations_file = annotations_file
        self.gt = groundtruth if groundtruth is not None else load_groundtruth(annotations_file)
        self.labels = label_to_category(category_index)
        self.category_names = {cid: name for cid, name in self.labels.values()}
        self.max_detections = int(max_detections)
        self.results = []  # COCO results dicts
        self.image_ids = []  # in the order added
        self._seen = set()

    def add_detections(self, source_ids, detections):
        """``source_ids`` [B] (COCO image ids, bytes/str/int); ``detections``: numpy dict
        with detection_boxes [B,N,4], detection_scores [B,N], detection_classes [B,N]
        and optionally num_detections [B]."""
        boxes = np.asarray(detections["detection_boxes"])
        scores = np.asarray(detections["detection_scores"])
        classes = np.asarray(detections["detection_classes"])
        counts = detections.get("num_detections")
        counts = (
            np.full(len(boxes), boxes.shape[1])
            if counts is None
            else np.asarray(counts).astype(int).reshape(-1)
        )
        for b, source_id in enumerate(np.asarray(source_ids).reshape(-1)):
            image_id = _image_id(source_id)
            if image_id not in self.gt.imgs:
                raise EvaluationError(f"image id {image_id} is not in {self.annotations_file}")
            if image_id in self._seen:
                log.warning("image %d added twice; keeping the first detections", image_id)
                continue
            self._seen.add(image_id)
            self.image_ids.append(image_id)
            n = int(min(counts[b], boxes.shape[1]))
            order = np.argsort(-scores[b, :n], kind="stable")[: self.max_detections]
            info = self.gt.imgs[image_id]
            coco_boxes = normalized_to_coco_boxes(boxes[b, order], info["width"], info["height"])
            for box, score, label in zip(coco_boxes, scores[b, order], classes[b, order]):
                label = int(round(float(label)))
                if label not in self.labels:
                    raise EvaluationError(
                        f"image {image_id}: detection class {label} is not in "
                        f"the category index (labels {sorted(self.labels)})"
                    )
                self.results.append(
                    {
                        "image_id": image_id,
                        "category_id": self.labels[label][0],
                        "bbox": [float(v) for v in box],
                        "score": float(score),
                    }
                )

    def write_results(self, path):
        """The detections as a COCO results json (written atomically)."""
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".detections-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(self.results, f)
        os.replace(tmp, path)
        return path


_STAT_NAMES = (
    "mAP",
    "mAP@.50",
    "mAP@.75",
    "mAP (small)",
    "mAP (medium)",
    "mAP (large)",
    "AR@1",
    "AR@10",
    "AR@{m}",
    "AR@{m} (small)",
    "AR@{m} (medium)",
    "AR@{m} (large)",
)


def _nan_if_missing(value):
    value = float(value)
    return float("nan") if value < 0 else value


class CocoEvaluator(DetectionCollector):
    """COCO box metrics of the added detections over the images they were added for."""

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
        self.per_category = None  # pandas DataFrame after evaluate()
        self.summary_text = ""

    def _results_coco(self):
        if self.results:
            with contextlib.redirect_stdout(io.StringIO()):
                return self.gt.loadRes(copy.deepcopy(self.results))
        empty = COCO()
        empty.dataset = {
            "images": list(self.gt.dataset["images"]),
            "categories": copy.deepcopy(self.gt.dataset.get("categories", [])),
            "annotations": [],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            empty.createIndex()
        return empty

    def evaluate(self):
        if not self.image_ids:
            raise EvaluationError("no detections were added: nothing to evaluate")
        m = self.max_detections
        coco_eval = COCOeval(self.gt, self._results_coco(), "bbox")
        coco_eval.params.imgIds = sorted(self.image_ids)
        coco_eval.params.maxDets = [1, 10, m]
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        self.summary_text = buffer.getvalue()
        metrics = {
            name.format(m=m): _nan_if_missing(v) for name, v in zip(_STAT_NAMES, coco_eval.stats)
        }
        self.per_category = self._per_category_table(coco_eval)
        if self.include_per_category:
            for row in self.per_category.itertuples():
                metrics[f"AP/{row.name}"] = row.AP
        return metrics

    def _per_category_table(self, coco_eval):
        precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
        iou_thresholds = coco_eval.params.iouThrs
        rows = []
        for k, cat_id in enumerate(coco_eval.params.catIds):
            p = precision[:, :, k, 0, -1]

            def mean(values):
                values = values[values > -1]
                return float(values.mean()) if values.size else float("nan")

            num_gt = len(
                self.gt.getAnnIds(imgIds=coco_eval.params.imgIds, catIds=[cat_id], iscrowd=False)
            )
            rows.append(
                {
                    "category_id": cat_id,
                    "name": self.category_names.get(
                        cat_id, self.gt.cats.get(cat_id, {}).get("name", cat_id)
                    ),
                    "AP": mean(p),
                    "AP@.50": mean(p[np.isclose(iou_thresholds, 0.5)]),
                    "AP@.75": mean(p[np.isclose(iou_thresholds, 0.75)]),
                    "num_groundtruth": num_gt,
                }
            )
        return pd.DataFrame(
            rows, columns=["category_id", "name", "AP", "AP@.50", "AP@.75", "num_groundtruth"]
        )

    def per_category_markdown(self, floatfmt=".3f"):
        if self.per_category is None:
            raise RuntimeError("call evaluate() first")
        return self.per_category.to_markdown(index=False, floatfmt=floatfmt)
