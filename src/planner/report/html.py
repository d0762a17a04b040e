"""report.html: one self-contained page per solve (and per estimate) that people read with their eyes.

Charts are Vega-Lite specifications built with altair and drawn in the browser by Vega; the Vega, Vega-Lite
and vega-embed JavaScript comes inlined from vl-convert's bundle, so the page needs no network. Every table
and list is plain HTML (readable without JavaScript); only the charts and the column sorting need it.
Same input -> the same bytes: specs are serialised with sorted keys and carry no generated names.
"""

import html
import json
from functools import cache

import altair as alt

from planner import __version__
from planner.estimate import Estimate
from planner.memory import TERMS
from planner.report.estimate import TERM_LABELS

TABLE_ROWS = 250
"""Ranks listed in the page's table: laying out all of a large search's rows (1,850 x 22 cells for 13b on
16xA100) took 1.4 s of the page's 2.6 s in headless Chromium; every plan stays in plans.csv and the chart."""
TOP_MEMORY_PLANS = 5
"""Plans drawn in the memory chart (the first ranks)."""
DIMENSIONS = ("engine", "zero", "micro_batch", "checkpointing", "tp", "pp", "cp", "offload", "precision", "method")
"""Plan fields whose best throughput per value the 'by dimension' chart shows (those with more than one value)."""
TABLE_COLUMNS = (
    "rank",
    "pareto",
    "gpus",
    "nodes",
    "dp",
    "tp",
    "pp",
    "cp",
    "sequence_parallel",
    "engine",
    "zero",
    "micro_batch",
    "grad_accum",
    "checkpointing",
    "precision",
    "offload",
    "method",
    "peak_gib",
    "headroom_gib",
    "tokens_per_s",
    "mfu",
    "usd_per_million_tokens",
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.82em}th,td{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f3f3f3;cursor:pointer;position:sticky;top:0}td.t{text-align:left}
.scroll{max-height:520px;overflow:auto}.chart{margin:.5em 0}
"""

_SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], up = th.dataset.dir !== "asc";
    th.dataset.dir = up ? "asc" : "desc";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].textContent, y = b.cells[col].textContent, nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return up ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


@cache
def _vega_bundle() -> str:
    """Vega, Vega-Lite (the version altair writes) and vega-embed as one script defining window.vegaEmbed."""
    import vl_convert

    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    return vl_convert.javascript_bundle(vl_version=f"{major}.{minor}").replace("</script", "<\\/script")


def _spec(chart: alt.TopLevelMixin) -> str:
    return json.dumps(chart.to_dict(), sort_keys=True, separators=(",", ":")).replace("</", "<\\/")


def memory_chart(estimates: list[Estimate], capacity_gib: float, limit_gib: float) -> alt.LayerChart:
    """Stacked memory terms per GPU of the top plans, with the card's capacity and the fit limit as rules."""
    values = []
    for rank, est in enumerate(estimates, start=1):
        for order, term in enumerate(TERMS):
            gib = est.memory.breakdown_gib[term]
            if gib:
                values.append({"plan": f"#{rank}", "term": TERM_LABELS[term], "order": order, "gib": round(gib, 3)})
    bars = (
        alt.Chart(alt.Data(values=values))
        .mark_bar()
        .encode(
            x=alt.X("plan:N", title="plan (rank)", sort=None, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("gib:Q", title="GiB per GPU", stack="zero"),
            color=alt.Color(
                "term:N",
                title="memory term",
                legend=alt.Legend(labelLimit=320),
                sort=[TERM_LABELS[t] for t in TERMS],
                scale=alt.Scale(scheme="tableau20"),  # one colour per term: there are more than 10
            ),
            order=alt.Order("order:Q"),
            tooltip=["plan:N", "term:N", "gib:Q"],
        )
    )
    lines = [{"what": f"capacity {capacity_gib:.1f} GiB", "gib": capacity_gib}]
    lines.append({"what": f"fit limit {limit_gib:.1f} GiB", "gib": round(limit_gib, 3)})
    rules = (
        alt.Chart(alt.Data(values=lines))
        .mark_rule(strokeDash=[6, 3], strokeWidth=2)
        .encode(y="gib:Q", stroke=alt.Stroke("what:N", title="limits", scale=alt.Scale(range=["#444", "#d62728"])))
    )
    width = min(420, 60 + 72 * len(estimates))  # a bar per plan, not one stretched bar for a single estimate
    return alt.layer(bars, rules).resolve_scale(color="independent").properties(width=width, height=320)


def speed_cost_chart(table_rows: list[dict]) -> alt.Chart | None:
    """Throughput against $ per million tokens for every plan that fits; the Pareto front drawn on top."""
    values = [
        {
            "rank": r["rank"],
            "tokens_per_s": r["tokens_per_s"],
            "usd": r["usd_per_million_tokens"],
            "front": "Pareto front" if r["pareto"] else "other plans",
        }
        for r in table_rows
        if r["usd_per_million_tokens"] is not None
    ]
    if not values:
        return None
    return (
        alt.Chart(alt.Data(values=values))
        .mark_point(filled=True, size=40)
        .encode(
            x=alt.X("usd:Q", title="$ per million tokens", scale=alt.Scale(zero=False)),
            y=alt.Y("tokens_per_s:Q", title="tokens/s (whole job)", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "front:N",
                title=None,
                scale=alt.Scale(domain=["Pareto front", "other plans"], range=["#d62728", "#9ab"]),
            ),
            order=alt.Order("front:N", sort="descending"),
            tooltip=["rank:Q", "tokens_per_s:Q", "usd:Q"],
        )
        .properties(width=520, height=320)
    )


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


def dimension_chart(table_rows: list[dict]) -> alt.FacetChart | None:
    values = dimension_values(table_rows)
    if not values:
        return None
    return (
        alt.Chart(alt.Data(values=values))
        .mark_bar()
        .encode(
            x=alt.X("tokens_per_s:Q", title="best tokens/s"),
            y=alt.Y("value:N", title=None, sort=None),
            tooltip=["dimension:N", "value:N", "tokens_per_s:Q"],
        )
        .properties(width=300, height=alt.Step(16))
        .facet(row=alt.Row("dimension:N", title=None, sort=list(DIMENSIONS)))
        .resolve_scale(y="independent")
    )


def _cell(value) -> str:
    text = "-" if value is None else str(value)
    klass = ' class="t"' if isinstance(value, str) else ""
    return f"<td{klass}>{html.escape(text)}</td>"


def _table(table_rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in TABLE_COLUMNS)
    body = "\n".join("<tr>" + "".join(_cell(r.get(c)) for c in TABLE_COLUMNS) + "</tr>" for r in table_rows)
    table = f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _page(title: str, sections: list[str], charts: dict[str, alt.TopLevelMixin]) -> str:
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
        + f"\n<script>{_vega_bundle()}</script>\n<script>{_SORT_JS}\n{embeds}\n</script>\n</body></html>\n"
    )


