"""Result rows -> pandas table, the speed/accuracy frontier, results.csv and results.md."""

import io
import math

import pandas as pd

from detbench.benchmark import latency, spread
from detbench.benchmark.results import atomic_write
from detbench.config.grid import ARCH_NAMES

ACCURACY_KEYS = [
    "mAP",
    "mAP@.50",
    "mAP@.75",
    "mAP (small)",
    "mAP (medium)",
    "mAP (large)",
    "AR@100",
]

# Column order of results.csv (every other key follows, sorted).
COLUMNS = (
    [
        "label",
        "meta_arch",
        "variant",
        "feature_extractor",
        "resolution",
        "train_resolution",
        "num_proposals",
        "output_stride",
        "runtime",
        "precision",
        "batch_size",
        "latency_corrected_ms",
        "latency_corrected_lo_ms",
        "latency_corrected_hi_ms",
        "latency_corrected_p90_ms",
        "latency_corrected_p99_ms",
        "latency_ms",
        "latency_p90_ms",
        "latency_p99_ms",
        "latency_rel",
        "latency_rel_lo",
        "latency_rel_hi",
        "reference_ms",
        "throughput_ips",
        "latency_nopost_ms",
        "latency_nopost_p90_ms",
        "first_call_s",
        "stage_feature_extractor_ms",
        "stage_proposals_ms",
        "stage_box_classifier_ms",
        "stage_postprocess_ms",
        "peak_rss_mb",
        "gpu_peak_mb",
        "artifact_mb",
        "gflops",
        "params",
        "params_trainable",
        "calibration_images",
    ]
    + ACCURACY_KEYS
    + [
        "learnt",
        "weights_source",
        "train_steps",
        "train_wall_s",
        "frontier",
        "error",
        "cell_id",
        "train_key",
    ]
)

# Columns that hold numbers (NaN where a row has none, e.g. accuracy when speed-only).
NUMERIC = [
    c
    for c in COLUMNS
    if c.endswith(("_ms", "_s", "_mb"))
    or c in ACCURACY_KEYS
    or c
    in (
        "gflops",
        "params",
        "params_trainable",
        "resolution",
        "train_resolution",
        "train_steps",
        "batch_size",
        "throughput_ips",
        "calibration_images",
        "latency_rel",
        "latency_rel_lo",
        "latency_rel_hi",
    )
]

# What results.md shows.
MD_COLUMNS = [
    ("label", "cell"),
    ("latency_corrected_ms", "ms (drift-corrected, 90% interval)"),
    ("latency_ms", "raw ms p50"),
    ("latency_p90_ms", "raw p90"),
    ("latency_p99_ms", "raw p99"),
    ("throughput_ips", "img/s"),
    ("latency_nopost_ms", "ms w/o NMS"),
    ("first_call_s", "first call s"),
    ("peak_rss_mb", "peak MiB"),
    ("artifact_mb", "MiB on disk"),
    ("gflops", "GFLOPs"),
    ("params", "params (M)"),
    ("mAP", "mAP"),
    ("mAP@.50", "mAP@.5"),
    ("mAP (small)", "AP small"),
    ("frontier", "frontier"),
]


# A trained model whose best cell stays under this mAP@.5 has not learnt the set:
# its cells are flagged (learnt False), kept off the frontier and the plots.
LEARNT_MIN_MAP50 = 0.10

# What identifies a model in a table; cells equal on all but one of these
# differ only in that axis (matched_groups).
IDENTITY = (
    "meta_arch",
    "variant",
    "feature_extractor",
    "fpn",
    "resolution",
    "num_proposals",
    "output_stride",
)


def int_label(v):
    try:
        return str(int(float(v)))
    except (TypeError, ValueError):
        return str(v)


def model_name(r):
    name = r["feature_extractor"] or ""
    if r.get("fpn") in (True, 1, "True"):
        name += "+FPN"
    return name


def _given(v):
    return v not in ("-", "", None) and not (isinstance(v, float) and math.isnan(v))


