"""TFRecords of tf.Example in the TF Object Detection API layout.

Keys: ``image/encoded``, ``image/format``, ``image/height``, ``image/width``,
``image/source_id``, ``image/filename``, ``image/object/bbox/{xmin,ymin,xmax,ymax}``
(normalized floats), ``image/object/class/label`` (int64, the dataset's own ids,
e.g. COCO's 1..90), ``image/object/class/text``, ``image/object/is_crowd`` and
``image/object/area``. Existing Object Detection API records read unchanged.

Labels are mapped to contiguous 1..K in sorted order of the original ids, as the
COCO reader does: the ids come from ``label_map_path`` (a pbtxt label map or a
COCO-style JSON with "categories") or, without one, from the records.

Before a pipeline is built the records are scanned once in Python (``scan``):
each image is checked and each box validated, so a bad record fails with a
message naming the file, the record number and the source id; the scan also
gives the example count and the COCO JSON that evaluation needs.
"""

import collections
import dataclasses
import functools
import glob
import io
import json
import math
import os
import re

import numpy as np
import tensorflow as tf

from detbench.data.coco import BadItem, category_mapping, inspect_image, skip_summary
from detbench.data.errors import DataError
from detbench.paths import MAX_TEXT_BYTES, MAX_TFRECORD_BYTES, check_input_file, read_bounded

