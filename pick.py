"""python -m detbench.pick --results DIR --max-latency-ms X [--percentile 50|90|99]
[--max-memory-mb Y] [--min-map Z] [--runtime R]

Prints the most accurate cell of a sweep's results (DIR/results.jsonl) within the
budget, its neighbours on the speed/accuracy frontier and the command that
measures it again (exit 0), or the constraint no cell meets (exit 1). Failed
cells and cells flagged as not learnt never win. Bad arguments exit 2.
"""

import argparse
import os
import sys

from detbench.errors import ConfigError, run_cli


def _positive(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{name}: must be positive, got {text}")
        return value

    return parse


def parse_args(argv):
    from detbench.benchmark.pick import PERCENTILES

    p = argparse.ArgumentParser(
        prog="python -m detbench.pick",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench pick --results sweep_out --max-latency-ms 50 --percentile 90",
    )
    p.add_argument("--results", required=True, help="a sweep's output folder (results.jsonl)")
    p.add_argument("--max-latency-ms", required=True, type=_positive("--max-latency-ms"))
    p.add_argument(
        "--percentile",
        type=int,
        default=50,
        choices=sorted(PERCENTILES),
        help="latency percentile the budget applies to (batch 1)",
    )
    p.add_argument(
        "--max-memory-mb",
        type=_positive("--max-memory-mb"),
        help="peak resident memory of the cell's process (MiB)",
    )
    p.add_argument("--min-map", type=float, help="lowest COCO mAP@[.5:.95] accepted")
    p.add_argument(
        "--runtime", help="only cells of this runtime (tf_function, saved_model, tflite)"
    )
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from detbench.benchmark.pick import Budget, NothingWithin, format_choice, pick
    from detbench.benchmark.results import ResultsStore

    if args.min_map is not None and not 0 <= args.min_map <= 1:
        raise ConfigError(f"--min-map: between 0 and 1, got {args.min_map}")
    store = ResultsStore(args.results)
    if not store.rows:
        raise ConfigError(
            f"--results {args.results}: no results.jsonl rows in {os.path.abspath(args.results)}"
        )
    budget = Budget(
        args.max_latency_ms, args.percentile, args.max_memory_mb, args.min_map, args.runtime
    )
    try:
        choice = pick(store.rows, budget, results_dir=args.results)
    except NothingWithin as e:
        print(f"nothing within the budget: {e}")
        return 1
    print(format_choice(choice, budget))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
