"""Synthetic shapes: the built-in detection dataset (no download exists).

Each image has a textured background (noise, gradient or stripes, varying by
at most +-60 per channel around a random base colour), unlabelled clutter
(strokes, irregular splotches, dots) and 1..max_objects objects whose *shape*
is the class (circle, square, triangle, ...) and whose colour is random but
far from what it covers. Object sides are log-uniform from 7% (22 px) to 60%
of the image, so a 320 px set has COCO small (< 32^2 px), medium and large
(> 96^2 px) objects: about 34 / 53 / 13%.

Objects may overlap: later objects hide parts of earlier ones. An object is
labelled only when at least half of its pixels stay visible; its box is the box
of its visible pixels and its area the visible pixel count (as COCO's area is the
mask area). A mostly hidden object is still drawn but carries no label.

Images are JPEG files plus a COCO instances JSON, so the set travels the same
path as real COCO. Image i of a split depends only on (seed, split, i): the
first 100 images of a 1000-image set equal a 100-image set, and train / val use
disjoint seed streams.

    python -m detbench.data.synthetic --out DIR --num_images N \
        [--image_size S --num_classes K --seed X --split train|val]
"""

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from detbench.data.errors import DataError

# Class k+1 is SHAPES[k]; sets with fewer classes use the first ones.
SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "diamond",
    "frame",
    "hexagon",
)
# "pretrain": the stream of the extractors' classification pretraining (train/pretrain.py).
SPLITS = {"train": 0, "val": 1, "test": 2, "pretrain": 3}
# Bump when the generator's output changes, so cached sets are regenerated.
GENERATOR_VERSION = 3
MIN_VISIBLE_FRACTION = 0.5
# Object sides are log-uniform in [MIN_SIDE_FRACTION, 0.6] x image size: at 320 px
# about 34% of the objects are COCO-small (mask area < 32^2), 53% medium and 13%
# large (COCO: 41 / 34 / 24). Version 1 used 0.03 (52% small, most of them boxes
# of 10-20 px), version 2 0.06 (41% small).
MIN_SIDE_FRACTION = 0.07
# Version 3: background textures vary by at most +-BACKGROUND_CONTRAST around
# their base colour (version 2: any two colours, so a background could hold
# every object colour), objects are at least OBJECT_CONTRAST away from what they
# cover (version 2: 90), and there is less clutter (1-5 strokes, 0-2 splotches,
# 0-8 dots; version 2: 2-8, 0-3, 0-11).
BACKGROUND_CONTRAST = 60.0
OBJECT_CONTRAST = 120.0
_SUPERSAMPLE = 2
_MAX_ROTATION_DEG = 10.0


def _regular_polygon(n, phase):
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _star(points=5, inner=0.42):
    a = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _cross(arm=0.36):
    t = arm
    return np.array(
        [
            (-t, -1),
            (t, -1),
            (t, -t),
            (1, -t),
            (1, t),
            (t, t),
            (t, 1),
            (-t, 1),
            (-t, t),
            (-1, t),
            (-1, -t),
            (-t, -t),
        ],
        dtype=float,
    )


def _circle(n=48):
    return _regular_polygon(n, 0.0)


_SQUARE = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float)


def _shape_polygons(name, rng):
    """(outer polygons, holes) in unit coordinates, y pointing down."""
    if name == "circle":
        return [_circle()], []
    if name == "square":
        return [_SQUARE], []
    if name == "triangle":
        return [np.array([(0, -1), (1, 0.8), (-1, 0.8)], dtype=float)], []
    if name == "star":
        return [_star()], []
    if name == "cross":
        return [_cross()], []
    if name == "ring":
        return [_circle()], [0.55 * _circle()]
    if name == "hexagon":
        return [_regular_polygon(6, 0.0)], []
    if name == "diamond":
        return [np.array([(0, -1), (1, 0), (0, 1), (-1, 0)], dtype=float)], []
    if name == "crescent":
        a = rng.uniform(0, 2 * np.pi)  # the crescent's opening may face anywhere
        offset = 0.45 * np.array([np.cos(a), np.sin(a)])
        return [_circle()], [0.85 * _circle() + offset]
    if name == "frame":
        return [_SQUARE], [0.55 * _SQUARE]
    raise DataError(f"unknown synthetic shape {name!r}; known: {', '.join(SHAPES)}")


