"""The aerial tree-crown photographs of the ``deepforest`` wheel, as a detection set.

    detbench data aerial-trees [--wheel FILE_OR_FOLDER] [--tile 400]

Fetches ``deepforest==2.1.0`` from PyPI (``pip download deepforest==2.1.0
--no-deps``: the wheel only, none of its torch dependencies) into
``<cache>/aerial_trees/``, takes its four annotated photographs (Pascal VOC
XML; MIT licence): the YELL crops 2019_YELL_2_528000_4978000_image_crop2
(2299x2472, 574 trees) and 2019_YELL_2_541000_4977000_image_crop (1249x1035,
279 trees), OSBS_029 (400x400, 61 trees) and SOAP_061 (400x400, 37 trees,
labelled Alive / Dead: both are "Tree" here). The first YELL crop is cut into
tiles for training; the other YELL crop (tiled the same way) and the two
small photos are the evaluation set, so no tile of an evaluation photo is in
training. Tiles are ``--tile`` px squares on a grid (the last row and column
moved inside the image); a box cut by a tile edge is clipped and kept
(``truncated: 1``) when at least half of it is inside, else dropped.

Writes ``train.json``, ``eval.json`` (COCO) and ``images/`` under
``<cache>/aerial_trees/tiles-<tile>/`` and prints the two JSON paths, ready for
``detbench sweep --grid configs/examples/aerial_trees.pbtxt --data TRAIN
--eval-data EVAL``.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile

from PIL import Image

from detbench.data.coco import BadItem
from detbench.data.errors import DataError
from detbench.data.synthetic import cache_root
from detbench.data.voc import read_voc_file

PACKAGE = "deepforest==2.1.0"
TRAIN = ("2019_YELL_2_528000_4978000_image_crop2",)
EVAL = ("2019_YELL_2_541000_4977000_image_crop", "OSBS_029", "SOAP_061")
MIN_INSIDE = 0.5  # a clipped box is kept when this fraction of its area is in the tile


def fetch_wheel(folder):
    """The deepforest wheel in ``folder``, downloaded from PyPI when absent."""
    wheels = [f for f in os.listdir(folder) if f.endswith(".whl")] if os.path.isdir(folder) else []
    if not wheels:
        os.makedirs(folder, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "-d", folder, "-q"]
        print("fetching:", " ".join(cmd[2:]))
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = [f for f in os.listdir(folder) if f.endswith(".whl")]
        if done.returncode or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise DataError(f"pip download {PACKAGE} failed: {last}")
    return os.path.join(folder, sorted(wheels)[-1])


def extract_photos(wheel, folder):
    """Copy the four photos and their XML files out of a wheel (or an unpacked
    folder holding deepforest/data/) into ``folder``; returns ``folder``."""
    os.makedirs(folder, exist_ok=True)
    wanted = [f"{n}.{ext}" for n in TRAIN + EVAL for ext in ("png", "xml")]
    for name in wanted:
        member = f"deepforest/data/{name}"
        try:
            if os.path.isdir(wheel):
                shutil.copyfile(os.path.join(wheel, member), os.path.join(folder, name))
            else:
                with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                    with open(os.path.join(folder, name), "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (KeyError, FileNotFoundError):
            raise DataError(f"{wheel}: no {member} in it (is it {PACKAGE}?)") from None
        except zipfile.BadZipFile:
            raise DataError(f"{wheel}: not a wheel (zip) file") from None
    return folder


def read_photo(folder, name):
    """(PIL image, [(x, y, w, h)]) of one photo; every object is a tree."""
    try:
        entry, objects = read_voc_file(
            os.path.join(folder, name + ".xml"), folder, lambda _: name + ".png", 0
        )
    except BadItem as e:
        raise DataError(str(e)) from None
    image = Image.open(os.path.join(folder, entry["file_name"])).convert("RGB")
    return image, [o[1] for o in objects]


def tile_origins(size, tile):
    """Tile starts along one side: a grid of ``tile``, the last one moved inside."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, tile))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def clip_boxes(boxes, x0, y0, tile_w, tile_h):
    """[(bbox in the tile, truncated)] of the boxes at least MIN_INSIDE inside the tile."""
    out = []
    for x, y, w, h in boxes:
        cx0, cy0 = max(x, x0), max(y, y0)
        cx1, cy1 = min(x + w, x0 + tile_w), min(y + h, y0 + tile_h)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        inside = (cx1 - cx0) * (cy1 - cy0)
        if inside < MIN_INSIDE * w * h:
            continue
        truncated = inside < w * h
        out.append(([cx0 - x0, cy0 - y0, cx1 - cx0, cy1 - cy0], truncated))
    return out


def tile_photo(image, boxes, name, tile, image_dir, coco, photo):
    """Add the tiles of one photo to the ``coco`` dict (images written to image_dir)."""
    width, height = image.size
    for y0 in tile_origins(height, tile):
        for x0 in tile_origins(width, tile):
            tw, th = min(tile, width), min(tile, height)
            file_name = f"{name}_x{x0}_y{y0}.png"
            image.crop((x0, y0, x0 + tw, y0 + th)).save(os.path.join(image_dir, file_name))
            image_id = len(coco["images"]) + 1
            coco["images"].append(
                {"id": image_id, "file_name": file_name, "width": tw, "height": th, "photo": photo}
            )
            for bbox, truncated in clip_boxes(boxes, x0, y0, tw, th):
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "bbox": bbox,
                        "area": bbox[2] * bbox[3],
                        "iscrowd": 0,
                        "truncated": int(truncated),
                    }
                )


def build(wheel=None, tile=400, root=None):
    """Fetch (unless ``wheel`` is given), extract and tile; returns (train.json, eval.json)."""
    root = root or os.path.join(cache_root(), "aerial_trees")
    wheel = wheel or fetch_wheel(os.path.join(root, "wheel"))
    photos = extract_photos(wheel, os.path.join(root, "photos"))
    final = os.path.join(root, f"tiles-{tile}")
    paths = os.path.join(final, "train.json"), os.path.join(final, "eval.json")
    if all(os.path.exists(p) for p in paths):
        return paths
    tmp = f"{final}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "images"))
    for names, out in ((TRAIN, "train.json"), (EVAL, "eval.json")):
        coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "Tree"}]}
        for name in names:
            image, boxes = read_photo(photos, name)
            # The small photos stay whole; the YELL crops are tiled.
            size = tile if max(image.size) > tile else max(image.size)
            tile_photo(image, boxes, name, size, os.path.join(tmp, "images"), coco, name)
        with open(os.path.join(tmp, out), "w") as f:
            json.dump(coco, f)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench data aerial-trees\n  detbench sweep --grid "
        "configs/examples/aerial_trees.pbtxt --data TRAIN_JSON --eval-data EVAL_JSON",
    )
    parser.add_argument(
        "--wheel", help=f"a {PACKAGE} wheel or unpacked folder (default: fetch it from PyPI)"
    )
    parser.add_argument("--tile", type=int, default=400, help="tile side in pixels")
    parser.add_argument("--root", help="output folder (default: <cache>/aerial_trees)")
    args = parser.parse_args(argv)
    if args.tile < 32:
        raise DataError(f"--tile: must be at least 32 px, got {args.tile}")
    train, evaluation = build(args.wheel, args.tile, args.root)
    for label, path in (("train", train), ("eval", evaluation)):
        with open(path) as f:
            data = json.load(f)
        print(f"{label}: {path}  ({len(data['images'])} images, {len(data['annotations'])} trees)")
