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

Times are the drift-corrected ``latency_rel`` when every cell compared has
one (the latency in units of a reference workload timed between the runs;
the host's speed drifts by 10-30% over minutes), else ``latency_ms``.
"""

import dataclasses
import math

import pandas as pd

from detbench.benchmark.tables import learnt_rows, matched_groups, mean_by, ok_rows
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
    if cells and all("latency_rel" in g and g["latency_rel"].notna().all() for g in cells):
        return "latency_rel"
    return "latency_ms"


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
def proposals(df):
    claim = "fewer proposals make Faster R-CNN much faster and R-FCN hardly faster"
    threshold = (
        f"Faster R-CNN >= {FASTER_RCNN_MIN_SPEEDUP}x and R-FCN <= {RFCN_MAX_SPEEDUP}x "
        "faster from the most to the fewest proposals (Fig. 10)"
    )
    d = _with_proposals(ok_rows(df))
    speedups = {}
    for arch in ("faster_rcnn", "rfcn"):
        groups = matched_groups(d[d["meta_arch"] == arch], "num_proposals")
        col = _time_column(groups)
        for label, g in groups:
            m = mean_by(g, "num_proposals")
            lo, hi = m.index.min(), m.index.max()
            speedups.setdefault(arch, []).append(
                (label, lo, hi, m.loc[hi, col] / m.loc[lo, col], col)
            )
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
        f"{label}: {hi:g} -> {lo:g} proposals {s:.2f}x faster ({col})"
        for arch in ("faster_rcnn", "rfcn")
        for label, lo, hi, s, col in speedups[arch]
    )
    ok = all(s >= FASTER_RCNN_MIN_SPEEDUP for *_, s, _ in speedups["faster_rcnn"]) and all(
        s <= RFCN_MAX_SPEEDUP for *_, s, _ in speedups["rfcn"]
    )
    return Finding(
        "proposals", claim, measured, "reproduced" if ok else "not reproduced", threshold
    )


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
def stride(df):
    claim = "output stride 8 is slower than 16"
    threshold = f"stride 8 takes >= {STRIDE8_MIN_SLOWDOWN}x the time of 16 (Fig. 9: +63%)"
    groups = _stride_groups(ok_rows(df))
    if not groups:
        return Finding(
            "stride", claim, "no model measured at both stride 8 and 16", "not measured", threshold
        )
    col = _time_column(groups)
    ratios = []
    for label, g in groups:
        m = mean_by(g, "output_stride")
        ratios.append((label, m.loc[8.0, col] / m.loc[16.0, col]))
    measured = "; ".join(
        f"{label}: stride 8 takes {r:.2f}x stride 16 ({col})" for label, r in ratios
    )
    ok = all(r >= STRIDE8_MIN_SLOWDOWN for _, r in ratios)
    return Finding("stride", claim, measured, "reproduced" if ok else "not reproduced", threshold)


# -- accuracy ------------------------------------------------------------------
@CHECKS.register("proposals_accuracy")
def proposals_accuracy(df):
    claim = "fewer proposals cost Faster R-CNN little accuracy"
    threshold = (
        f"the fewest proposals >= 1/6 of the most keep >= {PROPOSALS_MIN_KEPT:.0%} of "
        "its mAP (Fig. 10: 50 of 300 keep ~96%)"
    )
    d = _with_proposals(ok_rows(df))
    d = d[(d["meta_arch"] == "faster_rcnn") & d["mAP"].notna()]
    groups = matched_groups(d, "num_proposals")
    if not groups:
        return Finding(
            "proposals_accuracy",
            claim,
            "no evaluated Faster R-CNN at two or more proposal counts",
            "not measured",
            threshold,
        )
    parts, verdicts = [], []
    for label, g in groups:
        m = mean_by(g, "num_proposals")
        hi = m.index.max()
        lo = min(n for n in m.index if n >= hi * PROPOSALS_MIN_FRACTION)
        if lo == hi:
            parts.append(f"{label}: no count between 1/6 of {hi:g} and {hi:g}")
            verdicts.append("inconclusive")
            continue
        kept = m.loc[lo, "mAP"] / m.loc[hi, "mAP"] if m.loc[hi, "mAP"] > 0 else math.nan
        parts.append(
            f"{label}: mAP {m.loc[hi, 'mAP']:.3f} at {hi:g} -> {m.loc[lo, 'mAP']:.3f} "
            f"at {lo:g} proposals ({kept:.0%} kept)"
        )
        if g["learnt"].astype(object).eq(False).any():
            parts[-1] += " (model has not learnt the set)"
            verdicts.append("inconclusive")
        else:
            verdicts.append("reproduced" if kept >= PROPOSALS_MIN_KEPT else "not reproduced")
    return Finding("proposals_accuracy", claim, "; ".join(parts), _combine(verdicts), threshold)


@CHECKS.register("stride_accuracy")
def stride_accuracy(df):
    claim = "output stride 8 is more accurate than 16"
    threshold = (
        f"mAP at stride 8 >= (1 + {STRIDE8_MIN_GAIN:g}) x mAP at 16; <= (1 - "
        f"{STRIDE8_MIN_GAIN:g}) x: not reproduced (Fig. 9: about +5%)"
    )
    d = learnt_rows(df)
    groups = _stride_groups(d[d["mAP"].notna()], trained_only=True)
    if not groups:
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
    parts, verdicts = [], []
    for label, g in groups:
        m = mean_by(g, "output_stride")
        a8, a16 = m.loc[8.0, "mAP"], m.loc[16.0, "mAP"]
        gain = a8 / a16 - 1 if a16 > 0 else math.nan
        parts.append(
            f"{label}, trained at each stride: mAP {a16:.3f} at 16 -> {a8:.3f} at 8 "
            f"({100 * gain:+.1f}%)"
        )
        if gain >= STRIDE8_MIN_GAIN:
            verdicts.append("reproduced")
        elif gain <= -STRIDE8_MIN_GAIN:
            verdicts.append("not reproduced")
        else:
            verdicts.append("inconclusive")
    return Finding("stride_accuracy", claim, "; ".join(parts), _combine(verdicts), threshold)


def _relative_loss(high, low):
    return (high - low) / high if high > 0 else math.nan


@CHECKS.register("resolution")
def resolution(df):
    claim = "halving the input resolution costs small-object mAP most"
    threshold = (
        f"small objects' relative mAP loss exceeds medium's and large's by >= "
        f"{RESOLUTION_MARGIN:.0%} points; small mAP >= {MIN_SMALL_MAP} at full "
        "resolution (Figs. 7-8)"
    )
    d = ok_rows(df)
    d = d[d["resolution"].notna() & d["mAP"].notna()]
    groups = matched_groups(d, "resolution")
    if not groups:
        return Finding(
            "resolution",
            claim,
            "no trained model evaluated at two resolutions",
            "not measured",
            threshold,
        )
    parts, verdicts = [], []
    for label, g in groups:
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
        parts.append(f"{label}: {hi:g} -> {lo:g} px{how}: {aps}")
        if m.loc[hi, "mAP (small)"] < MIN_SMALL_MAP:
            parts[-1] += (
                f" (small-object mAP {m.loc[hi, 'mAP (small)']:.3f} < "
                f"{MIN_SMALL_MAP} at {hi:g} px: too little trained to compare)"
            )
            verdicts.append("inconclusive")
            continue
        others = [losses[s] for s in ("medium", "large") if not math.isnan(losses[s])]
        if all(losses["small"] >= o + RESOLUTION_MARGIN for o in others):
            verdicts.append("reproduced")
        elif any(losses["small"] <= o - RESOLUTION_MARGIN for o in others):
            verdicts.append("not reproduced")
        else:
            verdicts.append("inconclusive")
    return Finding("resolution", claim, "; ".join(parts), _combine(verdicts), threshold)


def _at_training_configuration(d):
    """Cells run as their model was trained: test resolution and stride equal the
    training ones, and, for two-stage models, the most proposals of their model."""
    d = d[d["resolution"].astype(float) == d["train_resolution"].astype(float)]
    if "train_output_stride" in d:
        same = (
            d["output_stride"].isna()
            | d["train_output_stride"].isna()
            | (d["output_stride"].astype(float) == d["train_output_stride"].astype(float))
        )
        d = d[same]
    props = pd.to_numeric(d["num_proposals"], errors="coerce")
    most = props.groupby(d["train_key"]).transform("max")
    return d[props.isna() | (props == most)]


@CHECKS.register("ssd_small_objects")
def ssd_small_objects(df):
    claim = "SSD falls furthest behind the two-stage models on small objects (same extractor)"
    threshold = (
        f"SSD (no FPN) / best two-stage mAP is lowest for small objects, by >= "
        f"{SSD_SMALL_MARGIN:g} against medium and large (Fig. 5)"
    )
    d = _at_training_configuration(learnt_rows(df))
    d = d[d["mAP (small)"].notna()]
    parts, verdicts = [], []
    for extractor, g in d.groupby("feature_extractor"):
        ssd, two = g[g["meta_arch"] == "ssd"], g[g["meta_arch"] != "ssd"]
        if ssd.empty or two.empty:
            continue
        # The study's SSDs had no FPN (their finest map at stride 16 for MobileNet):
        # an FPN SSD's small-object accuracy is another architecture's.
        study = ssd[~ssd["fpn"].isin([True, "True"])]
        if study.empty:
            parts.append(f"{extractor}: only SSDs with an FPN (the study's SSDs had none)")
            verdicts.append("inconclusive")
            continue
        s = study.loc[study["mAP"].idxmax()]
        t = two.loc[two["mAP"].idxmax()]
        ratios = {
            z: (s[f"mAP ({z})"] / t[f"mAP ({z})"] if t[f"mAP ({z})"] > 0 else math.nan)
            for z in SIZES
        }
        parts.append(
            f"{extractor}: SSD / {t['label']}: "
            + ", ".join(
                f"{z} {s[f'mAP ({z})']:.3f}/{t[f'mAP ({z})']:.3f} = {ratios[z]:.2f}" for z in SIZES
            )
        )
        others = [ratios[z] for z in ("medium", "large") if not math.isnan(ratios[z])]
        if math.isnan(ratios["small"]) or not others:
            verdicts.append("inconclusive")
        elif all(ratios["small"] <= o - SSD_SMALL_MARGIN for o in others):
            verdicts.append("reproduced")
        elif any(ratios["small"] >= o + SSD_SMALL_MARGIN for o in others):
            verdicts.append("not reproduced")
        else:
            verdicts.append("inconclusive")
    if not parts:
        return Finding(
            "ssd_small_objects",
            claim,
            "no extractor with a learnt SSD and a learnt two-stage model",
            "not measured",
            threshold,
        )
    return Finding("ssd_small_objects", claim, "; ".join(parts), _combine(verdicts), threshold)


@CHECKS.register("rfcn_vs_faster_rcnn")
def rfcn_vs_faster_rcnn(df):
    claim = "R-FCN comes close to Faster R-CNN's accuracy and is faster at >= 100 proposals"
    threshold = (
        f"R-FCN mAP >= {RFCN_MIN_RELATIVE_MAP:.0%} of Faster R-CNN's and its time "
        f"lower, same extractor, stride, resolution and >= {RFCN_MIN_PROPOSALS} "
        "proposals (Figs. 2, 10)"
    )
    d = _with_proposals(learnt_rows(df))
    d = d[d["meta_arch"].isin(["faster_rcnn", "rfcn"]) & d["mAP"].notna()]
    d = d[d["num_proposals"].astype(float) >= RFCN_MIN_PROPOSALS]
    groups = [
        (label, g)
        for label, g in matched_groups(d, "meta_arch")
        if {"faster_rcnn", "rfcn"} <= set(g["meta_arch"])
    ]
    if not groups:
        return Finding(
            "rfcn_vs_faster_rcnn",
            claim,
            f"no learnt R-FCN and Faster R-CNN measured alike at >= {RFCN_MIN_PROPOSALS} proposals",
            "not measured",
            threshold,
        )
    col = _time_column(groups)
    parts, verdicts = [], []
    for label, g in groups:
        m = g.groupby("meta_arch").mean(numeric_only=True)
        f, r = m.loc["faster_rcnn"], m.loc["rfcn"]
        rel = r["mAP"] / f["mAP"] if f["mAP"] > 0 else math.nan
        speed = f[col] / r[col]
        parts.append(
            f"{label}: mAP {r['mAP']:.3f} vs {f['mAP']:.3f} ({rel:.0%}), R-FCN "
            f"{speed:.2f}x faster ({col})"
        )
        verdicts.append(
            "reproduced" if rel >= RFCN_MIN_RELATIVE_MAP and speed > 1 else "not reproduced"
        )
    return Finding("rfcn_vs_faster_rcnn", claim, "; ".join(parts), _combine(verdicts), threshold)


# -- memory --------------------------------------------------------------------
def spearman(x, y):
    """Spearman's rank correlation (average ranks for ties)."""
    rx = pd.Series(list(x)).rank()
    ry = pd.Series(list(y)).rank()
    return float(rx.corr(ry))


@CHECKS.register("memory")
def memory(df):
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
    rho = spearman(d["latency_ms"], d["peak_rss_mb"])
    measured = (
        f"rho {rho:.2f} over {len(d)} {runtime + ' ' if runtime else ''}cells "
        f"({d['peak_rss_mb'].min():.0f}-"
        f"{d['peak_rss_mb'].max():.0f} MiB, {d['latency_ms'].min():.0f}-"
        f"{d['latency_ms'].max():.0f} ms)"
    )
    verdict = (
        "reproduced" if rho >= MEMORY_MIN_RHO else "not reproduced" if rho <= 0 else "inconclusive"
    )
    return Finding("memory", claim, measured, verdict, threshold)


def check_all(df):
    """Every registered finding (by name)."""
    return [CHECKS.get(name)(df) for name in CHECKS.names()]


def markdown(findings):
    out = ["| finding | threshold | measured | verdict |", "|---|---|---|---|"]
    for f in findings:
        out.append(f"| {f.claim} | {f.threshold} | {f.measured} | **{f.verdict}** |")
    return "\n".join(out) + "\n"
