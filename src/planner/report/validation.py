"""Render a memory validation: per case predicted vs measured, then the summary figures."""

import json
from io import StringIO
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from planner.validate.memory import ValidationSummary
from planner.validate.throughput import ThroughputSummary


def render_validation_table(summary: ValidationSummary, width: int = 140) -> str:
    out = StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False)
    table = Table(show_edge=False)
    for name, justify in (
        ("case", "left"),
        ("metric", "left"),
        ("measured GiB", "right"),
        ("predicted GiB", "right"),
        ("error %", "right"),
        ("outcome", "left"),
        ("predicted", "left"),
        ("peak phase", "left"),
    ):
        table.add_column(name, justify=justify)
    for r in summary.results:
        m = r.case.measured
        error = r.error_pct
        table.add_row(
            r.case.id,
            m.metric,
            f"{m.peak_gib:.2f}" if m.peak_gib is not None else "-",
            f"{r.predicted_gib:.2f}",
            f"{error:+.1f}" if error is not None else "-",
            m.outcome,
            ("fits" if r.memory.fits else "does not fit") + ("  UNSAFE" if r.unsafe else ""),
            r.memory.peak_phase,
        )
    console.print(table)
    console.print(f"cases: {len(summary.results)} ({len(summary.errors_pct)} with a measured peak)")
    median = summary.median_abs_error_pct
    console.print(f"median |error|: {'-' if median is None else f'{median:.1f}%'}")
    console.print(f"max under-prediction: {summary.max_under_prediction_pct:.1f}%")
    console.print(f"unsafe (predicted fits, really OOM or above capacity): {summary.unsafe_count}")
    return out.getvalue()


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def render_validation_json(summary: ValidationSummary) -> str:
    cases = [
        {
            "id": r.case.id,
            "source": r.case.source,
            "metric": r.case.measured.metric,
            "measured_gib": r.case.measured.peak_gib,
            "outcome": r.case.measured.outcome,
            "predicted_gib": round(r.predicted_gib, 3),
            "error_pct": round(r.error_pct, 2) if r.error_pct is not None else None,
            "predicted_fits": r.memory.fits,
            "unsafe": r.unsafe,
        }
        for r in summary.results
    ]
    return (
        json.dumps(
            {
                "cases": cases,
                "median_abs_error_pct": _round(summary.median_abs_error_pct, 2),
                "max_under_prediction_pct": round(summary.max_under_prediction_pct, 2),
                "unsafe_count": summary.unsafe_count,
            },
            indent=2,
        )
        + "\n"
    )


def render_throughput_table(summary: ThroughputSummary, width: int = 160) -> str:
    out = StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False)
    table = Table(show_edge=False, box=box.SIMPLE_HEAD, pad_edge=False)
    for name, justify in (
        ("case", "left"),
        ("model", "left"),
        ("GPUs", "right"),
        ("layout", "left"),
        ("measured tok/s/GPU", "right"),
        ("predicted", "right"),
        ("error %", "right"),
    ):
        table.add_column(name, justify=justify)
    for r in summary.results:
        p = r.case.request
        layout = f"tp{p.tp} pp{p.pp} cp{p.cp} {p.engine} z{p.zero} mb{p.micro_batch} {p.checkpointing}"
        table.add_row(
            r.case.id,
            Path(p.model).stem,
            str(p.gpus),
            layout,
            f"{r.case.measured.tokens_per_s_per_gpu:,.0f}",
            f"{r.predicted:,.0f}",
            f"{r.error_pct:+.1f}",
        )
    console.print(table)
    console.print(f"cases: {len(summary.results)}; median |error|: {summary.median_abs_error_pct:.1f}%")
    console.print("per source (Spearman rank correlation of predicted vs measured where it has >= 5 cases):")
    for source, fig in summary.source_figures().items():
        rho = f", Spearman {fig['spearman']:.2f}" if "spearman" in fig else ""
        console.print(f"  {source}: {fig['cases']} cases, median |error| {fig['median_abs_error_pct']:.1f}%{rho}")
    return out.getvalue()


def render_throughput_json(summary: ThroughputSummary) -> str:
    cases = [
        {
            "id": r.case.id,
            "source_id": r.case.source_id,
            "measured_tokens_per_s_per_gpu": r.case.measured.tokens_per_s_per_gpu,
            "predicted_tokens_per_s_per_gpu": round(r.predicted, 2),
            "error_pct": round(r.error_pct, 2),
        }
        for r in summary.results
    ]
    sources = {
        k: {m: (round(v, 4) if isinstance(v, float) else v) for m, v in fig.items()}
        for k, fig in summary.source_figures().items()
    }
    return (
        json.dumps(
            {"cases": cases, "median_abs_error_pct": round(summary.median_abs_error_pct, 2), "sources": sources},
            indent=2,
        )
        + "\n"
    )
