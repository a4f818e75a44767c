"""Training throughput: seconds per training step (a benchmark, not a test).

    python studies/train_step_time.py --pipeline configs/speed_accuracy/ssd.pbtxt \\
        [--resolutions 256,192,160,128] [--batch 8] [--precision float32|mixed_bfloat16]
        [--jit] [--set FIELD=VALUE ...] [--runs 10]

For each resolution, in a fresh process: builds the pipeline's model for
training, takes one batch of its training set and times the whole training
step (``train.trainer.make_train_step``, the trainer's own step: forward,
losses with regularization, backward, optimizer update) on that batch: first call (tracing) apart, then
the median of ``--runs`` steps, plus the input pipeline's time per batch. Use
it to size a training budget: steps in N minutes ~= 60 N / median.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from detbench.errors import run_cli


def training_batch(pipeline, model, batch):
    """-> (the first batch of the pipeline's training set, as the trainer feeds it:
    images preprocessed by ``model``, groundtruth padded; the dataset's iterator)."""
    import tensorflow as tf

    from detbench import data

    ds = data.build_dataset(
        pipeline.train_input_reader,
        batch,
        training=True,
        image_transform=model.preprocess_single,
        seed=0,
    )
    it = iter(ds)
    return {k: v for k, v in next(it).items() if v.dtype != tf.string}, it


def measure(pipeline_path, resolution, batch, precision, jit, overrides, runs):
    """One measurement in this process; returns a dict."""
    import tf_keras

    from detbench.benchmark.timing import block
    from detbench.builders.model_builder import build_model
    from detbench.config import load_pipeline
    from detbench.config.grid import set_resolution
    from detbench.train.optimizers import build_optimizer
    from detbench.train.trainer import make_train_step

    if precision != "float32":
        tf_keras.mixed_precision.set_global_policy(precision)
    pipeline = load_pipeline(pipeline_path, overrides)
    set_resolution(pipeline, resolution)
    tf_keras.utils.set_random_seed(0)
    model = build_model(pipeline.model, is_training=True)
    first_batch, it = training_batch(pipeline, model, batch)
    tc = pipeline.train_config
    optimizer, _ = build_optimizer(tc.optimizer, 1000, tc.gradient_clipping_by_norm)
    fn = make_train_step(
        model, optimizer, add_regularization_loss=tc.add_regularization_loss, jit_compile=jit
    )
    start = time.perf_counter()
    block(fn(first_batch))
    first = time.perf_counter() - start
    for _ in range(2):
        block(fn(first_batch))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        block(fn(first_batch))
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(runs):
        next(it)
    input_s = (time.perf_counter() - start) / runs
    return {
        "resolution": resolution,
        "first_call_s": first,
        "step_s": statistics.median(times),
        "input_s_per_batch": input_s,
    }


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python studies/train_step_time.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench train-step-time "
        "--pipeline configs/speed_accuracy/ssd.pbtxt "
        "--resolutions 256,160",
    )
    p.add_argument("--pipeline", required=True)
    p.add_argument("--resolutions", default="256,192,160,128")
    p.add_argument("--batch", type=int, help="default: the pipeline's train_config.batch_size")
    p.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    p.add_argument("--jit", action="store_true", help="XLA-compile the training step")
    p.add_argument("--set", action="append", default=[], help="pipeline override FIELD=VALUE")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one resolution, JSON out
    args = p.parse_args(argv)
    batch = args.batch
    if batch is None:
        from detbench.config import load_pipeline

        batch = load_pipeline(args.pipeline, args.set).train_config.batch_size
    if args.one:
        print(
            json.dumps(
                measure(
                    args.pipeline, args.one, batch, args.precision, args.jit, args.set, args.runs
                )
            )
        )
        return 0
    print(
        f"{args.pipeline} {' '.join(args.set)}: batch {batch}, {args.precision}, "
        f"XLA {'on' if args.jit else 'off'}, median of {args.runs} steps\n"
    )
    print(
        "| resolution | step (s) | images/s | first call (s) | input pipeline (s/batch) |\n"
        "|---|---|---|---|---|"
    )
    for res in (int(r) for r in args.resolutions.split(",")):
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--pipeline",
            args.pipeline,
            "--batch",
            str(batch),
            "--precision",
            args.precision,
            "--runs",
            str(args.runs),
            "--one",
            str(res),
        ] + (["--jit"] if args.jit else [])
        for s in args.set:
            cmd += ["--set", s]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
            print(f"| {res} | failed: {tail} | | | |", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"| {res} | {r['step_s']:.3f} | {batch / r['step_s']:.1f} | "
            f"{r['first_call_s']:.1f} | {r['input_s_per_batch']:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
