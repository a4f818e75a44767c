"""Convert a Pascal VOC or YOLO set to COCO (JSON + image folder) or TFRecords.

    detbench data convert --from voc|yolo --to coco|tfrecord SRC[#SPLIT] --out OUT

``--to coco`` writes OUT/annotations.json and OUT/images/ (hard links to the
source images where the file system allows, else copies); ``--to tfrecord``
writes the TFRecord OUT (TF Object Detection API layout, the image bytes as
they are). The set is read and checked first: a broken item fails with one
line before anything is written.
"""

import argparse
import json
import os
import shutil

from detbench.data.errors import DataError

_CONVERTERS = ("voc", "yolo")


def to_coco_folder(data, image_dir, out):
    images = os.path.join(out, "images")
    os.makedirs(images, exist_ok=True)
    for entry in data["images"]:
        src, dst = (
            os.path.join(image_dir, entry["file_name"]),
            os.path.join(images, entry["file_name"]),
        )
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.exists(dst):
            os.remove(dst)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    path = os.path.join(out, "annotations.json")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)
    return [path, images]


def convert(source_format, target, src, out, num_shards=1):
    from detbench.data import user_data

    path, _, split = src.partition("#")
    found = user_data.detect_format(path)
    if found != source_format:
        raise DataError(f"{path}: --from {source_format}, but it holds a {found} set")
    data = user_data.open_data(src)
    if target == "coco":
        with open(data.annotations_file) as f:
            return to_coco_folder(json.load(f), data.image_dir, out)
    from detbench.data.to_tfrecord import convert as coco_to_tfrecord

    return coco_to_tfrecord(data.annotations_file, data.image_dir, out, num_shards)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench data convert --from voc --to tfrecord VOC2007#trainval "
        "--out /tmp/voc_trainval.tfrecord",
    )
    parser.add_argument("--from", dest="source", required=True, choices=_CONVERTERS)
    parser.add_argument("--to", dest="target", required=True, choices=("coco", "tfrecord"))
    parser.add_argument("src", help="the set's folder (or YOLO data.yaml), optionally #SPLIT")
    parser.add_argument("--out", required=True, help="folder (coco) or file (tfrecord)")
    parser.add_argument("--num_shards", type=int, default=1, help="tfrecord shards")
    args = parser.parse_args(argv)
    for path in convert(args.source, args.target, args.src, args.out, args.num_shards):
        print(path)


if __name__ == "__main__":
    from detbench.errors import run_cli

    raise SystemExit(run_cli(main))
