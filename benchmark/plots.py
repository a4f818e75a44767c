"""The study's figures from a results table (matplotlib, PNG)."""

import os
import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from detbench.benchmark import latency  # noqa: E402
from detbench.benchmark.tables import (  # noqa: E402
    ARCH_NAMES,
    frontier_points,
    int_label as _int,
    matched_groups as _matched,
    mean_by,
    model_name as _model_name,
    ok_rows as _ok,
    time_column,
)
from detbench.config.grid import EXTRACTOR_NAMES  # noqa: E402

MARKERS = {"ssd": "o", "faster_rcnn": "s", "rfcn": "^", "cascade_rcnn": "D"}


def _colors(names):
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(sorted(names))}


def extractor_color(name):
    """The colour of a feature extractor, the same in every panel of every plot: the
    study's extractors in config.grid.EXTRACTOR_NAMES's order on tab10, any other by
    a hash of its name on tab20's light shades."""
    known = list(EXTRACTOR_NAMES)
    if name in known:
        return plt.get_cmap("tab10")(known.index(name) % 10)
    return plt.get_cmap("tab20")(2 * (zlib.crc32(str(name).encode()) % 10) + 1)


def _has_fpn(r):
    return r.get("fpn") in (True, 1, "True")


def _point_style(r):
    """Scatter style of a cell: its extractor's colour, filled; hollow with an FPN."""
    c = extractor_color(r["feature_extractor"])
    if _has_fpn(r):
        return dict(facecolor="white", edgecolor=c, linewidth=1.8)
    return dict(color=c, edgecolor="black", linewidth=0.5)


def _log_x(ax):
    from matplotlib.ticker import LogLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)


def save_figure(fig, path, footer=""):
    """Atomically (a kill while saving leaves the previous plot, never half a PNG), with
    the footer saying where it was measured."""
    import io

    from detbench.benchmark.results import atomic_write

    fig.tight_layout()
    if footer:  # below the axes; bbox_inches="tight" grows the PNG to hold it
        fig.text(
            0.0,
            -0.01,
            # escaped: matplotlib's wrapping measures '$...$' as mathtext whatever parse_math
            footer.replace("$", r"\$"),
            parse_math=True,
            fontsize=7,
            color="0.3",
            ha="left",
            va="top",
            wrap=True,
            gid="footer",
        )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue(), mode="wb")
    return path


def _legends(ax, d):
    """The meta-architectures (markers) and the extractors (colours; hollow: with FPN)
    of the cells in ``d``, outside the axes."""
    from matplotlib.lines import Line2D

    archs = sorted(d["meta_arch"].unique())

    arch_handles = [
        Line2D(
            [], [], marker=MARKERS.get(a, "o"), ls="", color="0.3", ms=8, label=ARCH_NAMES.get(a, a)
        )
        for a in archs
    ]
    ext_handles = [
        Line2D([], [], marker="o", ls="", color=extractor_color(n), ms=8, label=n)
        for n in sorted(d["feature_extractor"].dropna().unique())
    ]
    if d.apply(_has_fpn, axis=1).any():
        ext_handles.append(
            Line2D([], [], marker="o", ls="", mfc="white", mec="0.3", mew=1.8, ms=8, label="+FPN")
        )
    # outside the axes, right of them: a legend inside can hide a point
    first = ax.legend(
        handles=arch_handles,
        title="meta-architecture",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0,
        fontsize=8,
        title_fontsize=8,
    )
    ax.add_artist(first)
    ax.legend(
        handles=ext_handles,
        title="feature extractor",
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
        borderaxespad=0,
        fontsize=8,
        title_fontsize=8,
    )


def _runtime_tag(row):
    """A point's runtime, precision and batch where not tf.function fp32 at batch 1 (rows
    from before the deployment axes have none of these columns)."""
    from detbench.config.grid import deployment_label

    def text(col):
        v = row.get(col)
        return v if isinstance(v, str) else ""

    batch = row.get("batch_size")
    batch = int(batch) if isinstance(batch, (int, float)) and batch == batch else 1
    return ", ".join(deployment_label(text("runtime"), text("precision"), batch))


