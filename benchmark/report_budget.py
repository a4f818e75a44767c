"""report.html's budget control: latency / memory inputs, the best cell within them
highlighted in the results table and on an inline SVG of the frontier.

The page's script applies the rule of ``benchmark.pick`` (detbench.pick): among
the cells with an accuracy that are not flagged as not learnt, those within the
latency (at the chosen percentile) and memory budgets; the highest mAP wins,
ties going to the faster, then the smaller, then the label.
"""

import html
import math

from detbench.benchmark import latency
from detbench.benchmark.pick import PERCENTILES, _learnt, _number

W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 360, 60, 20, 20, 45


def row_attributes(r):
    """data-* attributes of a table row, what the budget script reads."""
    # the drift-corrected percentiles; rows timed without the reference: the raw ones
    values = {
        f"p{p}": _number(r.get(col))
        if _number(r.get(col)) is not None
        else _number(r.get(latency.RAW_PERCENTILES[p]))
        for p, col in PERCENTILES.items()
    }
    values.update(mem=_number(r.get("peak_rss_mb")), map=_number(r.get("mAP")))
    out = [
        f'data-cell="{html.escape(str(r.get("cell_id")))}"',
        f'data-label="{html.escape(str(r.get("label")))}"',
        f'data-eligible="{int(values["map"] is not None and _learnt(r))}"',
    ]
    out += [f'data-{k}="{"" if v is None else repr(float(v))}"' for k, v in values.items()]
    return " ".join(out)


def frontier_svg(df):
    """Every cell with an accuracy as a circle (x: the drift-corrected p50 latency,
    log scale; y: mAP), the frontier as a step line; empty when no cell has an accuracy."""
    col = latency.time_column(df[df["latency_ms"].notna()])[0] if "latency_ms" in df else ""
    pts = [
        (
            r["cell_id"],
            _number(r[col]),
            _number(r["mAP"]),
            bool(r["frontier"]),
            str(r["label"]),
        )
        for _, r in df.iterrows()
        if _number(r.get(col))
        and _number(r.get("mAP")) is not None
        and not str(r.get("error") or "").strip()
    ]
    if not pts:
        return ""
    lo, hi = math.log(min(p[1] for p in pts)), math.log(max(p[1] for p in pts))
    a_lo, a_hi = min(p[2] for p in pts), max(p[2] for p in pts)
    span, a_span = (hi - lo) or 1.0, (a_hi - a_lo) or 1.0

    def x(ms):
        return LEFT + (math.log(ms) - lo) / span * (W - LEFT - RIGHT)

    def y(ap):
        return H - BOTTOM - (ap - a_lo) / a_span * (H - TOP - BOTTOM)

    kind = ", drift-corrected" if col == latency.FIGURE else ""
    front = sorted((p for p in pts if p[3]), key=lambda p: p[1])
    steps = []
    for i, p in enumerate(front):
        steps.append(f"{x(p[1]):.1f},{y(p[2]):.1f}")
        if i + 1 < len(front):
            steps.append(f"{x(front[i + 1][1]):.1f},{y(p[2]):.1f}")
    circles = "".join(
        f'<circle class="cell{" on-frontier" if f else ""}" data-cell="{html.escape(cid)}" '
        f'cx="{x(ms):.1f}" cy="{y(ap):.1f}" r="5"><title>{html.escape(label)}: '
        f"{ms:.1f} ms, mAP {ap:.3f}</title></circle>"
        for cid, ms, ap, f, label in pts
    )
    ticks = "".join(
        f'<text x="{x(ms):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{ms:.0f}</text>'
        for ms in sorted({min(p[1] for p in pts), max(p[1] for p in pts)})
    )
    return (
        f'<svg id="frontier-svg" xmlns="http://www.w3.org/2000/svg" width="{W}" '
        f'height="{H}" viewBox="0 0 {W} {H}" data-lo="{lo!r}" data-span="{span!r}" '
        f'data-left="{LEFT}" data-width="{W - LEFT - RIGHT}">'
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
        f'fill="#fafafa" stroke="#ccc"/>'
        f'<polyline points="{" ".join(steps)}" fill="none" stroke="#888" '
        f'stroke-dasharray="5,3"/>{circles}'
        f'<line id="budget-line" x1="0" x2="0" y1="{TOP}" y2="{H - BOTTOM}" '
        f'stroke="#c00" visibility="hidden"/>{ticks}'
        f'<text x="{LEFT + (W - LEFT - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">'
        f"latency p50 (ms, log scale{kind})</text>"
        f'<text x="14" y="{TOP + (H - TOP - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + (H - TOP - BOTTOM) / 2})">mAP '
        f"({a_lo:.3f} - {a_hi:.3f})</text></svg>"
    )


