"""Every PNG plot has a footer, and report.html a header, saying where it was measured."""

import pytest

from detbench.benchmark import environment, plots, report, tables
from tests.benchmark.results_fixture import make_rows

ENV = {
    "cpu_model": "Test CPU 9000",
    "cpu_count": 2,
    "device": "CPU",
    "tf_version": "2.20.0",
    "litert_version": "2.3.0",
    "intra_op_threads": 2,
    "inter_op_threads": 1,
}
# written out by hand from ENV and the runtimes / precisions the rows below carry
EXPECTED = (
    "measured on: CPU Test CPU 9000 (2 cores); GPU none; TensorFlow 2.20.0; "
    "LiteRT 2.3.0; threads intra 2 / inter 1; runtime tf_function, tflite; "
    "precision fp32, int8"
)


def _rows():
    rows = make_rows()
    for i, r in enumerate(rows):
        r["env"] = dict(ENV)
        if i == 1:  # one TFLite int8 cell; the others have no runtime
            r["runtime"], r["precision"] = "tflite", "int8"
    return rows


def test_measured_on_lists_every_field_and_each_distinct_value():
    df = tables.to_frame(_rows())
    assert environment.measured_on(df) == EXPECTED
    gpu = _rows()
    gpu[0]["env"]["device"] = "NVIDIA H100"
    assert "GPU NVIDIA H100;" in environment.measured_on(tables.to_frame(gpu))


@pytest.mark.parametrize("name", sorted(plots.PLOTS))
def test_each_plot_has_the_footer(name, tmp_path, monkeypatch):
    figures = []
    real_close = plots.plt.close
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: figures.append(fig))
    df = tables.to_frame(_rows())
    footer = environment.measured_on(df)
    path = plots.PLOTS[name](df, str(tmp_path / name), footer)
    assert len(figures) == 1
    texts = [t.get_text() for t in figures[0].texts]
    real_close(figures[0])
    assert EXPECTED in texts
    from PIL import Image

    with Image.open(path) as im:  # the PNG grew to hold it: taller than the figure alone
        assert im.format == "PNG" and im.size[1] > 300


def test_report_header_says_where_it_was_measured(tmp_path):
    df = tables.to_frame(_rows())
    page = report.render(df, [])
    assert f'<p id="measured-on">{EXPECTED}</p>' in page
    assert page.index('id="measured-on"') < page.index('id="results"')
