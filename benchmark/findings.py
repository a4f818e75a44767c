"""The study's findings, checked on a sweep's results.

Huang et al. (2017) found, among others (each check below cites the figure its
threshold comes from):

speed
- ``proposals``: fewer proposals make Faster R-CNN much faster while R-FCN,
  whose per-RoI work is tiny, hardly speeds up (Fig. 10);
- ``stride``: an output stride of 8 is slower than 16 (Fig. 9: +63% time);

accuracy
- ``proposals_accuracy``: fewer proposals cost Faster R-CNN little accuracy
  (Fig. 10: 50 proposals keep about 96% of the mAP at 300);
- ``stride_accuracy``: output stride 8 is more accurate than 16, a model trained
  at each (Fig. 9: about +5% mAP);
- ``resolution``: halving the input resolution lowers accuracy on small objects
  far more than on large ones (Figs. 7-8);
- ``ssd_small_objects``: SSD (without FPN, as the study's) falls furthest behind
  the two-stage models on small objects, with the same extractor (Fig. 5);
- ``rfcn_vs_faster_rcnn``: R-FCN comes close to Faster R-CNN's accuracy while
  being faster at 100 or more proposals (Figs. 2 and 10);

memory
- ``memory``: peak memory grows with running time across models (Fig. 11: a
  strong correlation; here Spearman's rank correlation).

Each check compares cells that differ only in the axis at issue
(``tables.matched_groups``), states what it measured, the threshold it applied
and a verdict:

- ``reproduced`` / ``not reproduced``: the effect is (not) there with the
  margins below;
- ``inconclusive``: the cells exist but cannot decide it (a model that has not
  learnt the set, a difference inside the margin of noise);
- ``not measured``: the results have no such cells.

Noise decides nothing. Times are the drift-corrected figure
(``benchmark.latency``: each run over the reference workload timed around it,
with a 90% interval) when every cell compared has one, else the raw median; a
speed ratio decides a verdict only when its whole interval is on one side of
the threshold. Accuracy is the training's luck as much as the model's: where
the grid has a seed spread (``benchmark.spread``: the same grid's results in
repeated runs), each accuracy finding recomputes its statistic on every stored
run and its noise band is ``latency.Z`` standard deviations of those values; a
statistic inside the band around its threshold is ``inconclusive``.
"""

import dataclasses
import math

import pandas as pd

from detbench.benchmark import latency
from detbench.benchmark.tables import (
    at_training_configuration,
    learnt_rows,
    matched_groups,
    mean_by,
    ok_rows,
    to_frame,
)
from detbench.registry import Registry

# Margins, chosen well outside the drift-corrected timing spread (~1%) and
# the run-to-run mAP noise of the default sweep's models (~0.01 mAP on 128
# evaluation images).
FASTER_RCNN_MIN_SPEEDUP = 1.5  # most -> fewest proposals: "much faster"
RFCN_MAX_SPEEDUP = 1.25  # "hardly faster"
STRIDE8_MIN_SLOWDOWN = 1.05
# Fig. 10: 50 of 300 proposals keep ~96% of the mAP; the check compares the
# fewest proposals that are at least 1/6 of the most (the study's ratio) and
# asks for 90% (the study's 96% less the noise margin).
PROPOSALS_MIN_KEPT = 0.90
PROPOSALS_MIN_FRACTION = 1 / 6
# Fig. 9: stride 8 gains about 5% mAP; a gain of 1% (a fifth of it) or more
# reproduces it, a loss of 1% or more does not, in between is noise.
STRIDE8_MIN_GAIN = 0.01
# Figs. 7-8: halving the resolution costs small objects the most: the small
# objects' relative loss must exceed the medium and large ones' by 10 points
# (a larger gap the other way: not reproduced; between: inconclusive).
RESOLUTION_MARGIN = 0.10
# Below this full-resolution small-object mAP, its relative loss is noise.
MIN_SMALL_MAP = 0.05
# Fig. 5: SSD / two-stage mAP is lowest for small objects; a margin of 0.05
# in that ratio against medium and large.
SSD_SMALL_MARGIN = 0.05
# Figs. 2 / 10: R-FCN within 10% of Faster R-CNN's mAP (the study: within a
# few points of mAP) and faster, at >= 100 proposals.
RFCN_MIN_RELATIVE_MAP = 0.90
RFCN_MIN_PROPOSALS = 100
# Fig. 11: memory and time are strongly correlated; Spearman's rho >= 0.5 over
# at least 5 cells reproduces it, rho <= 0 does not.
MEMORY_MIN_RHO = 0.5
MEMORY_MIN_CELLS = 5