def frontier_plot(df, path, footer=""):
    d = _ok(df)
    d = d[d["mAP"].notna()]
    fig, ax = plt.subplots(figsize=(11, 6))
    if d.empty:
        ax.text(
            0.5, 0.5, "no accuracy measured (speed-only sweep)", ha="center", transform=ax.transAxes
        )
        return save_figure(fig, path, footer)
    t, tlabel = time_column(d)
    if t == latency.FIGURE:  # each point's 90% interval, drift-corrected
        ax.errorbar(
            d[t],
            d["mAP"],
            xerr=[d[t] - d[latency.FIGURE_LO], d[latency.FIGURE_HI] - d[t]],
            fmt="none",
            ecolor="0.55",
            elinewidth=0.9,
            capsize=2,
            zorder=2,
        )
    for _, r in d.iterrows():
        ax.scatter(
            r[t],
            r["mAP"],
            marker=MARKERS.get(r["meta_arch"], "o"),
            s=55,
            zorder=3,
            **_point_style(r),
        )
    boxed = {idx for _, idx in frontier_points(d)}  # these carry their whole label below
    for idx, r in d.iterrows():  # which runtime / precision a point is, where not tf.function fp32
        tag = _runtime_tag(r)
        if tag and idx not in boxed:
            ax.annotate(
                tag,
                (r[t], r["mAP"]),
                xytext=(5, 5),
                textcoords="offset points",
                fontsize=6.5,
                color="0.25",
            )
    f = d[d["frontier"]].sort_values(t)
    ax.step(
        f[t],
        f["mAP"],
        where="post",
        color="0.4",
        ls="--",
        lw=1.2,
        zorder=2,
        label="optimality frontier",
    )
    lo, hi = np.log(d[t].min()), np.log(d[t].max())
    _log_x(ax)
    ax.margins(y=0.18)  # room for the labels above the highest point, below the title
    placed = []
    for tag, idx in frontier_points(d):
        r = d.loc[idx]
        right = hi > lo and (np.log(r[t]) - lo) / (hi - lo) > 0.6
        # the sweet spot's label above its point, the others below; a label that would
        # cover one placed before moves further down (then up) until it does not
        base = 22 if tag == "sweet spot" else -30
        tries = [base - 26 * k for k in range(6)] + [base + 26 * k for k in range(1, 6)]
        for k, dy in enumerate(tries):
            note = ax.annotate(
                f"{tag}\n{r['label']}",
                (r[t], r["mAP"]),
                xytext=(-12 if right else 12, dy),
                ha="right" if right else "left",
                textcoords="offset points",
                fontsize=7.5,
                arrowprops=dict(arrowstyle="->", color="0.3", lw=0.8),
                bbox=dict(boxstyle="round,pad=0.2", fc="lightyellow", ec="0.6", lw=0.5),
            )
            box = note.get_window_extent(fig.canvas.get_renderer())
            if k == len(tries) - 1 or not any(box.overlaps(other) for other in placed):
                break
            note.remove()
        placed.append(box)
    ax.set_xlabel(
        f"{tlabel}, batch 1, log scale" + (" (bars: 90% interval)" if t == latency.FIGURE else "")
    )
    ax.set_ylabel("COCO mAP@[.5:.95]")
    ax.set_title("Speed / accuracy trade-off")
    ax.grid(True, which="both", alpha=0.3)
    _legends(ax, d)
    return save_figure(fig, path, footer)


