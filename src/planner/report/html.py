"""report.html: one self-contained page per solve (and per estimate) that people read with their eyes.

Charts are Vega-Lite specifications, written here as plain JSON from the report's rows, and drawn in the browser
by Vega; the Vega, Vega-Lite and vega-embed JavaScript is inlined from vl-convert's bundle (planner.report.vega),
so the page needs no network. Every table and list is plain HTML (readable without JavaScript); only the charts
and the column sorting need it. Same input -> the same bytes: specs are serialised with sorted keys and carry no
generated names.
"""

import html
import json

from planner import __version__
from planner.estimate import Estimate
from planner.memory import TERMS
from planner.report.columns import HEADROOM_NOTE, ranking_columns
from planner.report.estimate import TERM_LABELS
from planner.report.vega import VEGA_LITE_SCHEMA, vega_bundle

TABLE_ROWS = 250
"""Ranks listed in the page's table: laying out all of a large search's rows (1,850 x 22 cells for 13b on
16xA100) took 1.4 s of the page's 2.6 s in headless Chromium; every plan stays in plans.csv and the chart."""
TOP_MEMORY_PLANS = 5
"""Plans drawn in the memory chart (the first ranks)."""
DIMENSIONS = ("engine", "zero", "micro_batch", "checkpointing", "tp", "pp", "cp", "offload", "precision", "method")
"""Plan fields whose best throughput per value the 'by dimension' chart shows (those with more than one value)."""

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.82em}th,td{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f3f3f3;cursor:pointer;position:sticky;top:0;white-space:nowrap}.t{text-align:left}
.scroll{max-height:520px;overflow:auto}.chart{margin:.5em 0}
"""

_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], up = th.dataset.dir !== "asc";
    th.dataset.dir = up ? "asc" : "desc";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent;
      var y = b.cells[col].dataset.v || b.cells[col].textContent, nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return up ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _spec(chart: dict) -> str:
    return json.dumps({"$schema": VEGA_LITE_SCHEMA, **chart}, sort_keys=True, separators=(",", ":")).replace(
        "</", "<\\/"
    )


def _field(name: str, kind: str, **options) -> dict:
    """A Vega-Lite field definition: `kind` is `nominal`, `ordinal` or `quantitative`."""
    return {"field": name, "type": kind, **options}


MEMORY_NOTE = (
    "<p>Bars: every term up to the nvidia-smi peak; black tick: what the plan needs to run (the fit criterion), "
    "below the peak by the cache the allocator hands back when memory runs out.</p>"
)


def memory_chart(estimates: list[Estimate], capacity_gib: float, limit_gib: float) -> dict:
    """Stacked memory terms per GPU of the top plans (up to the nvidia-smi peak), a black tick at what each plan
    needs to run (the fit criterion: the stack less the cache the allocator releases at the cap), and the card's
    capacity and the fit limit as rules."""
    values = []
    for rank, est in enumerate(estimates, start=1):
        for order, term in enumerate(TERMS):
            gib = est.memory.breakdown_gib[term]
            if gib:
                values.append({"plan": f"#{rank}", "term": TERM_LABELS[term], "order": order, "gib": round(gib, 3)})
    bars = {
        "data": {"values": values},
        "mark": {"type": "bar"},
        "encoding": {
            "x": _field("plan", "nominal", title="plan (rank)", sort=None, axis={"labelAngle": 0}),
            "y": _field("gib", "quantitative", title="GiB per GPU", stack="zero"),
            "color": _field(
                "term",
                "nominal",
                title="memory term",
                legend={"labelLimit": 320},
                sort=[TERM_LABELS[t] for t in TERMS],
                scale={"scheme": "tableau20"},  # one colour per term: there are more than 10
            ),
            "order": _field("order", "quantitative"),
            "tooltip": [_field("plan", "nominal"), _field("term", "nominal"), _field("gib", "quantitative")],
        },
    }
    lines = [
        {"what": f"capacity {capacity_gib:.1f} GiB", "gib": capacity_gib},
        {"what": f"fit limit {limit_gib:.1f} GiB", "gib": round(limit_gib, 3)},
    ]
    rules = {
        "data": {"values": lines},
        "mark": {"type": "rule", "strokeDash": [6, 3], "strokeWidth": 2},
        "encoding": {
            "y": _field("gib", "quantitative"),
            "stroke": _field("what", "nominal", title="limits", scale={"range": ["#444", "#d62728"]}),
        },
    }
    needs = {
        "data": {
            "values": [
                {"plan": f"#{rank}", "needs to run (GiB)": round(est.memory.required_gib, 3)}
                for rank, est in enumerate(estimates, start=1)
            ]
        },
        "mark": {"type": "tick", "color": "#000", "thickness": 3},
        "encoding": {
            "x": _field("plan", "nominal", sort=None),
            "y": _field("needs to run (GiB)", "quantitative"),
            "tooltip": [_field("plan", "nominal"), _field("needs to run (GiB)", "quantitative")],
        },
    }
    width = min(420, 60 + 72 * len(estimates))  # a bar per plan, not one stretched bar for a single estimate
    layers = [bars, needs, rules]
    return {"layer": layers, "resolve": {"scale": {"color": "independent"}}, "width": width, "height": 320}


PARETO = "datum.front === 'Pareto front'"


def speed_cost_chart(table_rows: list[dict]) -> dict | None:
    """Throughput against $ per million tokens for every plan that fits, coloured by GPU count (at a fixed count
    cost per token is inversely proportional to throughput, so each count draws one curve); the Pareto front's
    plans drawn larger, outlined and on top."""
    values = [
        {
            "rank": r["rank"],
            "gpus": r["gpus"],
            "tokens_per_s": r["tokens_per_s"],
            "usd": r["usd_per_million_tokens"],
            "front": "Pareto front" if r["pareto"] else "other plans",
        }
        for r in table_rows
        if r["usd_per_million_tokens"] is not None
    ]
    if not values:
        return None
    front = {"domain": ["Pareto front", "other plans"]}
    return {
        "data": {"values": values},
        "mark": {"type": "point", "filled": True, "opacity": 0.8},
        "encoding": {
            "x": _field("usd", "quantitative", title="$ per million tokens", scale={"zero": False}),
            "y": _field("tokens_per_s", "quantitative", title="tokens/s (whole job)", scale={"zero": False}),
            "color": _field("gpus", "ordinal", title="GPUs", scale={"scheme": "viridis"}),
            "shape": _field("front", "nominal", title=None, scale={**front, "range": ["diamond", "circle"]}),
            "size": {"condition": {"test": PARETO, "value": 150}, "value": 30},
            "stroke": {"condition": {"test": PARETO, "value": "#000"}, "value": None},
            "order": _field("front", "nominal", sort="descending"),
            "tooltip": [
                _field("rank", "quantitative"),
                _field("gpus", "quantitative", title="GPUs"),
                _field("tokens_per_s", "quantitative", title="tokens/s", format=",.0f"),
                _field("usd", "quantitative", title="$ per million tokens"),
                _field("front", "nominal", title="Pareto front"),
            ],
        },
        "width": 560,
        "height": 340,
    }


def dimension_values(table_rows: list[dict]) -> list[dict]:
    """Best tokens/s per value of each searched dimension that took more than one value among the plans."""
    values = []
    for dim in DIMENSIONS:
        best: dict[str, float] = {}
        for row in table_rows:
            key = str(row.get(dim))
            best[key] = max(best.get(key, 0.0), row["tokens_per_s"])
        if len(best) > 1:
            values += [{"dimension": dim, "value": k, "tokens_per_s": v} for k, v in best.items()]
    return values


def dimension_chart(table_rows: list[dict]) -> dict | None:
    """Best tokens/s per value of each dimension: a grid of small bar charts on one shared axis, the figure written
    at each bar's end (the best values differ by a few percent, too little to read off bar lengths)."""
    values = dimension_values(table_rows)
    if not values:
        return None
    y = _field("value", "nominal", title=None, sort=None)
    x = _field("tokens_per_s", "quantitative", title=None, axis={"format": "~s"})
    label = _field("tokens_per_s", "quantitative", format=",.0f")
    charts = []
    for dim in DIMENSIONS:
        rows = [v for v in values if v["dimension"] == dim]
        if not rows:
            continue
        tooltip = [_field("value", "nominal", title=dim), label]
        bars = {"mark": {"type": "bar"}, "encoding": {"x": x, "y": y, "tooltip": tooltip}}
        text = {
            "mark": {"type": "text", "align": "left", "dx": 3, "fontSize": 10},
            "encoding": {"x": x, "y": y, "text": label},
        }
        charts.append(
            {
                "title": {"text": dim, "anchor": "start", "fontSize": 12},
                "data": {"values": rows},
                "layer": [bars, text],
                "width": 200,
                "height": {"step": 16},
            }
        )
    return {"concat": charts, "columns": 3, "spacing": {"row": 16, "column": 70}, "resolve": {"scale": {"x": "shared"}}}


