"""How the performance model does on the external rows of issue 10 (tests/data/external), by regime and on
every published bf16/fp8 pair, with the stored constants.

    python scripts/external_report.py

Regimes are the CSV's `regimes` tags (a row may carry several). A pair is two scored cases of one cited table
whose plans differ only in precision (bf16 vs fp8, and the fp8 run's scaling recipe and fp8 parameters); the
issue's target is the predicted fp8/bf16 throughput ratio within 10% of the measured one on every pair.
"""

import csv
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from planner.validate.throughput import load_throughput_cases, validate_throughput

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = ROOT / "tests" / "data" / "external"
PRECISION_KEYS = {"precision", "fp8_recipe", "fp8_param_gather"}
"""Plan keys a bf16/fp8 pair may differ in (the fp8 scaling recipe and fp8 parameters apply to the fp8 run only)."""


@dataclass(frozen=True)
class Pair:
    bf16_id: str
    fp8_id: str
    measured_ratio: float
    predicted_ratio: float

    @property
    def ratio_error_pct(self) -> float:
        return 100 * (self.predicted_ratio / self.measured_ratio - 1)


def precision_pairs(results) -> list[Pair]:
    """bf16/fp8 pairs among validation results: same cited table, plans equal but for precision."""
    groups = defaultdict(dict)
    for r in results:
        plan = {k: v for k, v in asdict(r.case.request).items() if k not in PRECISION_KEYS}
        groups[(r.case.source, tuple(sorted(plan.items())))][r.case.request.precision] = r
    pairs = []
    for group in groups.values():
        if "bf16" in group and "fp8" in group:
            bf16, fp8 = group["bf16"], group["fp8"]
            pairs.append(
                Pair(
                    bf16.case.id,
                    fp8.case.id,
                    fp8.case.measured.tokens_per_s_per_gpu / bf16.case.measured.tokens_per_s_per_gpu,
                    fp8.predicted / bf16.predicted,
                )
            )
    return sorted(pairs, key=lambda p: (p.bf16_id.rpartition("-")[0], int(p.bf16_id.rpartition("-")[2])))


def regime_figures(results, regimes: dict[str, list[str]]) -> dict[str, tuple[int, float, float]]:
    """Per regime tag: (scored cases, median signed error %, median |error| %)."""
    by_regime = defaultdict(list)
    for r in results:
        for tag in regimes.get(r.case.id, []):
            by_regime[tag].append(r.error_pct)
    return {
        tag: (len(errors), statistics.median(errors), statistics.median(abs(e) for e in errors))
        for tag, errors in sorted(by_regime.items())
    }


def main() -> None:
    results = validate_throughput(load_throughput_cases(EXTERNAL / "throughput_cases.yaml")).results
    rows = csv.DictReader((EXTERNAL / "throughput_external.csv").open())
    regimes = {f"{r['source_id']}-{r['row_id']}": [t for t in r["regimes"].split(";") if t] for r in rows}
    print("| regime | scored cases | median error | median abs error |\n|---|---:|---:|---:|")
    for tag, (n, signed, absolute) in regime_figures(results, regimes).items():
        print(f"| {tag} | {n} | {signed:+.1f}% | {absolute:.1f}% |")
    pairs = precision_pairs(results)
    print("\n| bf16 case | fp8 case | measured fp8/bf16 | predicted | ratio error |\n|---|---|---:|---:|---:|")
    for p in pairs:
        ratios = f"{p.measured_ratio:.3f} | {p.predicted_ratio:.3f} | {p.ratio_error_pct:+.1f}%"
        print(f"| {p.bf16_id} | {p.fp8_id} | {ratios} |")
    within = sum(abs(p.ratio_error_pct) <= 10 for p in pairs)
    print(f"\n{within} of {len(pairs)} pairs within 10% of the measured ratio")


if __name__ == "__main__":
    main()
