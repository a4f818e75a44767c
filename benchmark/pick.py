"""The most accurate cell of a sweep within a budget (latency, memory, accuracy, runtime).

``pick(rows, Budget(...))`` on a sweep's result rows (results.jsonl) returns a
``Choice``: the cell with the highest mAP among the cells that meet every
constraint (ties: the faster at the budget's percentile, then the smaller peak
memory, then the label), its neighbours on the speed/accuracy frontier, and
the sweep command that measures it again. When no cell meets the budget,
``NothingWithin`` names the first constraint that leaves no cell.

A cell that failed, has no accuracy, or whose model has not learnt the set
(``learnt`` False: tables.learnt_flags, the rule of the tables and plots) never wins.
"""

import dataclasses
import math

from detbench.benchmark.tables import frontier_mask
from detbench.errors import DetbenchError

# --percentile -> the column of that latency percentile (batch 1)
PERCENTILES = {50: "latency_ms", 90: "latency_p90_ms", 99: "latency_p99_ms"}
DEFAULT_RUNTIME = "tf_function"  # rows measured before the runtime axis existed


class NothingWithin(DetbenchError):
    """No cell meets the budget; the message names the constraint."""


@dataclasses.dataclass
class Budget:
    max_latency_ms: float
    percentile: int = 50
    max_memory_mb: float = None
    min_map: float = None
    runtime: str = None

    @property
    def latency_column(self):
        return PERCENTILES[self.percentile]


@dataclasses.dataclass
class Choice:
    best: dict  # the row picked
    ties: list  # other rows within the budget with the same mAP
    faster: dict  # the frontier cell just faster than the pick (or None)
    slower: dict  # the frontier cell just slower and more accurate (or None)
    command: str


