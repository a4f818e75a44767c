"""Run a DetectionModel over the evaluation set and compute the configured metrics.

``eval_config.metrics_set``: ``coco_detection_metrics`` (default when empty)
and/or ``pascal_voc_detection_metrics``.
"""

import json
import logging
import math
import os
import tempfile

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from detbench.config.validate import model_num_classes
from detbench.errors import ConfigError
from detbench.evaluation.coco import (
    CocoEvaluator,
    EvaluationError,
    check_groundtruth_count,
    load_groundtruth,
)
from detbench.evaluation.voc import PascalVocEvaluator

log = logging.getLogger("detbench.evaluation")

EVALUATORS = {
    "coco_detection_metrics": CocoEvaluator,
    "pascal_voc_detection_metrics": PascalVocEvaluator,
}
DEFAULT_METRICS_SET = ("coco_detection_metrics",)


def build_evaluators(eval_config, annotations_file, category_index):
    """One evaluator per ``eval_config.metrics_set`` entry, sharing the groundtruth."""
    names = list(eval_config.metrics_set) or list(DEFAULT_METRICS_SET)
    for name in names:
        if name not in EVALUATORS:
            raise ConfigError(
                f"eval_config.metrics_set: unknown {name!r}; known: " + ", ".join(EVALUATORS)
            )
    groundtruth = load_groundtruth(annotations_file)
    max_detections = eval_config.max_detections if eval_config.max_detections > 0 else 100
    return {
        name: EVALUATORS[name](
            annotations_file,
            category_index,
            max_detections=max_detections,
            include_per_category=eval_config.include_per_category_metrics,
            groundtruth=groundtruth,
        )
        for name in dict.fromkeys(names)
    }


def _detect_function(model):
    def detect(inputs, true_shapes):
        predictions = model.predict(inputs, true_shapes, training=False)
        return model.postprocess(predictions, true_shapes)

    return tf.function(detect, reduce_retracing=True)


def _write_json(path, obj):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=float)
    os.replace(tmp, path)


def write_outputs(out_dir, metrics, evaluators):
    """Write ``metrics.json``, ``detections.json`` (COCO results) and ``per_category.md``."""
    os.makedirs(out_dir, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    _write_json(os.path.join(out_dir, "metrics.json"), clean)
    any_evaluator = next(iter(evaluators.values()))
    any_evaluator.write_results(os.path.join(out_dir, "detections.json"))
    coco = evaluators.get("coco_detection_metrics")
    if coco is not None and coco.per_category is not None:
        text = "# Per-category AP (COCO, mAP@[.5:.95])\n\n" + coco.per_category_markdown() + "\n"
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out_dir, "per_category.md"))


def evaluate_model(
    model,
    pipeline,
    num_examples=None,
    progress=True,
    out_dir=None,
    return_evaluators=False,
    detector=None,
):
    """Detect over ``pipeline.eval_input_reader`` and return the metrics dict.

    ``detector``: ``(image_transform, detect)`` of another way to run the model
    (an exported artifact: benchmark/runtimes.py): ``image_transform(image) ->
    (input, true_shape)`` in tf.data, ``detect(inputs, true_shapes)`` -> the
    detections dict, on batches of one image; None: the model itself.

    ``num_examples``: evaluate the first N images (default
    ``eval_config.num_examples``, 0: all). With ``out_dir``, also writes
    metrics.json, detections.json and per_category.md there.
    """
    from detbench import data

    eval_config = pipeline.eval_config
    info = data.load_dataset_info(pipeline.eval_input_reader)
    num_classes, where = model_num_classes(pipeline, "eval")
    data.check_num_classes(getattr(model, "num_classes", num_classes), info.category_index, where)
    evaluators = build_evaluators(eval_config, info.annotations_file, info.category_index)
    limit = eval_config.num_examples if num_examples is None else int(num_examples)
    if detector is None:
        transform, detect = model.preprocess_single, _detect_function(model)
        batch_size = max(1, eval_config.batch_size)
    else:
        (transform, detect), batch_size = detector, 1
    dataset = data.build_dataset(
        pipeline.eval_input_reader, batch_size, training=False, image_transform=transform
    )
    total = info.num_examples if not limit else min(limit, info.num_examples or limit)
    if limit:
        dataset = dataset.take(math.ceil(limit / batch_size))
    seen = 0
    with tqdm(total=total, desc="eval", unit="img", disable=not progress) as bar:
        for batch in dataset:
            detections = detect(batch["image"], batch["true_shape"])
            detections = {k: np.asarray(v) for k, v in detections.items()}
            source_ids = batch["source_id"].numpy()
            if limit:
                keep = min(len(source_ids), limit - seen)
                source_ids = source_ids[:keep]
                detections = {k: v[:keep] for k, v in detections.items()}
            for evaluator in evaluators.values():
                evaluator.add_detections(source_ids, detections)
            seen += len(source_ids)
            bar.update(len(source_ids))
            if limit and seen >= limit:
                break
    if not seen:
        raise EvaluationError("the evaluation dataset is empty")
    metrics = {}
    for evaluator in evaluators.values():
        check_groundtruth_count(
            evaluator.gt, evaluator.image_ids, info.box_counts, info.annotations_file
        )
        metrics.update(evaluator.evaluate())
    metrics["num_images"] = seen
    if out_dir:
        write_outputs(out_dir, metrics, evaluators)
    return (metrics, evaluators) if return_evaluators else metrics


def resolve_checkpoint(path):
    """A checkpoint prefix, or the latest checkpoint in a folder."""
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise EvaluationError(f"--checkpoint {path!r}: no checkpoint in this folder")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise EvaluationError(f"--checkpoint {path!r}: not found (no {path}.index)")
    return path


def restore_model(model, checkpoint_path, sample_batch):
    """Build ``model``'s variables on ``sample_batch`` and restore them from a training
    checkpoint (``tf.train.Checkpoint(model=...)``); fails if any variable is missing."""
    checkpoint_path = resolve_checkpoint(checkpoint_path)
    from detbench.train.fine_tune import check_shapes_match

    _detect_function(model)(sample_batch["image"], sample_batch["true_shape"])
    checkpoint = tf.train.Checkpoint(model=model)
    check_shapes_match(checkpoint, checkpoint_path)
    status = checkpoint.restore(checkpoint_path).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise EvaluationError(
            f"checkpoint {checkpoint_path} does not match the pipeline's model "
            f"({str(e).splitlines()[0][:200]})"
        ) from None
    return checkpoint_path
