"""How fast do detectors learn the synthetic set on this machine? (a benchmark, not a test)

    python benchmark/train_accuracy.py [--minutes 15] [--models ssd_mobilenet_v2,faster_rcnn_resnet50]
        [--resolution 160] [--chunk_steps 200] [--set FIELD=VALUE ...]

Trains each model from scratch on the default synthetic set at a small
resolution, in chunks, evaluating COCO metrics on the validation split after
each chunk, until the time budget (training time, evaluation excluded) is
spent. Prints mAP@.5 / mAP against training minutes and a final table.
"""
import argparse
import os
import sys
import tempfile
import time

from detbench.errors import run_cli

# name -> (pipeline file, overrides). The short-training recipes of the default
# sweep (configs/speed_accuracy/): Adam, batch norm momentum 0.9, anchors
# scaled to the synthetic set.
MODELS = {
    "ssd_mobilenet_v2": ("configs/speed_accuracy/ssd.pbtxt", []),
    # ResNet-50 with FPN and a 2-fc head (Detectron2's R50-FPN): the study's
    # conv5-per-RoI box classifier costs ~1.6 GFLOP per RoI, too slow to train on a CPU.
    "faster_rcnn_resnet50": ("configs/speed_accuracy/faster_rcnn.pbtxt", [
        "model.faster_rcnn.feature_extractor={type: 'resnet50_v1' output_stride: 16 "
        "batch_norm_momentum: 0.9 fpn { min_level: 2 max_level: 6 depth: 128 }}",
        "model.faster_rcnn.rpn.anchor_generator={multilevel { min_level: 2 max_level: 6 "
        "anchor_scale: 4.0 aspect_ratios: 0.5 aspect_ratios: 1.0 aspect_ratios: 2.0 }}",
        "model.faster_rcnn.fpn_head={num_fc_layers: 2 fc_depth: 256}",
    ]),
}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmark/train_accuracy.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="training budget per model")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--chunk_steps", type=int, default=200, help="steps between evaluations")
    p.add_argument("--out", help="model folders (default: a temporary folder)")
    p.add_argument("--set", action="append", default=[], help="extra override for every model")
    p.add_argument("--resolution", type=int,
                   help="input size (default: the recipe's, 256 px), as the sweep's resolution axis")
    args = p.parse_args(argv)
    from detbench.builders.model_builder import build_model
    from detbench.config import load_pipeline
    from detbench.config.grid import set_resolution
    from detbench.evaluation.runner import evaluate_model
    from detbench.train.trainer import train
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = args.out or tempfile.mkdtemp(prefix="detbench-train-accuracy-")
    table = []
    for name in args.models.split(","):
        path, overrides = MODELS[name]
        pipeline = load_pipeline(os.path.join(root, path), overrides + args.set)
        if args.resolution:
            set_resolution(pipeline, args.resolution)
        model_dir = os.path.join(out, name)
        budget, trained_s, step, metrics = args.minutes * 60, 0.0, 0, {}
        size = f" at {args.resolution} px" if args.resolution else ""
        print(f"== {name}{size}: {path} {' '.join(overrides + args.set)}")
        while trained_s < budget:
            step += args.chunk_steps
            start = time.time()
            result = train(pipeline, model_dir, num_steps=step, progress=False)
            trained_s += time.time() - start
            model = build_model(pipeline.model, is_training=False)
            from detbench.evaluation.runner import restore_model
            from detbench.data import build_dataset
            sample = next(iter(build_dataset(pipeline.eval_input_reader, 1, training=False,
                                             image_transform=model.preprocess_single)))
            restore_model(model, model_dir, sample)
            metrics = evaluate_model(model, pipeline, progress=False)
            print(f"  step {result.step:5d}  {trained_s / 60:5.1f} min  loss "
                  f"{result.losses.get('total_loss', float('nan')):.3f}  mAP@.5 "
                  f"{metrics['mAP@.50']:.3f}  mAP {metrics['mAP']:.3f}  small "
                  f"{metrics['mAP (small)']:.3f}", flush=True)
        table.append((name, step, trained_s / 60, metrics["mAP@.50"], metrics["mAP"]))
    print("\n| model | steps | training min | mAP@.5 | mAP |\n|---|---|---|---|---|")
    for name, step, minutes, ap50, ap in table:
        print(f"| {name} | {step} | {minutes:.1f} | {ap50:.3f} | {ap:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
