"""InputReader proto -> batched tf.data.Dataset, and the facts evaluation needs.

Every source (synthetic shapes, COCO JSON, TFRecord) is read and validated
eagerly in Python first (coco.load_coco / tfrecord.scan), then streamed by
tf.data: decode, augment (training only), keep at most ``max_num_boxes`` boxes,
optional ``image_transform``, pad and batch.

Batched elements (B = batch size, M = max_num_boxes):
  image                  uint8 [B, H, W, 3] zero-padded bottom/right to the largest
                         image (or the ``image_transform`` output, e.g. float32)
  true_shape             int32 [B, 3]  the image's shape inside the padding
  source_id              string [B]    the COCO image id as a string
  groundtruth_boxes      float32 [B, M, 4] normalized (ymin, xmin, ymax, xmax)
  groundtruth_classes    int32 [B, M]  contiguous 1..K, 0 in padding
  groundtruth_is_crowd   bool [B, M]
  num_groundtruth_boxes  int32 [B]
"""

import dataclasses
import hashlib
import json
import logging
import os

import numpy as np
import tensorflow as tf

from detbench.data import augmentation, coco, tfrecord
from detbench.data.errors import DataError
from detbench.data.images import decode_image
from detbench.data.synthetic import cache_root, ensure_synthetic

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DatasetInfo:
    num_classes: int
    category_index: dict  # {label 1..K: {"id": original id, "name": name}}
    num_examples: int
    annotations_file: str  # COCO JSON of exactly these examples, for pycocotools
    image_ids: list  # COCO image ids, in file order
    box_counts: dict = dataclasses.field(default_factory=dict)  # image id -> boxes read


@dataclasses.dataclass
class _Source:
    """A validated source: its metadata and how to stream it."""

    category_index: dict
    image_ids: list
    box_counts: list
    raw: tf.data.Dataset  # cheap per-example items, in file order
    decode: callable  # raw item -> example dict (image decoded)
    eval_json: callable  # () -> path of a COCO JSON for these examples


def _coco_source(data: coco.CocoData):
    examples = data.examples
    boxes = tf.RaggedTensor.from_row_lengths(
        np.concatenate([e.boxes for e in examples]).reshape(-1, 4), [len(e.boxes) for e in examples]
    )
    classes = tf.RaggedTensor.from_row_lengths(
        np.concatenate([e.classes for e in examples]).astype(np.int32),
        [len(e.classes) for e in examples],
    )
    crowd = tf.RaggedTensor.from_row_lengths(
        np.concatenate([e.is_crowd for e in examples]).astype(bool),
        [len(e.is_crowd) for e in examples],
    )
    raw = tf.data.Dataset.from_tensor_slices(
        {
            "path": [e.path for e in examples],
            "source_id": [str(e.image_id) for e in examples],
            "groundtruth_boxes": boxes,
            "groundtruth_classes": classes,
            "groundtruth_is_crowd": crowd,
        }
    )

    def decode(item):
        item = dict(item)
        item["image"] = decode_image(tf.io.read_file(item.pop("path")))
        return item

    def eval_json():
        if data.is_whole_file and data.eval_ready:
            return data.annotations_file
        ids = ",".join(str(e.image_id) for e in examples)
        stat = os.stat(data.annotations_file)
        key = _digest(data.annotations_file, stat.st_mtime_ns, stat.st_size, ids)
        path = os.path.join(cache_root(), "eval_json", f"coco-{key}.json")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            coco.write_coco_subset(data, path)
        return path

    return _Source(
        category_index=data.category_index,
        image_ids=[e.image_id for e in examples],
        box_counts=[len(e.boxes) for e in examples],
        raw=raw,
        decode=decode,
        eval_json=eval_json,
    )


