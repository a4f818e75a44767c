"""Pascal VOC folders (Annotations/*.xml + JPEGImages/ + ImageSets/Main/*.txt) as COCO.

``read_voc(root, split)`` reads the XML files of a split (``ImageSets/Main/<split>.txt``,
or every file in Annotations/ when no split is given, or the ids listed in a
text file) and returns the same set as a COCO instances dict whose
``file_name`` is relative to the image folder, so the COCO reader streams and
evaluates it. Boxes keep VOC's pixel coordinates as written (the TF Object
Detection API's ``create_pascal_tf_record`` reading): COCO ``bbox`` is
``[xmin, ymin, xmax - xmin, ymax - ymin]``. ``difficult`` objects become COCO
``iscrowd: 1`` (pycocotools ignores them: a detection on one is neither a true
nor a false positive, as in VOC's own evaluation); ``truncated`` and
``difficult`` are kept as fields of the annotation. Categories are the object
names, ids 1..K in sorted order of the names.

Every broken item fails with one line naming the XML file, the object and the
image (unreadable XML, missing field, box that is not numbers, empty or outside
the image, missing or corrupt image, size that disagrees with the image file).
"""

import math
import os
import xml.etree.ElementTree as ET

from detbench.data.coco import BOX_TOLERANCE_PX, BadItem, inspect_image
from detbench.data.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".JPG", ".JPEG", ".PNG")


def is_voc_root(path):
    return os.path.isdir(os.path.join(path, "Annotations")) and os.path.isdir(
        os.path.join(path, "JPEGImages")
    )


def split_ids(root, split):
    """The image ids of ``split``: a name in ImageSets/Main, a list file, or all XML files."""
    annotations = os.path.join(root, "Annotations")
    if not split:
        ids = sorted(os.path.splitext(f)[0] for f in os.listdir(annotations) if f.endswith(".xml"))
        where = annotations
    else:
        where = (
            split
            if os.path.isfile(split)
            else os.path.join(root, "ImageSets", "Main", split + ".txt")
        )
        if not os.path.isfile(where):
            known = (
                sorted(
                    os.path.splitext(f)[0]
                    for f in os.listdir(os.path.join(root, "ImageSets", "Main"))
                    if f.endswith(".txt")
                )
                if os.path.isdir(os.path.join(root, "ImageSets", "Main"))
                else []
            )
            raise DataError(
                f"{root}: no split {split!r} (no {where}); splits there: {', '.join(known) or 'none'}"
            )
        with open(where) as f:
            # VOC's per-class lists carry a second column (1 / -1 / 0); the id is the first.
            ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise DataError(f"{where}: empty dataset: no image listed")
    seen = set()
    for i in ids:
        if i in seen:
            raise DataError(f"{where}: image {i!r} is listed twice")
        seen.add(i)
    return ids, where


def _text(node, tag, where):
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise BadItem("bad box", f"{where}: no <{tag}>")
    return child.text.strip()


def _number(node, tag, where):
    text = _text(node, tag, where)
    try:
        value = float(text)
    except ValueError:
        raise BadItem("bad box", f"{where}: <{tag}> {text!r} is not a number") from None
    if not math.isfinite(value):
        raise BadItem("bad box", f"{where}: <{tag}> {text!r} is not finite")
    return value


def _find_image(root, image_id, filename):
    folder = os.path.join(root, "JPEGImages")
    if filename and os.path.exists(os.path.join(folder, filename)):
        return filename
    for ext in IMAGE_EXTENSIONS:
        if os.path.exists(os.path.join(folder, image_id + ext)):
            return image_id + ext
    return filename or image_id + ".jpg"


def read_voc_file(xml_path, image_dir, find_image, image_number):
    """(image entry, [(name, bbox, difficult, truncated, object index)]) of one XML file."""
    try:
        tree = ET.parse(xml_path)
    except FileNotFoundError:
        raise BadItem("missing annotation", f"{xml_path}: annotation file not found") from None
    except ET.ParseError as e:
        raise BadItem("bad annotation", f"{xml_path}: not valid XML: {e}") from None
    node = tree.getroot()
    filename = (node.findtext("filename") or "").strip()
    file_name = find_image(filename)
    image_path = os.path.join(image_dir, file_name)
    where = f"{xml_path} (image {image_path})"
    try:
        width, height, _ = inspect_image(image_path, image_path)
    except BadItem as e:
        raise BadItem(e.reason, f"{xml_path}: {e}") from None
    size = node.find("size")
    if size is not None and size.findtext("width") and size.findtext("height"):
        w, h = _number(size, "width", where), _number(size, "height", where)
        if (int(w), int(h)) != (width, height):
            raise BadItem(
                "size mismatch",
                f"{where}: the image is {width}x{height} but <size> says {int(w)}x{int(h)}",
            )
    objects = []
    for k, obj in enumerate(node.findall("object")):
        at = f"{xml_path}: object {k} (image {image_path})"
        name = _text(obj, "name", at)
        box = obj.find("bndbox")
        if box is None:
            raise BadItem("bad box", f"{at}: no <bndbox>")
        x0, y0, x1, y1 = (_number(box, t, at) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x1 <= x0 or y1 <= y0:
            raise BadItem(
                "bad box",
                f"{at}: box (xmin,ymin,xmax,ymax)=({x0:g},{y0:g},{x1:g},{y1:g}) has zero or "
                "negative width/height",
            )
        tol = BOX_TOLERANCE_PX
        if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
            raise BadItem(
                "bad box",
                f"{at}: box (xmin,ymin,xmax,ymax)=({x0:g},{y0:g},{x1:g},{y1:g}) lies outside "
                f"the {width}x{height} image",
            )
        flags = [int(float(obj.findtext(t) or 0)) for t in ("difficult", "truncated")]
        objects.append((name, [x0, y0, x1 - x0, y1 - y0], flags[0], flags[1], k))
    entry = {"id": image_number, "file_name": file_name, "width": width, "height": height}
    return entry, objects


def read_voc(root, split=None, skip_bad_examples=False):
    """(COCO instances dict, image folder, what was read) of a VOC folder's split."""
    ids, listed = split_ids(root, split)
    image_dir = os.path.join(root, "JPEGImages")
    images, per_image, skipped = [], [], 0
    for number, image_id in enumerate(ids, 1):
        xml_path = os.path.join(root, "Annotations", image_id + ".xml")
        try:
            entry, objects = read_voc_file(
                xml_path, image_dir, lambda f, i=image_id: _find_image(root, i, f), number
            )
        except BadItem as e:
            if not skip_bad_examples:
                raise DataError(str(e)) from None
            skipped += 1
            continue
        images.append(entry)
        per_image.append(objects)
    return to_coco(images, per_image, listed), image_dir, skipped


def to_coco(images, per_image, where):
    """COCO dict of images and their (name, bbox, difficult, truncated, index) objects."""
    names = sorted({o[0] for objects in per_image for o in objects})
    if not images:
        raise DataError(f"{where}: empty dataset: no usable images")
    category = {n: i for i, n in enumerate(names, 1)}
    annotations = []
    for entry, objects in zip(images, per_image):
        for name, bbox, difficult, truncated, _ in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": entry["id"],
                    "category_id": category[name],
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": int(bool(difficult)),
                    "difficult": int(bool(difficult)),
                    "truncated": int(bool(truncated)),
                }
            )
    if not names:
        raise DataError(f"{where}: no object in any image: no category to learn")
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for n, i in category.items()],
    }
