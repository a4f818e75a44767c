"""Tables, frontier, plots and the HTML report from a small results file."""

import json
import os

import pandas as pd

from detbench.benchmark import plots, report, tables
from detbench.benchmark.results import ResultsStore
from tests.benchmark.results_fixture import make_rows


def test_frontier_is_the_pareto_set():
    df = tables.to_frame(make_rows())
    got = set(df[df["frontier"]]["cell_id"])
    # brute force: a point is dominated if another is no slower and more accurate
    ok = df[df["error"].fillna("") == ""]
    expected = set()
    for _, a in ok.iterrows():
        dominated = any(
            (b["latency_ms"] <= a["latency_ms"] and b["mAP"] > a["mAP"])
            or (b["latency_ms"] < a["latency_ms"] and b["mAP"] >= a["mAP"])
            for _, b in ok.iterrows()
            if b["cell_id"] != a["cell_id"]
        )
        if not dominated:
            expected.add(a["cell_id"])
    # by hand, sorted by time: 40/.30, 90/.33, 120/.38, 150/.40, 190/.41, 380/.44, 450/.46
    assert got == expected == {"c00", "c02", "c01", "c08", "c04", "c06", "c09"}


def test_results_store_is_append_only_and_resumable(tmp_path):
    store = ResultsStore(str(tmp_path))
    rows = make_rows()
    for r in rows[:3]:
        store.add(r)
    again = ResultsStore(str(tmp_path))
    assert [r["cell_id"] for r in again.rows] == ["c00", "c01", "c02"]
    again.add({**rows[0], "error": "retry failed"})  # replaces, never duplicates
    lines = open(tmp_path / "results.jsonl").read().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1])["error"] == "retry failed"
    assert again.done_ids() == {"c01", "c02"}
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_tables_and_markdown(tmp_path):
    df = tables.write_tables(make_rows(), str(tmp_path), protocol="protocol text")
    csv = pd.read_csv(tmp_path / "results.csv")
    assert len(csv) == 11 and csv.columns[0] == "label"
    md = open(tmp_path / "results.md").read()
    body = [
        l
        for l in md.splitlines()
        if l.startswith("| ssd")
        or l.startswith("| faster")
        or l.startswith("| rfcn")
        or l.startswith("| cascade")
    ]
    times = [float(l.split("|")[3]) for l in body]  # raw ms p50 (no reference timed)
    assert times == sorted(times)  # sorted by time
    assert "rfcn vgg16 600px: OOM: killed" in md
    assert sum(df["frontier"]) == 7


def test_plots_and_report_files(tmp_path):
    df = tables.to_frame(make_rows())
    paths = plots.write_plots(df, str(tmp_path))
    assert set(paths) == set(plots.PLOTS)
    from PIL import Image

    for p in paths.values():
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 400
    page = report.write_report(df, list(paths.values()), str(tmp_path), env={"cpu": "x"})
    text = open(page).read()
    assert text.count("data:image/png;base64,") == len(plots.PLOTS)
    assert "sortTable" in text and "Protocol" in text and "OOM: killed" in text


def test_stride_and_resolution_plots_compare_only_matched_cells():
    df = pd.DataFrame(make_rows())
    ok = plots._ok(df)
    # stride 8 (50 proposals) pairs with stride 16 at 50 proposals only, not with the
    # 10- and 300-proposal cells
    [(label, group)] = plots._matched(ok, "output_stride")
    assert label == "Faster R-CNN resnet50_v1 300px 50 prop."
    assert sorted(group["output_stride"]) == [8, 16]
    assert set(group["num_proposals"]) == {50}
    # SSD mobilenet_v2 is the only model measured at two resolutions
    [(label, group)] = plots._matched(ok, "resolution")
    assert label == "SSD mobilenet_v2" and sorted(group["resolution"]) == [300, 600]
