"""Throughput validation: predicted vs measured tokens/s per GPU of published training runs.

Cases use the memory cases' format (see planner.validate.cases) with
`measured: {tokens_per_s_per_gpu: X}`. Figures: per-case % error, the median absolute % error, and
the Spearman rank correlation of predicted vs measured within each source (the ranking the search
relies on), for sources with at least `MIN_CASES_FOR_RANKING` cases.
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import CatalogError
from planner.inputs import quantity
from planner.performance import PerformanceEstimate, estimate_performance
from planner.progress import track
from planner.validate.cases import Case, load_cases

MIN_CASES_FOR_RANKING = 5
MAX_TOKENS_PER_S = 1e9
"""Largest measured tokens/s per GPU accepted (a 1M-parameter model on the fastest GPU is below it)."""


@dataclass(frozen=True)
class MeasuredThroughput:
    tokens_per_s_per_gpu: float


ThroughputCase = Case[MeasuredThroughput]


@dataclass(frozen=True)
class ThroughputResult:
    case: ThroughputCase
    performance: PerformanceEstimate

    @property
    def predicted(self) -> float:
        return self.performance.tokens_per_s_per_gpu

    @property
    def error_pct(self) -> float:
        measured = self.case.measured.tokens_per_s_per_gpu
        return 100.0 * (self.predicted - measured) / measured


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman rank correlation with average ranks for ties; None where undefined (one side constant)."""

    def ranks(values: list[float]) -> np.ndarray:
        order = np.argsort(values, kind="stable")
        ranked = np.empty(len(values))
        sorted_values = np.asarray(values)[order]
        i = 0
        while i < len(values):
            j = i
            while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
                j += 1
            ranked[order[i : j + 1]] = (i + j) / 2
            i = j + 1
        return ranked

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass(frozen=True)
class ThroughputSummary:
    results: list[ThroughputResult]

    @property
    def median_abs_error_pct(self) -> float:
        return statistics.median(abs(r.error_pct) for r in self.results)

    def by_source(self) -> dict[str, list[ThroughputResult]]:
        groups: dict[str, list[ThroughputResult]] = defaultdict(list)
        for r in self.results:
            groups[r.case.source_id].append(r)
        return dict(sorted(groups.items()))

    def source_figures(self) -> dict[str, dict[str, float]]:
        """Per source: case count, median |error| % and Spearman (when it has enough cases)."""
        out = {}
        for source, results in self.by_source().items():
            figures = {
                "cases": len(results),
                "median_abs_error_pct": statistics.median(abs(r.error_pct) for r in results),
            }
            rho = None
            if len(results) >= MIN_CASES_FOR_RANKING:
                rho = spearman([r.predicted for r in results], [r.case.measured.tokens_per_s_per_gpu for r in results])
            if rho is not None:  # undefined when every prediction (or measurement) of the source is equal
                figures["spearman"] = rho
            out[source] = figures
        return out


def _measured(raw: Any, case_id: str, path: Path) -> MeasuredThroughput:
    if not isinstance(raw, dict) or raw.get("tokens_per_s_per_gpu") is None:
        raise CatalogError(f"{path}: case {case_id} needs `measured: {{tokens_per_s_per_gpu: X}}`", "add it")
    where = f"{path}: case {case_id}: tokens_per_s_per_gpu"
    return MeasuredThroughput(quantity(raw["tokens_per_s_per_gpu"], where, 0.0, MAX_TOKENS_PER_S, error=CatalogError))


def load_throughput_cases(path: Path) -> list[ThroughputCase]:
    """Read a throughput cases file (YAML) or a CSV written by `planner calibrate measure`."""
    if Path(path).suffix == ".csv":
        from planner.validate.measured_csv import throughput_cases_from_csv

        return throughput_cases_from_csv(Path(path), MeasuredThroughput)
    return load_cases(path, _measured)


def validate_throughput_case(case: ThroughputCase) -> ThroughputResult:
    return ThroughputResult(case, estimate_performance(*case.resolve()))


def validate_throughput(cases: list[ThroughputCase]) -> ThroughputSummary:
    return ThroughputSummary([validate_throughput_case(c) for c in track(cases, "throughput cases")])