def proposals_plot(df, path, footer=""):
    """mAP (solid) and time (dotted) vs proposals; both panels share their axes so the
    flat R-FCN curve and the growing Faster R-CNN one compare at a glance. A model
    measured at one proposal count is no curve: the extractor and stride plots show it."""
    d = _ok(df)
    d = d[d["meta_arch"].isin(["faster_rcnn", "rfcn"]) & d["num_proposals"].notna()]
    d = d[d["num_proposals"].astype(str) != "-"]
    series = ["meta_arch", "feature_extractor", "fpn", "resolution", "output_stride"]
    keyed = d[series].astype(str)
    counts = d.groupby([keyed[c] for c in series])["num_proposals"].transform("nunique")
    d = d[counts >= 2]
    archs = [a for a in ("faster_rcnn", "rfcn") if a in set(d["meta_arch"])] or ["faster_rcnn"]
    fig, axes = plt.subplots(1, len(archs), figsize=(6.5 * len(archs), 4.8), squeeze=False)
    tcol, tlabel = time_column(d)
    t_max = float(d[tcol].max()) * 1.1 if len(d) else 1.0
    for ax, arch in zip(axes[0], archs):
        sub = d[d["meta_arch"] == arch]
        ax2 = ax.twinx()
        if len(sub):
            sub = sub.assign(model=sub.apply(_model_name, axis=1))
            groups = sub.groupby(["model", "resolution", "output_stride"])
            seen = {}  # series of one extractor: its colour, told apart by marker
            for key, g in groups:
                ext = g["feature_extractor"].iloc[0]
                k = seen[ext] = seen.get(ext, -1) + 1
                color, marker = extractor_color(ext), "os^Dv"[k % 5]
                g = mean_by(g, "num_proposals")
                name = f"{key[0]} {_int(key[1])}px stride {_int(key[2])}"
                if g["mAP"].notna().any():
                    ax.plot(g.index, g["mAP"], marker=marker, color=color, label=f"{name}: mAP")
                ax2.plot(g.index, g[tcol], marker="x", ls=":", color=color, label=f"{name}: time")
        _log_x(ax)
        ax2.set_ylim(0, t_max)
        ax.set_xlabel("number of proposals")
        ax.set_ylabel("mAP (solid)")
        ax2.set_ylabel(f"{tlabel} (dotted)", fontsize=8)
        ax.set_title(ARCH_NAMES[arch])
        ax.grid(True, alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        if h1 or h2:
            ax.legend(
                h1 + h2,
                l1 + l2,
                fontsize=7,
                loc="upper center",
                ncol=2,
                bbox_to_anchor=(0.5, -0.14),
            )  # below the axes: never over a point
    if len(d) and d["mAP"].notna().any():
        lo, hi = d["mAP"].min(), d["mAP"].max()
        pad = max((hi - lo) * 0.1, 0.01)
        for ax in axes[0]:
            ax.set_ylim(max(lo - pad, 0.0), min(hi + pad, 1.0))  # mAP lives in [0, 1]
    fig.suptitle("Accuracy and time vs number of proposals")
    return save_figure(fig, path, footer)


def _grouped_bars(ax, labels, series, ylabel):
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x)
    tilt = len(labels) > 3
    ax.set_xticklabels(
        labels, rotation=30 if tilt else 0, ha="right" if tilt else "center", fontsize=8
    )
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)


SIZE_STYLES = (
    ("mAP", "all objects", "-", "o"),
    ("mAP (small)", "small", "--", "v"),
    ("mAP (medium)", "medium", "-.", "s"),
    ("mAP (large)", "large", ":", "^"),
)


def resolution_plot(df, path, footer=""):
    """Cells that differ only in resolution: mAP overall and by object size (the
    study's finding: small objects lose the most at lower resolution), and time."""
    from matplotlib.lines import Line2D

    d = _ok(df)
    d = d[d["resolution"].notna()]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    groups = _matched(d, "resolution")
    tcol, tlabel = time_column(d)
    for label, g in groups:
        c = extractor_color(g["feature_extractor"].iloc[0])
        arch_marker = MARKERS.get(g["meta_arch"].iloc[0], "o")
        g = mean_by(g, "resolution")
        if g["mAP"].notna().any():
            for col, _, ls, marker in SIZE_STYLES:
                a1.plot(g.index, g[col], marker=marker, ls=ls, color=c)
        a2.plot(g.index, g[tcol], marker=arch_marker, color=c, label=label)
    a1.set_xlabel("input resolution (px)")
    a1.set_ylabel("mAP")
    a1.set_title("Accuracy vs resolution, by object size")
    if a1.lines:
        a1.legend(
            handles=[
                Line2D([], [], color="0.3", ls=ls, marker=m, label=name)
                for _, name, ls, m in SIZE_STYLES
            ],
            fontsize=8,
            loc="upper left",
        )
        a1.set_ylim(bottom=0)
    a2.set_xlabel("input resolution (px)")
    a2.set_ylabel(tlabel)
    a2.set_title("Time vs resolution")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
        if groups:
            a.set_xticks(sorted({float(r) for _, g in groups for r in g["resolution"]}))
    if a2.get_legend_handles_labels()[0]:
        a2.legend(fontsize=8, loc="upper left")
        a2.set_ylim(bottom=0)
    return save_figure(fig, path, footer)


def stride_plot(df, path, footer=""):
    """Cells that differ only in output stride: time and mAP side by side."""
    d = _ok(df)
    d = d[d["output_stride"].notna() & (d["output_stride"].astype(str) != "-")]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    groups = _matched(d, "output_stride")
    if groups:
        labels = [label for label, _ in groups]
        strides = sorted({float(s) for _, g in groups for s in g["output_stride"]})

        def values(col):
            return {
                f"stride {_int(s)}": [
                    g[g["output_stride"].astype(float) == s][col].mean() for _, g in groups
                ]
                for s in strides
            }

        tcol, tlabel = time_column(d)
        _grouped_bars(a1, labels, values(tcol), tlabel)
        _grouped_bars(a2, labels, values("mAP"), "mAP")
    a1.set_title("Time by output stride (same model otherwise)")
    a2.set_title("Accuracy by output stride (same model otherwise)")
    return save_figure(fig, path, footer)