def _tfrecord_source(config, data: tfrecord.TfRecordData):
    keep = np.zeros(data.num_scanned, dtype=bool)
    source_ids = np.full(data.num_scanned, "", dtype=object)
    for r in data.records:
        keep[r.index] = True
        source_ids[r.index] = str(r.image_id)
    keep_t = tf.constant(keep)
    ids_t = tf.constant(source_ids.astype(str))
    original_ids = tf.constant(sorted(data.label_of), dtype=tf.int64)
    raw = tf.data.TFRecordDataset(data.files).take(data.num_scanned).enumerate()
    raw = raw.filter(lambda i, _: tf.gather(keep_t, i)).map(
        lambda i, serialized: {"index": i, "serialized": serialized}
    )

    def decode(item):
        parsed = tfrecord.parse_example(item["serialized"])
        labels = tf.searchsorted(original_ids, parsed["labels"]) + 1
        return {
            "image": decode_image(parsed["encoded"]),
            "source_id": tf.gather(ids_t, item["index"]),
            "groundtruth_boxes": parsed["boxes"],
            "groundtruth_classes": tf.cast(labels, tf.int32),
            "groundtruth_is_crowd": parsed["is_crowd"],
        }

    def eval_json():
        t = config.tfrecord
        stats = [(f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in data.files]
        key = _digest(stats, t.label_map_path, config.skip_bad_examples, config.num_examples)
        path = os.path.join(cache_root(), "eval_json", f"tfrecord-{key}.json")
        if not os.path.exists(path):
            tfrecord.write_coco_json(data, path)
        return path

    return _Source(
        category_index=data.category_index,
        image_ids=[r.image_id for r in data.records],
        box_counts=[len(r.boxes) for r in data.records],
        raw=raw,
        decode=decode,
        eval_json=eval_json,
    )


def _digest(*parts):
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _open_source(config):
    kind = config.WhichOneof("source")
    skip, limit = config.skip_bad_examples, config.num_examples
    if kind is None:
        raise DataError(
            "input reader has no source: set one of synthetic_shapes, coco_json, tfrecord"
        )
    if kind == "synthetic_shapes":
        image_dir, annotations_file = ensure_synthetic(config.synthetic_shapes)
        return _coco_source(coco.load_coco(annotations_file, image_dir, skip, limit))
    if kind == "coco_json":
        c = config.coco_json
        if not c.annotations_file or not c.image_dir:
            raise DataError("input reader coco_json needs both annotations_file and image_dir")
        return _coco_source(coco.load_coco(c.annotations_file, c.image_dir, skip, limit))
    t = config.tfrecord
    if not t.input_path:
        raise DataError("input reader tfrecord needs at least one input_path")
    return _tfrecord_source(config, tfrecord.scan(t.input_path, t.label_map_path, skip, limit))


def load_dataset_info(config) -> DatasetInfo:
    """Classes, category index, example count, ids and an eval-ready COCO JSON."""
    source = _open_source(config)
    return DatasetInfo(
        num_classes=len(source.category_index),
        category_index=source.category_index,
        num_examples=len(source.image_ids),
        annotations_file=source.eval_json(),
        image_ids=list(source.image_ids),
        box_counts=dict(zip(source.image_ids, source.box_counts)),
    )


def check_num_classes(num_classes, category_index, where):
    """The model's ``num_classes`` must be the data's number of categories (labels
    1..K): more yields classes no category has, fewer labels the model cannot output."""
    if num_classes is not None and num_classes != len(category_index):
        names = ", ".join(str(v.get("name", k)) for k, v in category_index.items())
        raise DataError(
            f"{where}: num_classes is {num_classes} but the data has "
            f"{len(category_index)} categories ({names[:200]}); set num_classes: "
            f"{len(category_index)}"
        )


_WARNED_MAX_BOXES = set()


def build_dataset(
    config, batch_size, training, image_transform=None, repeat=None, seed=None, num_classes=None
):
    """Batched tf.data.Dataset for an InputReader proto (see the module docstring).

    Training: shuffled (``config.shuffle``), repeated unless ``repeat=False``,
    augmented, last partial batch dropped. Evaluation: file order, no
    augmentation, not repeated unless ``repeat=True``. ``seed`` fixes the shuffle
    order and augmentation. ``num_classes`` (``(value, field)``): checked against
    the data's categories first.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if config.max_num_boxes < 1:
        raise DataError(f"input reader max_num_boxes must be >= 1, got {config.max_num_boxes}")
    source = _open_source(config)
    if num_classes is not None:
        check_num_classes(num_classes[0], source.category_index, num_classes[1])
    max_boxes = config.max_num_boxes
    over = sum(n > max_boxes for n in source.box_counts)
    warn_key = (config.SerializeToString(deterministic=True), tuple(source.image_ids))
    if over and warn_key not in _WARNED_MAX_BOXES:
        _WARNED_MAX_BOXES.add(warn_key)
        logger.warning(
            "%d of %d images have more than max_num_boxes=%d boxes (largest: %d); "
            "keeping the first %d",
            over,
            len(source.box_counts),
            max_boxes,
            max(source.box_counts),
            max_boxes,
        )
    repeat = training if repeat is None else repeat
    parallel = config.num_parallel_calls if config.num_parallel_calls > 0 else tf.data.AUTOTUNE
    aug = config.augmentation if training and config.HasField("augmentation") else None
    if seed is None:
        aug_seed = int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
    else:
        aug_seed = int(seed)

    ds = source.raw
    if training and config.shuffle:
        ds = ds.shuffle(
            max(config.shuffle_buffer_size, 1), seed=seed, reshuffle_each_iteration=True
        )
    if repeat:
        ds = ds.repeat()
    ds = ds.enumerate()

    def prepare(index, item):
        example = source.decode(item)
        if aug is not None:
            example = augmentation.augment(
                example, aug, tf.stack([tf.constant(aug_seed, tf.int64), index])
            )
        n = tf.minimum(tf.shape(example["groundtruth_boxes"])[0], max_boxes)
        for key in ("groundtruth_boxes", "groundtruth_classes", "groundtruth_is_crowd"):
            example[key] = example[key][:n]
        example["num_groundtruth_boxes"] = tf.cast(n, tf.int32)
        if image_transform is not None:
            image, true_shape = image_transform(example["image"])
            example["image"] = image
            example["true_shape"] = tf.cast(true_shape, tf.int32)
        else:
            example["true_shape"] = tf.shape(example["image"], out_type=tf.int32)
        return example

    ds = ds.map(prepare, num_parallel_calls=parallel)
    padded_shapes = {
        "image": ds.element_spec["image"].shape,
        "true_shape": [3],
        "source_id": [],
        "groundtruth_boxes": [max_boxes, 4],
        "groundtruth_classes": [max_boxes],
        "groundtruth_is_crowd": [max_boxes],
        "num_groundtruth_boxes": [],
    }
    ds = ds.padded_batch(batch_size, padded_shapes=padded_shapes, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)
