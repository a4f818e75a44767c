"""Export a trained DetectionModel for serving: a SavedModel (TF Serving layout) or TFLite.

    export_saved_model(pipeline, checkpoint, out_dir, input_type="image_tensor",
                       num_proposals=None)                 # -> out_dir/saved_model/1
    export_tflite(pipeline, checkpoint, out_dir)            # export/tflite.py: model.tflite (SSD)

What lands in ``out_dir``::

    saved_model/1/                 the versioned layout TensorFlow Serving loads
        saved_model.pb, variables/
        assets/label_map.pbtxt     TF OD API label-map text format (id = detection class)
        assets/label_map.json      the same as JSON, with each class's original dataset id
    model.tflite                   (--format tflite, SSD only; label_map.* beside it)
    pipeline.pbtxt                 the pipeline exported (overrides and num_proposals applied)
    export_info.json               input type, resolution, proposals, thresholds, checkpoint

The ``serving_default`` signature takes ``input_tensor``:

- ``image_tensor``: uint8 [batch, height, width, 3], all three dynamic; the batch
  runs as one ``detect`` call (one image size per request, as in the TF OD API).
- ``encoded_image_string_tensor``: string [batch] of JPEG / PNG (GIF, BMP) bytes;
- ``tf_example``: string [batch] of serialized tf.Examples in the TFRecord layout
  of ``detbench.data.tfrecord`` (the image in ``image/encoded``).

The two string inputs decode and detect each image on its own (``tf.map_fn``),
so images of different sizes share a request and each gets exactly the
detections it gets alone. Outputs are the DetectionModel's: ``detection_boxes``
[batch, N, 4] normalized (ymin, xmin, ymax, xmax), ``detection_scores`` [batch, N],
``detection_classes`` [batch, N] float32 1-based, ``num_detections`` [batch] int32.

Only the model's variables are saved (no Keras metadata, no Python objects), so
the SavedModel loads with plain ``tf.saved_model.load`` and serves with
TensorFlow Serving without detbench installed.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile

import tensorflow as tf
from google.protobuf import text_format

from detbench.data.images import decode_image
from detbench.errors import DetbenchError
from detbench.meta_arch.base import DETECTION_KEYS
from detbench.meta_arch_names import TWO_STAGE

log = logging.getLogger("detbench.export")

INPUT_TYPES = ("image_tensor", "encoded_image_string_tensor", "tf_example")
FORMATS = ("saved_model", "tflite")
SERVING_VERSION = "1"  # out_dir/saved_model/<version>/, as TF Serving expects
INPUT_NAME = "input_tensor"  # the TF OD API's signature input name, for every input type


class ExportError(DetbenchError):
    """The export cannot be done as asked (input type, format, checkpoint, proposals)."""


# -- model --------------------------------------------------------------------
def copy_pipeline(pipeline):
    from detbench.protos import pipeline_pb2

    copy = pipeline_pb2.Pipeline()
    copy.CopyFrom(pipeline)
    return copy


def _arch(pipeline):
    name = pipeline.model.WhichOneof("model")
    if name is None:
        raise ExportError("model: no meta-architecture set in the pipeline")
    return name, getattr(pipeline.model, name)


def _apply_num_proposals(pipeline, num_proposals):
    """The pipeline with ``rpn.max_proposals = num_proposals`` (two-stage models only)."""
    if num_proposals is None:
        return pipeline
    name, arch = _arch(pipeline)
    if name not in TWO_STAGE:
        raise ExportError(
            f"--num_proposals applies to two-stage models "
            f"({', '.join(TWO_STAGE)}); this pipeline's model is {name}"
        )
    if int(num_proposals) <= 0:
        raise ExportError(f"--num_proposals must be positive, got {num_proposals}")
    arch.rpn.max_proposals = int(num_proposals)
    return pipeline


def load_model(pipeline, checkpoint):
    """(model, checkpoint prefix): the pipeline's model, built for inference and
    restored from ``checkpoint`` (a prefix, or a folder: its latest checkpoint)."""
    from detbench.builders.model_builder import build_model
    from detbench.evaluation.runner import resolve_checkpoint, restore_model

    checkpoint = resolve_checkpoint(checkpoint)
    model = build_model(pipeline.model, is_training=False)
    # any size builds the variables: preprocess resizes to the model's resolution
    inputs, true_shapes = model.preprocess(tf.zeros([1, 64, 64, 3], tf.float32))
    restore_model(model, checkpoint, {"image": inputs, "true_shape": true_shapes})
    return model, checkpoint


# -- label map ----------------------------------------------------------------
def category_index_for(pipeline, num_classes):
    """({class 1..K: {"id": original id, "name": name}}, where it came from): the
    pipeline's eval (else train) input reader; numbered names, with a warning, when
    neither can be read (exporting needs no dataset)."""
    from detbench import data
    from detbench.data.errors import DataError

    for field in ("eval_input_reader", "train_input_reader"):
        reader = getattr(pipeline, field)
        if reader.WhichOneof("source") is None:
            continue
        try:
            index = data.load_dataset_info(reader).category_index
        except DataError as e:
            log.warning("label map: cannot read %s (%s); using numbered class names", field, e)
            break
        if len(index) != num_classes:
            raise ExportError(
                f"{field}: the dataset has {len(index)} categories but the model "
                f"has num_classes {num_classes}"
            )
        return {int(k): dict(v) for k, v in index.items()}, field
    numbered = {i: {"id": i, "name": f"class_{i}"} for i in range(1, num_classes + 1)}
    return numbered, "numbered (no readable input reader)"


def _quote(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def label_map_pbtxt(category_index):
    """TF OD API label-map text: ``item { id: <detection class> name: ... display_name: ... }``."""
    lines = []
    for label in sorted(category_index):
        name = category_index[label]["name"]
        lines.append(
            f"item {{\n  id: {label}\n  name: {_quote(name)}\n  display_name: {_quote(name)}\n}}\n"
        )
    return "".join(lines)


def label_map_json(category_index):
    return (
        json.dumps(
            {
                "categories": [
                    {
                        "id": label,
                        "name": category_index[label]["name"],
                        "original_id": int(category_index[label]["id"]),
                    }
                    for label in sorted(category_index)
                ]
            },
            indent=2,
        )
        + "\n"
    )


def write_label_maps(folder, category_index):
    paths = {}
    for name, text in (
        ("label_map.pbtxt", label_map_pbtxt(category_index)),
        ("label_map.json", label_map_json(category_index)),
    ):
        paths[name] = os.path.join(folder, name)
        with open(paths[name], "w") as f:
            f.write(text)
    return paths


# -- serving functions ----------------------------------------------------------
def _outputs(detections):
    return {k: detections[k] for k in DETECTION_KEYS}


def _checked(input_tensor, shape):
    """``input_tensor`` checked at run time against ``shape`` (the signature itself
    checks only the dtype): a wrong rank fails with an InvalidArgumentError that
    names ``input_tensor``, not deep inside the model."""
    return tf.ensure_shape(input_tensor, shape, name=f"check_{INPUT_NAME}")


def _per_image(model, decode):
    """strings [B] -> detections, each image decoded and detected on its own."""
    detect = tf.function(lambda image: _outputs(model.detect(image[tf.newaxis])))
    detect_one = detect.get_concrete_function(tf.TensorSpec([None, None, 3], tf.uint8))
    # static per-image output shapes (N is the model's max detections), so that
    # an empty batch stacks to [0, N, ...] too
    signature = tuple(
        tf.TensorSpec(
            detect_one.structured_outputs[k].shape[1:], detect_one.structured_outputs[k].dtype
        )
        for k in DETECTION_KEYS
    )

    def one(item):
        detections = detect_one(decode(item))
        return tuple(detections[k][0] for k in DETECTION_KEYS)

    def serve(strings):
        outputs = tf.map_fn(one, _checked(strings, [None]), fn_output_signature=signature)
        return dict(zip(DETECTION_KEYS, outputs))

    return serve


def _parse_tf_example(serialized):
    """A serialized tf.Example (detbench.data.tfrecord's layout) -> its decoded image.

    A non-empty tf.Example starts with the tag of its one field (``features``,
    byte 0x0A). Checking that first turns the common mistake - image bytes sent
    to a tf_example model - into a clear error; the parser's own error would
    quote the raw bytes, which TensorFlow's Python client cannot decode (a
    UnicodeDecodeError instead of the InvalidArgumentError)."""
    from detbench.data import tfrecord

    looks_like_example = tf.logical_or(
        tf.equal(tf.strings.length(serialized), 0),
        tf.equal(tf.strings.substr(serialized, 0, 1), "\n"),
    )
    check = tf.debugging.Assert(
        looks_like_example,
        [
            f"{INPUT_NAME}: an element is not a serialized tf.Example (tf_example input; send "
            f"image bytes to an encoded_image_string_tensor export)"
        ],
    )
    with tf.control_dependencies([check]):
        serialized = tf.identity(serialized)
    return decode_image(tfrecord.parse_example(serialized)["encoded"])


def serving_function(model, input_type):
    """The ``serving_default`` tf.function for ``input_type`` (see the module docstring)."""
    if input_type == "image_tensor":

        @tf.function(
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)]
        )
        def serve_images(input_tensor):
            return _outputs(model.detect(_checked(input_tensor, [None, None, None, 3])))

        return serve_images
    if input_type == "encoded_image_string_tensor":
        per_image = _per_image(model, decode_image)
    elif input_type == "tf_example":
        per_image = _per_image(model, _parse_tf_example)
    else:
        raise ExportError(f"--input_type {input_type!r}: unknown; known: {', '.join(INPUT_TYPES)}")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serve_strings(input_tensor):
        return per_image(input_tensor)

    return serve_strings


class _ServingModule(tf.Module):
    """What the SavedModel holds: the variables, the signature function, the label maps."""

    def __init__(self, model, serve, label_map_paths):
        super().__init__(name="detbench_detector")
        self.model_variables = list(model.variables)
        self.serve = serve
        self.label_map_pbtxt = tf.saved_model.Asset(label_map_paths["label_map.pbtxt"])
        self.label_map_json = tf.saved_model.Asset(label_map_paths["label_map.json"])


# -- export info --------------------------------------------------------------
def _resolution(arch):
    from detbench.config.checks import resolved_resizer

    resizer = resolved_resizer(arch)
    if resizer.WhichOneof("image_resizer") == "fixed_shape":
        return {
            "fixed_shape": {
                "height": resizer.fixed_shape.height,
                "width": resizer.fixed_shape.width,
            }
        }
    k = resizer.keep_aspect_ratio
    return {
        "keep_aspect_ratio": {
            "min_dimension": k.min_dimension,
            "max_dimension": k.max_dimension,
            "pad_to_max_dimension": k.pad_to_max_dimension,
        }
    }


def _post_processing(name, arch):
    post = arch.post_processing if name == "ssd" else arch.second_stage_post_processing
    nms = post.batch_non_max_suppression
    return {
        "score_threshold": float(f"{nms.score_threshold:.6g}"),
        "iou_threshold": float(f"{nms.iou_threshold:.6g}"),
        "max_detections_per_class": nms.max_detections_per_class,
        "max_total_detections": nms.max_total_detections,
    }


def export_info(pipeline, checkpoint, category_index, label_source):
    """The knobs every export of this pipeline + checkpoint shares (JSON-ready)."""
    name, arch = _arch(pipeline)
    return {
        "meta_architecture": name,
        "feature_extractor": arch.feature_extractor.type,
        "num_classes": arch.num_classes,
        "resolution": _resolution(arch),
        "num_proposals": arch.rpn.max_proposals if name in TWO_STAGE else None,
        "post_processing": _post_processing(name, arch),
        "checkpoint": os.path.abspath(checkpoint),
        "pipeline_sha256": hashlib.sha256(
            text_format.MessageToString(pipeline).encode()
        ).hexdigest(),
        "tensorflow_version": tf.__version__,
        "outputs": list(DETECTION_KEYS),
        "label_map": {str(k): v["name"] for k, v in sorted(category_index.items())},
        "label_map_source": label_source,
    }


def merged_info(out_dir, common, fmt, section):
    """export_info.json's new content: ``common`` + ``exports: {fmt: section}``,
    keeping the other format's section when ``out_dir`` already holds an export
    of the same pipeline and checkpoint (SavedModel and TFLite side by side)."""
    exports = {fmt: section}
    try:
        with open(os.path.join(out_dir, "export_info.json")) as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = {}
    others = (
        {k: v for k, v in (old.get("exports") or {}).items() if k != fmt}
        if isinstance(old, dict)
        else {}
    )
    if others:
        if {k: v for k, v in old.items() if k != "exports"} != common:
            raise ExportError(
                f"--out {out_dir!r} holds a {', '.join(sorted(others))} export of "
                f"another pipeline or checkpoint (see its export_info.json); "
                f"export to another folder or remove it"
            )
        exports = {**others, fmt: section}
    return {**common, "exports": exports}


# -- writing ------------------------------------------------------------------
def _publish(staging, out_dir, names):
    """Move ``names`` from ``staging`` into ``out_dir``, replacing older ones: each
    item is whole at every moment (rename), and nothing else in out_dir is touched."""
    for name in names:
        src, dst = os.path.join(staging, name), os.path.join(out_dir, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        old = None
        if os.path.lexists(dst):
            old = tempfile.mkdtemp(prefix=".old-", dir=out_dir)
            os.replace(dst, os.path.join(old, "item"))
        os.replace(src, dst)
        if old:
            shutil.rmtree(old, ignore_errors=True)


def _write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def check_request(pipeline, input_type, fmt):
    """Fail early on an unknown input type / format, or TFLite for a non-SSD model
    (``pipeline`` None: the names only)."""
    if input_type not in INPUT_TYPES:
        raise ExportError(f"--input_type {input_type!r}: unknown; known: {', '.join(INPUT_TYPES)}")
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: unknown; known: {', '.join(FORMATS)}")
    if fmt == "tflite" and input_type != "image_tensor":
        raise ExportError(
            f"--format tflite takes a float32 image tensor; --input_type "
            f"{input_type!r} applies to saved_model exports only"
        )
    if pipeline is None:
        return
    name, _ = _arch(pipeline)
    if fmt == "tflite" and name != "ssd":
        raise ExportError(
            f"--format tflite: only SSD models export to TFLite; this pipeline's "
            f"model is {name} (export it as a saved_model)"
        )


def prepare(pipeline, checkpoint, out_dir, fmt):
    """(model restored from the checkpoint, category index, shared export info);
    the cheap checks (checkpoint, label map, out_dir) run before the model is built."""
    from detbench.evaluation.runner import resolve_checkpoint

    checkpoint = resolve_checkpoint(checkpoint)
    _, arch = _arch(pipeline)
    category_index, label_source = category_index_for(pipeline, arch.num_classes)
    common = export_info(pipeline, checkpoint, category_index, label_source)
    merged_info(out_dir, common, fmt, {})  # fails now on a folder holding another model
    model, _ = load_model(pipeline, checkpoint)
    return model, category_index, common


def write_export(out_dir, pipeline, info, write, names):
    """Stage ``write(staging)`` + pipeline.pbtxt + export_info.json next to
    ``out_dir``'s contents, then move ``names`` and those two into place."""
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=out_dir)
    try:
        write(staging)
        _write_text(os.path.join(staging, "pipeline.pbtxt"), text_format.MessageToString(pipeline))
        _write_text(os.path.join(staging, "export_info.json"), json.dumps(info, indent=2) + "\n")
        _publish(staging, out_dir, list(names) + ["pipeline.pbtxt", "export_info.json"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_serving_model(model, category_index, path, input_type="image_tensor", label_dir=None):
    """``tf.saved_model.save`` of ``model``'s serving module (signature
    ``serving_default``, label maps as assets) to ``path``; the label-map files are
    written to ``label_dir`` first (default: a new folder beside ``path``)."""
    label_dir = label_dir or tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)))
    labels = write_label_maps(label_dir, category_index)
    serve = serving_function(model, input_type)
    module = _ServingModule(model, serve, labels)
    tf.saved_model.save(module, path, signatures={"serving_default": serve.get_concrete_function()})
    return path