SIZES = ("small", "medium", "large")


@dataclasses.dataclass
class Finding:
    name: str
    claim: str
    measured: str
    verdict: str
    threshold: str = ""  # what decides the verdict, derived from the study's figure


CHECKS = Registry("finding")


def _time_column(groups):
    cells = [g for _, g in groups]
    if cells and all(latency.has_figure(g) for g in cells):
        return latency.FIGURE
    return "latency_ms"


_TIME_NAMES = {latency.FIGURE: "drift-corrected", "latency_ms": "raw ms"}


def _times(m, key, col):
    """(value, lo, hi) of the time at index ``key`` of a mean_by frame."""
    if col == latency.FIGURE:
        return m.loc[key, col], m.loc[key, latency.FIGURE_LO], m.loc[key, latency.FIGURE_HI]
    return m.loc[key, col], m.loc[key, col], m.loc[key, col]


def _speed_text(ratio, lo, hi, col):
    if lo == hi:
        return f"{ratio:.2f}x ({_TIME_NAMES[col]})"
    return f"{ratio:.2f}x ({lo:.2f}-{hi:.2f}, {_TIME_NAMES[col]})"


def _at_least(lo, hi, threshold):
    """A ratio's interval against 'ratio >= threshold': True / False / None (inside)."""
    if lo >= threshold:
        return True
    if hi < threshold:
        return False
    return None


def decide(value, band, reproduce_at, fail_at):
    """A statistic against its thresholds, with its noise band: reproduced when
    value - band >= reproduce_at, not reproduced when value + band <= fail_at
    (strictly below when the two thresholds are one), else inconclusive."""
    if value - band >= reproduce_at:
        return "reproduced"
    below = value + band < fail_at if fail_at == reproduce_at else value + band <= fail_at
    return "not reproduced" if below else "inconclusive"


def _band(runs, stat_fn, label):
    """latency.Z standard deviations of the statistic of group ``label`` over the
    stored runs (None with fewer than two runs that have the group)."""
    values = []
    for run in runs:
        for group, value, *_ in stat_fn(run):
            if group == label and value == value:
                values.append(value)
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return latency.Z * math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _noisy(runs, stat_fn, parts, verdicts, reproduce_at, fail_at, fmt):
    """Decide each (label, value, text, forced) of ``parts`` with its band from ``runs``."""
    out_parts, out_verdicts = [], []
    for label, value, text, forced in parts:
        if forced:
            out_parts.append(text)
            out_verdicts.append(forced)
            continue
        band = _band(runs, stat_fn, label)
        if band is None:
            note = " (no seed spread: noise band 0)" if runs else ""
            band = 0.0
        else:
            note = f" (noise band +/-{fmt(band)} over {len(runs)} stored runs)"
        out_parts.append(text + note)
        out_verdicts.append(decide(value, band, reproduce_at, fail_at))
    return out_parts, out_verdicts + list(verdicts)


def _accuracy_finding(name, claim, threshold, df, runs, stat_fn, reproduce_at, fail_at, fmt):
    """An accuracy finding: ``stat_fn``'s statistic per group of cells decided against
    its thresholds with its band over the stored runs; None when no group exists."""
    stats = stat_fn(df)
    if not stats:
        return None
    parts, verdicts = _noisy(runs, stat_fn, stats, [], reproduce_at, fail_at, fmt)
    return Finding(name, claim, "; ".join(parts), _combine(verdicts), threshold)