def render_shape_mask(name, width, height, rng):
    """Anti-aliased coverage in [0, 1], float32 [height, width], shape filling the patch."""
    outer, holes = _shape_polygons(name, rng)
    angle = math.radians(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    outer = [p @ rot.T for p in outer]
    holes = [p @ rot.T for p in holes]
    pts = np.concatenate(outer)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ss = _SUPERSAMPLE
    scale = np.array([width * ss, height * ss]) / (hi - lo)

    def to_pixels(p):
        return [tuple(v) for v in ((p - lo) * scale)]

    canvas = Image.new("L", (width * ss, height * ss), 0)
    draw = ImageDraw.Draw(canvas)
    for p in outer:
        draw.polygon(to_pixels(p), fill=255)
    for p in holes:
        draw.polygon(to_pixels(p), fill=0)
    small = canvas.reduce(ss)
    return np.asarray(small, dtype=np.float32) / 255.0


def _background(rng, size):
    kind = rng.choice(("noise", "gradient", "stripes"))
    c1 = rng.uniform(0, 255, size=3)
    c2 = np.clip(c1 + rng.uniform(-BACKGROUND_CONTRAST, BACKGROUND_CONTRAST, size=3), 0, 255)
    if kind == "noise":
        grid = int(rng.integers(3, 17))
        small = np.clip(
            c1 + rng.uniform(-BACKGROUND_CONTRAST, BACKGROUND_CONTRAST, size=(grid, grid, 3)),
            0,
            255,
        ).astype(np.uint8)
        image = np.asarray(Image.fromarray(small).resize((size, size), Image.BILINEAR), np.float32)
    else:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        a = rng.uniform(0, np.pi)
        t = (xx * np.cos(a) + yy * np.sin(a)) / size
        if kind == "gradient":
            t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        else:
            period = rng.uniform(6, 40) / size
            t = 0.5 + 0.5 * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        image = c1 + (c2 - c1) * t[..., None]
    return image.astype(np.float32)


def _draw_clutter(image, rng, size, foreground=False):
    """Unlabelled distractors drawn onto a float32 image; returns their pixel mask.

    Background clutter: strokes, irregular splotches and dots. Foreground clutter
    (drawn over the objects): a few thin strokes.
    """
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    mask = Image.new("L", (size, size), 0) if foreground else None
    mask_draw = ImageDraw.Draw(mask) if foreground else None

    def colour():
        return tuple(int(c) for c in rng.integers(0, 256, 3))

    num_strokes = int(rng.integers(0, 3)) if foreground else int(rng.integers(1, 6))
    for _ in range(num_strokes):
        points = [tuple(rng.uniform(0, size, 2)) for _ in range(int(rng.integers(2, 5)))]
        width = int(rng.integers(1, 3 if foreground else 4))
        draw.line(points, fill=colour(), width=width)
        if foreground:
            mask_draw.line(points, fill=255, width=width)
    if not foreground:
        for _ in range(int(rng.integers(0, 3))):  # irregular splotches
            centre = rng.uniform(0, size, 2)
            n = int(rng.integers(10, 17))
            radius = rng.uniform(3, max(3.0, size * 0.05)) * rng.uniform(0.3, 1.0, n)
            a = np.sort(rng.uniform(0, 2 * np.pi, n))
            pts = centre + np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)
            draw.polygon([tuple(p) for p in pts], fill=colour())
        for _ in range(int(rng.integers(0, 9))):  # dots
            c = rng.uniform(0, size, 2)
            r = rng.uniform(1, 2.5)
            draw.ellipse([tuple(c - r), tuple(c + r)], fill=colour())
    image[...] = np.asarray(pil, dtype=np.float32)
    return np.asarray(mask) > 0 if foreground else None


