"""The training noise of a grid: its cells' accuracy over repeated trainings.

    detbench seed-spread --grid configs/speed_accuracy.pbtxt --runs 3 --out /tmp/spread
    detbench seed-spread --grid configs/speed_accuracy.pbtxt --add-results sweep_out

Runs the grid's sweep ``--runs`` times, each with another training seed
(``train_config.seed`` = 1, 2, ...: every model trains again), into
``OUT/seed-K``, and stores every run's result rows in the grid's spread file
(``<grid>.spread.json`` beside it; ``benchmark/spread.py``). ``--add-results``
adds finished sweeps of the same grid instead (the default sweep's own runs
count: CPU training is not bit-reproducible, so each run is a new draw). The
sweep then reads the file: each cell's run-to-run standard deviation of its
accuracy is the frontier's accuracy noise, and each accuracy finding's noise
band is the spread of its statistic over the stored runs. A spread applies at
the ``train_steps`` it was recorded at only; other runs in the file at another
``train_steps`` are replaced (``--replace`` replaces them all).
"""

import argparse
import json
import os
import sys

from detbench.errors import ConfigError, run_cli


def _parser():
    p = argparse.ArgumentParser(
        prog="detbench seed-spread",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench seed-spread --grid configs/speed_accuracy.pbtxt --runs 3 "
        "--out /tmp/spread",
    )
    p.add_argument("--grid", required=True, help="a Sweep .pbtxt")
    p.add_argument("--runs", type=int, default=0, help="trainings per cell (each a new seed)")
    p.add_argument("--out", default="seed_spread_out", help="folder of the runs' sweeps")
    p.add_argument("--train-steps", type=int, default=None, help="as the sweep's")
    p.add_argument(
        "--add-results",
        nargs="*",
        default=[],
        metavar="DIR",
        help="finished sweeps of this grid (their results.jsonl) to store as runs",
    )
    p.add_argument("--replace", action="store_true", help="drop the runs already stored")
    return p


def seeded_grid(grid_path, seed, out_path):
    """A copy of the grid whose every pipeline trains with ``seed`` (base paths made
    absolute so the copy works from ``out_path``'s folder)."""
    from google.protobuf import text_format

    from detbench.config import load_sweep

    sweep = load_sweep(grid_path)
    root = os.path.dirname(os.path.abspath(grid_path))
    for base in list(sweep.base) + [b for part in sweep.grid for b in part.base]:
        if not os.path.isabs(base.pipeline):
            base.pipeline = os.path.join(root, base.pipeline)
    sweep.override.append(f"train_config.seed={seed}")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text_format.MessageToString(sweep))
    return out_path


def _rows(results_dir):
    from detbench.benchmark import spread
    from detbench.benchmark.results import ResultsStore

    rows = [spread.stored_row(r) for r in ResultsStore(results_dir).rows]
    rows = [r for r in rows if not r.get("error")]
    if not rows:
        raise ConfigError(f"{results_dir}: no measured rows in results.jsonl")
    return rows


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.runs < 0 or (args.runs == 0 and not args.add_results):
        raise ConfigError("--runs: give a positive number of runs, or --add-results DIR")
    from detbench.benchmark import spread, sweep as sweep_command
    from detbench.benchmark.results import atomic_write
    from detbench.config import load_sweep

    sweep = load_sweep(args.grid)
    steps = args.train_steps or sweep.train_steps
    found, _ = spread.load(args.grid, steps)
    runs = [] if (args.replace or found is None) else list(found.runs)
    new = []
    for directory in args.add_results:
        new.append((f"sweep results in {os.path.abspath(directory)}", _rows(directory)))
    for k in range(1, args.runs + 1):
        out = os.path.abspath(os.path.join(args.out, f"seed-{k}"))
        grid = seeded_grid(args.grid, k, os.path.join(out, "grid.pbtxt"))
        argv = ["--grid", grid, "--out", out]
        if args.train_steps:
            argv += ["--train-steps", str(args.train_steps)]
        print(f"seed-spread: run {k} of {args.runs} (train_config.seed={k}) -> {out}")
        code = sweep_command.main(argv)
        if code:
            print(f"seed-spread: the sweep of run {k} exited {code}", file=sys.stderr)
            return code
        new.append((f"detbench seed-spread, train_config.seed={k}, in {out}", _rows(out)))
    runs += [{"source": source, "rows": rows} for source, rows in new]
    path = spread.path_for(args.grid)
    data = {"train_steps": steps, "runs": runs}
    atomic_write(path, json.dumps(data, indent=1, default=float))
    print(f"{path}: {len(runs)} runs at {steps} training steps")
    stored = spread.Spread(steps, runs)
    labels = sorted({r["label"] for run in runs for r in run["rows"] if "label" in r})
    for label in labels:
        values = stored.values(label, "mAP")
        sd = stored.sd(label, "mAP")
        if values:
            print(
                f"  {label}: mAP {', '.join(f'{v:.3f}' for v in values)}"
                + (f"  (sd {sd:.3f})" if sd is not None else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
