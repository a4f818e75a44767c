"""Where a model's first call goes: trace, first execution, steady state (a benchmark).

    python studies/first_call.py [--kind faster_rcnn|retinanet] [--proposals 300]
        [--side ours|theirs] [--no-autograph] [--no-grappler] [--stages]

Builds one side of ``studies/peers.py``'s pair (ResNet-50 FPN 640, random
weights; ours by default, or the Model Garden's) in this process and times,
on real-size images: the trace
(``get_concrete_function``), the first execution (graph optimization by
Grappler, oneDNN primitive creation, the run itself) and the next two runs.
``--no-autograph`` traces without AutoGraph; ``--no-grappler`` turns
TensorFlow's graph optimizer off for the process. Run one configuration per
process (the settings are process-wide).

``--stages`` then traces each stage prefix of the model again (ours: its
``stage_functions`` and ``detect``; theirs: backbone + FPN and the whole
model), warm, and prints the ops and trace time of each: where a trace goes.
"""

import argparse
import sys
import time


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python studies/first_call.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench first-call --side theirs --stages",
    )
    p.add_argument("--kind", default="faster_rcnn", choices=["faster_rcnn", "retinanet"])
    p.add_argument("--proposals", type=int, default=300)
    p.add_argument("--side", default="ours", choices=["ours", "theirs"])
    p.add_argument("--no-autograph", action="store_true")
    p.add_argument("--no-grappler", action="store_true")
    p.add_argument(
        "--stages",
        action="store_true",
        help="then trace each stage prefix (warm) and print its ops and trace time",
    )
    args = p.parse_args(argv)
    import tensorflow as tf

    from detbench.benchmark.timing import block
    from detbench.studies import peers

    if args.no_grappler:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    images = peers.timing_images(peers.SIZE, 2)
    start = time.perf_counter()
    build_side = peers.build_ours if args.side == "ours" else peers.build_theirs
    model = build_side(args.kind, peers.SIZE, args.proposals)
    build = time.perf_counter() - start
    fn = peers.detect_fn(args.side, model, autograph=not args.no_autograph)
    start = time.perf_counter()
    fn.get_concrete_function(tf.TensorSpec(images[0].shape, images[0].dtype))
    trace = time.perf_counter() - start
    times = []
    for i in range(3):
        start = time.perf_counter()
        block(fn(images[i % 2]))
        times.append(time.perf_counter() - start)
    print(
        f"{args.side}: {args.kind} @{args.proposals} autograph {'off' if args.no_autograph else 'on'}, "
        f"grappler {'off' if args.no_grappler else 'on'}: build {build:.2f} s | trace "
        f"{trace:.2f} s | first execution {times[0]:.2f} s | next runs {times[1]:.2f}, "
        f"{times[2]:.2f} s | first call (trace + first execution) {trace + times[0]:.2f} s"
    )
    if args.stages:
        print_stage_traces(args.side, model, images[0], fn)
    return 0


def stage_prefixes(side, model, detect):
    """(name, fn(images)) from the raw images up to and including each stage."""
    if side == "ours":
        return list(model.stage_functions()) + [("detect (whole model)", model.detect)]
    from detbench.studies import peers

    def features(images):
        x = peers.their_inputs(images)
        return model.decoder(model.backbone(x, training=False), training=False)

    return [("backbone + FPN", features), ("detect (whole model)", detect.python_function)]


def print_stage_traces(side, model, image, detect):
    """Trace each stage prefix in a fresh tf.function (warm: after the first
    call) and print its op count and trace time, and the differences."""
    import tensorflow as tf

    spec = tf.TensorSpec(image.shape, image.dtype)
    print("| stage prefix | ops | trace (s) | ops added | trace added (s) |")
    print("|---|---|---|---|---|")
    last_ops, last_s = 0, 0.0
    for name, fn in stage_prefixes(side, model, detect):
        f = tf.function(fn, autograph=False)
        start = time.perf_counter()
        graph = f.get_concrete_function(spec).graph
        seconds = time.perf_counter() - start
        ops = len(graph.get_operations())
        print(f"| {name} | {ops} | {seconds:.2f} | {ops - last_ops} | {seconds - last_s:.2f} |")
        last_ops, last_s = ops, seconds


if __name__ == "__main__":
    sys.exit(main())
