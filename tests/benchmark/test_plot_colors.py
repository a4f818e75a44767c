"""One colour per feature extractor in every panel and plot; proposals.png draws curves
only (a model at one proposal count is not one); deployment.png draws only the panels
that have data."""

import matplotlib.colors as mcolors
import pytest

from detbench.benchmark import plots, tables
from tests.benchmark.test_deployment_plot import _rows as deployment_rows


@pytest.fixture
def figures(monkeypatch):
    caught, close = [], plots.plt.close
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: caught.append(fig))
    yield caught
    for fig in caught:
        close(fig)


def _cell(cid, arch, ext, props, stride=16, ms=10.0, mAP=0.3):
    return {
        "cell_id": cid,
        "train_key": f"{arch}-{ext}-{stride}",
        "label": cid,
        "meta_arch": arch,
        "feature_extractor": ext,
        "fpn": False,
        "resolution": 256,
        "train_resolution": 256,
        "num_proposals": props,
        "output_stride": stride,
        "latency_ms": ms,
        "mAP": mAP,
        "mAP@.50": 2 * mAP,
        "error": "",
    }


def _proposal_rows():
    # the default sweep's layout: MobileNet v2 at three counts in both meta-architectures;
    # MobileNet v1 and the stride-8 model at 100 proposals only
    return [
        _cell("f10", "faster_rcnn", "mobilenet_v2", 10, ms=20, mAP=0.25),
        _cell("f30", "faster_rcnn", "mobilenet_v2", 30, ms=25, mAP=0.26),
        _cell("f100", "faster_rcnn", "mobilenet_v2", 100, ms=40, mAP=0.27),
        _cell("r10", "rfcn", "mobilenet_v2", 10, ms=19, mAP=0.28),
        _cell("r30", "rfcn", "mobilenet_v2", 30, ms=21, mAP=0.29),
        _cell("r100", "rfcn", "mobilenet_v2", 100, ms=22, mAP=0.30),
        _cell("v1", "faster_rcnn", "mobilenet_v1", 100, ms=50, mAP=0.31),
        _cell("s8", "faster_rcnn", "mobilenet_v2", 100, stride=8, ms=70, mAP=0.32),
    ]


def _same(a, b):
    return mcolors.to_rgba(a) == mcolors.to_rgba(b)


def test_extractor_colours_are_fixed_and_distinct():
    v1, v2 = plots.extractor_color("mobilenet_v1"), plots.extractor_color("mobilenet_v2")
    assert not _same(v1, v2)
    assert _same(plots.extractor_color("mobilenet_v2"), v2)  # not the order names come in
    assert _same(plots.extractor_color("my_net"), plots.extractor_color("my_net"))


def test_proposals_one_colour_per_extractor_and_no_lone_points(figures, tmp_path):
    plots.proposals_plot(tables.to_frame(_proposal_rows()), str(tmp_path / "p.png"))
    fig = figures[0]
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    # 2 panels x (mAP + time) of MobileNet v2 at stride 16; v1 and stride 8 are single points
    assert len(lines) == 4
    assert all(len(line.get_xdata()) == 3 for line in lines)
    assert all(_same(line.get_color(), plots.extractor_color("mobilenet_v2")) for line in lines)
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]
    assert labels and not any("mobilenet_v1" in t or "stride 8" in t for t in labels)


def test_frontier_and_flops_colour_points_by_extractor(figures, tmp_path):
    rows = _proposal_rows()
    for r in rows:
        r["gflops"] = r["latency_ms"] / 10
    df = tables.to_frame(rows)
    for plot in (plots.frontier_plot, plots.flops_plot):
        plot(df, str(tmp_path / "f.png"))
        ax = figures[-1].axes[0]
        colours = [c.get_facecolor()[0] for c in ax.collections if len(c.get_offsets()) == 1]
        assert len(colours) == len(rows)
        expected = [plots.extractor_color(r["feature_extractor"]) for r in rows]
        assert all(_same(c, e) for c, e in zip(colours, expected))


def test_deployment_draws_only_panels_with_data(figures, tmp_path):
    rows = deployment_rows()
    batch1 = [r for r in rows if r.get("batch_size", 1) == 1]
    plots.deployment_plot(tables.to_frame(batch1), str(tmp_path / "d.png"))
    (ax,) = figures[-1].axes  # no empty "throughput vs batch size" panel
    assert ax.get_title().startswith("Batch 1 by runtime and precision")
    batched = [r for r in rows if r.get("runtime") == "tf_function"]  # batch 1, 4, 8
    plots.deployment_plot(tables.to_frame(batched), str(tmp_path / "d.png"))
    (ax,) = figures[-1].axes  # one runtime only: no bars panel
    assert ax.get_title() == "Throughput vs batch size"
    assert list(ax.get_lines()[0].get_ydata()) == [25.0, 60.0, 70.0]
    plots.deployment_plot(tables.to_frame(rows), str(tmp_path / "d.png"))
    assert len(figures[-1].axes) == 2
