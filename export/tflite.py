"""TFLite export of SSD models: batch 1, post-processing inside the graph.

    export_tflite(pipeline, checkpoint, out_dir, precision="fp32")   # -> out_dir/model.tflite

``precision`` (PRECISIONS): ``fp32``; ``fp16`` (float16 weights); ``int8_dynamic``
(dynamic-range quantization: int8 weights, float activations); ``int8``
(full-integer post-training quantization, calibrated on the first
``calibration_images`` images of the pipeline's train_input_reader; ops without
an int8 kernel stay float, and the input and outputs stay float32).

Input ``input_tensor``: float32 [1, H, W, 3], pixel values in [0, 255], H x W
the SSD's fixed resize (the model's own normalization runs in the graph).
Outputs: the four detection tensors of the SavedModel, same names, batch 1.

The SavedModel's NMS (``tf.image.combined_non_max_suppression``) has no TFLite
builtin: converted as is it needs SELECT_TF_OPS (the flex delegate), which the
TFLite interpreters installed with TensorFlow 2.20 (``tf.lite``,
``ai_edge_litert``) do not link. So the TFLite graph re-states the same
post-processing with builtins (decode, score conversion, clipping, per-class
pre-NMS top-k, one NON_MAX_SUPPRESSION_V5 per class, then the top
``max_total_detections`` over classes), reading the settings from the pipeline
(``model.ssd.post_processing``). Only if the builtins cannot express a model
does the converter fall back to SELECT_TF_OPS; export_info.json lists any flex
ops under ``exports.tflite.select_tf_ops`` (empty for the shipped SSDs).
"""

import logging
import os
import re

import tensorflow as tf

from detbench.export import exporter
from detbench.meta_arch.base import DETECTION_KEYS
from detbench.registry import Registry

log = logging.getLogger("detbench.export")


def _nms_settings(pipeline):
    nms = pipeline.model.ssd.post_processing.batch_non_max_suppression
    return dict(
        score_threshold=float(nms.score_threshold),
        iou_threshold=float(nms.iou_threshold),
        max_per_class=int(nms.max_detections_per_class),
        max_total=int(nms.max_total_detections),
        class_agnostic=bool(nms.use_class_agnostic_nms),
        pre_nms_top_k=int(nms.pre_nms_top_k),
    )


def _nms_one_class(boxes, scores, max_output, iou_threshold, score_threshold):
    """boxes [N, 4], scores [N] -> (boxes [max_output, 4], scores [max_output] with
    -1 in the unused slots); one NON_MAX_SUPPRESSION_V5."""
    indices, _, num = tf.raw_ops.NonMaxSuppressionV5(
        boxes=boxes,
        scores=scores,
        max_output_size=max_output,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        soft_nms_sigma=0.0,
        pad_to_max_output_size=True,
    )
    valid = tf.range(max_output) < num
    return tf.gather(boxes, indices), tf.where(valid, tf.gather(scores, indices), -1.0)


def builtin_nms(
    boxes,
    scores,
    score_threshold,
    iou_threshold,
    max_per_class,
    max_total,
    class_agnostic=False,
    pre_nms_top_k=0,
):
    """Batch-1 multi-class NMS from TFLite builtins, with the semantics of
    ``core.post_processing.batch_multiclass_nms``: boxes [1, N, 4] (shared by the
    classes), scores [1, N, C] -> detections dict, T = max_total rows, sorted by
    score, zero-padded, classes 1-based."""
    boxes, scores = boxes[0], scores[0]
    num_anchors, num_classes = boxes.shape[0], scores.shape[1]
    kept_boxes, kept_scores, kept_classes = [], [], []
    if class_agnostic:
        best = tf.reduce_max(scores, axis=1)
        classes = tf.cast(tf.argmax(scores, axis=1), tf.float32) + 1.0
        indices, _, num = tf.raw_ops.NonMaxSuppressionV5(
            boxes=boxes,
            scores=best,
            max_output_size=max_total,
            iou_threshold=iou_threshold,
            score_threshold=score_threshold,
            soft_nms_sigma=0.0,
            pad_to_max_output_size=True,
        )
        valid = tf.range(max_total) < num
        kept_boxes.append(tf.gather(boxes, indices))
        kept_scores.append(tf.where(valid, tf.gather(best, indices), -1.0))
        kept_classes.append(tf.gather(classes, indices))
    else:
        for c in range(num_classes):
            class_boxes, class_scores = boxes, scores[:, c]
            if pre_nms_top_k and pre_nms_top_k < num_anchors:
                class_scores, top = tf.math.top_k(class_scores, k=pre_nms_top_k)
                class_boxes = tf.gather(boxes, top)
            b, s = _nms_one_class(
                class_boxes,
                class_scores,
                min(max_per_class, class_boxes.shape[0]),
                iou_threshold,
                score_threshold,
            )
            kept_boxes.append(b)
            kept_scores.append(s)
            kept_classes.append(tf.fill(tf.shape(s), float(c + 1)))
    # pad so that top_k always has max_total candidates
    kept_boxes.append(tf.zeros([max_total, 4]))
    kept_scores.append(tf.fill([max_total], -1.0))
    kept_classes.append(tf.zeros([max_total]))
    all_scores = tf.concat(kept_scores, 0)
    top_scores, top = tf.math.top_k(all_scores, k=max_total)
    valid = top_scores > -1.0
    validf = tf.cast(valid, tf.float32)
    return {
        "detection_boxes": (tf.gather(tf.concat(kept_boxes, 0), top) * validf[:, None])[None],
        "detection_scores": (tf.maximum(top_scores, 0.0) * validf)[None],
        "detection_classes": (tf.gather(tf.concat(kept_classes, 0), top) * validf)[None],
        "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32))[None],
    }