def export_saved_model(
    pipeline, checkpoint, out_dir, input_type="image_tensor", num_proposals=None
):
    """Write ``out_dir/saved_model/1`` (+ pipeline.pbtxt, export_info.json); returns
    the SavedModel folder. ``checkpoint``: a prefix, or a folder (its latest);
    ``num_proposals``: two-stage models' ``rpn.max_proposals`` for this export."""
    check_request(pipeline, input_type, "saved_model")
    pipeline = _apply_num_proposals(copy_pipeline(pipeline), num_proposals)
    model, category_index, common = prepare(pipeline, checkpoint, out_dir, "saved_model")
    version_dir = os.path.join("saved_model", SERVING_VERSION)
    info = merged_info(
        out_dir,
        common,
        "saved_model",
        {
            "path": version_dir,
            "input_type": input_type,
            "signature": "serving_default",
            "input": INPUT_NAME,
            "label_map": ["assets/label_map.pbtxt", "assets/label_map.json"],
        },
    )

    def write(staging):
        save_serving_model(
            model,
            category_index,
            os.path.join(staging, version_dir),
            input_type,
            tempfile.mkdtemp(dir=staging),
        )

    write_export(out_dir, pipeline, info, write, [version_dir])
    return os.path.join(out_dir, version_dir)
