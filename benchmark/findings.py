"""The study's qualitative findings, checked on a sweep's results.

Huang et al. (2017) found, among others: fewer proposals make Faster R-CNN
much faster while R-FCN, whose per-RoI work is tiny, hardly speeds up (their
Fig. 10); an output stride of 8 is slower than 16 (Fig. 9); halving the input
resolution lowers accuracy on small objects far more than on large ones
(Figs. 7-8). Each check compares cells that differ only in the axis at issue
(``tables.matched_groups``) and states what it measured and a verdict:

- ``reproduced`` / ``not reproduced``: the effect is (not) there with the
  margins below;
- ``inconclusive``: the cells exist but cannot decide it (e.g. models too
  little trained for their small-object mAP to mean anything);
- ``not measured``: the results have no such cells.

Times are the drift-corrected ``latency_rel`` when every cell compared has
one (the latency in units of a reference workload timed between the runs;
the host's speed drifts by 10-30% over minutes), else ``latency_ms``.
"""
import dataclasses
import math

from detbench.benchmark.tables import matched_groups, mean_by, ok_rows
from detbench.registry import Registry

# Margins, chosen well outside the drift-corrected timing spread (~1%) and
# the run-to-run mAP noise of the default sweep's models.
FASTER_RCNN_MIN_SPEEDUP = 1.5   # most -> fewest proposals: "much faster"
RFCN_MAX_SPEEDUP = 1.25         # "hardly faster"
STRIDE8_MIN_SLOWDOWN = 1.05
# Below this full-resolution small-object mAP, its relative loss is noise.
MIN_SMALL_MAP = 0.05

SIZES = ("small", "medium", "large")


@dataclasses.dataclass
class Finding:
    name: str
    claim: str
    measured: str
    verdict: str


CHECKS = Registry("finding")


def _time_column(groups):
    cells = [g for _, g in groups]
    if cells and all("latency_rel" in g and g["latency_rel"].notna().all() for g in cells):
        return "latency_rel"
    return "latency_ms"


@CHECKS.register("proposals")
def proposals(df):
    claim = (f"fewer proposals make Faster R-CNN much faster (>= {FASTER_RCNN_MIN_SPEEDUP}x from "
             f"the most to the fewest) and R-FCN hardly faster (<= {RFCN_MAX_SPEEDUP}x)")
    d = ok_rows(df)
    d = d[d["num_proposals"].notna() & (d["num_proposals"].astype(str) != "-")]
    speedups = {}
    for arch in ("faster_rcnn", "rfcn"):
        groups = matched_groups(d[d["meta_arch"] == arch], "num_proposals")
        col = _time_column(groups)
        for label, g in groups:
            m = mean_by(g, "num_proposals")
            lo, hi = m.index.min(), m.index.max()
            speedups.setdefault(arch, []).append(
                (label, lo, hi, m.loc[hi, col] / m.loc[lo, col], col))
    if set(speedups) != {"faster_rcnn", "rfcn"}:
        missing = [a for a in ("faster_rcnn", "rfcn") if a not in speedups]
        return Finding("proposals", claim, f"no cells of {', '.join(missing)} at two or more "
                       "proposal counts", "not measured")
    measured = "; ".join(f"{label}: {hi:g} -> {lo:g} proposals {s:.2f}x faster ({col})"
                         for arch in ("faster_rcnn", "rfcn")
                         for label, lo, hi, s, col in speedups[arch])
    ok = (all(s >= FASTER_RCNN_MIN_SPEEDUP for *_, s, _ in speedups["faster_rcnn"])
          and all(s <= RFCN_MAX_SPEEDUP for *_, s, _ in speedups["rfcn"]))
    return Finding("proposals", claim, measured, "reproduced" if ok else "not reproduced")


@CHECKS.register("stride")
def stride(df):
    claim = f"output stride 8 is slower than 16 (>= {STRIDE8_MIN_SLOWDOWN}x)"
    d = ok_rows(df)
    d = d[d["output_stride"].notna() & (d["output_stride"].astype(str) != "-")]
    groups = [(label, g) for label, g in matched_groups(d, "output_stride")
              if {8.0, 16.0} <= set(g["output_stride"].astype(float))]
    if not groups:
        return Finding("stride", claim, "no model measured at both stride 8 and 16",
                       "not measured")
    col = _time_column(groups)
    ratios = []
    for label, g in groups:
        m = mean_by(g, "output_stride")
        ratios.append((label, m.loc[8.0, col] / m.loc[16.0, col]))
    measured = "; ".join(f"{label}: stride 8 takes {r:.2f}x stride 16 ({col})"
                         for label, r in ratios)
    ok = all(r >= STRIDE8_MIN_SLOWDOWN for _, r in ratios)
    return Finding("stride", claim, measured, "reproduced" if ok else "not reproduced")


def _relative_loss(high, low):
    return (high - low) / high if high > 0 else math.nan


@CHECKS.register("resolution")
def resolution(df):
    claim = ("halving the input resolution costs small-object mAP most (the largest relative "
             "loss of the three COCO size ranges)")
    d = ok_rows(df)
    d = d[d["resolution"].notna() & d["mAP"].notna()]
    groups = matched_groups(d, "resolution")
    if not groups:
        return Finding("resolution", claim, "no trained model evaluated at two resolutions",
                       "not measured")
    parts, verdicts = [], []
    for label, g in groups:
        m = mean_by(g, "resolution")
        lo, hi = m.index.min(), m.index.max()
        losses = {s: _relative_loss(m.loc[hi, f"mAP ({s})"], m.loc[lo, f"mAP ({s})"])
                  for s in SIZES}
        aps = ", ".join(f"{s} {m.loc[hi, f'mAP ({s})']:.3f} -> {m.loc[lo, f'mAP ({s})']:.3f} "
                        f"({-100 * losses[s]:+.0f}%)" for s in SIZES)
        trained = g["train_resolution"].dropna().unique() if "train_resolution" in g else []
        how = (f" (one model trained at {float(trained[0]):g} px, tested at both)"
               if len(trained) == 1 else "")
        parts.append(f"{label}: {hi:g} -> {lo:g} px{how}: {aps}")
        if m.loc[hi, "mAP (small)"] < MIN_SMALL_MAP:
            parts[-1] += (f" (small-object mAP {m.loc[hi, 'mAP (small)']:.3f} < "
                          f"{MIN_SMALL_MAP} at {hi:g} px: too little trained to compare)")
            verdicts.append("inconclusive")
            continue
        others = [losses[s] for s in ("medium", "large") if not math.isnan(losses[s])]
        verdicts.append("reproduced" if all(losses["small"] > o for o in others)
                        else "not reproduced")
    decided = [v for v in verdicts if v != "inconclusive"]
    if not decided:
        verdict = "inconclusive"
    else:
        verdict = "reproduced" if all(v == "reproduced" for v in decided) else "not reproduced"
    return Finding("resolution", claim, "; ".join(parts), verdict)


def check_all(df):
    """Every registered finding (by name)."""
    return [CHECKS.get(name)(df) for name in CHECKS.names()]


def markdown(findings):
    out = ["| finding | measured | verdict |", "|---|---|---|"]
    for f in findings:
        out.append(f"| {f.claim} | {f.measured} | **{f.verdict}** |")
    return "\n".join(out) + "\n"
