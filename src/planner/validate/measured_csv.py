"""Validation cases from `planner calibrate measure` CSVs, so measured GPU rows become test data.

Each GPU row (a `gpu` the catalog knows; CPU rows have none and are skipped) gives memory cases, one per
metric it recorded (`max_allocated_gib` against the allocated peak, `nvidia_smi_used_gib` against the
nvidia-smi view; an `oom` row gives one case with outcome oom), and, when it ran, one throughput case.
Case ids are `measured-<gpu>-<metric>-<row>` so that each CSV counts as one source per metric.
"""

import csv
from pathlib import Path

from planner.calibrate.measure import COLUMNS, example_model_ref
from planner.errors import CatalogError
from planner.plan import PlanRequest
from planner.validate.cases import Case

_PLAN_COLUMNS = ("zero", "precision", "checkpointing", "optimizer", "engine")


def read_measured_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = set(COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise CatalogError(
                    f"{path}: not a planner calibrate measure CSV (missing {', '.join(sorted(missing))})",
                    "pass a CSV written by planner calibrate measure",
                )
            return list(reader)
    except FileNotFoundError:
        raise CatalogError(f"no such file: {path}", "check the path") from None


def _request(row: dict[str, str]) -> PlanRequest:
    return PlanRequest(
        model=example_model_ref(row["model"]),
        gpu=row["gpu"],
        gpus=int(row["gpus"]),
        engine=row["engine"],
        zero=int(row["zero"]),
        precision=row["precision"],
        checkpointing=row["checkpointing"],
        optimizer=row["optimizer"],
        micro_batch=int(row["micro_batch"]),
        seq_len=int(row["seq_len"]),
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
            peak = float(value) if value not in ("", None) else None
            case_id = f"measured-{slug}-{metric}-{number}"
            cases.append(Case(case_id, _request(row), measured_type(metric, peak, outcome), _source(path, row)))
    return _require_some(cases, path)


def throughput_cases_from_csv(path: Path, measured_type) -> list[Case]:
    """Throughput cases (tokens/s per GPU) of the GPU rows that ran."""
    cases = []
    for number, row in enumerate(read_measured_rows(path), start=1):
        if row["gpu"] and row["status"] == "ok" and row["tokens_per_s"]:
            case_id = f"measured-{row['gpu'].lower()}-{number}"
            measured = measured_type(float(row["tokens_per_s"]) / int(row["gpus"]))
            cases.append(Case(case_id, _request(row), measured, _source(path, row)))
    return _require_some(cases, path)
