"""Memory validation: predicted vs measured peak memory of real training runs.

A cases file maps case ids to cases. A case's keys are the `planner estimate` flag names without
dashes, plus `measured: {metric, peak_gib, outcome}` and optional `source` / `notes`::

    cases:
      flagperf-llama2-7b-ds-z3-s4096:
        source: github.com/FlagOpen/FlagPerf training/nvidia/llama2_7b-deepspeed/README.md
        model: llama-2-7b
        gpu: A800-80GB
        gpus: 8
        zero: 3
        seq_len: 4096
        measured: {metric: nvidia-smi, peak_gib: 57.0, outcome: fits}

Allocated/active measurements are compared with `allocated_peak_gib`, reserved ones with
`reserved_peak_gib` and nvidia-smi ones with `peak_gib` (`comparable_gib`). A model path in a case is read
relative to the cases file.
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from planner.errors import CatalogError
from planner.inputs import optional, quantity
from planner.memory import MemoryEstimate, estimate_memory
from planner.progress import track
from planner.validate.cases import Case, load_cases

MAX_MEASURED_GIB = 1e6
"""Largest measured peak accepted, GiB (no device holds a PiB)."""
Metric = Literal["allocated", "active", "reserved", "nvidia-smi"]
METRICS: tuple[str, ...] = ("allocated", "active", "reserved", "nvidia-smi")


@dataclass(frozen=True)
class Measured:
    metric: Metric
    peak_gib: float | None
    outcome: Literal["fits", "oom"]


MemoryCase = Case[Measured]


@dataclass(frozen=True)
class CaseResult:
    case: MemoryCase
    memory: MemoryEstimate
    predicted_gib: float
    """The prediction comparable with the measurement's metric."""

    @property
    def error_pct(self) -> float | None:
        """(predicted - measured) / measured, in percent; None for OOM cases."""
        measured = self.case.measured.peak_gib
        if measured is None:
            return None
        return 100.0 * (self.predicted_gib - measured) / measured

    @property
    def unsafe(self) -> bool:
        """The tool would call the plan feasible although it ran out of memory (or exceeded the card)."""
        m = self.case.measured
        above_capacity = m.peak_gib is not None and m.peak_gib > self.memory.capacity_gib
        return self.memory.fits and (m.outcome == "oom" or above_capacity)


@dataclass(frozen=True)
class ValidationSummary:
    results: list[CaseResult]

    @property
    def errors_pct(self) -> list[float]:
        return [r.error_pct for r in self.results if r.error_pct is not None]

    @property
    def median_abs_error_pct(self) -> float | None:
        """None when no case has a measured peak (every case ran out of memory)."""
        errors = self.errors_pct
        return statistics.median(abs(e) for e in errors) if errors else None

    def median_abs_error_pct_by_source(self) -> dict[str, float]:
        """Per source, the median |error| of its cases with a measured peak (sources without one are left out)."""
        errors: dict[str, list[float]] = defaultdict(list)
        for r in self.results:
            if r.error_pct is not None:
                errors[r.case.source_id].append(abs(r.error_pct))
        return {source: statistics.median(e) for source, e in sorted(errors.items())}

    @property
    def max_under_prediction_pct(self) -> float:
        """The most negative error (0 when nothing is under-predicted)."""
        return min([0.0, *self.errors_pct])

    @property
    def unsafe_count(self) -> int:
        return sum(r.unsafe for r in self.results)


def _measured(raw: Any, case_id: str, path: Path) -> Measured:
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: case {case_id} needs `measured: {{metric, peak_gib, outcome}}`", "add it")
    metric = raw.get("metric")
    if metric not in METRICS:
        raise CatalogError(f"{path}: case {case_id}: metric must be one of {', '.join(METRICS)}", "fix it")
    outcome = raw.get("outcome", "fits")
    if outcome not in ("fits", "oom"):
        raise CatalogError(f"{path}: case {case_id}: outcome must be fits or oom", "fix it")
    peak = raw.get("peak_gib")
    if outcome == "fits" and peak is None:
        raise CatalogError(f"{path}: case {case_id}: a run that fits needs a numeric peak_gib", "add it")
    peak = optional(quantity, peak, f"{path}: case {case_id}: peak_gib", 0.0, MAX_MEASURED_GIB, error=CatalogError)
    return Measured(metric=metric, peak_gib=peak, outcome=outcome)


def load_memory_cases(path: Path) -> list[MemoryCase]:
    """Read a memory cases file (YAML; model paths are taken relative to it) or a CSV written by
    `planner calibrate measure`."""
    if Path(path).suffix == ".csv":
        from planner.validate.measured_csv import memory_cases_from_csv

        return memory_cases_from_csv(Path(path), Measured)
    return load_cases(path, _measured)


def comparable_gib(metric: str, allocated_gib: float, reserved_gib: float, peak_gib: float) -> float:
    """The prediction a measured metric is compared with. `allocated`/`active` (torch.cuda.max_memory_allocated,
    the tensors alive at the peak) -> the allocated peak; `reserved` (torch.cuda.max_memory_reserved: the
    caching allocator's segments, which hold neither the CUDA context nor NCCL's buffers, both allocated
    outside it by the driver and NCCL) -> the reserved peak; `nvidia-smi` (the process's whole footprint on
    the card) -> the peak with context and NCCL buffers."""
    if metric in ("allocated", "active"):
        return allocated_gib
    return reserved_gib if metric == "reserved" else peak_gib


def validate_case(case: MemoryCase) -> CaseResult:
    memory = estimate_memory(*case.resolve())
    comparable = comparable_gib(
        case.measured.metric, memory.allocated_peak_gib, memory.reserved_peak_gib, memory.peak_gib
    )
    return CaseResult(case=case, memory=memory, predicted_gib=comparable)


def validate_memory(cases: list[MemoryCase]) -> ValidationSummary:
    return ValidationSummary([validate_case(c) for c in track(cases, "memory cases")])