def _object_colour(rng, region_mean):
    best, best_dist = None, -1.0
    for _ in range(10):
        colour = rng.uniform(0, 255, 3)
        dist = float(np.linalg.norm(colour - region_mean))
        if dist > best_dist:
            best, best_dist = colour, dist
        if dist >= OBJECT_CONTRAST:
            break
    return best


def generate_image(seed, split, index, image_size=320, num_classes=6, max_objects=8):
    """One image: (uint8 [S, S, 3], list of {"category_id", "bbox", "area"})."""
    if split not in SPLITS:
        raise DataError(f"synthetic split must be one of {sorted(SPLITS)}, got {split!r}")
    if not 1 <= num_classes <= len(SHAPES):
        raise DataError(f"synthetic num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
    size = int(image_size)
    if size < 16:
        raise DataError(f"synthetic image_size must be >= 16, got {image_size}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, SPLITS[split], int(index)])
    image = _background(rng, size)
    _draw_clutter(image, rng, size)
    owner = np.zeros((size, size), dtype=np.int16)  # 0: background, k: object k
    objects = []  # (class index, full pixel count)
    min_side = max(6.0, MIN_SIDE_FRACTION * size)
    max_side = 0.6 * size
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(num_classes))
        side = math.exp(rng.uniform(math.log(min_side), math.log(max_side)))
        aspect = math.exp(rng.uniform(math.log(0.75), math.log(1.33)))
        w = max(3, min(size, int(round(side * min(1.0, aspect)))))
        h = max(3, min(size, int(round(side * min(1.0, 1.0 / aspect)))))
        alpha = render_shape_mask(SHAPES[cls], w, h, rng)
        mask = alpha >= 0.5
        full = int(mask.sum())
        if full == 0:
            continue
        # Place it where it hides at most 35% of any object already there.
        for _attempt in range(8):
            x0 = int(rng.integers(0, size - w + 1))
            y0 = int(rng.integers(0, size - h + 1))
            under = owner[y0 : y0 + h, x0 : x0 + w][mask]
            hidden = np.bincount(under, minlength=len(objects) + 1)[1:]
            if all(hidden[k] <= 0.35 * objects[k][1] for k in range(len(objects))):
                break
        region = image[y0 : y0 + h, x0 : x0 + w]
        colour = _object_colour(rng, region[mask].mean(axis=0))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        shade = 1.0 + rng.uniform(0, 0.15) * (
            (xx / w - 0.5) * np.cos(a) + (yy / h - 0.5) * np.sin(a)
        )
        paint = np.clip(colour * shade[..., None], 0, 255)
        region[...] = alpha[..., None] * paint + (1 - alpha[..., None]) * region
        owner[y0 : y0 + h, x0 : x0 + w][mask] = len(objects) + 1
        objects.append((cls, full, x0, y0, w, h))
    owner[_draw_clutter(image, rng, size, foreground=True)] = 0
    image += rng.uniform(4, 14) * (rng.random(image.shape, dtype=np.float32) - 0.5)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    annotations = []
    for k, (cls, full, x0, y0, w, h) in enumerate(objects):
        ys, xs = np.nonzero(owner[y0 : y0 + h, x0 : x0 + w] == k + 1)
        xs, ys = xs + x0, ys + y0
        if len(ys) < MIN_VISIBLE_FRACTION * full or len(ys) == 0:
            continue  # mostly hidden: drawn, not labelled
        x_min, x_max, y_min, y_max = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
        annotations.append(
            {
                "category_id": cls + 1,
                "bbox": [x_min, y_min, x_max - x_min + 1, y_max - y_min + 1],
                "area": int(len(ys)),
            }
        )
    return pixels, annotations


def categories(num_classes):
    return [{"id": i + 1, "name": SHAPES[i], "supercategory": "shape"} for i in range(num_classes)]


def write_dataset(
    out_dir,
    num_images,
    image_size=320,
    num_classes=6,
    seed=0,
    split="train",
    max_objects=8,
    progress=True,
):
    """Writes ``out_dir/images/*.jpg`` and ``out_dir/instances_<split>.json``."""
    if num_images < 1:
        raise DataError(f"synthetic num_images must be >= 1, got {num_images}")
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for i in tqdm(range(num_images), desc=f"synthetic {split}", disable=not progress, unit="img"):
        pixels, objects = generate_image(seed, split, i, image_size, num_classes, max_objects)
        file_name = f"{split}_{i:06d}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, subsampling=0)
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(buffer.getvalue())
        image_id = i + 1
        images.append(
            {"id": image_id, "file_name": file_name, "width": image_size, "height": image_size}
        )
        for obj in objects:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, **obj}
            )
    coco = {
        "info": {
            "description": "detbench synthetic shapes",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "split": split,
        },
        "images": images,
        "annotations": annotations,
        "categories": categories(num_classes),
    }
    annotations_file = os.path.join(out_dir, f"instances_{split}.json")
    with open(annotations_file, "w") as f:
        json.dump(coco, f)
    return image_dir, annotations_file


