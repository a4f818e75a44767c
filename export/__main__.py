"""python -m detbench.export --pipeline FILE --checkpoint CKPT --out DIR
       [--input_type image_tensor|encoded_image_string_tensor|tf_example]
       [--num_proposals N] [--format saved_model|tflite]
       [--precision fp32|fp16|int8_dynamic|int8 [--calibration_images N]] [--set a.b=c ...]

Writes DIR/saved_model/1 (TensorFlow Serving's versioned layout, signature
``serving_default``) or, with ``--format tflite`` (SSD only), DIR/model.tflite;
and DIR/pipeline.pbtxt and DIR/export_info.json beside it. See export/README.md.
"""

import argparse
import logging
import sys

from detbench.errors import run_cli

INPUT_TYPES = ("image_tensor", "encoded_image_string_tensor", "tf_example")
FORMATS = ("saved_model", "tflite")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m detbench.export",
        description="Export a trained checkpoint for serving.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench export --pipeline configs/ssd_mobilenet_v2_300.pbtxt "
        "--checkpoint /tmp/ssd --out /tmp/ssd_export",
    )
    parser.add_argument("--pipeline", required=True, help="pipeline file (text-format Pipeline)")
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint prefix, or a model_dir (its latest checkpoint)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    # checked below, not by argparse choices, so that a bad value is one line
    parser.add_argument(
        "--input_type",
        default="image_tensor",
        help="saved_model input: " + " | ".join(INPUT_TYPES) + " (default image_tensor)",
    )
    parser.add_argument(
        "--num_proposals",
        type=int,
        default=None,
        help="two-stage models: rpn.max_proposals for this export",
    )
    parser.add_argument(
        "--format",
        default="saved_model",
        help=" | ".join(FORMATS) + " (default saved_model; tflite: SSD only)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        help="tflite: fp32 | fp16 | int8_dynamic | int8 (default fp32)",
    )
    parser.add_argument(
        "--calibration_images",
        type=int,
        default=32,
        help="int8: training images that calibrate the quantization",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a pipeline field (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from detbench.config import load_pipeline
    from detbench.export.exporter import ExportError, check_request, export_saved_model
    from detbench.export.tflite import export_tflite

    check_request(None, args.input_type, args.format)
    pipeline = load_pipeline(args.pipeline, overrides=tuple(args.overrides))
    check_request(pipeline, args.input_type, args.format)
    if args.format == "tflite":
        if args.num_proposals is not None:
            raise ExportError(
                "--num_proposals applies to two-stage saved_model exports; "
                "TFLite export is for SSD models"
            )
        path = export_tflite(
            pipeline, args.checkpoint, args.out, args.precision, args.calibration_images
        )
    else:
        if args.precision != "fp32":
            raise ExportError(
                f"--precision {args.precision}: SavedModel exports are fp32; "
                "quantized models are TFLite exports (--format tflite)"
            )
        path = export_saved_model(
            pipeline,
            args.checkpoint,
            args.out,
            input_type=args.input_type,
            num_proposals=args.num_proposals,
        )
    print(f"exported {args.format} to {path}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
