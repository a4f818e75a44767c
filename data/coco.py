"""COCO instances JSON + image folder, read and validated eagerly in Python.

Category ids are mapped to contiguous labels 1..K in sorted order of the
original ids; ``category_index`` keeps the mapping for evaluation. ``iscrowd``
is carried per box. Images without annotations are kept.

Every annotation is checked here (box inside the image with positive size,
known category, known image) and every image file is opened and verified, so a
bad item fails with a message naming the JSON file, the image file and the image
and annotation ids, instead of failing later inside tf.data. With
``skip_bad_examples`` the image holding a bad item is dropped instead, and one
warning at the end counts what was skipped and why.
"""

import collections
import dataclasses
import functools
import json
import logging
import math
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from detbench.data.errors import DataError
from detbench.data.images import ORIENTATION_TAG, oriented_size
from detbench.paths import (
    MAX_ANNOTATIONS_BYTES,
    MAX_IMAGE_BYTES,
    check_input_file,
    read_bounded,
)

logger = logging.getLogger(__name__)

# Formats tf.io.decode_image reads.
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "GIF")
# Boxes may overhang the image by this many pixels (rounding in real COCO); clipped.
BOX_TOLERANCE_PX = 1.0


@dataclasses.dataclass
class Example:
    image_id: int
    path: str
    height: int
    width: int
    boxes: np.ndarray  # float32 [n, 4] normalized (ymin, xmin, ymax, xmax)
    classes: np.ndarray  # int32 [n], contiguous 1..K
    is_crowd: np.ndarray  # bool [n]
    areas: np.ndarray  # float64 [n], the annotation's 'area' (box area when absent)
    annotation_ids: list


@dataclasses.dataclass
class CocoData:
    annotations_file: str
    image_dir: str
    examples: list  # of Example, in file order
    category_index: dict  # {label: {"id": original id, "name": name}}
    num_images_in_file: int
    skipped: collections.Counter  # reason -> number of images skipped
    # False when some annotation lacks 'area' or 'iscrowd' (pycocotools needs both).
    eval_ready: bool = True

    @property
    def is_whole_file(self):
        return not self.skipped and len(self.examples) == self.num_images_in_file


class BadItem(Exception):
    """Internal: one bad image or annotation; message names it, reason counts it."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def inspect_image(source, name):
    """Open an image (path or file object) cheaply: header, PNG CRCs, JPEG end marker.

    Returns (width, height, format) of the upright image (EXIF orientation applied, as
    every reader applies it: data/images.py). Raises BadItem naming ``name``.
    """
    try:
        with Image.open(source) as image:
            orientation = image.getexif().get(ORIENTATION_TAG, 1) if image.format == "JPEG" else 1
            width, height = oriented_size(image.width, image.height, orientation)
            fmt = image.format
            image.verify()
    except FileNotFoundError:
        raise BadItem("missing image", f"{name}: image file not found") from None
    except UnidentifiedImageError:
        raise BadItem(
            "corrupt image", f"{name}: cannot read image: not a known image format"
        ) from None
    except Exception as e:  # PIL raises many types for corrupt data
        raise BadItem("corrupt image", f"{name}: cannot read image: {e}") from None
    if fmt not in SUPPORTED_FORMATS:
        raise BadItem(
            "corrupt image",
            f"{name}: cannot read image: {fmt} is not supported "
            f"({', '.join(SUPPORTED_FORMATS)} are)",
        )
    if fmt == "JPEG":
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                f.seek(max(0, os.path.getsize(source) - 1024))
                tail = f.read()
        else:
            source.seek(0, os.SEEK_END)
            source.seek(max(0, source.tell() - 1024))
            tail = source.read()
        if b"\xff\xd9" not in tail:
            raise BadItem(
                "corrupt image", f"{name}: cannot read image: truncated JPEG (no end marker)"
            )
    return width, height, fmt


def category_mapping(categories, where):
    """(category_index, original id -> label) for a COCO "categories" list."""
    ids = []
    names = {}
    for c in categories:
        if not isinstance(c, dict) or "id" not in c:
            raise DataError(f"{where}: category entry without an id: {c!r}")
        cid = int(c["id"])
        if cid in names:
            raise DataError(f"{where}: category id {cid} appears twice")
        names[cid] = str(c.get("name", cid))
        ids.append(cid)
    if not ids:
        raise DataError(f"{where}: no categories")
    ordered = sorted(ids)
    index = {label: {"id": cid, "name": names[cid]} for label, cid in enumerate(ordered, 1)}
    return index, {cid: label for label, cid in enumerate(ordered, 1)}


def normalize_coco_box(bbox, width, height, where):
    """COCO [x, y, w, h] pixels -> normalized (ymin, xmin, ymax, xmax); BadItem if bad."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise BadItem("bad box", f"{where}: bbox {bbox!r} is not 4 numbers") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise BadItem("bad box", f"{where}: bbox {bbox!r} is not finite")
    if w <= 0 or h <= 0:
        raise BadItem(
            "bad box",
            f"{where}: bbox [x,y,w,h]={bbox!r} has zero or negative "
            f"width/height (xmin >= xmax or ymin >= ymax)",
        )
    tol = BOX_TOLERANCE_PX
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        raise BadItem(
            "bad box", f"{where}: bbox [x,y,w,h]={bbox!r} lies outside the {width}x{height} image"
        )
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    return [y0 / height, x0 / width, y1 / height, x1 / width]