def cache_root():
    """``$DETBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/detbench``, else ``~/.cache/detbench``."""
    if os.environ.get("DETBENCH_CACHE_DIR"):
        return os.environ["DETBENCH_CACHE_DIR"]
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "detbench")


def _config_key(config):
    fields = {
        "version": GENERATOR_VERSION,
        "num_images": config.num_images,
        "image_size": config.image_size,
        "num_classes": config.num_classes,
        "seed": config.seed,
        "max_objects": config.max_objects,
        "split": config.split,
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return f"{config.split}-{config.num_images}x{config.image_size}-{digest}", fields


def ensure_synthetic(config):
    """Generate the set a ``SyntheticShapes`` config describes on first use; reuse it after.

    The set lives in ``<root>/<split>-<N>x<S>-<hash of the fields>``, where root is
    ``config.cache_dir`` or ``~/.cache/detbench/synthetic``. It is generated in a
    temporary folder and renamed into place, so a killed run leaves no half set.
    Returns ``(image_dir, annotations_file)``.
    """
    key, fields = _config_key(config)
    root = config.cache_dir or os.path.join(cache_root(), "synthetic")
    final = os.path.join(root, key)
    image_dir = os.path.join(final, "images")
    annotations_file = os.path.join(final, f"instances_{config.split}.json")
    if os.path.exists(os.path.join(final, "manifest.json")):
        return image_dir, annotations_file
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root)
    try:
        write_dataset(
            tmp,
            config.num_images,
            config.image_size,
            config.num_classes,
            config.seed,
            config.split,
            config.max_objects,
            progress=config.num_images >= 200,
        )
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(fields, f, sort_keys=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.exists(os.path.join(final, "manifest.json")):
                raise  # not a concurrent writer finishing first
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return image_dir, annotations_file


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench data synthetic --out /tmp/shapes --num_images 64 --image_size 160",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num_images", type=int, required=True)
    parser.add_argument("--image_size", type=int, default=320)
    parser.add_argument("--num_classes", type=int, default=6)
    parser.add_argument("--max_objects", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train", choices=sorted(SPLITS))
    args = parser.parse_args(argv)
    image_dir, annotations_file = write_dataset(
        args.out,
        args.num_images,
        args.image_size,
        args.num_classes,
        args.seed,
        args.split,
        args.max_objects,
    )
    print(f"images: {image_dir}\nannotations: {annotations_file}")


if __name__ == "__main__":
    from detbench.errors import run_cli

    raise SystemExit(run_cli(main))
