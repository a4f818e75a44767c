"""How fast do detectors learn the synthetic set on this machine? (a benchmark, not a test)

    python studies/train_accuracy.py [--minutes 15] [--models ssd_mobilenet_v2,faster_rcnn_resnet50]
        [--resolution 160] [--chunk_steps 200] [--set FIELD=VALUE ...]
        [--start scratch|pretrained|both] [--plot curves.png]

Trains each model (from scratch, or from its extractor's pretrained weights:
the default sweep's, shipped in pretrained/ or pretrained into the cache) on
the default synthetic set at a small resolution (configs/train_accuracy/,
or the default sweep's models: ssd_default, faster_rcnn_default), evaluating
COCO metrics on the
validation split every --chunk_steps steps, until its num_steps or the time
budget (training time, evaluations excluded) is spent. Prints mAP@.5 / mAP
against training minutes and a final table; exits 1 when a model misses
--target mAP@.5 within --minutes.
"""

import argparse
import os
import sys
import tempfile
import time

from detbench.errors import ConfigError, run_cli

# name -> pipeline file. Each trains from scratch at 160 px with its anchors
# laid out for the set's object sizes (each file says why) and a cosine
# schedule that ends at its num_steps, about 15 minutes of this machine.
MODELS = {
    "ssd_mobilenet_v2": "configs/train_accuracy/ssd_mobilenet_v2_fpn_160.pbtxt",
    "faster_rcnn_resnet50": "configs/train_accuracy/faster_rcnn_resnet50_fpn_160.pbtxt",
    # the default sweep's SSD and Faster R-CNN (MobileNet v2, its 300-step recipe)
    "ssd_default": "configs/speed_accuracy/ssd.pbtxt",
    "faster_rcnn_default": "configs/speed_accuracy/faster_rcnn.pbtxt",
}
# what a person reads in the plot's legend
TITLES = {
    "ssd_mobilenet_v2": "SSD MobileNet v2 FPN 160 px, batch 8",
    "faster_rcnn_resnet50": "Faster R-CNN ResNet-50 FPN 160 px, batch 4",
    "ssd_default": "SSD MobileNet v2 FPN-lite 160 px, batch 8 (default sweep)",
    "faster_rcnn_default": "Faster R-CNN MobileNet v2 256 px, batch 4 (default sweep)",
}
STARTS = {"scratch": ("scratch",), "pretrained": ("pretrained",), "both": ("pretrained", "scratch")}


def source_commit():
    """The checkout's commit (short hash), read when the run starts; "unknown" outside git."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or "unknown"


def footer_line(argv, commit, started):
    """Where and how the curves were measured: start time, commit, CPU, load, the command."""
    import datetime

    from detbench.benchmark.environment import cpu_model

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    when = datetime.datetime.fromtimestamp(started, datetime.UTC)
    return (
        f"started {when:%Y-%m-%d %H:%M} UTC, {(time.time() - started) / 60:.0f} min in all, "
        f"commit {commit}, {cpu_model()} ({os.cpu_count()} cores), load average (1, 5, 15 "
        f"min) at the end {load}\ndetbench train-accuracy {' '.join(argv)}"
    )


def plot_curves(curves, path, footer=""):
    """mAP@.5 against training minutes, one line per (model, start): ``curves`` maps
    (model title, start) to [(step, trained seconds, metrics)]; one colour per model,
    solid from pretrained weights, dashed from scratch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from detbench.benchmark.plots import save_figure

    fig, ax = plt.subplots(figsize=(8, 4.8))
    titles = list(dict.fromkeys(title for title, _ in curves))
    for (title, start), points in curves.items():
        minutes = [0.0] + [t / 60 for _, t, _ in points]
        ap50 = [0.0] + [m["mAP@.50"] for *_, m in points]
        ax.plot(
            minutes,
            ap50,
            marker="o",
            markersize=4,
            ls="--" if start == "scratch" else "-",
            color=f"C{titles.index(title)}",
            label=f"{title}: {start} ({points[-1][0]} steps)" if start else title,
        )
    ax.set_xlabel("training minutes (evaluations excluded)")
    ax.set_ylabel("mAP@.5 (synthetic validation split, 128 images)")
    ax.set_ylim(0, 1)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(
        "Fine-tuning from pretrained weights (solid) against training from scratch (dashed)",
        fontsize=10,
    )
    save_figure(fig, path, footer)


def _write_points(curves, path, footer):
    """The plotted points, so that a figure can be redrawn (``plot_curves``) without
    training again."""
    import json

    from detbench.benchmark.results import atomic_write

    rows = [
        {"model": title, "start": start, "step": step, "trained_s": t, "metrics": m}
        for (title, start), points in curves.items()
        for step, t, m in points
    ]
    atomic_write(path, json.dumps({"footer": footer, "points": rows}, indent=1, default=float))