def _combine(verdicts):
    """One verdict over several groups: any decided one counts, inconclusive ones do not."""
    decided = [v for v in verdicts if v != "inconclusive"]
    if not decided:
        return "inconclusive"
    return "reproduced" if all(v == "reproduced" for v in decided) else "not reproduced"


def _with_proposals(d):
    return d[d["num_proposals"].notna() & (d["num_proposals"].astype(str) != "-")]


def _with_stride(d):
    return d[d["output_stride"].notna() & (d["output_stride"].astype(str) != "-")]


# -- speed ---------------------------------------------------------------------
@CHECKS.register("proposals")
def proposals(df, runs=()):
    claim = "fewer proposals make Faster R-CNN much faster and R-FCN hardly faster"
    threshold = (
        f"Faster R-CNN >= {FASTER_RCNN_MIN_SPEEDUP}x and R-FCN <= {RFCN_MAX_SPEEDUP}x "
        "faster from the most to the fewest proposals, the whole 90% interval (Fig. 10)"
    )
    d = _with_proposals(ok_rows(df))
    speedups = {}
    for arch in ("faster_rcnn", "rfcn"):
        groups = matched_groups(d[d["meta_arch"] == arch], "num_proposals")
        col = _time_column(groups)
        for label, g in groups:
            m = mean_by(g, "num_proposals")
            lo, hi = m.index.min(), m.index.max()
            ratio = latency.ratio_interval(_times(m, hi, col), _times(m, lo, col))
            speedups.setdefault(arch, []).append((label, lo, hi, ratio, col))
    if set(speedups) != {"faster_rcnn", "rfcn"}:
        missing = [a for a in ("faster_rcnn", "rfcn") if a not in speedups]
        return Finding(
            "proposals",
            claim,
            f"no cells of {', '.join(missing)} at two or more proposal counts",
            "not measured",
            threshold,
        )
    measured = "; ".join(
        f"{label}: {hi:g} -> {lo:g} proposals {_speed_text(*r, col).replace('x (', 'x faster (', 1)}"
        for arch in ("faster_rcnn", "rfcn")
        for label, lo, hi, r, col in speedups[arch]
    )
    verdicts = [
        _at_least(r[1], r[2], FASTER_RCNN_MIN_SPEEDUP) for *_, r, _ in speedups["faster_rcnn"]
    ]
    # R-FCN "hardly faster": its speed-up at most RFCN_MAX_SPEEDUP
    verdicts += [
        (lambda v: None if v is None else not v)(_at_least(r[1], r[2], RFCN_MAX_SPEEDUP + 1e-12))
        for *_, r, _ in speedups["rfcn"]
    ]
    return Finding("proposals", claim, measured, _all_of(verdicts), threshold)


def _all_of(parts):
    """True / False / None parts -> one verdict: any False: not reproduced; all True:
    reproduced; else inconclusive."""
    if any(p is False for p in parts):
        return "not reproduced"
    return "reproduced" if parts and all(p is True for p in parts) else "inconclusive"


def _stride_groups(d, trained_only=False):
    """Matched cells at output stride 8 and 16. ``trained_only``: only cells run at the
    stride their model was trained at (the study trained a model per stride; a
    stride-16 model dilated to 8 at test time is another model's accuracy)."""
    d = _with_stride(d)
    if trained_only and "train_output_stride" in d:
        run = pd.to_numeric(d["output_stride"], errors="coerce")
        trained = pd.to_numeric(d["train_output_stride"], errors="coerce")
        d = d[trained.isna() | (run == trained)]
    return [
        (label, g)
        for label, g in matched_groups(d, "output_stride")
        if {8.0, 16.0} <= set(g["output_stride"].astype(float))
    ]


