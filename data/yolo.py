"""YOLO folders (images/ + labels/ + data.yaml or a names file) as COCO.

Layout (Ultralytics / darknet): ``images/[SPLIT/]NAME.jpg`` and
``labels/[SPLIT/]NAME.txt``, one object a line: ``class cx cy w h``, the box
centre and size normalised by the image's width and height, class 0-based.
Class names come from ``data.yaml`` (``names:`` a list or a {index: name}
map) or a names file (``classes.txt``, ``obj.names``, ``names.txt``: one a
line). ``read_yolo(root, split)`` returns the set as a COCO instances dict:
category id = class + 1, every named class a category (used or not), and the
box converted exactly to pixels: ``x = (cx - w/2) * W``, ``y = (cy - h/2) * H``,
``[x, y, w * W, h * H]``. An image without a label file has no objects.

Broken items fail with one line naming the label file, the line and the image:
a line that is not five numbers, a class outside the names, a box of zero
size or outside the image, a label file without an image, a missing or
corrupt image.
"""

import math
import os

import yaml

from detbench.data.coco import BOX_TOLERANCE_PX, BadItem, inspect_image
from detbench.data.errors import DataError
from detbench.data.voc import IMAGE_EXTENSIONS, to_coco

NAMES_FILES = ("data.yaml", "dataset.yaml", "classes.txt", "obj.names", "names.txt")


def is_yolo_root(path):
    return os.path.isdir(os.path.join(path, "images")) and os.path.isdir(
        os.path.join(path, "labels")
    )


def read_names(root):
    """Class names, index = YOLO class, from the root's data.yaml or names file."""
    for name in NAMES_FILES:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".yaml"):
            try:
                with open(path) as f:
                    data = yaml.safe_load(f)
            except yaml.YAMLError as e:
                first = str(e).splitlines()[0]
                raise DataError(f"{path}: not valid YAML: {first}") from None
            names = data.get("names") if isinstance(data, dict) else None
            if isinstance(names, dict):
                try:
                    keys = sorted(int(k) for k in names)
                except ValueError:
                    raise DataError(f"{path}: names: keys must be class indices") from None
                if keys != list(range(len(keys))):
                    raise DataError(f"{path}: names: indices must be 0..{len(keys) - 1}")
                names = [names.get(k, names.get(str(k))) for k in keys]
            if not isinstance(names, list) or not names:
                raise DataError(f"{path}: no 'names' list of classes")
            return [str(n) for n in names], path
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            raise DataError(f"{path}: no class names")
        return names, path
    raise DataError(
        f"{root}: no class names: add data.yaml (names: [...]) or one of "
        f"{', '.join(NAMES_FILES[2:])}"
    )


def _images_under(folder):
    found = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.endswith(IMAGE_EXTENSIONS):
                rel = os.path.relpath(os.path.join(dirpath, f), folder)
                found[os.path.splitext(rel)[0]] = rel
    return found


def _labels_under(folder):
    found = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.endswith(".txt"):
                rel = os.path.relpath(os.path.join(dirpath, f), folder)
                found[os.path.splitext(rel)[0]] = os.path.join(folder, rel)
    return found


def parse_line(line, num_classes, width, height, where):
    """One ``class cx cy w h`` line -> (class, COCO [x, y, w, h] in pixels)."""
    fields = line.split()
    if len(fields) != 5:
        raise BadItem(
            "bad box", f"{where}: expected 'class cx cy w h' (5 numbers), got {len(fields)} fields"
        )
    try:
        cls = int(fields[0])
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        raise BadItem("bad box", f"{where}: {line.strip()!r} is not 'class cx cy w h'") from None
    if not 0 <= cls < num_classes:
        raise BadItem(
            "unknown category",
            f"{where}: class {cls} outside the {num_classes} names (0..{num_classes - 1})",
        )
    if not all(math.isfinite(v) for v in (cx, cy, w, h)):
        raise BadItem("bad box", f"{where}: {line.strip()!r} is not finite")
    if w <= 0 or h <= 0:
        raise BadItem("bad box", f"{where}: box w={w:g} h={h:g} has zero or negative size")
    x, y = (cx - w / 2) * width, (cy - h / 2) * height
    bw, bh = w * width, h * height
    tol = BOX_TOLERANCE_PX
    if x < -tol or y < -tol or x + bw > width + tol or y + bh > height + tol:
        raise BadItem(
            "bad box",
            f"{where}: box (cx,cy,w,h)=({cx:g},{cy:g},{w:g},{h:g}) lies outside the "
            f"{width}x{height} image",
        )
    return cls, [x, y, bw, bh]


def read_yolo(root, split=None, skip_bad_examples=False):
    """(COCO instances dict, image folder, images skipped) of a YOLO folder's split."""
    names, _ = read_names(root)
    image_dir = os.path.join(root, "images", split) if split else os.path.join(root, "images")
    label_dir = os.path.join(root, "labels", split) if split else os.path.join(root, "labels")
    if not os.path.isdir(image_dir):
        have = sorted(
            d
            for d in os.listdir(os.path.join(root, "images"))
            if os.path.isdir(os.path.join(root, "images", d))
        )
        raise DataError(
            f"{root}: no split {split!r} (no {image_dir}); splits there: {', '.join(have) or 'none'}"
        )
    images = _images_under(image_dir)
    labels = _labels_under(label_dir) if os.path.isdir(label_dir) else {}
    for stem, path in sorted(labels.items()):
        if stem not in images:
            raise DataError(f"{path}: label file without an image (no {stem}.* in {image_dir})")
    if not images:
        raise DataError(f"{image_dir}: empty dataset: no image")
    entries, per_image, skipped = [], [], 0
    for number, stem in enumerate(sorted(images), 1):
        image_path = os.path.join(image_dir, images[stem])
        label_path = labels.get(stem)
        try:
            try:
                width, height, _ = inspect_image(image_path, image_path)
            except BadItem as e:
                raise BadItem(e.reason, f"{label_path or image_dir}: {e}") from None
            objects = []
            if label_path:
                with open(label_path) as f:
                    lines = f.read().splitlines()
                for k, line in enumerate(lines):
                    if not line.strip():
                        continue
                    where = f"{label_path}: line {k + 1} (image {image_path})"
                    cls, bbox = parse_line(line, len(names), width, height, where)
                    objects.append((cls, bbox, 0, 0, k))
        except BadItem as e:
            if not skip_bad_examples:
                raise DataError(str(e)) from None
            skipped += 1
            continue
        entries.append({"id": number, "file_name": images[stem], "width": width, "height": height})
        per_image.append(objects)
    data = to_coco(
        entries, [[("", o[1], 0, 0, o[4]) for o in objs] for objs in per_image], image_dir
    )
    # Categories are the names file's, in its order (id = class + 1), used or not.
    data["categories"] = [{"id": c + 1, "name": n} for c, n in enumerate(names)]
    for ann, obj in zip(data["annotations"], [o for objs in per_image for o in objs]):
        ann["category_id"] = obj[0] + 1
    return data, image_dir, skipped