def flops_plot(df, path, footer=""):
    d = _ok(df)
    d = d[d["gflops"].notna()]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    if len(d):
        t, tlabel = time_column(d)
        for _, r in d.iterrows():
            ax.scatter(
                r["gflops"],
                r[t],
                marker=MARKERS.get(r["meta_arch"], "o"),
                s=50,
                **_point_style(r),
            )
        x = np.linspace(0, d["gflops"].max() * 1.05, 50)
        rate = np.median(d["gflops"] / d[t])  # GFLOP per ms
        ax.plot(x, x / rate, color="0.5", ls=":", label=f"median rate {rate * 1e3:.0f} GFLOP/s")
        _legends(ax, d)
    ax.set_xlabel("GFLOPs per image")
    ax.set_ylabel(tlabel if len(d) else "latency (ms)")
    ax.set_title("FLOPs vs time")
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path, footer)


def memory_plot(df, path, footer=""):
    d = _ok(df).sort_values("peak_rss_mb")
    fig, ax = plt.subplots(figsize=(10, max(3.5, 0.32 * len(d) + 1.5)))
    if len(d):
        d = d.assign(model=d["meta_arch"].map(lambda a: ARCH_NAMES.get(a, a)))
        colors = _colors(d["meta_arch"].unique())
        ax.barh(d["label"], d["peak_rss_mb"], color=[colors[a] for a in d["meta_arch"]])
        ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("peak resident memory of the cell's process (MiB)")
    ax.set_title("Memory")
    ax.grid(True, axis="x", alpha=0.3)
    return save_figure(fig, path, footer)


def accuracy_by_size_plot(df, path, footer=""):
    d = _ok(df)
    d = d[d["mAP"].notna()].sort_values("mAP")
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(d) + 3), 5))
    if len(d):
        best = d.sort_values("mAP").drop_duplicates(["meta_arch", "feature_extractor"], keep="last")
        labels = list(best["label"])
        series = {s: list(best[f"mAP ({s})"].fillna(0)) for s in ("small", "medium", "large")}
        _grouped_bars(ax, labels, series, "mAP")
    ax.set_title("Accuracy by object size (best cell of each model)")
    return save_figure(fig, path, footer)


def _deployment(d):
    """``d`` with its runtime / precision / batch size filled in (the defaults where a
    row has none) and a model label per row (architecture, extractor, resolution)."""
    d = d.assign(
        runtime=d["runtime"].fillna("tf_function") if "runtime" in d else "tf_function",
        precision=d["precision"].fillna("fp32") if "precision" in d else "fp32",
        batch_size=d["batch_size"].fillna(1).astype(float) if "batch_size" in d else 1.0,
    )
    return d.assign(
        model=[
            f"{ARCH_NAMES.get(r['meta_arch'], r['meta_arch'])} {_model_name(r)} "
            f"{_int(r['resolution'])}px"
            + (
                f" {_int(r['num_proposals'])} prop."
                if pd.notna(r.get("num_proposals")) and r.get("num_proposals") not in ("-", "")
                else ""
            )
            for _, r in d.iterrows()
        ]
    )


def deployment_plot(df, path, footer=""):
    """What ships: per model, each runtime / precision at batch 1 (latency p50 bars with
    p90 and p99 marks, mAP@.5 and size on disk beside them), and images/s against the
    batch size."""
    d = _deployment(_ok(df))
    one = d[d["batch_size"] == 1].drop_duplicates(["model", "runtime", "precision"])
    one = one[one.groupby("model")["runtime"].transform("size") >= 2]
    batched = d[
        d.groupby(["model", "runtime", "precision"])["batch_size"].transform("nunique") >= 2
    ]
    groups = list(batched.groupby(["model", "runtime", "precision"], sort=True))
    # only the panels that have data (one panel saying so when neither has)
    panels = [p for p, has in (("runtimes", len(one) or not groups), ("batch", groups)) if has]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(13 if len(panels) == 2 else 8, max(4.0, 0.45 * len(one) + 1.5)),
        width_ratios=(3, 2) if len(panels) == 2 else None,
        squeeze=False,
    )
    axes = dict(zip(panels, axes[0]))
    if "runtimes" in axes:
        _runtimes_panel(axes["runtimes"], one)
    if "batch" in axes:
        _batch_panel(axes["batch"], batched, groups)
    return save_figure(fig, path, footer)


