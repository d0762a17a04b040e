"""The ranking's tables (terminal, report.md, report.html) from one column list: sequence parallelism shown,
headroom measured from what a plan needs (the fit criterion) to the fit limit, and the nearest rejected plan's
need with enough digits to exceed it."""

import re

import pytest

import planner
from planner.report.columns import ranking_columns
from planner.report.html import render_solve_html
from planner.report.solve import render_markdown, render_terminal, rows


@pytest.fixture(scope="module")
def solved():
    sol = planner.solve("13b", "16xA100", top=5)
    return sol, rows(sol.result, sol.estimates)


def _terminal_table(text: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#   GPUs"))
    return [line.split() for line in lines[start : start + 7] if not line.startswith("─")]


def test_terminal_shows_sequence_parallelism_and_headroom_to_the_fit_limit(solved):
    sol, table = solved
    text = render_terminal(sol.result, table, [])
    header, *body = _terminal_table(text)
    assert header[:9] == ["#", "GPUs", "nodes", "dp", "tp", "pp", "cp", "SP", "engine"]
    assert "SP = sequence parallelism; needs = what a GPU must hold to run" in text
    assert "headroom = fit limit - needs, GiB" in text
    for cells, est in zip(body, sol.plans[:5], strict=True):
        assert cells[7] == ("yes" if est.plan.sequence_parallel else "-")
        needs, headroom = float(cells[header.index("needs")]), float(cells[header.index("needs") + 1])
        assert needs == round(est.memory.required_gib, 2)
        assert headroom == round(sol.result.usable_gib - est.memory.required_gib, 2)
        # a plan listed as fitting never shows a negative margin (it did when headroom was taken from the
        # nvidia-smi peak, which includes cache the allocator releases at the cap)
        assert headroom >= 0
    assert (sol.plans[0].plan.tp, sol.plans[0].plan.sequence_parallel) == (4, True)


def test_nearest_rejected_plan_shows_a_peak_over_the_limit(solved):
    sol, table = solved
    text = render_terminal(sol.result, table, [])
    line = next(line for line in text.splitlines() if "smallest excess" in line)
    excess = float(re.search(r"smallest excess ([0-9.]+) GiB", line).group(1))
    peak = float(re.search(r"\(needs ([0-9.]+) GiB\)$", line).group(1))
    assert peak > sol.result.usable_gib  # 76.04 > 76.0, where one decimal printed 76.0
    assert peak == pytest.approx(sol.result.usable_gib + excess, abs=0.01)


def test_every_table_takes_its_columns_from_one_list(solved):
    sol, table = solved
    columns = ranking_columns(shows_method=False)
    header = _terminal_table(render_terminal(sol.result, table, []))[0]
    assert " ".join(header) == " ".join(c.header for c in columns)
    markdown = render_markdown(sol.result, table, sol.estimates)
    md_header = next(line for line in markdown.splitlines() if line.startswith("| rank |"))
    assert md_header == "| " + " | ".join(["rank", "pareto", *(c.field for c in columns[1:])]) + " |"
    page = render_solve_html(sol.result, table, sol.estimates)
    html_header = re.findall(r"<th(?: class=\"t\")? title=\"([a-z_]+)\">", page)
    assert html_header == [c.field for c in columns]
