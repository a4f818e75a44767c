"""The latency that ranks cells: drift-free, with its uncertainty.

A shared host's speed drifts by 10-30% over minutes and jumps when another
process takes a core, so two cells measured minutes apart cannot be compared on
their raw medians. Each cell therefore times a fixed reference workload
(``timing.reference_workload``) before its first timed run and after each one;
every run is divided by the mean of the two reference runs around it
(``bracketed_ratios``): the run in units of the host's speed at that moment.
The cell's figure is the median of these ratios (``latency_rel``) with an
interval that carries two sources of doubt:

- the spread of its own ratios: a bootstrap interval of their median
  (``relative_interval``, seeded, so the same runs give the same interval);
- what the ratio itself varies between processes on a loaded host (the model
  and the reference do not slow down by exactly the same factor): measured by
  ``detbench repeatability`` at 3.4-4.9% (docs/default_sweep.md, Repeatability),
  added as ``BETWEEN_PROCESS_SPREAD`` in quadrature.

For tables and plots the figure is turned back into milliseconds at the sweep's
median host speed (``add_columns``: ``latency_rel`` x the median reference time
of the sweep's cells): ``latency_corrected_ms`` with ``_lo_ms`` / ``_hi_ms``,
and the raw p90 / p99 scaled by the same factor. That is the column the
frontier, the tables, ``detbench pick``, the report's budget and the findings
use; the raw percentiles stay as columns. Two cells compare through
``compare``: "faster", "slower" or "inconclusive" when the ratio's interval
contains 1.
"""

import math

import numpy as np
import pandas as pd

CONFIDENCE = 0.90
Z = 1.6449  # two-sided 90% of a normal
BOOTSTRAP_RESAMPLES = 2000
# The latency ratio's spread between fresh processes of one cell on a loaded host
# (relative standard deviation): `detbench repeatability`, docs/default_sweep.md.
BETWEEN_PROCESS_SPREAD = 0.04

FIGURE = "latency_corrected_ms"
FIGURE_LO, FIGURE_HI = "latency_corrected_lo_ms", "latency_corrected_hi_ms"
# --percentile -> the drift-corrected column of that percentile
PERCENTILE_COLUMNS = {
    50: FIGURE,
    90: "latency_corrected_p90_ms",
    99: "latency_corrected_p99_ms",
}
RAW_PERCENTILES = {50: "latency_ms", 90: "latency_p90_ms", 99: "latency_p99_ms"}
AXIS_LABEL = "latency (ms at the sweep's median host speed)"


def bracketed_ratios(runs, ref_runs):
    """Each run over the mean of the reference runs timed just before and just
    after it (``ref_runs`` has one more entry than ``runs``)."""
    runs, ref_runs = np.asarray(runs, float), np.asarray(ref_runs, float)
    if len(ref_runs) != len(runs) + 1:
        raise ValueError(f"{len(runs)} runs need {len(runs) + 1} reference runs")
    return runs / (0.5 * (ref_runs[:-1] + ref_runs[1:]))


def relative_interval(ratios, confidence=CONFIDENCE, seed=0):
    """(lo, hi): a bootstrap percentile interval of the median of ``ratios``,
    widened by BETWEEN_PROCESS_SPREAD (in log space, in quadrature)."""
    ratios = np.asarray(ratios, float)
    median = float(np.median(ratios))
    if len(ratios) > 1:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(ratios), size=(BOOTSTRAP_RESAMPLES, len(ratios)))
        medians = np.median(ratios[picks], axis=1)
        tail = (1 - confidence) / 2
        blo, bhi = np.quantile(medians, [tail, 1 - tail])
        half_lo, half_hi = math.log(median / blo), math.log(bhi / median)
    else:
        half_lo = half_hi = 0.0
    extra = Z * BETWEEN_PROCESS_SPREAD
    lo = median * math.exp(-math.hypot(half_lo, extra))
    hi = median * math.exp(math.hypot(half_hi, extra))
    return float(lo), float(hi)


def log_sigma(value, lo, hi):
    """The standard deviation of log(value) that a (lo, hi) interval at CONFIDENCE means."""
    if not all(_finite(v) and v > 0 for v in (value, lo, hi)):
        return 0.0
    return max(math.log(hi / value), math.log(value / lo)) / Z


def _finite(v):
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def add_columns(df):
    """The drift-corrected figure and its interval, in ms at the sweep's median host
    speed, beside the raw columns (NaN where a row has no reference timing)."""
    rel = _numeric(df, "latency_rel")
    scale = _numeric(df, "reference_ms").median()
    df[FIGURE] = rel * scale
    lo, hi = _numeric(df, "latency_rel_lo"), _numeric(df, "latency_rel_hi")
    # rows from before the interval was recorded: the between-process spread alone
    width = math.exp(Z * BETWEEN_PROCESS_SPREAD)
    df[FIGURE_LO] = lo.where(lo.notna(), rel / width) * scale
    df[FIGURE_HI] = hi.where(hi.notna(), rel * width) * scale
    raw = _numeric(df, "latency_ms")
    for pct in (90, 99):
        df[PERCENTILE_COLUMNS[pct]] = _numeric(df, RAW_PERCENTILES[pct]) * df[FIGURE] / raw
    return df


def _numeric(df, col):
    if col not in df:
        return pd.Series(float("nan"), index=df.index)
    return pd.to_numeric(df[col], errors="coerce")


def has_figure(d):
    return len(d) > 0 and FIGURE in d and d[FIGURE].notna().all()


def time_column(d):
    """(column, axis label) to compare cells' times: the figure where every cell has
    one (they were timed with the reference workload), else the raw median."""
    if has_figure(d):
        return FIGURE, AXIS_LABEL
    return "latency_ms", "latency (ms)"


def interval(row, col=None):
    """(value, lo, hi) of a row's latency in ``col`` (default: the figure if the row
    has one, else the raw median with no interval)."""
    col = col or (FIGURE if _finite(_get(row, FIGURE)) else "latency_ms")
    v = _get(row, col)
    if col == FIGURE:
        return v, _get(row, FIGURE_LO), _get(row, FIGURE_HI)
    return v, v, v


def _get(row, col):
    try:
        v = row[col]
    except (KeyError, IndexError):
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def ratio_interval(a, b):
    """(ratio, lo, hi) of a / b for two (value, lo, hi) latencies: log-normal errors,
    independent, combined in quadrature."""
    ratio = a[0] / b[0]
    s = math.hypot(log_sigma(*a), log_sigma(*b))
    return ratio, ratio * math.exp(-Z * s), ratio * math.exp(Z * s)


def compare(a, b):
    """'faster' / 'slower' when a's latency is below / above b's beyond the noise,
    else 'inconclusive'; with the ratio a / b and its interval."""
    ratio, lo, hi = ratio_interval(a, b)
    verdict = "faster" if hi < 1 else "slower" if lo > 1 else "inconclusive"
    return verdict, ratio, lo, hi


def not_slower(a, b):
    """a is not conclusively slower than b."""
    return ratio_interval(a, b)[1] <= 1


def conclusively_faster(a, b):
    return ratio_interval(a, b)[2] < 1