def _list(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def render_solve_html(result, table_rows: list[dict], estimates: dict[int, Estimate]) -> str:
    """The solve report page: assumptions, charts, the sortable ranking and the rejections."""
    from planner.report.solve import assumptions, describe_candidate, rejected_lines

    top = [estimates[int(i)] for i in result.feasible[:TOP_MEMORY_PLANS]]
    charts: dict[str, alt.TopLevelMixin] = {}
    sections = ["<h2>Assumptions</h2>" + _list(assumptions(result))]
    if top:
        charts["memory"] = memory_chart(top, result.budget.gpu.memory_gib, result.usable_gib)
        sections.append(f'<h2>Memory per GPU of the top {len(top)} plans</h2><div id="memory" class="chart"></div>')
    speed = speed_cost_chart(table_rows)
    if speed is not None:
        charts["speed_cost"] = speed
        sections.append(
            f'<h2>Throughput vs cost, {len(table_rows):,} plans that fit</h2><div id="speed_cost" class="chart"></div>'
        )
    dims = dimension_chart(table_rows)
    if dims is not None:
        charts["dimensions"] = dims
        sections.append('<h2>Best throughput by each dimension</h2><div id="dimensions" class="chart"></div>')
    shown = table_rows[:TABLE_ROWS]
    more = "" if len(shown) == len(table_rows) else f"top {len(shown):,} of {len(table_rows):,} (all in plans.csv); "
    sections.append(f"<h2>Ranked plans ({more}click a column to sort)</h2>" + _table(shown))
    rejected = rejected_lines(result, lambda i: describe_candidate(result, i))
    sections.append("<h2>Why the other combinations were rejected</h2>" + _list(rejected))
    return _page(f"Plan search: {result.model.name} on {result.budget.text}", sections, charts)


def render_estimate_html(est: Estimate) -> str:
    """`planner estimate --format html`: one plan's memory against the card, and its numbers."""
    from planner.report.estimate import render_table

    charts = {"memory": memory_chart([est], est.gpu.memory_gib, est.memory.usable_gib)}
    sections = [
        '<h2>Memory per GPU</h2><div id="memory" class="chart"></div>',
        "<h2>Estimate</h2><pre>" + html.escape(render_table(est)) + "</pre>",
    ]
    return _page(f"Plan estimate: {est.model.name} on {est.plan.gpus} x {est.gpu.name}", sections, charts)
