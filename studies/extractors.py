"""Benchmark every registered feature extractor's two-stage first stage.

    python studies/extractors.py [--names a,b] [--sizes 300,600] [--runs N] [--warmup N]

For each extractor and square input size: the median forward time of the
first stage (batch 1, tf.function, after warm-up), its FLOPs (traced graph,
multiply-add = 2; benchmark/flops.py), its parameters, and the achieved
FLOP/s as a fraction of this machine's dense convolution throughput, measured
in the same run the same way (1x64x64x512 -> 512, 3x3 Conv2D). Prints a
markdown table. A first stage that fails to build or run gets a row with its
error.
"""

import argparse
import os
import platform
import statistics
import sys
import time

import tensorflow as tf

from detbench.benchmark.flops import count_flops


def time_fn(fn, x, runs, warmup):
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = fn(x)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_throughput(runs, warmup):
    """FLOP/s of a large dense 3x3 convolution (the machine's practical peak)."""
    x = tf.random.normal([1, 64, 64, 512])
    kernel = tf.Variable(tf.random.normal([3, 3, 512, 512]) * 0.01)
    fn = tf.function(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"))
    flops = count_flops(fn, tf.TensorSpec(x.shape))
    return flops / time_fn(fn, x, runs, warmup), flops


def bench_extractor(name, sizes, runs, warmup):
    from detbench.feature_extractors.base import FEATURE_EXTRACTORS
    from detbench.protos import feature_extractor_pb2

    cls = FEATURE_EXTRACTORS.get(name)
    config = feature_extractor_pb2.FeatureExtractor(type=name)
    extractor = cls.from_config(config, is_training=False, meta_arch="faster_rcnn")
    model = extractor.build_first_stage()
    params = extractor.parameter_count(model)
    fn = tf.function(lambda x: model(x, training=False))
    rows = []
    for size in sizes:
        x = extractor.preprocess(tf.random.uniform([1, size, size, 3], 0, 255, seed=size))
        flops = count_flops(fn, tf.TensorSpec(x.shape))
        seconds = time_fn(fn, x, runs, warmup)
        shape = tuple(fn(x).shape)
        rows.append((name, size, shape, seconds, flops, params))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench extractors --names mobilenet_v2,resnet50_v1 --sizes 300 --runs 5",
    )
    parser.add_argument(
        "--names", default="", help="comma-separated extractor names (default: all)"
    )
    parser.add_argument("--sizes", default="300,600", help="comma-separated input sides in pixels")
    parser.add_argument("--runs", type=int, default=10, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    import detbench.feature_extractors  # noqa: F401  (registers whatever families exist)
    from detbench.feature_extractors import mobilenet, resnet  # noqa: F401
    from detbench.feature_extractors.base import FEATURE_EXTRACTORS

    names = [n for n in args.names.split(",") if n] or FEATURE_EXTRACTORS.names()
    for n in names:
        if n not in FEATURE_EXTRACTORS:
            print(f"error: {FEATURE_EXTRACTORS.unknown_message(n)}", file=sys.stderr)
            return 2
    sizes = [int(s) for s in args.sizes.split(",") if s]

    tf.get_logger().setLevel("ERROR")  # TF's v1 shape helper warns once per trace
    peak, peak_flops = conv_throughput(args.runs, args.warmup)
    print(
        f"TF {tf.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, intra-op threads "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}; "
        f"dense conv reference (1x64x64x512 -> 512, 3x3, {peak_flops / 1e9:.2f} GFLOP): "
        f"{peak / 1e9:.1f} GFLOP/s (measured before the extractors; a machine shared with "
        "other jobs lowers both)"
    )
    print()
    print(
        "| extractor | input | first-stage map | median ms | GFLOP | params (M) | GFLOP/s | of conv peak |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        try:
            rows = bench_extractor(name, sizes, args.runs, args.warmup)
        except Exception as e:  # noqa: BLE001  (a failing extractor is a row, not a crash)
            print(f"| {name} | - | error: {str(e).splitlines()[0][:120]} | | | | | |")
            continue
        for name_, size, shape, seconds, flops, params in rows:
            rate = flops / seconds
            print(
                f"| {name_} | {size} | {'x'.join(map(str, shape[1:]))} | {seconds * 1e3:.1f} | "
                f"{flops / 1e9:.2f} | {params / 1e6:.2f} | {rate / 1e9:.1f} | {rate / peak:.2f} |",
                flush=True,
            )
    after, _ = conv_throughput(args.runs, args.warmup)
    print()
    print(
        f"dense conv reference measured again after the extractors: {after / 1e9:.1f} GFLOP/s "
        "(ratios above use the first measurement)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