def _runtimes_panel(a1, one):
    """Batch 1 per model: each runtime / precision's p50 bar, p90 / p99 marks, notes."""
    if len(one):
        one = one.sort_values(["model", "latency_ms"], ascending=[True, False])
        y = np.arange(len(one))
        colors = _colors(one["model"].unique())
        a1.barh(y, one["latency_ms"], color=[colors[m] for m in one["model"]], label="p50")
        for col, marker in (("latency_p90_ms", "|"), ("latency_p99_ms", "x")):
            if col in one:
                a1.scatter(one[col], y, marker=marker, color="black", zorder=3, label=col[8:11])
        ends = one[[c for c in ("latency_ms", "latency_p90_ms", "latency_p99_ms") if c in one]]
        ends = ends.max(axis=1)
        for yi, end, (_, r) in zip(y, ends, one.iterrows()):
            notes = [f"{r['latency_ms']:.1f} ms"]
            for col, fmt in (("mAP@.50", "mAP@.5 {:.3f}"), ("artifact_mb", "{:.1f} MiB")):
                if col in r and pd.notna(r[col]):
                    notes.append(fmt.format(r[col]))
            a1.text(end, yi, "  " + ", ".join(notes), va="center", fontsize=7)
        a1.set_xlim(0, ends.max() * 1.6)  # room for the notes right of the marks
        a1.set_yticks(y)
        a1.set_yticklabels(
            [f"{r['runtime']} {r['precision']}" for _, r in one.iterrows()], fontsize=8
        )
        if one["model"].nunique() > 1:
            a1.legend(
                handles=[plt.Rectangle((0, 0), 1, 1, color=c, label=m) for m, c in colors.items()],
                fontsize=7,
                loc="lower right",
            )
        else:
            a1.legend(fontsize=7, loc="lower right")
        a1.set_title(f"Batch 1 by runtime and precision: {', '.join(colors)}", fontsize=9)
    else:
        a1.text(
            0.5,
            0.5,
            "no model measured in two runtimes / precisions",
            ha="center",
            transform=a1.transAxes,
        )
    a1.set_xlabel("latency per image (ms): bar p50, | p90, x p99")
    a1.grid(True, axis="x", alpha=0.3)


def _batch_panel(a2, batched, groups):
    """Images/s against the batch size, per model / runtime / precision."""
    for (model, runtime, precision), g in groups:
        g = mean_by(g, "batch_size")
        a2.plot(g.index, g["throughput_ips"], marker="o", label=f"{model}, {runtime} {precision}")
    a2.set_xticks(sorted(batched["batch_size"].unique()))
    a2.legend(fontsize=7, loc="best")
    a2.set_ylim(bottom=0)
    a2.set_xlabel("batch size")
    a2.set_ylabel("throughput (images/s)")
    a2.set_title("Throughput vs batch size", fontsize=9)
    a2.grid(True, alpha=0.3)


PLOTS = {
    "frontier.png": frontier_plot,
    "proposals.png": proposals_plot,
    "resolution.png": resolution_plot,
    "stride.png": stride_plot,
    "flops_vs_time.png": flops_plot,
    "memory.png": memory_plot,
    "accuracy_by_size.png": accuracy_by_size_plot,
    "deployment.png": deployment_plot,
}


def without_unlearnt_accuracy(df):
    """The accuracy of a model that has not learnt the set is not a trade-off: its
    cells keep their times in the plots, their mAPs are left out."""
    from detbench.benchmark.tables import ACCURACY_KEYS

    if "learnt" not in df:
        return df
    unlearnt = df["learnt"].astype(object) == False  # noqa: E712
    d = df.copy()
    d.loc[unlearnt, [c for c in ACCURACY_KEYS if c in d]] = float("nan")
    return d


def write_plots(df, out_dir):
    """Every plot of PLOTS under OUT/plots/, each with a footer saying where it was measured."""
    from detbench.benchmark.environment import measured_on

    df = without_unlearnt_accuracy(df)
    plots_dir = os.path.join(out_dir, "plots")
    os.makedirs(plots_dir, exist_ok=True)
    footer = measured_on(df)
    # Labels, names and paths are drawn as typed: a '$' is a dollar sign, not mathtext.
    with matplotlib.rc_context({"text.parse_math": False}):
        return {name: fn(df, os.path.join(plots_dir, name), footer) for name, fn in PLOTS.items()}
