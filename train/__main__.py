"""python -m detbench.train --pipeline FILE --model_dir DIR [--num_steps N] [--set a.b=3 ...]

Trains the pipeline's model, resuming from the latest checkpoint in DIR.
"""

import argparse
import logging
import sys

from detbench.errors import run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m detbench.train",
        description="Train a detector from a pipeline file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench train --pipeline configs/ssd_mobilenet_v2_300.pbtxt "
        "--model_dir /tmp/ssd --num_steps 100",
    )
    parser.add_argument("--pipeline", required=True, help="pipeline file (text-format Pipeline)")
    parser.add_argument(
        "--model_dir",
        required=True,
        help="folder for checkpoints and TensorBoard logs (resumed if present)",
    )
    parser.add_argument(
        "--num_steps",
        type=int,
        default=None,
        help="train up to this step (default: train_config.num_steps)",
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

    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from detbench.config import load_pipeline
    from detbench.train import train

    adjust, data_note = pipeline_adjuster(args)
    if data_note:
        print(data_note)
    pipeline = load_pipeline(args.pipeline, overrides=tuple(args.overrides), adjust=adjust)
    result = train(
        pipeline, args.model_dir, num_steps=args.num_steps, progress=not args.no_progress
    )
    losses = ", ".join(f"{k}={v:.4g}" for k, v in result.losses.items())
    print(
        f"step {result.step} in {result.wall_time:.1f} s; {losses or 'no step run'}; "
        f"checkpoints in {args.model_dir}"
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
