"""python -m detbench.evaluate --pipeline FILE --checkpoint CKPT [--out DIR] [--set a.b=3 ...]

Evaluates a trained checkpoint (a prefix, or a folder: its latest) on the
pipeline's eval_input_reader. Writes metrics.json, detections.json (COCO
results: absolute [x, y, w, h] of the original images, original category ids)
and per_category.md to DIR (default: <checkpoint folder>/eval), and prints the
metrics.
"""

import argparse
import logging
import math
import os
import sys

from detbench.errors import run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m detbench.evaluate",
        description="COCO / PASCAL VOC metrics of a checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench evaluate "
        "--pipeline configs/ssd_mobilenet_v2_300.pbtxt "
        "--checkpoint /tmp/ssd",
    )
    parser.add_argument("--pipeline", required=True, help="pipeline file (text-format Pipeline)")
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint prefix, or a model_dir (its latest checkpoint)",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: <checkpoint dir>/eval)"
    )
    parser.add_argument(
        "--num_examples",
        type=int,
        default=None,
        help="evaluate the first N images (default: eval_config.num_examples)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a pipeline field (repeatable)",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    from detbench.data.user_data import add_arguments, pipeline_adjuster

    add_arguments(parser, evaluation_only=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from detbench import data
    from detbench.builders.model_builder import build_model
    from detbench.config import load_pipeline
    from detbench.config.validate import model_num_classes
    from detbench.evaluation import evaluate_model, restore_model
    from detbench.evaluation.runner import resolve_checkpoint
    from detbench.paths import check_output_folder

    adjust, data_note = pipeline_adjuster(args, evaluation_only=True)
    if data_note:
        print(data_note)
    pipeline = load_pipeline(args.pipeline, overrides=tuple(args.overrides), adjust=adjust)
    checkpoint = resolve_checkpoint(args.checkpoint)
    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "eval")
    check_output_folder(out_dir, "--out")
    model = build_model(pipeline.model, is_training=False)
    sample = next(
        iter(
            data.build_dataset(
                pipeline.eval_input_reader,
                1,
                training=False,
                image_transform=model.preprocess_single,
                num_classes=model_num_classes(pipeline, "eval"),
            ).take(1)
        )
    )
    restore_model(model, checkpoint, sample)
    metrics, evaluators = evaluate_model(
        model,
        pipeline,
        num_examples=args.num_examples,
        progress=not args.no_progress,
        out_dir=out_dir,
        return_evaluators=True,
    )
    width = max(len(k) for k in metrics)
    for name, value in metrics.items():
        if name.startswith(("AP/", "VOC AP@.50/")):
            continue
        text = (
            "nan"
            if isinstance(value, float) and math.isnan(value)
            else (f"{value:.4f}" if isinstance(value, float) else str(value))
        )
        print(f"{name:<{width}}  {text}")
    coco = evaluators.get("coco_detection_metrics")
    if coco is not None and pipeline.eval_config.include_per_category_metrics:
        print()
        print(coco.per_category_markdown())
    print(f"\nwritten to {out_dir} (metrics.json, detections.json, per_category.md)")


if __name__ == "__main__":
    sys.exit(run_cli(main))