@CHECKS.register("stride")
def stride(df, runs=()):
    claim = "output stride 8 is slower than 16"
    threshold = (
        f"stride 8 takes >= {STRIDE8_MIN_SLOWDOWN}x the time of 16, the whole 90% interval "
        "(Fig. 9: +63%)"
    )
    groups = _stride_groups(ok_rows(df))
    if not groups:
        return Finding(
            "stride", claim, "no model measured at both stride 8 and 16", "not measured", threshold
        )
    col = _time_column(groups)
    ratios = []
    for label, g in groups:
        m = mean_by(g, "output_stride")
        ratios.append((label, latency.ratio_interval(_times(m, 8.0, col), _times(m, 16.0, col))))
    measured = "; ".join(
        f"{label}: stride 8 takes {_speed_text(*r, col)} stride 16" for label, r in ratios
    )
    verdict = _all_of([_at_least(r[1], r[2], STRIDE8_MIN_SLOWDOWN) for _, r in ratios])
    return Finding("stride", claim, measured, verdict, threshold)


# -- accuracy ------------------------------------------------------------------
# Each accuracy finding is a statistic per group of cells (``_stat_*``: [(label,
# value, text, forced verdict or None)]), decided against its thresholds with the
# band of the same statistic over the grid's stored runs (``_noisy``).
def _stat_proposals_accuracy(df):
    d = _with_proposals(ok_rows(df))
    d = d[(d["meta_arch"] == "faster_rcnn") & d["mAP"].notna()]
    out = []
    for label, g in matched_groups(d, "num_proposals"):
        m = mean_by(g, "num_proposals")
        hi = m.index.max()
        lo = min(n for n in m.index if n >= hi * PROPOSALS_MIN_FRACTION)
        if lo == hi:
            text = f"{label}: no count between 1/6 of {hi:g} and {hi:g}"
            out.append((label, math.nan, text, "inconclusive"))
            continue
        kept = m.loc[lo, "mAP"] / m.loc[hi, "mAP"] if m.loc[hi, "mAP"] > 0 else math.nan
        text = (
            f"{label}: mAP {m.loc[hi, 'mAP']:.3f} at {hi:g} -> {m.loc[lo, 'mAP']:.3f} "
            f"at {lo:g} proposals ({kept:.0%} kept)"
        )
        forced = None
        if g["learnt"].astype(object).eq(False).any():
            text += " (model has not learnt the set)"
            forced = "inconclusive"
        out.append((label, kept, text, forced))
    return out


@CHECKS.register("proposals_accuracy")
def proposals_accuracy(df, runs=()):
    claim = "fewer proposals cost Faster R-CNN little accuracy"
    threshold = (
        f"the fewest proposals >= 1/6 of the most keep >= {PROPOSALS_MIN_KEPT:.0%} of "
        "its mAP, beyond the noise band (Fig. 10: 50 of 300 keep ~96%)"
    )
    found = _accuracy_finding(
        "proposals_accuracy",
        claim,
        threshold,
        df,
        runs,
        _stat_proposals_accuracy,
        PROPOSALS_MIN_KEPT,
        PROPOSALS_MIN_KEPT,
        lambda b: f"{b:.0%}",
    )
    return found or Finding(
        "proposals_accuracy",
        claim,
        "no evaluated Faster R-CNN at two or more proposal counts",
        "not measured",
        threshold,
    )


def _stat_stride_accuracy(df):
    d = learnt_rows(df)
    out = []
    for label, g in _stride_groups(d[d["mAP"].notna()], trained_only=True):
        m = mean_by(g, "output_stride")
        a8, a16 = m.loc[8.0, "mAP"], m.loc[16.0, "mAP"]
        gain = a8 / a16 - 1 if a16 > 0 else math.nan
        text = (
            f"{label}, trained at each stride: mAP {a16:.3f} at 16 -> {a8:.3f} at 8 "
            f"({100 * gain:+.1f}%)"
        )
        out.append((label, gain, text, None))
    return out