_LEFT = ' class="t"'


def _cell(column, row: dict) -> str:
    value = row.get(column.field)
    sort_key = "" if column.left or value is None else f' data-v="{html.escape(str(value))}"'
    return f"<td{_LEFT * column.left}{sort_key}>{html.escape(column.text(row))}</td>"


def _table(table_rows: list[dict], shows_method: bool) -> str:
    columns = ranking_columns(shows_method, any("ep" in row for row in table_rows[:1]))  # MoE rows carry ep
    head = "".join(f'<th{_LEFT * c.left} title="{html.escape(c.field)}">{html.escape(c.header)}</th>' for c in columns)
    body = "\n".join("<tr>" + "".join(_cell(c, r) for c in columns) + "</tr>" for r in table_rows)
    table = f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _page(title: str, sections: list[str], charts: dict[str, dict]) -> str:
    embeds = "\n".join(
        f'vegaEmbed("#{name}", {_spec(chart)}, {{"renderer": "svg", "actions": false}})'
        ".catch(function (e) { console.error(e); });"
        for name, chart in charts.items()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1><p>planner {html.escape(__version__)}</p>\n"
        + "\n".join(sections)
        + f"\n<script>{vega_bundle()}</script>\n<script>{_SORT_JS}\n{embeds}\n</script>\n</body></html>\n"
    )


