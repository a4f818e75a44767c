"""Where a model's first call goes: trace, first execution, steady state (a benchmark).

    python benchmark/first_call.py [--kind faster_rcnn|retinanet] [--proposals 300]
        [--side ours|theirs] [--no-autograph] [--no-grappler]

Builds one side of ``benchmark/peers.py``'s pair (ResNet-50 FPN 640, random
weights; ours by default, or the Model Garden's) in this process and times,
on real-size images: the trace
(``get_concrete_function``), the first execution (graph optimization by
Grappler, oneDNN primitive creation, the run itself) and the next two runs.
``--no-autograph`` traces without AutoGraph; ``--no-grappler`` turns
TensorFlow's graph optimizer off for the process. Run one configuration per
process (the settings are process-wide).
"""
import argparse
import os
import sys
import time


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmark/first_call.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", default="faster_rcnn", choices=["faster_rcnn", "retinanet"])
    p.add_argument("--proposals", type=int, default=300)
    p.add_argument("--side", default="ours", choices=["ours", "theirs"])
    p.add_argument("--no-autograph", action="store_true")
    p.add_argument("--no-grappler", action="store_true")
    args = p.parse_args(argv)
    import tensorflow as tf
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peers
    from detbench.benchmark.timing import block
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
    print(f"{args.side}: {args.kind} @{args.proposals} autograph {'off' if args.no_autograph else 'on'}, "
          f"grappler {'off' if args.no_grappler else 'on'}: build {build:.2f} s | trace "
          f"{trace:.2f} s | first execution {times[0]:.2f} s | next runs {times[1]:.2f}, "
          f"{times[2]:.2f} s | first call (trace + first execution) {trace + times[0]:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
