"""The leave-one-source-out machinery of scripts/loso.py on a small subset (the full run takes seconds)."""

import importlib.util
import statistics
from pathlib import Path

import pytest

from planner.memory.runtime import DEFAULT_OVERHEADS

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("loso", ROOT / "scripts" / "loso.py")
loso = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(loso)
SOURCES = ("torchtune", "xtuner")  # two small A100 sources: leaving one out fits on the other alone


@pytest.fixture(scope="module")
def items():
    everything = loso.throughput_items([ROOT / "tests" / "data" / "throughput_cases.yaml"])
    return [i for i in everything if i.source in SOURCES]


@pytest.fixture(scope="module")
def scores(items):
    return {s.source: s for s in loso.loso_throughput(items)}


def test_subset_is_one_family(items):
    assert {i.family for i in items} == {"ampere"}
    assert {i.source for i in items} == set(SOURCES)


def test_coordinate_fit_reaches_a_grid_optimum(items):
    start = loso.stored_constants(items)["ampere"]
    fitted = loso.coordinate_fit(items, start)
    best = loso._objective(items, fitted)
    assert best <= loso._objective(items, start)
    for field, grid in loso.GRIDS:
        for value in grid:
            assert loso._objective(items, loso.replace(fitted, **{field: value})) >= best, (field, value)


def test_full_grid_fit_is_a_grid_optimum_no_worse_than_the_coordinate_search(items):
    # The default search (fit_throughput.py's whole grid) scored with the slow per-point objective: no single
    # constant moved along its grid improves it, and the coordinate search from the stored constants does no better.
    start = loso.stored_constants(items)["ampere"]
    full = loso.exhaustive_fit(items, start)
    best = loso._objective(items, full)
    assert best <= loso._objective(items, loso.coordinate_fit(items, start))
    for field, grid in loso.GRIDS:
        for value in grid:
            assert loso._objective(items, loso.replace(full, **{field: value})) >= best, (field, value)


def test_objective_table_equals_the_slow_objective(items):
    # The fast path (one broadcast evaluation per item over the grids) against fit_throughput.py's objective,
    # which runs the scalar model per item; a start value off the grid (700) is added to its axis.
    start = loso.replace(loso.stored_constants(items)["ampere"], half_tokens=700)
    table = loso.ObjectiveTable(items, start)
    points = [start] + [
        loso.replace(start, **{field: grid[k]}) for field, grid in loso.GRIDS for k in (0, len(grid) // 2, -1)
    ]
    for params in points:
        assert table.objective(params) == loso._objective(items, params), params


def test_left_out_prediction_uses_only_the_other_source(items, scores):
    stored = loso.stored_constants(items)
    for source in SOURCES:
        own = [i for i in items if i.source == source]
        other = [i for i in items if i.source != source]
        fit = {"ampere": loso.exhaustive_fit(other, stored["ampere"])}
        expected = statistics.median(loso._abs_errors(own, fit))
        assert scores[source].left_out_pct == pytest.approx(expected)
        assert scores[source].rows == len(own)


def test_stored_and_in_sample_columns(items, scores):
    stored = loso.stored_constants(items)
    in_sample = {"ampere": loso.exhaustive_fit(items, stored["ampere"])}
    for source in SOURCES:
        own = [i for i in items if i.source == source]
        assert scores[source].stored_pct == pytest.approx(statistics.median(loso._abs_errors(own, stored)))
        assert scores[source].in_sample_pct == pytest.approx(statistics.median(loso._abs_errors(own, in_sample)))
        assert -1 <= scores[source].spearman <= 1  # both have >= 5 rows


def test_memory_left_out_refits_without_the_source():
    items = loso.memory_items()
    scores = {s.source: s for s in loso.loso_memory(items)}
    source = "github.com/pytorch/torchtitan"
    own = [i for i in items if loso.memory_source(i[0]) == source]
    refit, _ = loso.FIT_MEMORY.fit_resolved([i for i in items if loso.memory_source(i[0]) != source])
    assert refit != DEFAULT_OVERHEADS  # torchtitan's rows move the fit: a real left-out test
    assert scores[source].left_out_pct == pytest.approx(statistics.median(loso._memory_errors(own, refit)))
    assert scores[source].stored_pct == pytest.approx(statistics.median(loso._memory_errors(own, DEFAULT_OVERHEADS)))


def test_lora_rows_are_scored_with_their_source_left_out_whole():
    # FlagPerf is cited by dense and LoRA cases: leaving it out removes both, and only its LoRA row is scored.
    flagperf, fms = "github.com/FlagOpen/FlagPerf", "github.com/foundation-model-stack/fms-acceleration"
    dense = [i for i in loso.memory_items() if loso.memory_source(i[0]) == flagperf]
    lora = [i for i in loso.memory_items(loso.LORA_MEMORY_CASES) if loso.memory_source(i[0]) in (flagperf, fms)]
    assert dense and {loso.memory_source(i[0]) for i in lora} == {flagperf, fms}
    items = dense + lora
    scores = {s.source: s for s in loso.loso_memory(items, scored={i[0].id for i in lora})}
    own = [i for i in lora if loso.memory_source(i[0]) == flagperf]
    refit, _ = loso.FIT_MEMORY.fit_resolved([i for i in items if loso.memory_source(i[0]) != flagperf])
    assert scores[flagperf].rows == len(own) == 1
    assert scores[flagperf].left_out_pct == pytest.approx(statistics.median(loso._memory_errors(own, refit)))