CONTROL = """
<h2>Budget</h2>
<p id="budget-control">
<label>max latency (ms) <input id="budget-latency" type="number" min="0" step="any"></label>
<label>at <select id="budget-percentile">
<option value="p50">p50</option><option value="p90">p90</option><option value="p99">p99</option>
</select></label>
<label>max memory (MiB) <input id="budget-memory" type="number" min="0" step="any"></label>
<span id="budget-result">enter a budget: the most accurate cell within it is highlighted
in the table and on the frontier below.</span>
</p>
"""

SCRIPT = """
function budgetPick() {
  const lat = parseFloat(document.getElementById('budget-latency').value);
  const mem = parseFloat(document.getElementById('budget-memory').value);
  const pc = document.getElementById('budget-percentile').value;
  const out = document.getElementById('budget-result');
  document.querySelectorAll('.budget-best').forEach(e => e.classList.remove('budget-best'));
  const line = document.getElementById('budget-line');
  if (isNaN(lat)) { out.textContent = 'enter a latency budget'; out.dataset.cell = '';
                    if (line) line.setAttribute('visibility', 'hidden'); return; }
  const svg = document.getElementById('frontier-svg');
  if (line && lat > 0) {
    const x = parseFloat(svg.dataset.left) + (Math.log(lat) - parseFloat(svg.dataset.lo))
              / parseFloat(svg.dataset.span) * parseFloat(svg.dataset.width);
    line.setAttribute('x1', x); line.setAttribute('x2', x);
    line.setAttribute('visibility', pc === 'p50' ? 'visible' : 'hidden');
  }
  const num = v => (v === '' || v === undefined) ? NaN : parseFloat(v);
  const rows = Array.from(document.querySelectorAll('#results tbody tr')).filter(r => {
    const d = r.dataset;
    if (d.eligible !== '1' || isNaN(num(d[pc])) || num(d[pc]) > lat) return false;
    return isNaN(mem) || (!isNaN(num(d.mem)) && num(d.mem) <= mem);
  });
  rows.sort((a, b) => {
    const p = a.dataset, q = b.dataset;
    return (num(q.map) - num(p.map)) || (num(p[pc]) - num(q[pc]))
      || ((isNaN(num(p.mem)) ? Infinity : num(p.mem)) - (isNaN(num(q.mem)) ? Infinity : num(q.mem)))
      || p.label.localeCompare(q.label);
  });
  if (!rows.length) {
    out.textContent = 'no cell within ' + lat + ' ms at ' + pc
      + (isNaN(mem) ? '' : ' and ' + mem + ' MiB');
    out.dataset.cell = '';
    return;
  }
  const best = rows[0];
  best.classList.add('budget-best');
  document.querySelectorAll('#frontier-svg circle[data-cell="' + best.dataset.cell + '"]')
    .forEach(c => c.classList.add('budget-best'));
  out.textContent = 'best within the budget: ' + best.dataset.label + ' (mAP '
    + num(best.dataset.map).toFixed(3) + ', ' + pc + ' ' + num(best.dataset[pc]).toFixed(1) + ' ms)';
  out.dataset.cell = best.dataset.cell;
}
['budget-latency', 'budget-memory', 'budget-percentile'].forEach(id => {
  const e = document.getElementById(id);
  e.addEventListener('input', budgetPick); e.addEventListener('change', budgetPick);
});
"""

STYLE = """
tr.budget-best td { background: #ffe9a8 !important; outline: 2px solid #d08a00; }
#frontier-svg circle { fill: #9bb7d4; stroke: #333; stroke-width: 0.6; }
#frontier-svg circle.on-frontier { fill: #5a8f3c; }
#frontier-svg circle.budget-best { fill: #ffb000; stroke: #c00; stroke-width: 3; r: 9; }
#frontier-svg text { font-size: 11px; fill: #333; }
#budget-control label { margin-right: 1em; }
"""


def section(df):
    """The control and the frontier SVG (HTML)."""
    return CONTROL + frontier_svg(df)
