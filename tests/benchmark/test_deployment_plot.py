"""deployment.png: the batch-1 bars are the rows' p50 per runtime / precision (only models
measured in two or more), and the throughput lines the rows' images/s per batch size."""

from detbench.benchmark import plots, tables
from tests.benchmark.results_fixture import make_rows


def _rows():
    base = make_rows()[0]  # SSD mobilenet_v2 300 px
    other = make_rows()[2]  # SSD resnet50_v1 300 px: one runtime only, no bars
    rows = []
    # runtime, precision, batch, p50, images/s (by hand: batch 1 -> 1000 / p50)
    for i, (rt, prec, batch, ms, ips) in enumerate(
        [
            ("tf_function", "fp32", 1, 40.0, 25.0),
            ("tflite", "fp32", 1, 20.0, 50.0),
            ("tflite", "int8", 1, 10.0, 100.0),
            ("tf_function", "fp32", 4, 35.0, 60.0),
            ("tf_function", "fp32", 8, 34.0, 70.0),
        ]
    ):
        rows.append(
            dict(
                base,
                cell_id=f"d{i}",
                runtime=rt,
                precision=prec,
                batch_size=batch,
                latency_ms=ms,
                latency_p90_ms=ms * 1.2,
                latency_p99_ms=ms * 1.5,
                throughput_ips=ips,
                artifact_mb=4.0,
            )
        )
    return rows + [other]


def test_bars_and_throughput_lines_are_the_rows_numbers(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: figures.append(fig))
    plots.deployment_plot(tables.to_frame(_rows()), str(tmp_path / "d.png"))
    bars_ax, batch_ax = figures[0].axes[:2]
    bars = {
        label.get_text(): patch.get_width()
        for label, patch in zip(bars_ax.get_yticklabels(), bars_ax.patches)
    }
    # by hand: the three batch-1 cells of mobilenet_v2; resnet50_v1 ran in one runtime
    assert bars == {"tf_function fp32": 40.0, "tflite fp32": 20.0, "tflite int8": 10.0}
    notes = [t.get_text() for t in bars_ax.texts]
    assert any("10.0 ms" in n and "mAP@.5 0.600" in n and "4.0 MiB" in n for n in notes)
    (line,) = batch_ax.get_lines()
    assert list(line.get_xdata()) == [1.0, 4.0, 8.0]
    assert list(line.get_ydata()) == [25.0, 60.0, 70.0]
    plots.plt.close(figures[0])
