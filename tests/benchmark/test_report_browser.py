"""report.html in a real browser: Debian's Chromium, headless, with no network.

The page is built from the hand-made results of results_fixture.py. Chromium
takes a screenshot of it, and loads a copy with a test script appended that,
once the page has loaded, records every plot image's decoded size and clicks
the table's headers, then writes what it saw into the DOM that ``--dump-dom``
prints. The expected orders come from the fixture rows, sorted here.
"""

import html
import json
import os
import re
import shutil
import subprocess

import pytest

from detbench.benchmark import plots, report, tables
from tests.benchmark.results_fixture import make_rows

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it",
)

PROBE = """
<script>
window.addEventListener('load', () => {
  const out = {};
  out.images = Array.from(document.images).map(
      i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}));
  const table = document.getElementById('results');
  const heads = Array.from(table.tHead.rows[0].cells);
  const column = name => {
    const idx = heads.findIndex(h => h.textContent.trim() === name);
    return Array.from(table.tBodies[0].rows).map(r => r.cells[idx].textContent);
  };
  const click = name => {
    const th = heads.find(h => h.textContent.trim() === name);
    th.dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true, view: window}));
    return th.className;
  };
  out.initial = column('raw ms p50');
  out.map_asc_class = click('mAP');
  out.map_asc = column('mAP');
  out.map_asc_latency = column('raw ms p50');
  out.map_desc_class = click('mAP');
  out.map_desc = column('mAP');
  out.peak_asc_class = click('peak MiB');
  out.peak_asc = column('peak MiB');
  const pre = document.createElement('pre');
  pre.id = 'detbench-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium(*args, user_data_dir, timeout=120):
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-sync",
        "--hide-scrollbars",
        "--mute-audio",
        f"--user-data-dir={user_data_dir}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    df = tables.to_frame(make_rows())
    paths = plots.write_plots(df, str(out))
    path = report.write_report(
        df,
        list(paths.values()),
        str(out),
        env={"cpu_model": "test cpu", "tf_version": "2.20.0"},
        summary="10 cells done, 0 skipped, 1 failed",
    )
    return path, df, len(paths)


def test_report_screenshot(page, tmp_path):
    path, _, _ = page
    shot = tmp_path / "report.png"
    proc = chromium(
        f"--screenshot={shot}",
        "--window-size=1280,1600",
        "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=5000",
        f"file://{path}",
        user_data_dir=tmp_path / "profile",
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1280, 1600)
        # Not a blank page: text, the table's header shading and plots make many colours.
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50
    # Keep it for a person to look at (e.g. DETBENCH_KEEP_SCREENSHOT=/tmp/report.png).
    keep = os.environ.get("DETBENCH_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_report_plots_decode_and_table_sorts_on_click(page, tmp_path):
    path, df, n_plots = page
    text = open(path, encoding="utf-8").read()
    probe_page = tmp_path / "report_probe.html"
    probe_page.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = chromium(
        "--dump-dom",
        "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=10000",
        f"file://{probe_page}",
        user_data_dir=tmp_path / "profile",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="detbench-probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, "the probe script did not run: " + proc.stdout[-1000:] + proc.stderr[-1000:]
    seen = json.loads(html.unescape(found.group(1)))

    # Every plot is an image the browser decoded, at the size the PNG has.
    assert len(seen["images"]) == n_plots
    for img in seen["images"]:
        assert img["complete"] and img["w"] > 400 and img["h"] > 200, img

    ok = df[df["error"].fillna("") == ""]
    fmt = tables.format_cell  # the page's own number format
    # The page opens sorted by time; clicking mAP sorts by it, again reverses it.
    assert seen["initial"] == [fmt(v, "latency_ms") for v in sorted(ok["latency_ms"])]
    assert seen["map_asc_class"] == "asc" and seen["map_desc_class"] == "desc"
    by_map = sorted(zip(ok["mAP"], ok["latency_ms"]), key=lambda p: p[0])
    assert seen["map_asc"] == [fmt(a, "mAP") for a, _ in by_map]
    assert [float(v) for v in seen["map_asc"]] == sorted(float(v) for v in seen["map_asc"])
    assert seen["map_desc"] == list(reversed(seen["map_asc"])) or [
        float(v) for v in seen["map_desc"]
    ] == sorted((float(v) for v in seen["map_asc"]), reverse=True)
    assert sorted(seen["map_asc_latency"]) == sorted(seen["initial"])  # rows moved whole
    assert seen["peak_asc_class"] == "asc"
    assert seen["peak_asc"] == [fmt(v, "peak_rss_mb") for v in sorted(ok["peak_rss_mb"])]


BUDGET_PROBE = """
<script>
window.addEventListener('load', () => {
  const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                           e.dispatchEvent(new Event('input', {bubbles: true})); };
  const seen = () => ({
    cell: document.getElementById('budget-result').dataset.cell,
    text: document.getElementById('budget-result').textContent,
    rows: Array.from(document.querySelectorAll('#results tbody tr.budget-best'))
            .map(r => r.dataset.cell),
    circles: Array.from(document.querySelectorAll('#frontier-svg circle.budget-best'))
            .map(c => c.dataset.cell),
    radius: Array.from(document.querySelectorAll('#frontier-svg circle.budget-best'))
            .map(c => c.getBoundingClientRect().width),
    line: document.getElementById('budget-line').getAttribute('visibility'),
  });
  const out = {};
  out.n_circles = document.querySelectorAll('#frontier-svg circle').length;
  set('budget-latency', '160'); out.lat160 = seen();
  set('budget-memory', '850'); out.lat160_mem850 = seen();
  set('budget-memory', ''); const p = document.getElementById('budget-percentile');
  p.value = 'p90'; p.dispatchEvent(new Event('change')); out.p90_160 = seen();
  p.value = 'p50'; p.dispatchEvent(new Event('change'));
  set('budget-latency', '30'); out.none = seen();
  const pre = document.createElement('pre');
  pre.id = 'detbench-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def test_budget_control_highlights_the_best_cell_within_the_budget(page, tmp_path):
    from detbench.benchmark.pick import Budget, pick

    path = page[0]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text  # self-contained: nothing to fetch
    probe_page = tmp_path / "report_budget.html"
    probe_page.write_text(text.replace("</body>", BUDGET_PROBE + "</body>"), encoding="utf-8")
    proc = chromium(
        "--dump-dom",
        "--virtual-time-budget=10000",
        f"file://{probe_page}",
        user_data_dir=tmp_path / "profile",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="detbench-probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stdout[-1000:] + proc.stderr[-1000:]
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["n_circles"] == 10  # the ten measured cells of the fixture
    # By hand (results_fixture): p50 <= 160 ms keeps c00 .30, c02 .33, c01 .38, c03 .36,
    # c07 .37, c08 .40 -> c08. Peak memory is 800 + 10 i MiB: <= 850 drops c07 (870) and
    # c08 (880) -> c01 (.38). p90 is 1.1 x p50: <= 160 drops c03, c08 (165) -> c01.
    expected = {"lat160": "c08", "lat160_mem850": "c01", "p90_160": "c01"}
    rows = make_rows()
    budgets = {
        "lat160": Budget(160),
        "lat160_mem850": Budget(160, max_memory_mb=850),
        "p90_160": Budget(160, percentile=90),
    }
    for key, cell in expected.items():
        assert pick(rows, budgets[key]).best["cell_id"] == cell  # the CLI agrees
        got = seen[key]
        assert got["cell"] == cell and got["rows"] == [cell] and got["circles"] == [cell], got
        assert got["radius"][0] > 12  # drawn larger than the other points (r 5)
    assert "best within the budget: rfcn resnet50_v1 300px p300 s16" in seen["lat160"]["text"]
    assert seen["lat160"]["line"] == "visible" and seen["p90_160"]["line"] == "hidden"
    assert (
        seen["none"]["cell"] == ""
        and seen["none"]["rows"] == []
        and seen["none"]["circles"] == []
        and "no cell within 30 ms" in seen["none"]["text"]
    )