@CHECKS.register("stride_accuracy")
def stride_accuracy(df, runs=()):
    claim = "output stride 8 is more accurate than 16"
    threshold = (
        f"mAP at stride 8 >= (1 + {STRIDE8_MIN_GAIN:g}) x mAP at 16; <= (1 - "
        f"{STRIDE8_MIN_GAIN:g}) x: not reproduced, beyond the noise band (Fig. 9: about +5%)"
    )
    found = _accuracy_finding(
        "stride_accuracy",
        claim,
        threshold,
        df,
        runs,
        _stat_stride_accuracy,
        STRIDE8_MIN_GAIN,
        -STRIDE8_MIN_GAIN,
        lambda b: f"{100 * b:.1f}%",
    )
    if found:
        return found
    if _stride_groups(ok_rows(df), trained_only=True):
        return Finding(
            "stride_accuracy",
            claim,
            "models trained at stride 8 and 16 measured, but they have not learnt the set",
            "inconclusive",
            threshold,
        )
    measured = "no evaluated models trained at stride 8 and at 16"
    if _stride_groups(ok_rows(df)):
        measured += (
            " (stride 8 only as a stride-16 model dilated at test time; the study "
            "trained a model per stride)"
        )
    return Finding("stride_accuracy", claim, measured, "not measured", threshold)


def _relative_loss(high, low):
    return (high - low) / high if high > 0 else math.nan


def _stat_resolution(df):
    d = ok_rows(df)
    d = d[d["resolution"].notna() & d["mAP"].notna()]
    out = []
    for label, g in matched_groups(d, "resolution"):
        m = mean_by(g, "resolution")
        lo, hi = m.index.min(), m.index.max()
        losses = {
            s: _relative_loss(m.loc[hi, f"mAP ({s})"], m.loc[lo, f"mAP ({s})"]) for s in SIZES
        }
        aps = ", ".join(
            f"{s} {m.loc[hi, f'mAP ({s})']:.3f} -> {m.loc[lo, f'mAP ({s})']:.3f} "
            f"({-100 * losses[s]:+.0f}%)"
            for s in SIZES
        )
        trained = g["train_resolution"].dropna().unique() if "train_resolution" in g else []
        how = (
            f" (one model trained at {float(trained[0]):g} px, tested at both)"
            if len(trained) == 1
            else ""
        )
        text = f"{label}: {hi:g} -> {lo:g} px{how}: {aps}"
        if m.loc[hi, "mAP (small)"] < MIN_SMALL_MAP:
            text += (
                f" (small-object mAP {m.loc[hi, 'mAP (small)']:.3f} < "
                f"{MIN_SMALL_MAP} at {hi:g} px: too little trained to compare)"
            )
            out.append((label, math.nan, text, "inconclusive"))
            continue
        others = [losses[s] for s in ("medium", "large") if not math.isnan(losses[s])]
        # how much more the small objects lose than the size that loses most after them
        margin = losses["small"] - max(others) if others else math.nan
        out.append((label, margin, text, None if others else "inconclusive"))
    return out


@CHECKS.register("resolution")
def resolution(df, runs=()):
    claim = "halving the input resolution costs small-object mAP most"
    threshold = (
        f"small objects' relative mAP loss exceeds medium's and large's by >= "
        f"{RESOLUTION_MARGIN:.0%} points beyond the noise band; small mAP >= "
        f"{MIN_SMALL_MAP} at full resolution (Figs. 7-8)"
    )
    found = _accuracy_finding(
        "resolution",
        claim,
        threshold,
        df,
        runs,
        _stat_resolution,
        RESOLUTION_MARGIN,
        -RESOLUTION_MARGIN,
        lambda b: f"{100 * b:.0f} points",
    )
    return found or Finding(
        "resolution",
        claim,
        "no trained model evaluated at two resolutions",
        "not measured",
        threshold,
    )


