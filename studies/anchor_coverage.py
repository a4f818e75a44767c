"""Do a model's anchors fit a dataset's objects? (a diagnostic, not a test)

    python studies/anchor_coverage.py --pipeline FILE [--set FIELD=VALUE ...]
        [--split eval|train] [--num_images 64] [--iou 0.5,0.7]

Builds the pipeline's model at its input size, takes the anchors it matches
ground truth against (SSD's anchors, the RPN's for two-stage models) and, for
each ground-truth box of the first --num_images images of the evaluation (or
training) set, the best IoU any anchor reaches. Prints, per COCO size range
(area in the original image), the share of objects whose best anchor reaches
each --iou threshold and the median best IoU. (Sizes are box areas in the
original image; COCO's ranges use the mask area, which is smaller for
non-rectangular objects.)

An object below the matcher's positive threshold gets at most one forced
match, often with a large box offset: a model whose anchors leave most
objects below it learns them slowly or not at all. On the synthetic set at
160 px, the study's SSD layout (configs/speed_accuracy/ssd.pbtxt) leaves 70%
of the medium objects below IoU 0.5; configs/train_accuracy/ shows a layout
that covers them.
"""

import argparse
import sys

import numpy as np

from detbench.errors import ConfigError, run_cli

SIZE_RANGES = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, np.inf))


def best_iou(boxes, anchors):
    """[G, 4] and [A, 4] boxes (ymin, xmin, ymax, xmax) -> [G] best IoU of each box,
    by ``core.box_ops.iou``, the IoU the matchers use."""
    from detbench.core import box_ops

    boxes, anchors = np.asarray(boxes, np.float32), np.asarray(anchors, np.float32)
    if len(boxes) == 0 or len(anchors) == 0:
        return np.zeros(len(boxes))
    return np.max(np.asarray(box_ops.iou(boxes, anchors), np.float64), axis=1)


def coverage_table(best, areas, thresholds):
    """-> rows (range name, objects, [share with best >= t for t in thresholds], median)."""
    best, areas = np.asarray(best), np.asarray(areas)
    rows = []
    for name, lo, hi in SIZE_RANGES + (("all", 0, np.inf),):
        sel = (areas >= lo) & (areas < hi)
        n = int(sel.sum())
        shares = [float(np.mean(best[sel] >= t)) if n else float("nan") for t in thresholds]
        rows.append((name, n, shares, float(np.median(best[sel])) if n else float("nan")))
    return rows


def measure(pipeline, split="eval", num_images=64):
    """-> (anchor counts, input sizes, best IoUs [G], COCO areas [G] in the original image)."""
    from detbench import data
    from detbench.builders.model_builder import build_model

    model = build_model(pipeline.model, is_training=False)
    reader = pipeline.eval_input_reader if split == "eval" else pipeline.train_input_reader
    dataset = data.build_dataset(reader, 1, training=False)  # original images
    anchors_by_size, best, areas, seen = {}, [], [], 0
    for example in dataset.take(num_images):
        seen += 1
        h, w = (float(v) for v in example["true_shape"][0][:2].numpy())
        inputs, true = model.preprocess_single(example["image"][0])
        size = tuple(int(v) for v in inputs.shape[:2])
        if size not in anchors_by_size:  # anchors depend only on the input size
            predictions = model.predict(inputs[None], true[None], training=False)
            anchors_by_size[size] = np.asarray(predictions["anchors"]).reshape(-1, 4)
        n = int(example["num_groundtruth_boxes"][0])
        boxes = example["groundtruth_boxes"][0][:n].numpy().astype(np.float64)
        # ground truth is relative to the true image, anchors to the (padded) input
        fraction = np.tile(np.asarray(true, np.float64)[:2] / np.array(size, np.float64), 2)
        best.extend(best_iou(boxes * fraction, anchors_by_size[size]))
        areas.extend((boxes[:, 2] - boxes[:, 0]) * h * (boxes[:, 3] - boxes[:, 1]) * w)
    if seen == 0:
        raise ConfigError(f"{split}_input_reader: the dataset is empty")
    counts = sorted({len(a) for a in anchors_by_size.values()})
    return counts, sorted(anchors_by_size), np.array(best), np.array(areas)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python studies/anchor_coverage.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench anchor-coverage --pipeline "
        "configs/train_accuracy/ssd_mobilenet_v2_fpn_160.pbtxt --num_images 128",
    )
    p.add_argument("--pipeline", required=True)
    p.add_argument("--set", action="append", default=[], help="pipeline override FIELD=VALUE")
    p.add_argument("--split", default="eval", choices=["eval", "train"])
    p.add_argument("--num_images", type=int, default=64)
    p.add_argument("--iou", default="0.5,0.7", help="comma-separated IoU thresholds")
    args = p.parse_args(argv)
    try:
        thresholds = [float(t) for t in args.iou.split(",")]
    except ValueError:
        raise ConfigError(f"--iou: expected comma-separated numbers, got {args.iou!r}") from None
    if args.num_images < 1:
        raise ConfigError(f"--num_images must be >= 1, got {args.num_images}")
    from detbench.config import load_pipeline

    pipeline = load_pipeline(args.pipeline, args.set)
    counts, sizes, best, areas = measure(pipeline, args.split, args.num_images)
    print(
        f"{args.pipeline} {' '.join(args.set)}: "
        f"{'/'.join(str(c) for c in counts)} anchors at "
        f"{', '.join(f'{h}x{w}' for h, w in sizes)}; {len(best)} objects in the first "
        f"{args.num_images} {args.split} images\n"
    )
    print(
        "| size | objects | "
        + " | ".join(f"best IoU >= {t:g}" for t in thresholds)
        + " | median best IoU |\n|---|---|"
        + "---|" * (len(thresholds) + 1)
    )
    for name, n, shares, median in coverage_table(best, areas, thresholds):
        print(f"| {name} | {n} | " + " | ".join(f"{s:.2f}" for s in shares) + f" | {median:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
