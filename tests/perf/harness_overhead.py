"""The sweep harness's overhead and parallel trainings, side by side in one run (issue 28).

Run on demand (not collected by pytest), from the repository root:

    python tests/perf/harness_overhead.py phases --grid configs/speed_accuracy.pbtxt \\
        --filter meta_arch=ssd --train-steps 20 --out /tmp/harness-phases
    python tests/perf/harness_overhead.py jobs --grid tests/benchmark/tiny_sweep.pbtxt \\
        --train-steps 50 --out /tmp/harness-jobs

``phases``: the grid swept with fresh processes (``--no-fast-path``), then its cells
measured again through the fork server on the same trained models (copied); the
per-phase table (median and sum over the cells, seconds) of both. ``jobs``: the
grid's trainings with ``--jobs 1`` then ``--jobs 2`` (fresh output folders), wall
time of each sweep and the sum of its trainings' wall time. Every sweep's wall time
and the load average before and after it are printed: the machine may be shared.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sweep(grid, out, extra):
    cmd = [sys.executable, "benchmark/sweep.py", "--grid", grid, "--out", out, *extra]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    print(f"{' '.join(cmd[1:])}: {wall:.0f} s (load {load:.1f} -> {os.getloadavg()[0]:.1f})")
    return wall


def rows(out):
    with open(os.path.join(out, "results.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def phase_table(named_rows):
    """Markdown: per phase, median and sum over the cells, for each run side by side."""
    phases = sorted(
        {k for rs in named_rows.values() for r in rs for k in r if k.startswith("phase_")}
    )
    extra = ["harness_overhead_s", "model_work_s", "cell_wall_s"]
    head = " | ".join(f"{name} median | {name} sum" for name in named_rows)
    lines = [f"| phase (s) | {head} |", "|---" * (1 + 2 * len(named_rows)) + "|"]
    for key in phases + extra:
        cells = []
        for rs in named_rows.values():
            values = [r.get(key, 0.0) or 0.0 for r in rs]
            cells += [f"{statistics.median(values):.2f}", f"{sum(values):.1f}"]
        label = key.removeprefix("phase_").removesuffix("_s")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    shares = []
    for name, rs in named_rows.items():
        share = statistics.median(r["harness_overhead_s"] / r["cell_wall_s"] for r in rs)
        shares.append(f"{name} {100 * share:.0f}%")
    lines.append(f"\noverhead / cell wall time (median over {len(rs)} cells): {', '.join(shares)}")
    return "\n".join(lines)


def run_phases(args):
    fresh, fork = os.path.join(args.out, "fresh"), os.path.join(args.out, "fork")
    common = [f"--filter={f}" for f in args.filter] + ["--jobs", "1"]
    if args.train_steps:
        common += ["--train-steps", str(args.train_steps)]
    if args.speed_only:
        common.append("--speed-only")
    sweep(args.grid, fresh, common + ["--no-fast-path"])
    if os.path.isdir(os.path.join(fresh, "models")):  # the same trained models
        shutil.copytree(os.path.join(fresh, "models"), os.path.join(fork, "models"))
    sweep(args.grid, fork, common)
    table = {"fresh": rows(fresh), "fork": rows(fork)}
    for name, rs in table.items():
        bad = [r["cell_id"] for r in rs if r.get("error")]
        if bad:
            sys.exit(f"{name}: failed cells {bad}")
    print(phase_table(table))
    peak = {n: statistics.median(r["peak_rss_mb"] for r in rs) for n, rs in table.items()}
    print(f"peak RSS median (MiB): fresh {peak['fresh']:.0f}, fork {peak['fork']:.0f}")


def run_jobs(args):
    common = [f"--filter={f}" for f in args.filter]
    if args.train_steps:
        common += ["--train-steps", str(args.train_steps)]
    for jobs in (1, 2):
        out = os.path.join(args.out, f"jobs{jobs}")
        wall = sweep(args.grid, out, common + ["--jobs", str(jobs)])
        trained = []
        for name in sorted(os.listdir(os.path.join(out, "models"))):
            with open(os.path.join(out, "models", name, "TRAINED.json"), encoding="utf-8") as f:
                trained.append(json.load(f)["train_wall_s"])
        print(
            f"--jobs {jobs}: sweep {wall:.0f} s; {len(trained)} trainings, "
            f"their wall times sum to {sum(trained):.0f} s"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["phases", "jobs"])
    p.add_argument("--grid", required=True)
    p.add_argument("--out", required=True, help="a new folder")
    p.add_argument("--filter", action="append", default=[])
    p.add_argument("--train-steps", type=int)
    p.add_argument("--speed-only", action="store_true")
    args = p.parse_args(argv)
    if os.path.exists(args.out):
        sys.exit(f"{args.out}: exists; give a new folder")
    {"phases": run_phases, "jobs": run_jobs}[args.what](args)


if __name__ == "__main__":
    main()