def _read_json(path):
    check_input_file(
        path,
        "annotations_file",
        MAX_ANNOTATIONS_BYTES,
        error=DataError,
        folder_hint="the COCO .json file",
    )
    try:
        with open(path) as f:
            data = json.loads(read_bounded(f, MAX_ANNOTATIONS_BYTES, "annotations_file", path))
    except FileNotFoundError:
        raise DataError(f"annotations file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"annotations_file {path}: is a folder; give the COCO .json file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or "images" not in data:
        raise DataError(f"{path}: not a COCO instances file (no 'images' list)")
    return data


def _load_image_entry(entry, image_dir, annotations_file):
    """(image_id, path, width, height) for one "images" entry, file checked."""
    image_id = entry.get("id")
    file_name = entry.get("file_name")
    if image_id is None or not file_name:
        raise DataError(
            f"{annotations_file}: image entry without 'id' or 'file_name': "
            f"{json.dumps(entry)[:200]}"
        )
    path = os.path.join(image_dir, file_name)
    where = f"{annotations_file}: image id {image_id}"
    try:
        check_input_file(
            path, "", MAX_IMAGE_BYTES, error=functools.partial(BadItem, "corrupt image")
        )
        width, height, _ = inspect_image(path, path)
    except BadItem as e:
        raise BadItem(e.reason, f"{where}: {e}") from None
    if "width" in entry and "height" in entry:
        if (int(entry["width"]), int(entry["height"])) != (width, height):
            raise BadItem(
                "size mismatch",
                f"{where}: {path} is {width}x{height} but the JSON "
                f"says {entry['width']}x{entry['height']}",
            )
    return int(image_id), path, width, height


def _check_annotation_id(ann, position, seen, annotations_file):
    """Annotation ids must exist and be unique: pycocotools keys annotations by id, so
    a repeated id silently replaces the other boxes and the mAP is wrong."""
    if not isinstance(ann, dict):
        raise DataError(f"{annotations_file}: annotation #{position} is not an object: {ann!r}")
    ann_id = ann.get("id")
    if ann_id is None or isinstance(ann_id, bool) or not isinstance(ann_id, (int, str)):
        raise DataError(
            f"{annotations_file}: annotation #{position} (image id {ann.get('image_id')}) "
            f"has no usable 'id' ({ann_id!r}); every annotation needs a unique id"
        )
    if ann_id in seen:
        raise DataError(
            f"{annotations_file}: annotation id {ann_id} appears twice (again at "
            f"annotation #{position}, image id {ann.get('image_id')}); annotation ids "
            f"must be unique"
        )
    seen.add(ann_id)


def load_coco(annotations_file, image_dir, skip_bad_examples=False, num_examples=0):
    """Read and validate a COCO dataset; returns CocoData (memoized on the file's mtime)."""
    try:
        stat = os.stat(annotations_file)
        key = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = None
    return _load_coco(
        os.path.abspath(annotations_file),
        os.path.abspath(image_dir),
        bool(skip_bad_examples),
        int(num_examples),
        key,
    )


@functools.lru_cache(maxsize=8)
def _load_coco(annotations_file, image_dir, skip_bad_examples, num_examples, _file_key):
    data = _read_json(annotations_file)
    if os.path.exists(image_dir) and not os.path.isdir(image_dir):
        raise DataError(f"image_dir {image_dir}: is not a folder; give the images' folder")
    category_index, label_of = category_mapping(data.get("categories", []), annotations_file)
    images = data["images"]
    if not images:
        raise DataError(f"{annotations_file}: empty dataset: the file lists no images")
    all_ids = {e.get("id") for e in images if isinstance(e, dict)}
    selected = images[:num_examples] if num_examples > 0 else images
    selected_ids = {e.get("id") for e in selected}
    per_image = collections.defaultdict(list)
    eval_ready = True
    annotation_ids = set()
    for position, ann in enumerate(data.get("annotations", [])):
        eval_ready = eval_ready and "area" in ann and "iscrowd" in ann
        _check_annotation_id(ann, position, annotation_ids, annotations_file)
        image_id = ann.get("image_id")
        if image_id not in all_ids:
            raise DataError(
                f"{annotations_file}: annotation id {ann.get('id')} refers to "
                f"image_id {image_id}, which is not in 'images'"
            )
        if image_id in selected_ids:
            per_image[image_id].append(ann)

    examples, skipped, seen = [], collections.Counter(), set()
    for entry in selected:
        try:
            image_id, path, width, height = _load_image_entry(entry, image_dir, annotations_file)
            if image_id in seen:
                raise DataError(f"{annotations_file}: image id {image_id} appears twice")
            seen.add(image_id)
            boxes, classes, crowd, areas, ann_ids = [], [], [], [], []
            for ann in per_image.get(image_id, []):
                where = (
                    f"{annotations_file}: annotation id {ann.get('id')} "
                    f"(image id {image_id}, {path})"
                )
                cid = ann.get("category_id")
                if cid not in label_of:
                    raise BadItem(
                        "unknown category",
                        f"{where}: unknown category_id {cid}; known ids: {sorted(label_of)}",
                    )
                box = normalize_coco_box(ann.get("bbox"), width, height, where)
                try:
                    area = float(ann["area"] if "area" in ann else ann["bbox"][2] * ann["bbox"][3])
                except (TypeError, ValueError):
                    raise BadItem(
                        "bad box", f"{where}: area {ann.get('area')!r} is not a number"
                    ) from None
                boxes.append(box)
                classes.append(label_of[cid])
                crowd.append(bool(ann.get("iscrowd", 0)))
                areas.append(area)
                ann_ids.append(ann.get("id"))
        except BadItem as e:
            if not skip_bad_examples:
                raise DataError(str(e)) from None
            skipped[e.reason] += 1
            continue
        examples.append(
            Example(
                image_id=image_id,
                path=path,
                height=height,
                width=width,
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                classes=np.asarray(classes, dtype=np.int32),
                is_crowd=np.asarray(crowd, dtype=bool),
                areas=np.asarray(areas, dtype=np.float64),
                annotation_ids=ann_ids,
            )
        )

    if skipped:
        logger.warning("%s: %s", annotations_file, skip_summary(skipped, len(selected)))
    if not examples:
        raise DataError(
            f"{annotations_file}: empty dataset: no usable images "
            f"({skip_summary(skipped, len(selected))})"
        )
    return CocoData(
        annotations_file=annotations_file,
        image_dir=image_dir,
        examples=examples,
        category_index=category_index,
        num_images_in_file=len(images),
        skipped=skipped,
        eval_ready=eval_ready,
    )


def skip_summary(skipped, total):
    """'skipped 3 of 200 images: 2 corrupt image, 1 bad box'."""
    reasons = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    return f"skipped {sum(skipped.values())} of {total} images" + (
        f": {reasons}" if reasons else ""
    )


def write_coco_subset(data: CocoData, path):
    """Write a COCO JSON holding exactly ``data.examples`` (for pycocotools), atomically."""
    images, annotations = [], []
    for ex in data.examples:
        images.append(
            {
                "id": ex.image_id,
                "file_name": os.path.relpath(ex.path, data.image_dir),
                "width": ex.width,
                "height": ex.height,
            }
        )
    coco = _read_json(data.annotations_file)
    keep = {ex.image_id for ex in data.examples}
    for a in coco.get("annotations", []):
        if a.get("image_id") in keep:
            w, h = a["bbox"][2], a["bbox"][3]
            annotations.append({"iscrowd": 0, "area": float(w) * float(h), **a})
    out = dict(coco, images=images, annotations=annotations)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, path)
    return path
