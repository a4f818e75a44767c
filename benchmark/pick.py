"""The most accurate cell of a sweep within a budget (latency, memory, accuracy, runtime).

``pick(rows, Budget(...))`` on a sweep's result rows (results.jsonl) returns a
``Choice``: the cell with the highest mAP among the cells that meet every
constraint (ties: the faster at the budget's percentile, then the smaller peak
memory, then the label), its neighbours on the speed/accuracy frontier, and
the sweep command that measures it again. When no cell meets the budget,
``NothingWithin`` names the first constraint that leaves no cell.

A cell that failed, has no accuracy, or whose model has not learnt the set
(``learnt`` False: tables.learnt_flags, the rule of the tables and plots) never wins.

Latencies are the sweep's drift-corrected figures (``benchmark.latency``: the
median, p90 and p99 in ms at the sweep's median host speed), so a cell timed
while the host was busy is not pushed out of a budget it meets; rows timed
without the reference workload fall back to the raw percentiles. A pick whose
latency interval reaches past the budget says so.
"""

import dataclasses
import math

from detbench.benchmark import latency
from detbench.errors import DetbenchError

# --percentile -> the column of that latency percentile (batch 1): drift-corrected
PERCENTILES = latency.PERCENTILE_COLUMNS
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
    corrected: bool = True  # False: the rows have no drift-corrected figure (raw columns)

    @property
    def latency_column(self):
        table = PERCENTILES if self.corrected else latency.RAW_PERCENTILES
        return table[self.percentile]


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


_FRAME_COLUMNS = ("learnt", latency.FIGURE_LO, latency.FIGURE_HI, *PERCENTILES.values())


def with_figures(rows):
    """The rows with what the table computes over the whole sweep: learnt, the
    drift-corrected percentiles and the figure's interval."""
    from detbench.benchmark.tables import to_frame

    if not rows:
        return []
    df = to_frame(rows)

    def plain(v):  # numpy scalars -> Python's (learnt False must be `False`)
        return v.item() if hasattr(v, "item") else v

    return [
        {**row, **{c: plain(df[c].iloc[i]) for c in _FRAME_COLUMNS if c in df}}
        for i, row in enumerate(rows)
    ]


def candidates(rows, budget):
    """Rows that can win: measured without error, with an accuracy and the
    budget's latency percentile, learnt, and of the budget's runtime (if any)."""
    col = budget.latency_column
    out = []
    for row in rows:
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
    """Rows on the speed/accuracy frontier (tables.frontier_mask: beyond the noise) at
    the budget's percentile, fastest first."""
    import pandas as pd

    from detbench.benchmark.tables import frontier_mask

    if not rows:
        return []
    col = budget.latency_column
    d = pd.DataFrame(
        {
            col: [_number(r[col]) for r in rows],
            "mAP": [_number(r["mAP"]) for r in rows],
            "latency_ms": [_number(r.get("latency_ms")) for r in rows],
            "error": "",
        }
    )
    if budget.corrected and budget.percentile == 50:  # the interval is the median's
        d[latency.FIGURE_LO] = [_number(r.get(latency.FIGURE_LO)) for r in rows]
        d[latency.FIGURE_HI] = [_number(r.get(latency.FIGURE_HI)) for r in rows]
    mask = frontier_mask(d, time_col=col)
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
    rows = with_figures(rows)
    budget.corrected = bool(rows) and all(
        _number(r.get(latency.FIGURE)) is not None for r in rows if not r.get("error")
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
    t = _number(row[budget.latency_column])
    kind = " drift-corrected" if budget.corrected else ""
    parts = [f"mAP {_number(row['mAP']):.3f}", f"p{budget.percentile}{kind} {t:.1f} ms"]
    lo, hi = _number(row.get(latency.FIGURE_LO)), _number(row.get(latency.FIGURE_HI))
    if budget.corrected and budget.percentile == 50 and lo is not None and hi is not None:
        parts[-1] += f" (90% interval {lo:.1f}-{hi:.1f})"
        if hi > budget.max_latency_ms >= t:
            parts[-1] += ": inside the budget within the noise"
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