def matched_groups(d, vary):
    """Groups of cells that differ only in ``vary`` (and, for resolution, the
    training resolution): [(label, group)], each group with >= 2 values of it."""
    keys = [k for k in IDENTITY if k != vary and k in d.columns]
    d = d.assign(**{k: d[k].astype(object).where(d[k].notna(), "-") for k in keys})
    out = []
    for key, g in d.groupby(keys, sort=True):
        if g[vary].nunique() < 2:
            continue
        r = dict(zip(keys, key))
        arch = r.get("meta_arch")  # absent when the meta-architecture is what varies
        label = (f"{ARCH_NAMES.get(arch, arch)} " if arch else "") + model_name(r)
        if _given(r.get("variant")):
            label += f" [{r['variant']}]"
        if vary != "resolution":
            label += f" {int_label(r['resolution'])}px"
        if _given(r.get("num_proposals")):
            label += f" {int_label(r['num_proposals'])} prop."
        if vary != "output_stride" and _given(r.get("output_stride")):
            label += f" /{int_label(r['output_stride'])}"
        out.append((label, g))
    return out


def to_frame(rows, seed_spread=None):
    """Result rows -> the table: flat columns, the drift-corrected latency figure
    (``latency.add_columns``), the cells' run-to-run accuracy spread where
    ``seed_spread`` (a ``spread.Spread``) has it, learnt flags and the frontier."""
    flat = []
    for r in rows:
        f = {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
        for k, v in (r.get("env") or {}).items():
            f[f"env_{k}"] = v
        flat.append(f)
    df = pd.DataFrame(flat)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    rest = sorted(c for c in df.columns if c not in COLUMNS)
    df = df[COLUMNS + rest]
    # A column no row has comes back as None objects, which numeric aggregations drop.
    for c in NUMERIC:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    latency.add_columns(df)
    spread.attach(df, seed_spread)
    df["learnt"] = learnt_flags(df)
    df["frontier"] = frontier_mask(df)
    return df


def time_column(d):
    """(column, axis label) for comparing cells' times: the drift-corrected figure
    where every cell has one, else the raw median (``latency.time_column``)."""
    return latency.time_column(d)


def learnt_flags(df):
    """Per row: True / False whether its trained model learnt the set (its best cell
    reaches LEARNT_MIN_MAP50 mAP@.5), None where nothing was evaluated."""
    best = df.groupby("train_key")["mAP@.50"].transform("max") if len(df) else df["mAP@.50"]
    return [None if pd.isna(b) else bool(b >= LEARNT_MIN_MAP50) for b in best]


def _ok(df):
    err = df["error"].fillna("").astype(str)
    return (err == "") & df["latency_ms"].notna()


def learnt_rows(df):
    """Measured cells whose model learnt the set (the accuracy trade-offs to show)."""
    d = ok_rows(df)
    return d[d["learnt"].astype(object) == True]  # noqa: E712  (None: not evaluated)


def ok_rows(df):
    """The measured cells: no error and a latency."""
    return df[_ok(df)].copy()


def at_training_configuration(d):
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
    if "runtime" in d:  # the model as trained: in-process, not a converted artifact
        runtime = d["runtime"].fillna("").astype(str)
        d = d[runtime.isin(["", "tf_function"])]
    props = pd.to_numeric(d["num_proposals"], errors="coerce")
    most = props.groupby(d["train_key"]).transform("max")
    return d[props.isna() | (props == most)]


def mean_by(g, col):
    """The group's numeric columns averaged per value of ``col`` (as float), indexed by it."""
    return g.assign(_v=g[col].astype(float)).groupby("_v").mean(numeric_only=True)


def _accuracy_sd(row, acc_col):
    sd = row.get(f"{acc_col}_sd", float("nan"))
    return 0.0 if sd is None or sd != sd else float(sd)


def dominates(y, x, time_col, acc_col="mAP"):
    """Cell y dominates cell x: y is not slower and not less accurate than x beyond
    the noise, and better than x on one of them beyond it. The noise: each cell's
    latency interval (``latency.compare``) and its run-to-run accuracy spread
    (``<acc>_sd`` columns); where a row has neither, plain comparisons."""
    ty, tx = latency.interval(y, time_col), latency.interval(x, time_col)
    band = latency.Z * math.hypot(_accuracy_sd(y, acc_col), _accuracy_sd(x, acc_col))
    gain = y[acc_col] - x[acc_col]
    if band > 0:
        more_accurate, not_less = gain > band, gain >= -band
    else:
        more_accurate, not_less = gain > 0, gain >= 0
    verdict = latency.compare(ty, tx)[0]
    if ty[1] == ty[2] and tx[1] == tx[2]:  # no intervals: the raw order
        faster, not_slower = ty[0] < tx[0], ty[0] <= tx[0]
    else:
        faster, not_slower = verdict == "faster", verdict != "slower"
    return not_slower and not_less and (faster or more_accurate)


def frontier_mask(df, time_col=None, acc_col="mAP"):
    """The speed/accuracy frontier: the cells no other cell dominates (``dominates``:
    with the noise of both axes, a cell inside another's noise is not beaten by it,
    so the frontier does not change with a drifting host or a training's luck)."""
    mask = pd.Series(False, index=df.index)
    ok = _ok(df) & df[acc_col].notna() if acc_col in df else pd.Series(False, index=df.index)
    if "learnt" in df:
        ok &= df["learnt"].astype(object) != False  # noqa: E712  (a model that did not learn)
    pts = df[ok]
    time_col = time_col or latency.time_column(pts)[0]
    rows = [(idx, r) for idx, r in pts.iterrows()]
    for idx, x in rows:
        mask[idx] = not any(dominates(y, x, time_col, acc_col) for jdx, y in rows if jdx != idx)
    return mask


def frontier_points(df):
    """(fastest, sweet spot, most accurate) indices on the frontier, or []."""
    col = latency.time_column(df)[0]
    f = df[df["frontier"]].sort_values(col)
    if f.empty:
        return []
    fastest, accurate = f.index[0], f["mAP"].idxmax()
    # sweet spot: the frontier point with the best mAP per log-time gain over
    # the fastest (the knee), defaulting to the middle point.
    t0, a0 = f.loc[fastest, col], f.loc[fastest, "mAP"]
    best, sweet = -math.inf, f.index[len(f) // 2]
    for idx, row in f.iterrows():
        if idx in (fastest, accurate):
            continue
        gain = (row["mAP"] - a0) / max(math.log(row[col] / t0), 1e-6)
        if gain > best:
            best, sweet = gain, idx
    return [("fastest", fastest), ("sweet spot", sweet), ("most accurate", accurate)]


def format_cell(v, col, row=None):
    """A results value as results.md and report.html print it (column-dependent;
    ``row``: the figure's interval is printed beside it)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if col == "params":
        return f"{v / 1e6:.1f}"
    if col == "frontier":
        return "*" if v else ""
    if col == latency.FIGURE and row is not None:
        lo, hi = row.get(latency.FIGURE_LO), row.get(latency.FIGURE_HI)
        if lo == lo and hi == hi and lo is not None and hi is not None:
            return f"{v:.1f} ({lo:.1f}-{hi:.1f})"
    if isinstance(v, float):
        if col in ACCURACY_KEYS:
            return f"{v:.3f}"
        return f"{v:.2f}" if col == "gflops" and v < 10 else f"{v:.1f}"
    return str(v)


def markdown(df):
    ok = df[_ok(df)]
    ok = ok.sort_values(latency.time_column(ok)[0])
    failed = df[~_ok(df)]
    out = io.StringIO()
    out.write("| " + " | ".join(h for _, h in MD_COLUMNS) + " |\n")
    out.write("|" + "---|" * len(MD_COLUMNS) + "\n")
    for _, r in ok.iterrows():
        out.write("| " + " | ".join(format_cell(r[c], c, r) for c, _ in MD_COLUMNS) + " |\n")
    if len(failed):
        out.write("\nFailed cells:\n\n")
        for _, r in failed.iterrows():
            out.write(f"- {r['label']}: {r['error']}\n")
    out.write(
        "\n`*` marks the speed/accuracy frontier: no other cell is faster and at least as "
        "accurate, or more accurate and at least as fast, beyond the noise (the latency's "
        "90% interval; the accuracy's run-to-run spread where the grid has one). Cells are "
        "ranked by the drift-corrected latency: the median over the timed runs of each run "
        "divided by the reference workload timed around it, in ms at the sweep's median "
        "host speed.\n"
    )
    return out.getvalue()


def write_tables(rows, out_dir, protocol="", findings_md="", seed_spread=None):
    import os

    df = to_frame(rows, seed_spread)
    atomic_write(os.path.join(out_dir, "results.csv"), df.to_csv(index=False))
    md = "# Results\n\n" + (protocol + "\n\n" if protocol else "") + markdown(df)
    if findings_md:
        md += "\n## The study's findings on these results\n\n" + findings_md
    atomic_write(os.path.join(out_dir, "results.md"), md)
    return df
