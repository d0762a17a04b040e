"""Glue between the `solve` command and the search: run it, render, write the reports."""

import json
from pathlib import Path

from planner.errors import PlannerError
from planner.report.solve import render_all, render_terminal, report_name, write_reports
from planner.search.advice import nearest_miss_advice
from planner.search.details import plan_estimates
from planner.search.solve import SolveRequest, require_feasible, solve

DEFAULT_REPORTS = Path("reports")


def run_solve(request: SolveRequest, out: Path | None, fmt: str) -> tuple[str, PlannerError | None]:
    """(text for stdout, error to raise after printing it or None)."""
    result = solve(request)
    if not len(result.feasible):
        advice = nearest_miss_advice(result)
        text = render_terminal(result, [], advice)
        try:
            require_feasible(result, advice)
        except PlannerError as error:
            return (json.dumps({"feasible": 0, "advice": advice}, indent=1) + "\n" if fmt == "json" else text), error
    estimates = plan_estimates(result, result.feasible)
    table_rows, files = render_all(result, estimates)
    folder = write_reports(out or DEFAULT_REPORTS / report_name(result), files)
    if fmt == "json":
        return files["report.json"], None
    text = render_terminal(result, table_rows, [])
    text += f"Reports: {folder}/report.md, report.json, plans.csv\n"
    return text, None