def _number(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def runtime_of(row):
    return (
        row.get("runtime")
        if isinstance(row.get("runtime"), str) and row.get("runtime")
        else DEFAULT_RUNTIME
    )


def _learnt(row):
    v = row.get("learnt")
    return not (v is False or (isinstance(v, str) and v.lower() == "false"))


def candidates(rows, budget):
    """Rows that can win: measured without error, with an accuracy and the
    budget's latency percentile, learnt, and of the budget's runtime (if any)."""
    from detbench.benchmark.tables import to_frame

    col = budget.latency_column
    learnt = list(to_frame(rows)["learnt"]) if rows else []
    out = []
    for row, flag in zip(rows, learnt):
        row = {**row, "learnt": flag}
        if str(row.get("error") or "").strip() and str(row.get("error")) != "nan":
            continue
        if _number(row.get("mAP")) is None or _number(row.get(col)) is None:
            continue
        if not _learnt(row):
            continue
        out.append(row)
    return out


# (name, applies?, keeps(row, budget), how to say that nothing is kept)
def _latency_ok(row, b):
    return _number(row[b.latency_column]) <= b.max_latency_ms


def _memory_ok(row, b):
    mem = _number(row.get("peak_rss_mb"))
    return mem is not None and mem <= b.max_memory_mb


def _map_ok(row, b):
    return _number(row["mAP"]) >= b.min_map


def _runtime_ok(row, b):
    return runtime_of(row) == b.runtime


def _closest(rows, key, best):
    values = [(key(r), r) for r in rows if key(r) is not None]
    if not values:
        return "none has a value"
    v, r = best(values, key=lambda p: p[0])
    return f"closest: {v:.4g} ({r.get('label')})"


CONSTRAINTS = (
    (
        "--runtime",
        lambda b: b.runtime is not None,
        _runtime_ok,
        lambda b, rows: (
            f"no measured cell ran on runtime {b.runtime!r} (runtimes measured: "
            f"{', '.join(sorted({runtime_of(r) for r in rows})) or 'none'})"
        ),
    ),
    (
        "--max-latency-ms",
        lambda b: True,
        _latency_ok,
        lambda b, rows: (
            f"no cell within --max-latency-ms {b.max_latency_ms:g} at p{b.percentile} "
            f"({_closest(rows, lambda r: _number(r[b.latency_column]), min)} ms)"
        ),
    ),
    (
        "--max-memory-mb",
        lambda b: b.max_memory_mb is not None,
        _memory_ok,
        lambda b, rows: (
            f"no cell within --max-memory-mb {b.max_memory_mb:g} among those left "
            f"({_closest(rows, lambda r: _number(r.get('peak_rss_mb')), min)} MiB)"
        ),
    ),
    (
        "--min-map",
        lambda b: b.min_map is not None,
        _map_ok,
        lambda b, rows: (
            f"no cell reaches --min-map {b.min_map:g} among those left "
            f"({_closest(rows, lambda r: _number(r['mAP']), max)})"
        ),
    ),
)


def _order(budget):
    """Sort key: most accurate first, then faster, smaller, by label."""

    def key(r):
        mem = _number(r.get("peak_rss_mb"))
        return (
            -_number(r["mAP"]),
            _number(r[budget.latency_column]),
            math.inf if mem is None else mem,
            str(r.get("label")),
        )

    return key


def _frontier(rows, budget):
    """Rows on the speed/accuracy frontier at the budget's percentile, fastest first."""
    import pandas as pd

    if not rows:
        return []
    col = budget.latency_column
    d = pd.DataFrame(
        {
            "latency_ms": [_number(r[col]) for r in rows],  # what frontier_mask
            "mAP": [_number(r["mAP"]) for r in rows],
            "error": "",
        }
    )  # reads
    mask = frontier_mask(d)
    front = [rows[i] for i in d.index[mask]]
    return sorted(front, key=lambda r: (_number(r[col]), -_number(r["mAP"])))


def reproduce_command(row, results_dir):
    """The sweep command that measures this cell again (its axis values as a --filter)."""
    values = dict(row.get("axis_values") or {})
    if not values:
        values = {
            k: row.get(k)
            for k in ("meta_arch", "feature_extractor", "resolution")
            if row.get(k) is not None
        }
    if row.get("variant") and str(row["variant"]) != "nan":
        values.setdefault("variant", row["variant"])
    filt = ",".join(f"{k}={v}" for k, v in values.items())
    grid = row.get("grid") if isinstance(row.get("grid"), str) else "SWEEP.pbtxt"
    return (
        f"python -m detbench.benchmark.sweep --grid {grid} --out {results_dir} "
        f"--filter '{filt}' --no-resume"
    )


def pick(rows, budget, results_dir="OUT"):
    """Choice for ``budget`` over the result rows (dicts); raises NothingWithin."""
    if budget.percentile not in PERCENTILES:
        raise DetbenchError(
            f"--percentile {budget.percentile}: one of {', '.join(map(str, PERCENTILES))}"
        )
    rows = candidates(rows, budget)
    if not rows:
        raise NothingWithin(
            f"no measured cell has an accuracy and a p{budget.percentile} "
            f"latency without error (and learnt): nothing to pick from"
        )
    pool = rows
    for _, applies, keeps, say in CONSTRAINTS:
        if not applies(budget):
            continue
        kept = [r for r in pool if keeps(r, budget)]
        if not kept:
            raise NothingWithin(say(budget, pool))
        pool = kept
    pool = sorted(pool, key=_order(budget))
    best = pool[0]
    ties = [r for r in pool[1:] if _number(r["mAP"]) == _number(best["mAP"])]
    same_runtime = [r for r in rows if budget.runtime is None or _runtime_ok(r, budget)]
    front = _frontier(same_runtime, budget)
    col = budget.latency_column
    t, acc = _number(best[col]), _number(best["mAP"])
    faster = [
        r for r in front if r is not best and _number(r[col]) <= t and _number(r["mAP"]) < acc
    ]
    slower = [r for r in front if r is not best and _number(r["mAP"]) > acc]
    return Choice(
        best,
        ties,
        faster[-1] if faster else None,
        slower[0] if slower else None,
        reproduce_command(best, results_dir),
    )


def _describe(row, budget):
    mem = _number(row.get("peak_rss_mb"))
    parts = [
        f"mAP {_number(row['mAP']):.3f}",
        f"p{budget.percentile} {_number(row[budget.latency_column]):.1f} ms",
    ]
    if mem is not None:
        parts.append(f"{mem:.0f} MiB")
    parts.append(f"runtime {runtime_of(row)}")
    if isinstance(row.get("precision"), str):
        parts.append(f"precision {row['precision']}")
    return f"{row.get('label')}  ({', '.join(parts)})"


def format_choice(choice, budget):
    lines = [f"best within the budget: {_describe(choice.best, budget)}"]
    for r in choice.ties:
        lines.append(f"  tied on mAP (slower or larger): {_describe(r, budget)}")
    lines.append("frontier neighbours:")
    lines.append(
        "  faster: "
        + (
            _describe(choice.faster, budget)
            if choice.faster
            else "none (the fastest frontier cell)"
        )
    )
    lines.append(
        "  more accurate: "
        + (
            _describe(choice.slower, budget)
            if choice.slower
            else "none (the most accurate frontier cell)"
        )
    )
    lines.append(f"reproduce: {choice.command}")
    return "\n".join(lines)