def _print_point(step, trained_s, m):
    print(
        f"  step {step:5d}  {trained_s / 60:5.1f} min  mAP@.5 {m['mAP@.50']:.3f}  mAP "
        f"{m['mAP']:.3f}  small {m['mAP (small)']:.3f}  large {m['mAP (large)']:.3f}",
        flush=True,
    )


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python studies/train_accuracy.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench train-accuracy --models ssd_mobilenet_v2 --minutes 5",
    )
    p.add_argument("--minutes", type=float, default=15.0, help="training budget per model")
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated names (%(default)s) or pipeline files",
    )
    p.add_argument("--chunk_steps", type=int, default=200, help="steps between evaluations")
    p.add_argument("--out", help="model folders (default: a temporary folder)")
    p.add_argument("--set", action="append", default=[], help="extra override for every model")
    p.add_argument(
        "--resolution",
        type=int,
        help="input size (default: the recipe's, 160 px), as the sweep's resolution axis",
    )
    p.add_argument(
        "--target",
        type=float,
        default=0.6,
        help="mAP@.5 each model must reach within --minutes (exit 1 otherwise)",
    )
    p.add_argument(
        "--start",
        choices=sorted(STARTS),
        default="scratch",
        help="where the extractor's weights start: scratch, the pretrained weights "
        "(the default sweep's recipe), or both, one after the other",
    )
    p.add_argument("--plot", help="write mAP@.5 against training minutes to this PNG")
    args = p.parse_args(argv)
    started, commit = time.time(), source_commit()
    if args.plot and not args.plot.endswith(".png"):
        raise ConfigError(f"--plot {args.plot}: a .png file")
    from detbench.config import load_pipeline
    from detbench.config.grid import set_resolution
    from detbench.evaluation.runner import evaluate_model
    from detbench.train.trainer import train

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = args.out or tempfile.mkdtemp(prefix="detbench-train-accuracy-")
    table, curves = [], {}
    runs = [(name, start) for name in args.models.split(",") for start in STARTS[args.start]]
    for name, start in runs:
        path = os.path.join(root, MODELS[name]) if name in MODELS else name
        if not os.path.isfile(path):
            raise ConfigError(
                f"--models: {name!r} is neither a known model ({', '.join(MODELS)}) "
                f"nor a pipeline file"
            )
        pipeline = load_pipeline(path, args.set)
        if args.resolution:
            set_resolution(pipeline, args.resolution)
        if start == "pretrained":
            from detbench.config.validate import meta_arch_config
            from detbench.train.pretrain import Recipe, ensure_pretrained, start_from_pretrained

            start_from_pretrained(pipeline, Recipe())
            ensure_pretrained(meta_arch_config(pipeline)[1].feature_extractor, Recipe())
        label = name if name in MODELS else os.path.splitext(os.path.basename(name))[0]
        title = TITLES.get(name, label)
        title += f", tested and trained at {args.resolution} px" if args.resolution else ""
        shown_start = start if args.start == "both" or start == "pretrained" else ""
        label += f" ({shown_start})" if shown_start else ""
        model_dir = os.path.join(out, label.replace(" ", "_").replace("(", "").replace(")", ""))
        tc = pipeline.train_config
        tc.eval_every_n_steps = args.chunk_steps
        size = f" at {args.resolution} px" if args.resolution else ""
        print(
            f"== {label}{size}: {os.path.relpath(path, root)} {' '.join(args.set)} "
            f"({tc.num_steps} steps, {args.minutes:g} min budget, evaluation every "
            f"{args.chunk_steps} steps)",
            flush=True,
        )
        began = time.time()
        result = train(
            pipeline,
            model_dir,
            progress=False,
            time_budget_s=args.minutes * 60,
            eval_callback=_print_point,
        )
        trained_s = result.wall_time - result.eval_seconds
        history = result.eval_history
        if not history or history[-1][0] != result.step:  # evaluate the final weights
            history.append(
                (result.step, trained_s, evaluate_model(result.model, pipeline, progress=False))
            )
            _print_point(*history[-1])
        curves[(title, shown_start)] = history
        metrics = history[-1][2]
        print(
            f"  {result.step} steps in {trained_s / 60:.1f} min of training "
            f"({time.time() - began:.0f} s with evaluations)",
            flush=True,
        )
        table.append(
            (
                label,
                result.step,
                trained_s / 60,
                metrics["mAP@.50"],
                metrics["mAP"],
                metrics["mAP (small)"],
            )
        )
    if args.plot:
        footer = footer_line(sys.argv[1:] if argv is None else argv, commit, started)
        plot_curves(curves, args.plot, footer)
        _write_points(curves, os.path.splitext(args.plot)[0] + ".json", footer)
        print(f"curves: {args.plot}")
    print(
        "\n| model | steps | training min | mAP@.5 | mAP | mAP small | target |\n"
        "|---|---|---|---|---|---|---|"
    )
    missed = 0
    for name, step, minutes, ap50, ap, small in table:
        ok = ap50 >= args.target and minutes <= args.minutes
        missed += not ok
        print(
            f"| {name} | {step} | {minutes:.1f} | {ap50:.3f} | {ap:.3f} | {small:.3f} | "
            f"{'PASS' if ok else 'MISS'} (mAP@.5 >= {args.target:g} in {args.minutes:g} min) |"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