def _stat_ssd_small_objects(df):
    d = at_training_configuration(learnt_rows(df))
    d = d[d["mAP (small)"].notna()]
    out = []
    for extractor, g in d.groupby("feature_extractor"):
        ssd, two = g[g["meta_arch"] == "ssd"], g[g["meta_arch"] != "ssd"]
        if ssd.empty or two.empty:
            continue
        # The study's SSDs had no FPN (their finest map at stride 16 for MobileNet):
        # an FPN SSD's small-object accuracy is another architecture's.
        study = ssd[~ssd["fpn"].isin([True, "True"])]
        if study.empty:
            text = f"{extractor}: only SSDs with an FPN (the study's SSDs had none)"
            out.append((extractor, math.nan, text, "inconclusive"))
            continue
        s = study.loc[study["mAP"].idxmax()]
        t = two.loc[two["mAP"].idxmax()]
        ratios = {
            z: (s[f"mAP ({z})"] / t[f"mAP ({z})"] if t[f"mAP ({z})"] > 0 else math.nan)
            for z in SIZES
        }
        text = f"{extractor}: SSD / {t['label']}: " + ", ".join(
            f"{z} {s[f'mAP ({z})']:.3f}/{t[f'mAP ({z})']:.3f} = {ratios[z]:.2f}" for z in SIZES
        )
        others = [ratios[z] for z in ("medium", "large") if not math.isnan(ratios[z])]
        if math.isnan(ratios["small"]) or not others:
            out.append((extractor, math.nan, text, "inconclusive"))
            continue
        # how far the small objects' ratio sits below the lowest other ratio
        out.append((extractor, min(others) - ratios["small"], text, None))
    return out


@CHECKS.register("ssd_small_objects")
def ssd_small_objects(df, runs=()):
    claim = "SSD falls furthest behind the two-stage models on small objects (same extractor)"
    threshold = (
        f"SSD (no FPN) / best two-stage mAP is lowest for small objects, by >= "
        f"{SSD_SMALL_MARGIN:g} against medium and large beyond the noise band (Fig. 5)"
    )
    found = _accuracy_finding(
        "ssd_small_objects",
        claim,
        threshold,
        df,
        runs,
        _stat_ssd_small_objects,
        SSD_SMALL_MARGIN,
        -SSD_SMALL_MARGIN,
        lambda b: f"{b:.2f}",
    )
    return found or Finding(
        "ssd_small_objects",
        claim,
        "no extractor with a learnt SSD and a learnt two-stage model",
        "not measured",
        threshold,
    )


def _rfcn_groups(df):
    d = _with_proposals(learnt_rows(df))
    d = d[d["meta_arch"].isin(["faster_rcnn", "rfcn"]) & d["mAP"].notna()]
    d = d[d["num_proposals"].astype(float) >= RFCN_MIN_PROPOSALS]
    return [
        (label, g)
        for label, g in matched_groups(d, "meta_arch")
        if {"faster_rcnn", "rfcn"} <= set(g["meta_arch"])
    ]


def _stat_rfcn_accuracy(df):
    out = []
    for label, g in _rfcn_groups(df):
        m = g.groupby("meta_arch").mean(numeric_only=True)
        f, r = m.loc["faster_rcnn"], m.loc["rfcn"]
        rel = r["mAP"] / f["mAP"] if f["mAP"] > 0 else math.nan
        out.append((label, rel, f"mAP {r['mAP']:.3f} vs {f['mAP']:.3f} ({rel:.0%})", None))
    return out