def tflite_detect(model, settings, images):
    """preprocess + predict + builtin post-processing, batch 1 (what model.tflite runs)."""
    inputs, true_shapes = model.preprocess(images)
    predictions = model.predict(inputs, true_shapes, training=False)
    boxes = model.box_coder.decode(predictions["box_encodings"], predictions["anchors"][None])
    scores = model.score_converter(predictions["class_logits"])
    # SSD resizes to exactly the input: the true-image window is [0, 0, 1, 1]
    boxes = tf.clip_by_value(boxes, 0.0, 1.0)
    return builtin_nms(boxes, scores, **settings)


# precision -> configure(converter, calibration): sets the converter's optimizations
PRECISIONS = Registry("TFLite precision")


@PRECISIONS.register("fp32")
def _fp32(converter, calibration):
    """No optimization: float32 weights and arithmetic."""


@PRECISIONS.register("fp16")
def _fp16(converter, calibration):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


@PRECISIONS.register("int8_dynamic")
def _int8_dynamic(converter, calibration):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


@PRECISIONS.register("int8")
def _int8(converter, calibration):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image] for image in calibration)


def calibration_images(pipeline, count, height, width):
    """The first ``count`` images of train_input_reader (file order, no augmentation),
    resized to the model's input: float32 [1, height, width, 3] arrays."""
    from detbench import data

    if count < 1:
        raise exporter.ExportError(f"calibration_images: must be positive, got {count}")
    ds = data.build_dataset(pipeline.train_input_reader, 1, training=False)
    images = [
        tf.image.resize(tf.cast(b["image"], tf.float32), [height, width]).numpy()
        for b in ds.take(count)
    ]
    if not images:
        raise exporter.ExportError("int8 calibration: train_input_reader has no images")
    return images


def _convert(function, module, configure=_fp32, calibration=None):
    """(flatbuffer, the TF ops it needs through the flex delegate): builtins only
    first; SELECT_TF_OPS only when they cannot express the graph."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    configure(converter, calibration)
    try:
        return converter.convert(), []
    except Exception as e:  # ConverterError: some op has no builtin
        log.warning(
            "TFLite builtins do not cover the graph; allowing SELECT_TF_OPS (the model "
            "then needs the flex delegate): %s",
            str(e).splitlines()[0][:200],
        )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    configure(converter, calibration)
    flatbuffer = converter.convert()
    return flatbuffer, sorted({m.decode() for m in re.findall(rb"Flex([A-Z]\w+)", flatbuffer)})


def convert(model, pipeline, precision="fp32", num_calibration=32):
    """(flatbuffer, flex ops, info) of ``model`` (an SSD built from ``pipeline``) at
    ``precision``; info: input shape and, for int8, the calibration image count."""
    configure = PRECISIONS.get(precision)
    height, width = model.image_size
    settings = _nms_settings(pipeline)

    @tf.function(
        input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name=exporter.INPUT_NAME)]
    )
    def serve(input_tensor):
        detections = tflite_detect(model, settings, input_tensor)
        return {k: detections[k] for k in DETECTION_KEYS}

    module = tf.Module()
    module.model_variables = list(model.variables)
    calibration = None
    info = {"input_shape": [1, height, width, 3], "precision": precision}
    if precision == "int8":
        calibration = calibration_images(pipeline, num_calibration, height, width)
        info["calibration_images"] = len(calibration)
    flatbuffer, flex_ops = _convert(serve.get_concrete_function(), module, configure, calibration)
    return flatbuffer, flex_ops, info


def export_tflite(pipeline, checkpoint, out_dir, precision="fp32", num_calibration=32):
    """Write ``out_dir/model.tflite`` for an SSD pipeline (see the module docstring),
    with label_map.pbtxt / .json, pipeline.pbtxt and export_info.json beside it;
    returns the .tflite path."""
    exporter.check_request(pipeline, "image_tensor", "tflite")
    PRECISIONS.get(precision)  # an unknown precision fails before the model is built
    pipeline = exporter.copy_pipeline(pipeline)
    model, category_index, common = exporter.prepare(pipeline, checkpoint, out_dir, "tflite")
    flatbuffer, flex_ops, converted = convert(model, pipeline, precision, num_calibration)
    info = exporter.merged_info(
        out_dir,
        common,
        "tflite",
        {
            "path": "model.tflite",
            "input_type": "float32 image tensor [0, 255]",
            "input": exporter.INPUT_NAME,
            **converted,
            "select_tf_ops": flex_ops,
            "label_map": ["label_map.pbtxt", "label_map.json"],
        },
    )

    def write(staging):
        exporter.write_label_maps(staging, category_index)
        with open(os.path.join(staging, "model.tflite"), "wb") as f:
            f.write(flatbuffer)

    exporter.write_export(
        out_dir, pipeline, info, write, ["model.tflite", "label_map.pbtxt", "label_map.json"]
    )
    return os.path.join(out_dir, "model.tflite")
