"""Render a hardware choice (planner.search.choice): the terminal tables and the md/json/csv reports.

Every row carries its GPU type. Two lists: each option's best plan by the objective, ranked across
options, and the hours-vs-dollars Pareto front across options, the objective's winner first.
"""

import io
import json
import re

from rich import box
from rich.console import Console
from rich.table import Table

from planner import __version__
from planner.architecture import parameter_text
from planner.report import solve as solve_report
from planner.report.columns import columns_for
from planner.report.solve import _row
from planner.search.details import plan_estimates

FIELDS = (
    "rank",
    "gpu_type",
    "gpus",
    "nodes",
    "dp",
    "tp",
    "pp",
    "cp",
    "engine",
    "zero",
    "micro_batch",
    "grad_accum",
    "checkpointing",
    "precision",
    "offload",
    "required_gib",
    "tokens_per_s",
    "mfu",
    "hours",
    "total_usd",
    "usd_per_million_tokens",
)
"""The row fields of the terminal tables; headers and cells come from planner.report.columns."""


def choice_rows(choice) -> tuple[list[dict], list[dict]]:
    """(best plan per option in ranked order, Pareto-front plans), each a report row with the GPU type,
    the option's budget, whether the speed is extrapolated and where the price comes from."""
    on_front = {(p.option, p.candidate) for p in choice.front}

    def row(rank: int, option_index: int, candidate: int) -> dict:
        option = choice.options[option_index]
        estimate = plan_estimates(option.result, [candidate])[candidate]
        out = _row(rank, (option_index, candidate) in on_front, estimate)
        out["budget"] = option.budget
        out["speed_extrapolated_from"] = option.gpu.speed_extrapolated_from or ""
        out["price_source"] = option.result.price_source
        return out

    best = [row(rank, i, choice.options[i].best) for rank, i in enumerate(choice.ranking, start=1)]
    front = [row(rank, p.option, p.candidate) for rank, p in enumerate(choice.front, start=1)]
    return best, front


def _cell(row: dict, column) -> str:
    """The shared column's text; a speed extrapolated from another GPU family's fit is marked `~`."""
    text = column.text(row)
    return text + "~" if column.field == "tokens_per_s" and row["speed_extrapolated_from"] else text


def header_lines(choice) -> list[str]:
    r = choice.request
    first = next(o.result for o in choice.options if o.result is not None) if _any_result(choice) else None
    lines = []
    if first is not None:
        model = first.model
        alias = f" (alias '{model.resolved_from}')" if model.resolved_from else ""
        lines.append(f"model: {model.name}{alias}, {parameter_text(model.architecture)}")
        lines.append(
            f"batch: sequences of {r.seq_len} tokens, global batch {first.global_batch} sequences "
            f"({first.global_batch * r.seq_len:,} tokens) per optimizer step"
        )
    lines.append(f"options: {', '.join(o.budget for o in choice.options)}; plans may use fewer GPUs")
    lines.append(f"objective: {r.objective}" + (f"; run of {r.tokens:,.0f} tokens" if r.tokens else ""))
    lines.append("prices: each GPU type's on-demand price from the catalog (`planner gpus`; sources in hardware/)")
    lines.append(
        "speed: ~ marks a GPU whose compute efficiency is fitted on another architecture family "
        "(no measured run on its own yet): extrapolated"
    )
    return lines


def _any_result(choice) -> bool:
    return any(o.result is not None for o in choice.options)


def skipped_lines(choice) -> list[str]:
    lines = []
    for option in choice.options:
        if option.note:
            lines.append(f"{option.gpu.name}: searched {option.budget}, {option.note}")
        if option.skipped:
            lines.append(f"{option.gpu.name}: not listed, {option.skipped}")
        elif option.result is not None and not option.priced:
            lines.append(f"{option.gpu.name}: dollars blank, {option.result.price_source}")
        elif option.result is not None and option.gpu.price.converted:
            lines.append(f"{option.gpu.name}: price {option.gpu.price.conversion(cite=False)}")
    return lines + choice.notes


