"""Two runs of one grid side by side: do their conclusions agree?

    detbench compare-sweeps RUN_A RUN_B [--grid configs/speed_accuracy.pbtxt]

For two finished sweeps of the same grid (their ``results.jsonl``), prints:
each finding's verdict in both runs; the frontier cells of each; the Kendall
rank correlation (tau-b) of the cells' latency, drift-corrected (what ranks
the cells) and raw; and of the trained models' mAP@.5 at their training
configuration. Exit 1 when a verdict or the frontier differs, or the
corrected latency's tau is below ``--min-tau`` (0.9). With ``--grid``, the
grid's seed spread (``<grid>.spread.json``) is the findings' noise band, as in
the sweep.
"""

import argparse
import sys

from detbench.errors import ConfigError, run_cli


def kendall_tau(x, y):
    """Kendall's tau-b of two equally long sequences (ties in either count neither
    way; tau-b divides by the pairs untied in each)."""
    if len(x) != len(y):
        raise ValueError("kendall_tau needs two sequences of one length")
    concordant = discordant = tied_x = tied_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tied_x += 1
            elif dy == 0:
                tied_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + tied_x) * (concordant + discordant + tied_y)) ** 0.5
    return (concordant - discordant) / denom if denom else float("nan")


def _frame(results_dir, seed_spread):
    from detbench.benchmark import tables
    from detbench.benchmark.results import ResultsStore

    rows = [r for r in ResultsStore(results_dir).rows if not r.get("error")]
    if not rows:
        raise ConfigError(f"{results_dir}: no measured rows in results.jsonl")
    return tables.to_frame(rows, seed_spread)


def _common(a, b, col):
    """Values of ``col`` for the labels both frames have (with a value), in one order."""
    va = a.dropna(subset=[col]).set_index("label")[col]
    vb = b.dropna(subset=[col]).set_index("label")[col]
    labels = sorted(set(va.index) & set(vb.index))
    return labels, [float(va[k]) for k in labels], [float(vb[k]) for k in labels]


def compare(a, b, seed_spread=None):
    """{"verdicts": [(name, verdict a, verdict b)], "frontier": (set a, set b),
    "tau": {column: (tau, n)}}."""
    from detbench.benchmark import findings, latency
    from detbench.benchmark.tables import at_training_configuration

    fa = {f.name: f.verdict for f in findings.check_all(a, seed_spread)}
    fb = {f.name: f.verdict for f in findings.check_all(b, seed_spread)}
    out = {
        "verdicts": [(n, fa[n], fb.get(n)) for n in fa],
        "frontier": (set(a[a["frontier"]]["label"]), set(b[b["frontier"]]["label"])),
        "tau": {},
    }
    for col in (latency.FIGURE, "latency_ms"):
        labels, x, y = _common(a, b, col)
        out["tau"][col] = (kendall_tau(x, y), len(labels))
    ta, tb = at_training_configuration(a), at_training_configuration(b)
    labels, x, y = _common(ta, tb, "mAP@.50")
    out["tau"]["mAP@.50 (trained models)"] = (kendall_tau(x, y), len(labels))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="detbench compare-sweeps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench compare-sweeps /tmp/run1 /tmp/run2 "
        "--grid configs/speed_accuracy.pbtxt",
    )
    p.add_argument("runs", nargs=2, metavar="RUN", help="two sweep output folders")
    p.add_argument("--grid", default="", help="the grid file (its seed spread is the noise)")
    p.add_argument("--train-steps", type=int, default=300, help="the runs' training steps")
    p.add_argument("--min-tau", type=float, default=0.9)
    args = p.parse_args(argv)
    from detbench.benchmark import spread

    seed_spread = spread.load(args.grid, args.train_steps)[0] if args.grid else None
    a, b = (_frame(d, seed_spread) for d in args.runs)
    got = compare(a, b, seed_spread)
    same = True
    print(f"{'finding':<22} {'run A':>15} {'run B':>15}")
    for name, va, vb in got["verdicts"]:
        mark = "" if va == vb else "   <- differs"
        same &= va == vb
        print(f"{name:<22} {va:>15} {vb:>15}{mark}")
    fa, fb = got["frontier"]
    print("frontier, both runs: " + ("; ".join(sorted(fa & fb)) or "-"))
    for name, only in (("A", fa - fb), ("B", fb - fa)):
        if only:
            same = False
            print(f"frontier, run {name} only: " + "; ".join(sorted(only)))
    for col, (tau, n) in got["tau"].items():
        print(f"Kendall tau of {col} over {n} common cells: {tau:.3f}")
    tau = got["tau"]["latency_corrected_ms"][0]
    ok = same and tau == tau and tau >= args.min_tau
    print("the runs agree" if ok else "the runs differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
