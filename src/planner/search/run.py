"""Glue between the `solve` command and the search: run it, render, write the reports."""

import json
from pathlib import Path

from planner.api import solve_request
from planner.errors import PlannerError
from planner.files import check_output_folder, write_folder
from planner.progress import phase
from planner.report.solve import render_all, render_terminal, report_name
from planner.search.details import plan_estimates
from planner.search.solve import SolveRequest, require_feasible

DEFAULT_REPORTS = Path("reports")


def run_solve(
    request: SolveRequest, out: Path | None, fmt: str, emit: str | None = None
) -> tuple[str, PlannerError | None]:
    """(text for stdout, error to raise after printing it or None). `emit` names launch targets
    (`deepspeed,accelerate,...` or `all`) whose configs for the top plan go into the report's `launch-1/`."""
    from planner.launch.bundle import parse_targets
    from planner.launch.run import emitted_files, summary_lines

    if emit is not None:
        parse_targets(emit)  # a typo fails before the search runs
    check_output_folder(out if out is not None else DEFAULT_REPORTS / "report", "--out")  # and an unwritable folder
    from planner.search.choice import is_multi

    if is_multi(request):
        return run_choice(request, out, fmt, emit)
    solution, advice = solve_request(request)
    result, estimates = solution.result, solution.estimates
    if not len(result.feasible):
        text = render_terminal(result, [], advice)
        try:
            require_feasible(result, advice)
        except PlannerError as error:
            return (json.dumps({"feasible": 0, "advice": advice}, indent=1) + "\n" if fmt == "json" else text), error
    with phase("writing the reports"):
        table_rows, files = render_all(result, estimates)
    launch = None
    if emit is not None:
        launch_files, launch = emitted_files(result, estimates, emit)
        files.update(launch_files)
    folder = write_folder(out or DEFAULT_REPORTS / report_name(result), files)
    if fmt == "json":
        return files["report.json"], None
    text = render_terminal(result, table_rows, [])
    text += f"Reports: {folder}/report.md, report.json, plans.csv, report.html\n"
    if launch is not None:
        text += "\n".join(summary_lines(launch, folder / "launch-1")) + "\n"
    return text, None


def run_choice(request: SolveRequest, out: Path | None, fmt: str, emit: str | None) -> tuple[str, PlannerError | None]:
    """`solve` over several GPU types: the best plan per type and the Pareto front across them; `--emit`
    writes the launch configs of the overall winner."""
    from planner.errors import NoFeasiblePlanError
    from planner.launch.run import emitted_files, summary_lines
    from planner.report import choice as report
    from planner.search.choice import choose_hardware

    choice = choose_hardware(request)
    best, front, files = report.render_all(choice)
    text = report.render_terminal(choice, best, front)
    if choice.winner is None:
        error = NoFeasiblePlanError(
            "no plan fits any of the GPU options", "allow more GPUs (--max-gpus) or other types"
        )
        return (files["report.json"] if fmt == "json" else text), error
    launch = None
    if emit is not None:
        winner = choice.winner
        estimates = plan_estimates(winner.result, [winner.best])
        launch_files, launch = emitted_files(winner.result, estimates, emit)
        files.update(launch_files)
    folder = write_folder(out or DEFAULT_REPORTS / report.report_name(choice), files)
    if fmt == "json":
        return files["report.json"], None
    text += f"Reports: {folder}/report.md, report.json, plans.csv\n"
    if launch is not None:
        text += "\n".join(summary_lines(launch, folder / "launch-1")) + "\n"
    return text, None