@CHECKS.register("rfcn_vs_faster_rcnn")
def rfcn_vs_faster_rcnn(df, runs=()):
    claim = "R-FCN comes close to Faster R-CNN's accuracy and is faster at >= 100 proposals"
    threshold = (
        f"R-FCN mAP >= {RFCN_MIN_RELATIVE_MAP:.0%} of Faster R-CNN's beyond the noise band "
        f"and its time lower beyond the 90% interval, same extractor, stride, resolution and "
        f">= {RFCN_MIN_PROPOSALS} proposals (Figs. 2, 10)"
    )
    groups = _rfcn_groups(df)
    if not groups:
        return Finding(
            "rfcn_vs_faster_rcnn",
            claim,
            f"no learnt R-FCN and Faster R-CNN measured alike at >= {RFCN_MIN_PROPOSALS} proposals",
            "not measured",
            threshold,
        )
    col = _time_column(groups)
    acc_parts, acc_verdicts = _noisy(
        runs,
        _stat_rfcn_accuracy,
        _stat_rfcn_accuracy(df),
        [],
        RFCN_MIN_RELATIVE_MAP,
        RFCN_MIN_RELATIVE_MAP,
        lambda b: f"{b:.0%}",
    )
    parts, verdicts = [], []
    for (label, g), text, acc in zip(groups, acc_parts, acc_verdicts):
        m = g.groupby("meta_arch").mean(numeric_only=True)
        speed = latency.ratio_interval(_times(m, "faster_rcnn", col), _times(m, "rfcn", col))
        faster = _at_least(speed[1], speed[2], 1.0 + 1e-12)
        parts.append(
            f"{label}: {text}, R-FCN {_speed_text(*speed, col).replace('x (', 'x faster (', 1)}"
        )
        accurate = {"reproduced": True, "not reproduced": False}.get(acc)
        verdicts.append(_all_of([accurate, faster]))
    return Finding("rfcn_vs_faster_rcnn", claim, "; ".join(parts), _combine(verdicts), threshold)


# -- memory --------------------------------------------------------------------
def spearman(x, y):
    """Spearman's rank correlation (average ranks for ties)."""
    rx = pd.Series(list(x)).rank()
    ry = pd.Series(list(y)).rank()
    return float(rx.corr(ry))


@CHECKS.register("memory")
def memory(df, runs=()):
    claim = "peak memory grows with running time across models"
    threshold = (
        f"Spearman's rank correlation of peak memory and latency >= {MEMORY_MIN_RHO} "
        f"over >= {MEMORY_MIN_CELLS} cells; <= 0: not reproduced (Fig. 11)"
    )
    d = ok_rows(df)
    d = d[d["peak_rss_mb"].notna()]
    runtime = ""
    if "runtime" in d and len(d):
        # One runtime, as the study's figure is one framework's: a TFLite cell's process
        # also builds and converts the model, so its peak is not the runtime's.
        runs = d["runtime"].fillna("").astype(str).replace("", "tf_function")
        runtime = runs.value_counts().index[0]
        d = d[runs == runtime]
    if len(d) < MEMORY_MIN_CELLS:
        return Finding(
            "memory",
            claim,
            f"{len(d)} cells with a peak memory (need {MEMORY_MIN_CELLS})",
            "not measured",
            threshold,
        )
    col = latency.time_column(d)[0]
    rho = spearman(d[col], d["peak_rss_mb"])
    measured = (
        f"rho {rho:.2f} over {len(d)} {runtime + ' ' if runtime else ''}cells "
        f"({d['peak_rss_mb'].min():.0f}-"
        f"{d['peak_rss_mb'].max():.0f} MiB, {d[col].min():.0f}-"
        f"{d[col].max():.0f} ms, {_TIME_NAMES[col]})"
    )
    verdict = (
        "reproduced" if rho >= MEMORY_MIN_RHO else "not reproduced" if rho <= 0 else "inconclusive"
    )
    return Finding("memory", claim, measured, verdict, threshold)


def check_all(df, seed_spread=None):
    """Every registered finding (by name); ``seed_spread`` (a ``spread.Spread``): the
    grid's stored runs, whose spread of each accuracy statistic is its noise band."""
    runs = [to_frame(run["rows"]) for run in seed_spread.runs] if seed_spread else []
    return [CHECKS.get(name)(df, runs) for name in CHECKS.names()]


def markdown(findings):
    out = ["| finding | threshold | measured | verdict |", "|---|---|---|---|"]
    for f in findings:
        out.append(f"| {f.claim} | {f.threshold} | {f.measured} | **{f.verdict}** |")
    return "\n".join(out) + "\n"
