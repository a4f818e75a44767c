"""The ``detbench`` command: one subcommand per verb, dispatched through ``COMMANDS``.

    detbench sweep --grid configs/speed_accuracy.pbtxt
    detbench train --help

Each entry names the module whose ``main(argv)`` runs the subcommand (imported
only when that subcommand runs, so ``detbench list`` does not load the
studies), or ``module:function`` where a module serves more than one entry, or
a nested table (``detbench data synthetic ...``). Adding a subcommand is one
line here; its module's ``--help`` carries the options and an example.
"""

import importlib
import sys

from detbench.errors import run_cli

COMMANDS = {
    "sweep": ("detbench.benchmark.sweep", "run a sweep grid: train, export, time, evaluate, plot"),
    "train": ("detbench.train.__main__", "train a detector from a pipeline file"),
    "pretrain": ("detbench.pretrain", "pretrain a feature extractor on synthetic classification"),
    "evaluate": ("detbench.evaluate", "COCO / PASCAL VOC metrics of a checkpoint"),
    "export": ("detbench.export.__main__", "export a checkpoint as a SavedModel or TFLite"),
    "infer": ("detbench.infer", "draw a checkpoint's detections on one image"),
    "pick": ("detbench.pick", "the most accurate cell of a sweep within a latency / memory budget"),
    "list": ("detbench.registered", "registered meta-architectures, extractors, sweep axes"),
    "validate": ("detbench.config.__main__:validate_main", "check pipeline and sweep files"),
    "data": (
        {
            "synthetic": ("detbench.data.synthetic", "write a synthetic COCO-format dataset"),
            "to-tfrecord": ("detbench.data.to_tfrecord", "convert COCO json + images to TFRecord"),
            "convert": (
                "detbench.data.convert",
                "convert a Pascal VOC or YOLO set to COCO / TFRecord",
            ),
            "aerial-trees": ("detbench.data.aerial", "fetch and tile the aerial tree-crown photos"),
        },
        "datasets: synthetic, to-tfrecord, convert, aerial-trees",
    ),
    "peers": ("detbench.studies.peers", "study: our models against the Model Garden's"),
    "extractors": ("detbench.studies.extractors", "study: feature extractor throughput"),
    "first-call": ("detbench.studies.first_call", "study: where a model's first call goes"),
    "train-accuracy": ("detbench.studies.train_accuracy", "study: mAP against training time"),
    "train-step-time": ("detbench.studies.train_step_time", "study: training step time"),
    "repeatability": ("detbench.studies.repeatability", "study: spread of repeated sweep cells"),
    "compare-sweeps": (
        "detbench.studies.compare_sweeps",
        "study: two runs' verdicts, frontier, ranks",
    ),
    "seed-spread": (
        "detbench.studies.seed_spread",
        "study: a grid's accuracy over repeated trainings",
    ),
    "anchor-coverage": ("detbench.studies.anchor_coverage", "study: best anchor IoU per object"),
}


def _usage(table, prog):
    width = max(len(name) for name in table)
    lines = [f"usage: {prog} COMMAND [options]   ({prog} COMMAND --help for each)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in table.items()]
    return "\n".join(lines)


def dispatch(table, argv, prog):
    """Run the subcommand ``argv[0]`` of ``table`` with the rest of ``argv``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(table, prog), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], list(argv[1:])
    if name not in table:
        print(f"{prog}: unknown command '{name}'; known: {', '.join(table)}", file=sys.stderr)
        return 2
    target, _ = table[name]
    if isinstance(target, dict):
        return dispatch(target, rest, f"{prog} {name}")
    module_name, _, function = target.partition(":")
    main = getattr(importlib.import_module(module_name), function or "main")
    saved = sys.argv[0]
    sys.argv[0] = f"{prog} {name}"  # argparse's default prog for modules that set none
    try:
        return main(rest)
    finally:
        sys.argv[0] = saved


def main(argv=None):
    return dispatch(COMMANDS, sys.argv[1:] if argv is None else list(argv), "detbench")


def console():
    """The ``detbench`` console script (setup.py entry point)."""
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(console())
