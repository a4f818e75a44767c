"""Timing repeatability and harness overhead of the sweep's cells (a benchmark, not a test).

    python studies/repeatability.py --grid configs/speed_accuracy.pbtxt \\
        --filter meta_arch=faster_rcnn,feature_extractor=mobilenet_v2,num_proposals=100 [--times 3]

Measures each selected cell ``--times`` times, each time in a fresh cell
process exactly as the sweep does (``--speed-only`` protocol: random weights,
benchmark-mode proposals, no evaluation), and prints per cell the median
latency of every repetition, their spread ((max - min) / median of the
medians) and the harness overhead (cell process wall time outside model work:
process start, imports, model build, FLOPs count). Exits 1 when a spread
reaches ``--max-spread`` (default 5%).
"""

import argparse
import statistics
import sys

from detbench.errors import ConfigError, run_cli


def _spread(values):
    return (max(values) - min(values)) / statistics.median(values)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python studies/repeatability.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench repeatability --grid configs/speed_accuracy.pbtxt "
        "--filter meta_arch=ssd,resolution=160 --times 3",
    )
    p.add_argument("--grid", required=True, help="a Sweep .pbtxt")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        help="as the sweep's --filter (repeatable); default: every cell",
    )
    p.add_argument("--times", type=int, default=3, help="repetitions per cell")
    p.add_argument("--max-spread", type=float, default=0.05)
    args = p.parse_args(argv)
    if args.times < 2:
        raise ConfigError(f"--times: needs at least 2 repetitions, got {args.times}")
    from google.protobuf import text_format

    from detbench.benchmark.runner import run_job
    from detbench.benchmark.sweep import benchmark_settings, parse_filters, select
    from detbench.config import load_sweep
    from detbench.config.grid import expand_grid

    sweep = load_sweep(args.grid)
    cells = select(expand_grid(sweep, args.grid).cells, parse_filters(args.filter))
    settings = benchmark_settings(sweep)
    print(
        f"{len(cells)} cells x {args.times} repetitions, {settings['num_warmup']} warm-up + "
        f"{settings['num_runs']} timed runs each, each repetition in a fresh process"
    )
    print(
        "| cell | median latency per repetition (ms) | spread | reference workload (ms) "
        "| its spread | latency / reference | its spread | harness overhead (s) "
        "| cell wall (s) |\n|---|---|---|---|---|---|---|---|---|"
    )
    worst = worst_raw = 0.0
    for cell in cells:
        spec = {
            "test_pipeline": text_format.MessageToString(cell.test_pipeline),
            "model_dir": "",
            "settings": settings,
            "speed_only": True,
        }
        results = [run_job("measure", spec) for _ in range(args.times)]
        errors = [r["error"] for r in results if r.get("error")]
        if errors:
            print(f"| {cell.label} | failed: {errors[0]} | | | | | | | |")
            worst = float("inf")
            continue
        medians = [r["latency_ms"] for r in results]
        spread = _spread(medians)
        worst_raw = max(worst_raw, spread)
        refs = [r["reference_ms"] for r in results]
        rels = [r["latency_rel"] for r in results]
        worst = max(worst, _spread(rels))
        overhead = statistics.median(r["harness_overhead_s"] for r in results)
        wall = statistics.median(r["cell_wall_s"] for r in results)
        print(
            f"| {cell.label} | {' / '.join(f'{m:.1f}' for m in medians)} | "
            f"{100 * spread:.1f}% | {' / '.join(f'{m:.2f}' for m in refs)} | "
            f"{100 * _spread(refs):.1f}% | {' / '.join(f'{m:.2f}' for m in rels)} | "
            f"{100 * _spread(rels):.1f}% | {overhead:.1f} | {wall:.1f} |",
            flush=True,
        )
    ok = worst < args.max_spread
    limit = f"{100 * args.max_spread:.0f}%"
    print(
        f"\nlargest spread of the latency medians {100 * worst_raw:.1f}% "
        f"({'within' if worst_raw < args.max_spread else 'NOT within'} {limit}; "
        f"the host's drift included, see the reference workload's spread)"
    )
    print(
        f"largest drift-corrected spread (latency / reference) {100 * worst:.1f}% "
        f"({'within' if ok else 'NOT within'} {limit})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
