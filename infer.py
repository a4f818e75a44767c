"""``python -m detbench.infer --pipeline FILE [--checkpoint CKPT] --image IMG --out OUT.png``.

Runs the pipeline's detector on one image and draws the detections on it.
Without ``--checkpoint`` the model has random weights (useful to check a
config end to end).
"""

import argparse
import sys

import numpy as np

from detbench.errors import DetbenchError, run_cli
from detbench.paths import check_output_file

PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]


def read_image(path):
    """uint8 [H, W, 3] in every pixel mode (16-bit scaled, not clipped); one line if not."""
    from detbench.data.images import read_rgb

    return read_rgb(path, name=f"--image {path}")


OUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_extensions():
    """The common extensions this PIL can save images as."""
    from PIL import Image

    Image.init()
    saveable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    return {ext for ext in OUT_EXTENSIONS if ext in saveable}


def label_names(pipeline):
    """contiguous id -> name, from the eval (or train) input's dataset, if it can be read."""
    from detbench.data import load_dataset_info

    for reader in (pipeline.eval_input_reader, pipeline.train_input_reader):
        if reader.WhichOneof("source"):
            try:
                info = load_dataset_info(reader)
            except DetbenchError:
                continue
            return {k: v.get("name", str(k)) for k, v in info.category_index.items()}
    return {}


def draw(image, detections, names, score_threshold):
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    draw_ = ImageDraw.Draw(im)
    h, w = image.shape[:2]
    n = int(detections["num_detections"][0])
    kept = 0
    for box, score, cls in zip(
        detections["detection_boxes"][0][:n],
        detections["detection_scores"][0][:n],
        detections["detection_classes"][0][:n],
    ):
        if score < score_threshold:
            continue
        kept += 1
        ymin, xmin, ymax, xmax = box * [h, w, h, w]
        color = PALETTE[int(cls) % len(PALETTE)]
        draw_.rectangle([xmin, ymin, xmax, ymax], outline=color, width=2)
        text = f"{names.get(int(cls), int(cls))} {score:.2f}"
        tw = draw_.textlength(text)
        draw_.rectangle(
            [xmin, max(ymin - 11, 0), xmin + tw + 4, max(ymin - 11, 0) + 11], fill=color
        )
        draw_.text((xmin + 2, max(ymin - 11, 0)), text, fill=(0, 0, 0))
    return im, kept


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m detbench.infer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench infer --pipeline configs/ssd_mobilenet_v2_300.pbtxt "
        "--checkpoint /tmp/ssd --image photo.jpg --out detections.png",
    )
    p.add_argument("--pipeline", required=True)
    p.add_argument("--checkpoint", help="checkpoint prefix or training folder (latest)")
    p.add_argument("--image", required=True)
    p.add_argument("--out", required=True, help="output PNG with the detections drawn")
    p.add_argument("--score_threshold", type=float, default=0.3)
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE")
    args = p.parse_args(argv)
    check_output_file(args.out, "--out", image_extensions())
    import tensorflow as tf

    from detbench.builders.model_builder import build_model
    from detbench.config import load_pipeline

    pipeline = load_pipeline(args.pipeline, args.set)
    image = read_image(args.image)
    model = build_model(pipeline.model, is_training=False)
    batch = tf.constant(image[np.newaxis])
    if args.checkpoint:
        from detbench.evaluation.runner import restore_model

        inputs, shapes = model.preprocess(tf.cast(batch, tf.float32))
        restore_model(model, args.checkpoint, {"image": inputs, "true_shape": shapes})
    detections = {k: v.numpy() for k, v in tf.function(model.detect)(batch).items()}
    im, kept = draw(image, detections, label_names(pipeline), args.score_threshold)
    im.save(args.out)
    print(f"{kept} detections (score >= {args.score_threshold}) drawn on {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
