"""report.html: one self-contained page (plots embedded) with a sortable table."""

import base64
import html
import math
import os

from detbench.benchmark import report_budget
from detbench.benchmark.environment import measured_on
from detbench.benchmark.results import atomic_write
from detbench.benchmark.tables import MD_COLUMNS, format_cell, ok_rows, time_column

PROTOCOL = """\
<ul>
<li><b>Latency</b>: batch 1, after warm-up, median, p90 and p99 over N timed runs of the whole
inference function (preprocess + predict + postprocess, NMS included) in the cell's runtime
(tf.function, SavedModel, TFLite) at its precision, and a second column without
post-processing. Throughput: images/s at the cell's batch size. Inputs are real decoded
images of the evaluation set.</li>
<li><b>Memory</b>: peak resident memory of the process that ran only this cell (and the TF
allocator's peak on a GPU).</li>
<li><b>FLOPs</b>: counted from the traced inference graph (multiply-add = 2 FLOPs) at the
cell's resolution and proposal count.</li>
<li><b>Parameters</b>: trainable and total.</li>
<li><b>Accuracy</b>: COCO mAP@[.5:.95], mAP@.5, @.75, small / medium / large, AR@100 via
pycocotools on the evaluation split.</li>
<li>A failed cell is a row with its error; a finished sweep resumes and runs only missing cells.</li>
</ul>"""

SCRIPT = """
function sortTable(th) {
  const table = th.closest('table');
  const idx = Array.from(th.parentNode.children).indexOf(th);
  const body = table.tBodies[0];
  const asc = th.dataset.order !== 'asc';
  Array.from(th.parentNode.children).forEach(h => { h.dataset.order = ''; h.classList.remove('asc', 'desc'); });
  th.dataset.order = asc ? 'asc' : 'desc';
  th.classList.add(asc ? 'asc' : 'desc');
  const rows = Array.from(body.rows);
  const key = r => { const t = r.cells[idx].dataset.v ?? r.cells[idx].textContent;
                     const n = parseFloat(t); return isNaN(n) ? t : n; };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (typeof x === 'number' && typeof y === 'number') return asc ? x - y : y - x;
    return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x)); });
  rows.forEach(r => body.appendChild(r));
}
document.querySelectorAll('th').forEach(th => th.addEventListener('click', () => sortTable(th)));
"""

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
th { background: #eef; cursor: pointer; user-select: none; }
th.asc::after { content: ' \\25B2'; } th.desc::after { content: ' \\25BC'; }
tr.frontier td { background: #f3fff0; font-weight: 600; }
.plots img { max-width: 100%; border: 1px solid #ddd; margin: 8px 0; }
.env td { text-align: left; }
.findings td, .findings th { text-align: left; max-width: 40em; }
td.verdict { font-weight: 600; white-space: nowrap; }
td.reproduced { background: #e9f8e4; } td.not-reproduced { background: #fde8e6; }
td.inconclusive, td.not-measured { background: #f4f4f4; }
"""


def _img(path):
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    name = os.path.basename(path)
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


def _sort_value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _findings_html(findings):
    if not findings:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(f.claim)}</td><td>{html.escape(f.threshold)}</td>"
        f"<td>{html.escape(f.measured)}</td>"
        f'<td class="verdict {html.escape(f.verdict.replace(" ", "-"))}">'
        f"{html.escape(f.verdict)}</td></tr>"
        for f in findings
    )
    return (
        "<h2>The study's findings on these results</h2>"
        '<table class="findings"><thead><tr><th>finding</th><th>threshold</th><th>measured</th>'
        f"<th>verdict</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render(df, plot_paths, env=None, title="detbench sweep", summary="", findings=()):
    ok = ok_rows(df)
    ok = ok.sort_values(time_column(ok)[0])
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in MD_COLUMNS)
    rows = []
    for _, r in ok.iterrows():
        cls = ' class="frontier"' if r["frontier"] else ""
        cls += " " + report_budget.row_attributes(r.to_dict())
        cells = "".join(
            f'<td data-v="{html.escape(_sort_value(r[c]))}">{html.escape(format_cell(r[c], c, r))}</td>'
            for c, _ in MD_COLUMNS
        )
        rows.append(f"<tr{cls}>{cells}</tr>")
    failed = df[~df.index.isin(ok.index)]
    failed_html = ""
    if len(failed):
        items = "".join(
            f"<li>{html.escape(str(r['label']))}: {html.escape(str(r['error']))}</li>"
            for _, r in failed.iterrows()
        )
        failed_html = f"<h2>Failed cells</h2><ul>{items}</ul>"
    env_html = ""
    if env:
        env_rows = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in env.items()
        )
        env_html = f'<h2>Environment</h2><table class="env">{env_rows}</table>'
    plots = "".join(_img(p) for p in plot_paths if os.path.exists(p))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}{report_budget.STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p id="measured-on">{html.escape(measured_on(df))}</p>
<p>{html.escape(summary)}</p>
{env_html}
<h2>Protocol</h2>{PROTOCOL}
<h2>Results</h2>
<p>Click a column header to sort. Highlighted rows are on the speed/accuracy frontier.</p>
<table id="results"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>
{report_budget.section(ok)}
{failed_html}
{_findings_html(findings)}
<h2>Plots</h2><div class="plots">{plots}</div>
<script>{SCRIPT}{report_budget.SCRIPT}</script>
</body></html>"""


def write_report(
    df, plot_paths, out_dir, env=None, title="detbench sweep", summary="", findings=()
):
    path = os.path.join(out_dir, "report.html")
    atomic_write(
        path, render(df, plot_paths, env=env, title=title, summary=summary, findings=findings)
    )
    return path