def _list(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def render_solve_html(result, table_rows: list[dict], estimates: dict[int, Estimate]) -> str:
    """The solve report page: assumptions, charts, the sortable ranking and the rejections."""
    from planner.report.solve import assumptions, describe_candidate, rejected_lines

    top = [estimates[int(i)] for i in result.feasible[:TOP_MEMORY_PLANS]]
    charts: dict[str, dict] = {}
    sections = ["<h2>Assumptions</h2>" + _list(assumptions(result))]
    if top:
        charts["memory"] = memory_chart(top, result.budget.gpu.memory_gib, result.usable_gib)
        sections.append(
            f'<h2>Memory per GPU of the top {len(top)} plans</h2>{MEMORY_NOTE}<div id="memory" class="chart"></div>'
        )
    speed = speed_cost_chart(table_rows)
    if speed is not None:
        charts["speed_cost"] = speed
        sections.append(
            f'<h2>Throughput vs cost, {len(table_rows):,} plans that fit</h2><div id="speed_cost" class="chart"></div>'
        )
    dims = dimension_chart(table_rows)
    if dims is not None:
        charts["dimensions"] = dims
        sections.append(
            "<h2>Best throughput by each dimension (tokens/s of the whole job, the best plan with that value)</h2>"
            '<div id="dimensions" class="chart"></div>'
        )
    shown = table_rows[:TABLE_ROWS]
    more = "" if len(shown) == len(table_rows) else f"top {len(shown):,} of {len(table_rows):,} (all in plans.csv); "
    sections.append(
        f"<h2>Ranked plans ({more}click a column to sort)</h2>"
        f"<p>* = on the throughput-vs-cost Pareto front; SP = sequence parallelism; {HEADROOM_NOTE}; hover a "
        "header for its plans.csv column</p>" + _table(shown, result.space.method != ("full",))
    )
    rejected = rejected_lines(result, lambda i: describe_candidate(result, i))
    sections.append("<h2>Why the other combinations were rejected</h2>" + _list(rejected))
    return _page(f"Plan search: {result.model.name} on {result.budget.text}", sections, charts)


def render_estimate_html(est: Estimate) -> str:
    """`planner estimate --format html`: one plan's memory against the card, and its numbers."""
    from planner.report.estimate import render_table

    charts = {"memory": memory_chart([est], est.gpu.memory_gib, est.memory.usable_gib)}
    sections = [
        f'<h2>Memory per GPU</h2>{MEMORY_NOTE}<div id="memory" class="chart"></div>',
        "<h2>Estimate</h2><pre>" + html.escape(render_table(est)) + "</pre>",
    ]
    return _page(f"Plan estimate: {est.model.name} on {est.plan.gpus} x {est.gpu.name}", sections, charts)
