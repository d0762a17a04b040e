"""Validation cases from `planner calibrate measure` CSVs, so measured GPU rows become test data.

Each GPU row (a `gpu` the catalog knows; CPU rows have none and are skipped) gives memory cases, one per
metric it recorded (`max_allocated_gib` against the allocated peak, `nvidia_smi_used_gib` against the
nvidia-smi view; an `oom` row gives one case with outcome oom), and, when it ran, one throughput case.
Case ids are `measured-<gpu>-<metric>-<row>` so that each CSV counts as one source per metric.
"""

import csv
import io
from pathlib import Path

from planner.calibrate.measure import COLUMNS, example_model_ref
from planner.errors import CatalogError
from planner.inputs import one_line, quantity, quoted, read_text, whole_number
from planner.plan import PlanRequest
from planner.validate.cases import Case

_PLAN_COLUMNS = ("zero", "precision", "checkpointing", "optimizer", "engine")


def read_measured_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a measure CSV (UTF-8, the measure columns present); cells missing in a short row are ''."""
    text = read_text(path, "measured CSV")
    shown = one_line(str(path))
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), restval="")
        missing = set(COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise CatalogError(
                f"{shown}: not a planner calibrate measure CSV (missing {', '.join(sorted(missing))})",
                "pass a CSV written by planner calibrate measure",
            )
        return [{k: v if isinstance(v, str) else "" for k, v in row.items() if k is not None} for row in reader]
    except csv.Error as exc:
        raise CatalogError(f"{shown}: not a readable CSV ({one_line(exc, 80)})", "pass a measure CSV") from None


def _cell(row: dict[str, str], column: str, number: int, path: Path, kind: type, upper: float, low: int = 1):
    """A numeric cell of row `number`: an int in [low, upper], or a finite float in (0, upper]."""
    where = f"{one_line(str(path))} row {number}: {column}"
    raw = row.get(column, "").strip()
    try:
        value = int(raw) if kind is int else float(raw)
    except ValueError:
        raise CatalogError(f"{where} = {quoted(raw)} is not a number", "fix the cell or measure again") from None
    if kind is int:
        return whole_number(value, where, low, upper, CatalogError)
    return quantity(value, where, 0.0, upper, error=CatalogError)


def _request(row: dict[str, str], number: int, path: Path) -> PlanRequest:
    return PlanRequest(
        model=example_model_ref(row["model"]),
        gpu=row["gpu"],
        gpus=_cell(row, "gpus", number, path, int, 1_000_000),
        engine=row["engine"],
        zero=_cell(row, "zero", number, path, int, 3, low=0),
        precision=row["precision"],
        checkpointing=row["checkpointing"],
        optimizer=row["optimizer"],
        micro_batch=_cell(row, "micro_batch", number, path, int, 10_000_000),
        seq_len=_cell(row, "seq_len", number, path, int, 16 * 1024 * 1024),
    )


def _source(path: Path, row: dict[str, str]) -> str:
    return (
        f"{path.name}: planner calibrate measure on {row['device']} "
        f"(driver {row['driver']}, torch {row['torch']}, {row['date']})"
    )


def _require_some(cases: list[Case], path: Path) -> list[Case]:
    if not cases:
        raise CatalogError(
            f"{path} has no GPU rows to validate against (CPU rows record timings only)",
            "run planner calibrate measure on a GPU",
        )
    return cases


def memory_cases_from_csv(path: Path, measured_type) -> list[Case]:
    """Memory cases of a measure CSV; `measured_type(metric, peak_gib, outcome)` builds the measurement."""
    cases = []
    for number, row in enumerate(read_measured_rows(path), start=1):
        if not row["gpu"] or row["status"] not in ("ok", "oom"):
            continue
        slug = row["gpu"].lower()
        if row["status"] == "oom":
            metrics = [("nvidia-smi", None, "oom")]
        else:
            metrics = [
                ("allocated", row["max_allocated_gib"], "fits"),
                ("nvidia-smi", row["nvidia_smi_used_gib"], "fits"),
            ]
        for metric, value, outcome in metrics:
            if outcome == "fits" and value in ("", None):
                continue
            column = "max_allocated_gib" if metric == "allocated" else "nvidia_smi_used_gib"
            peak = _cell(row, column, number, path, float, 1e6) if value not in ("", None) else None
            case_id = f"measured-{slug}-{metric}-{number}"
            request = _request(row, number, path)
            cases.append(
                Case(case_id, request, measured_type(metric, peak, outcome), _source(path, row), file=str(path))
            )
    return _require_some(cases, path)


def throughput_cases_from_csv(path: Path, measured_type) -> list[Case]:
    """Throughput cases (tokens/s per GPU) of the GPU rows that ran."""
    cases = []
    for number, row in enumerate(read_measured_rows(path), start=1):
        if row["gpu"] and row["status"] == "ok" and row["tokens_per_s"]:
            case_id = f"measured-{row['gpu'].lower()}-{number}"
            request = _request(row, number, path)
            measured = measured_type(_cell(row, "tokens_per_s", number, path, float, 1e12) / request.gpus)
            cases.append(Case(case_id, request, measured, _source(path, row), file=str(path)))
    return _require_some(cases, path)
