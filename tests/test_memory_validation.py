"""The memory model against measured runs (tests/data/memory_cases.yaml, from ../shared/data).

Thresholds from issue 2: median |error| <= 10% and no unsafe case (predicted to fit, really OOM).
"""

import csv
import importlib.util
from pathlib import Path

import pytest
import yaml

from planner.memory.runtime import DEFAULT_OVERHEADS
from planner.validate.memory import load_memory_cases, validate_memory

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "data" / "memory_cases.yaml"
CSV = ROOT / "tests" / "data" / "memory_measured.csv"


@pytest.fixture(scope="module")
def summary():
    return validate_memory(load_memory_cases(CASES))


def test_median_error_within_ten_percent(summary):
    assert summary.median_abs_error_pct <= 10.0


def test_no_unsafe_case(summary):
    assert summary.unsafe_count == 0, [r.case.id for r in summary.results if r.unsafe]


def test_every_oom_row_is_predicted_not_to_fit(summary):
    ooms = [r for r in summary.results if r.case.measured.outcome == "oom"]
    assert len(ooms) == 3 and all(not r.memory.fits for r in ooms)


def test_every_measured_row_is_a_case_or_skipped_with_a_reason():
    data = yaml.safe_load(CASES.read_text())
    ids = {row["id"] for row in csv.DictReader(CSV.open())}
    skipped = data["skipped"]
    assert set(data["cases"]) | set(skipped) == ids
    assert not set(data["cases"]) & set(skipped)
    assert all(isinstance(reason, str) and len(reason) > 10 for reason in skipped.values())


def test_case_values_match_the_measured_csv():
    rows = {row["id"]: row for row in csv.DictReader(CSV.open())}
    for case in load_memory_cases(CASES):
        row = rows[case.id]
        if case.measured.outcome == "oom":
            assert row["outcome"] == "OOM"
        else:
            assert case.measured.peak_gib == float(row["peak_mem_gib"]), case.id


def test_fit_script_reproduces_the_stored_constants():
    spec = importlib.util.spec_from_file_location("fit", ROOT / "scripts" / "fit_memory_overheads.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    overheads, (_, _, unsafe) = fit.fit(CASES)
    assert unsafe == 0
    assert overheads.allocator_fragmentation == DEFAULT_OVERHEADS.allocator_fragmentation
    assert overheads.nccl_gib_per_group == DEFAULT_OVERHEADS.nccl_gib_per_group