def _table(console: Console, rows: list[dict]) -> None:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    columns = columns_for(FIELDS)
    for column in columns:
        table.add_column(column.header, justify="left" if column.left else "right")
    for row in rows:
        table.add_row(*(_cell(row, column) for column in columns))
    console.print(table)


def _front_title(choice) -> str:
    size = f" for {choice.request.tokens:,.0f} tokens" if choice.request.tokens else " (per token; add --tokens)"
    return f"Pareto front across GPU types, hours vs ${size}; the {choice.request.objective} winner first:"


def render_terminal(choice, best: list[dict], front: list[dict], width: int = 190) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False)
    console.print(f"planner solve: choosing between {len(choice.options)} GPU options")
    for line in header_lines(choice):
        console.print(f"  {line}")
    console.print()
    if best:
        console.print(
            f"Best plan per GPU type, by {choice.request.objective} (* = on the hours-vs-$ Pareto front across types):"
        )
        _table(console, best)
    if front:
        console.print(_front_title(choice))
        _table(console, front)
    lines = skipped_lines(choice)
    if lines:
        console.print("Not listed, and notes:")
        for line in lines:
            console.print(f"  {line}")
    return out.getvalue()


def render_markdown(choice, best: list[dict], front: list[dict]) -> str:
    lines = ["# Hardware choice", "", f"planner {__version__}", "", "## Assumptions", ""]
    lines += [f"- {line}" for line in header_lines(choice)]
    keys = [*FIELDS, "pareto", "speed_extrapolated_from"]
    for title, rows in (
        (f"## Best plan per GPU type, by {choice.request.objective}", best),
        ("## " + _front_title(choice).rstrip(":"), front),
    ):
        lines += ["", title, "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in rows:
            lines.append("| " + " | ".join("-" if row[k] is None else str(row[k]) for k in keys) + " |")
    skipped = skipped_lines(choice)
    if skipped:
        lines += ["", "## Not listed, and notes", ""] + [f"- {line}" for line in skipped]
    return "\n".join(lines) + "\n"


def choice_json(choice, best: list[dict], front: list[dict]) -> dict:
    r = choice.request
    return {
        "planner_version": __version__,
        "inputs": {
            "model": r.model,
            "budget": r.budget or None,
            "gpu_types": r.gpu_types,
            "max_gpus": r.max_gpus,
            "seq_len": r.seq_len,
            "tokens": r.tokens,
            "objective": r.objective,
            "safety_margin": r.safety_margin,
            "pins": r.pins,
        },
        "assumptions": header_lines(choice),
        "options": [
            {
                "gpu_type": o.gpu.name,
                "budget": o.budget,
                "price_per_gpu_hour": None if o.result is None else o.result.price_per_gpu_hour,
                "price_source": None if o.result is None else o.result.price_source,
                "speed_extrapolated_from": o.gpu.speed_extrapolated_from,
                "plans_listed": 0 if o.result is None else len(o.result.feasible),
                "skipped": o.skipped or None,
                "note": o.note or None,
            }
            for o in choice.options
        ],
        "best_per_gpu_type": best,
        "pareto_front": front,
        "notes": choice.notes,
    }


def render_csv(best: list[dict], front: list[dict]) -> str:
    rows = [{"list": "best-per-gpu-type", **row} for row in best] + [{"list": "pareto-front", **row} for row in front]
    return solve_report.render_csv(rows)


def report_name(choice) -> str:
    r = choice.request
    what = f"{r.gpu_types}-max{r.max_gpus}" if r.gpu_types is not None else r.budget
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{r.model}-choice-{what}-{r.objective}")


def render_all(choice) -> tuple[list[dict], list[dict], dict[str, str]]:
    best, front = choice_rows(choice)
    files = {
        "report.md": render_markdown(choice, best, front),
        "report.json": json.dumps(choice_json(choice, best, front), separators=(",", ":")) + "\n",
        "plans.csv": render_csv(best, front),
    }
    return best, front, files