BOX_TOLERANCE = 1e-3  # normalized coordinates may overshoot [0, 1] this much; clipped

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/format": tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    "image/height": tf.io.FixedLenFeature((), tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature((), tf.int64, default_value=0),
    "image/source_id": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/filename": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
    "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    "image/object/class/text": tf.io.VarLenFeature(tf.string),
    "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
    "image/object/area": tf.io.VarLenFeature(tf.float32),
}


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def make_tf_example(
    encoded, image_format, height, width, source_id, filename, boxes, labels, texts, is_crowd, areas
):
    """One tf.train.Example; ``boxes`` normalized [n, 4] (ymin, xmin, ymax, xmax)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    feature = {
        "image/encoded": _bytes([encoded]),
        "image/format": _bytes([image_format.encode()]),
        "image/height": _ints([int(height)]),
        "image/width": _ints([int(width)]),
        "image/source_id": _bytes([str(source_id).encode()]),
        "image/filename": _bytes([filename.encode()]),
        "image/object/bbox/ymin": _floats(boxes[:, 0].tolist()),
        "image/object/bbox/xmin": _floats(boxes[:, 1].tolist()),
        "image/object/bbox/ymax": _floats(boxes[:, 2].tolist()),
        "image/object/bbox/xmax": _floats(boxes[:, 3].tolist()),
        "image/object/class/label": _ints([int(v) for v in labels]),
        "image/object/class/text": _bytes([t.encode() for t in texts]),
        "image/object/is_crowd": _ints([int(bool(v)) for v in is_crowd]),
        "image/object/area": _floats([float(v) for v in areas]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def parse_example(serialized):
    """Serialized tf.Example -> dict of dense tensors (image still encoded)."""
    f = tf.io.parse_single_example(serialized, FEATURES)
    dense = {
        k: tf.sparse.to_dense(v) if isinstance(v, tf.sparse.SparseTensor) else v
        for k, v in f.items()
    }
    boxes = tf.stack(
        [
            dense["image/object/bbox/ymin"],
            dense["image/object/bbox/xmin"],
            dense["image/object/bbox/ymax"],
            dense["image/object/bbox/xmax"],
        ],
        axis=1,
    )
    num = tf.shape(boxes)[0]
    crowd = dense["image/object/is_crowd"]
    crowd = tf.cond(tf.size(crowd) == num, lambda: crowd, lambda: tf.zeros([num], tf.int64))
    return {
        "encoded": dense["image/encoded"],
        "source_id": dense["image/source_id"],
        "boxes": tf.clip_by_value(boxes, 0.0, 1.0),
        "labels": dense["image/object/class/label"],
        "is_crowd": crowd > 0,
    }


def expand_paths(patterns):
    files = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern))
        if not matched:
            raise DataError(f"tfrecord input_path {pattern!r} matches no file")
        for path in matched:
            check_input_file(path, "tfrecord input_path", MAX_TFRECORD_BYTES, error=DataError)
        files.extend(matched)
    return files


def read_label_map(path):
    """{id: name} from a pbtxt label map (``item { id: 1 name: 'x' }``) or a COCO-style JSON."""
    check_input_file(path, "label map", MAX_TEXT_BYTES, error=DataError)
    try:
        with open(path) as f:
            text = read_bounded(f, MAX_TEXT_BYTES, "label map", path, error=DataError)
    except OSError as e:
        raise DataError(f"label map {path}: {e.strerror}") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"label map {path}: not valid JSON: {e}") from None
        categories = data.get("categories", []) if isinstance(data, dict) else data
        return {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    names = {}
    for block in re.findall(r"item\s*\{(.*?)\}", text, flags=re.S):
        id_match = re.search(r"\bid\s*:\s*(-?\d+)", block)
        name = re.search(r"display_name\s*:\s*[\"'](.*?)[\"']", block) or re.search(
            r"\bname\s*:\s*[\"'](.*?)[\"']", block
        )
        if not id_match:
            raise DataError(f"label map {path}: item without an id: {block.strip()[:100]}")
        cid = int(id_match.group(1))
        names[cid] = name.group(1) if name else str(cid)
    if not names:
        raise DataError(f"label map {path}: no 'item {{ id: ... name: ... }}' entries")
    return names


@dataclasses.dataclass
class Record:
    index: int  # position in the concatenated record stream
    image_id: int
    filename: str
    width: int
    height: int
    boxes: np.ndarray  # float32 [n, 4] normalized
    labels: np.ndarray  # int64 [n], original ids
    is_crowd: np.ndarray
    areas: np.ndarray  # pixels


@dataclasses.dataclass
class TfRecordData:
    files: list
    records: list  # kept records, in stream order
    num_scanned: int  # records read (num_examples caps it)
    category_index: dict
    label_of: dict  # original id -> contiguous label
    skipped: collections.Counter


def _check_record(example, where):
    """Validate one parsed tf.train.Example; returns the parts as numpy, or BadItem."""
    feature = example.features.feature

    def values(key, kind):
        f = feature.get(key)
        return list(getattr(f, kind).value) if f is not None else []

    encoded = values("image/encoded", "bytes_list")
    if not encoded or not encoded[0]:
        raise BadItem("corrupt image", f"{where}: no image/encoded bytes")
    width, height, _ = inspect_image(io.BytesIO(encoded[0]), where)
    claimed = (values("image/width", "int64_list"), values("image/height", "int64_list"))
    if claimed[0] and claimed[1] and (claimed[0][0], claimed[1][0]) != (width, height):
        raise BadItem(
            "size mismatch",
            f"{where}: the image is {width}x{height} but the "
            f"record says {claimed[0][0]}x{claimed[1][0]}",
        )
    coords = [
        values(f"image/object/bbox/{k}", "float_list") for k in ("ymin", "xmin", "ymax", "xmax")
    ]
    labels = values("image/object/class/label", "int64_list")
    n = len(coords[0])
    if any(len(c) != n for c in coords) or len(labels) != n:
        raise BadItem(
            "bad box",
            f"{where}: {n} ymin but {[len(c) for c in coords]} "
            f"(ymin,xmin,ymax,xmax) and {len(labels)} labels",
        )
    boxes = np.asarray(coords, dtype=np.float32).T.reshape(-1, 4)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        if not all(math.isfinite(v) for v in (y0, x0, y1, x1)):
            raise BadItem("bad box", f"{where}: box {i} is not finite")
        if x0 >= x1 or y0 >= y1:
            raise BadItem(
                "bad box",
                f"{where}: box {i} (ymin,xmin,ymax,xmax)="
                f"{[float(v) for v in (y0, x0, y1, x1)]} has xmin >= xmax "
                f"or ymin >= ymax",
            )
        if min(y0, x0) < -BOX_TOLERANCE or max(y1, x1) > 1 + BOX_TOLERANCE:
            raise BadItem(
                "bad box",
                f"{where}: box {i} (ymin,xmin,ymax,xmax)="
                f"{[float(v) for v in (y0, x0, y1, x1)]} lies outside [0, 1]",
            )
    crowd = values("image/object/is_crowd", "int64_list")
    crowd = np.asarray(crowd if len(crowd) == n else [0] * n, dtype=bool)
    areas = values("image/object/area", "float_list")
    if len(areas) != n:
        areas = (boxes[:, 2] - boxes[:, 0]) * height * (boxes[:, 3] - boxes[:, 1]) * width
    texts = [t.decode("utf-8", "replace") for t in values("image/object/class/text", "bytes_list")]
    source = values("image/source_id", "bytes_list")
    filename = values("image/filename", "bytes_list")
    return dict(
        width=width,
        height=height,
        boxes=np.clip(boxes, 0.0, 1.0),
        labels=np.asarray(labels, dtype=np.int64),
        is_crowd=crowd,
        areas=np.asarray(areas, dtype=np.float64),
        texts=texts if len(texts) == n else [],
        source_id=source[0].decode() if source else "",
        filename=filename[0].decode() if filename else "",
    )


def scan(input_paths, label_map_path="", skip_bad_examples=False, num_examples=0):
    """Read and validate the records once; returns TfRecordData (memoized on file stats)."""
    files = expand_paths(list(input_paths))
    stats = tuple((f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)
    return _scan(stats, label_map_path or "", bool(skip_bad_examples), int(num_examples))


@functools.lru_cache(maxsize=8)
def _scan(stats, label_map_path, skip_bad_examples, num_examples):
    files = [s[0] for s in stats]
    names = read_label_map(label_map_path) if label_map_path else None
    parsed, skipped, index = [], collections.Counter(), 0
    seen_names = {}
    for path in files:
        try:
            for i, raw in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
                if 0 < num_examples <= index:
                    break
                where = f"{path}: record {i}"
                try:
                    example = tf.train.Example.FromString(raw)
                    source = example.features.feature["image/source_id"].bytes_list.value
                    if source:
                        where += f" (source_id {source[0].decode('utf-8', 'replace')})"
                    item = _check_record(example, where)
                    for label, text in zip(
                        item["labels"], item["texts"] or [None] * len(item["labels"])
                    ):
                        if names is not None and int(label) not in names:
                            raise BadItem(
                                "unknown category",
                                f"{where}: label {int(label)} is not "
                                f"in the label map {label_map_path} (ids {sorted(names)})",
                            )
                        if names is None and label < 1:
                            raise BadItem(
                                "unknown category",
                                f"{where}: label {int(label)} < 1 "
                                f"(labels are 1-based; 0 is background)",
                            )
                        if text:
                            seen_names.setdefault(int(label), text)
                except BadItem as e:
                    if not skip_bad_examples:
                        raise DataError(str(e)) from None
                    skipped[e.reason] += 1
                else:
                    parsed.append((index, item))
                index += 1
        except tf.errors.DataLossError as e:
            raise DataError(f"{path}: corrupt TFRecord file: {e.message}") from None
    if index == 0:
        raise DataError(f"empty dataset: no records in {', '.join(files)}")
    if not parsed:
        raise DataError(
            f"empty dataset: no usable records in {', '.join(files)} "
            f"({skip_summary(skipped, index)})"
        )
    if names is None:
        ids = sorted({int(v) for _, item in parsed for v in item["labels"]})
        names = {cid: seen_names.get(cid, str(cid)) for cid in ids}
        if not names:
            raise DataError(
                f"{', '.join(files)}: no boxes and no label_map_path: cannot tell the categories"
            )
    category_index, label_of = category_mapping(
        [{"id": cid, "name": name} for cid, name in names.items()], label_map_path or files[0]
    )

    source_ids = [item["source_id"] for _, item in parsed]
    numeric = all(s.isdigit() for s in source_ids) and len(set(source_ids)) == len(source_ids)
    records = []
    for k, (index_, item) in enumerate(parsed):
        records.append(
            Record(
                index=index_,
                image_id=int(item["source_id"]) if numeric else k + 1,
                filename=item["filename"] or item["source_id"] or f"record_{index_}",
                width=item["width"],
                height=item["height"],
                boxes=item["boxes"],
                labels=item["labels"],
                is_crowd=item["is_crowd"],
                areas=item["areas"],
            )
        )
    return TfRecordData(
        files=files,
        records=records,
        num_scanned=index,
        category_index=category_index,
        label_of=label_of,
        skipped=skipped,
    )


def write_coco_json(data: TfRecordData, path):
    """COCO instances JSON of the scanned records (for pycocotools), written atomically."""
    images, annotations = [], []
    for r in data.records:
        images.append(
            {"id": r.image_id, "file_name": r.filename, "width": r.width, "height": r.height}
        )
        for box, label, crowd, area in zip(r.boxes, r.labels, r.is_crowd, r.areas):
            y0, x0, y1, x1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": r.image_id,
                    "category_id": int(label),
                    "bbox": [
                        x0 * r.width,
                        y0 * r.height,
                        (x1 - x0) * r.width,
                        (y1 - y0) * r.height,
                    ],
                    "area": float(area),
                    "iscrowd": int(bool(crowd)),
                }
            )
    categories = [
        {"id": c["id"], "name": c["name"]} for _, c in sorted(data.category_index.items())
    ]
    tmp = f"{path}.tmp{os.getpid()}"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(tmp, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    os.replace(tmp, path)
    return path
