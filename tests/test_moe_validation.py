"""The Mixture-of-Experts measured rows of issue 14 (tests/data/moe): every CSV row is a throughput or memory
case (or a pending one, with the condition it waits for), case values match the CSV, the sources are public
and not in ../shared/data, and the models score them at the stated tolerances."""

import csv
import statistics
from pathlib import Path

import pytest
import yaml

from planner.validate.cases import pending_fields
from planner.validate.memory import load_memory_cases, validate_memory
from planner.validate.throughput import load_throughput_cases, validate_throughput

ROOT = Path(__file__).resolve().parent.parent
MOE = ROOT / "tests" / "data" / "moe"
CSV = MOE / "moe_measured.csv"
THROUGHPUT = MOE / "throughput_cases.yaml"
MEMORY = MOE / "memory_cases.yaml"


@pytest.fixture(scope="module")
def rows():
    return {f"{r['source_id']}-{r['row_id']}": r for r in csv.DictReader(CSV.open())}


@pytest.fixture(scope="module")
def throughput_data():
    return yaml.safe_load(THROUGHPUT.read_text())


@pytest.fixture(scope="module")
def memory_data():
    return yaml.safe_load(MEMORY.read_text())


@pytest.fixture(scope="module")
def throughput():
    return validate_throughput(load_throughput_cases(THROUGHPUT))


@pytest.fixture(scope="module")
def memory():
    return validate_memory(load_memory_cases(MEMORY))


def test_every_row_is_a_case(rows, throughput_data, memory_data):
    speed = set(throughput_data["cases"]) | set(throughput_data["pending"])
    assert not set(throughput_data["cases"]) & set(throughput_data["pending"])
    with_speed = {i for i, r in rows.items() if r["derived_tokens_per_sec_per_gpu"]}
    with_memory = {i for i, r in rows.items() if r["mem_per_gpu_gib"] or r["outcome"] == "oom"}
    assert speed == with_speed and set(memory_data["cases"]) == with_memory
    assert with_speed | with_memory == set(rows)
    # skipped: table entries that were not transcribed as rows, each with its reason
    assert not set(throughput_data["skipped"]) & set(rows)
    assert all(isinstance(reason, str) and len(reason) > 40 for reason in throughput_data["skipped"].values())


def test_at_least_25_rows_from_3_public_sources_outside_shared_data(rows):
    sources = {r["source_id"] for r in rows.values()}
    assert len(rows) >= 25 and len(sources) >= 3
    shared = {r["source_id"] for r in csv.DictReader((ROOT / "tests" / "data" / "throughput_measured.csv").open())}
    assert not sources & shared
    assert all(r["source_ref"] and r["confidence"] in ("A", "B") and r["notes"] for r in rows.values())
    throughput_sources = {r["source_id"] for r in rows.values() if r["derived_tokens_per_sec_per_gpu"]}
    assert len(throughput_sources) >= 3


def test_case_values_match_the_csv(rows, throughput_data, memory_data):
    cases = {**throughput_data["cases"], **throughput_data["pending"]}
    for case_id, case in cases.items():
        row = rows[case_id]
        assert case["measured"]["tokens_per_s_per_gpu"] == float(row["derived_tokens_per_sec_per_gpu"]), case_id
        layout = ("num_gpus", "tp", "pp", "cp", "ep", "micro_batch", "global_batch_seqs", "seq_len")
        assert (case["gpus"], case["tp"], case["pp"], case["cp"], case["ep"]) == tuple(
            int(row[k]) for k in layout[:5]
        ), case_id
        assert (case["micro_batch"], case["global_batch"], case["seq_len"]) == tuple(int(row[k]) for k in layout[5:]), (
            case_id
        )
        assert case.get("virtual_stages", 1) == int(row["vp"]), case_id
        assert ("moe_capacity_factor" in case) == row["capacity_factor"].startswith("1.0"), case_id
    for case_id, case in memory_data["cases"].items():
        row = rows[case_id]
        assert case["measured"]["outcome"] == row["outcome"], case_id
        if row["mem_per_gpu_gib"]:
            assert case["measured"]["peak_gib"] == float(row["mem_per_gpu_gib"]), case_id


def test_step_time_rows_are_batch_tokens_over_time_and_gpus(rows):
    derived = 0
    for case_id, row in rows.items():
        if row["step_time_s"] and row["global_batch_tokens"] and row["derived_tokens_per_sec_per_gpu"]:
            expected = int(row["global_batch_tokens"]) / float(row["step_time_s"]) / int(row["num_gpus"])
            assert float(row["derived_tokens_per_sec_per_gpu"]) == pytest.approx(expected, rel=0.01), case_id
            derived += 1
    assert derived >= 10


def test_pending_cases_wait_only_on_stated_conditions(throughput_data):
    waits = pending_fields(THROUGHPUT)
    assert set(waits) == set(throughput_data["pending"])
    for case_id, missing in waits.items():
        assert missing == throughput_data["pending"][case_id]["waits_for"], case_id
        assert all(w.startswith(("uneven pipeline split", "Megatron FSDP")) for w in missing), case_id


def test_every_scored_case_predicts(throughput_data, throughput):
    assert {r.case.id for r in throughput.results} == set(throughput_data["cases"])
    assert all(r.predicted > 0 for r in throughput.results)


def test_throughput_regression_bound(throughput):
    """Issue 14's target is a median |error| <= 15%: met on the Hopper rows (11.2% over 19), NOT overall: 19.5% over
    43 cases (19.2% before a MoE block's fp8 casts counted its routed copies instead of a dense MLP it does not have:
    Megatron-Bridge 21.7% -> 20.4% and mean |error| 41.2% -> 39.4%, the pooled median up as the rows around it change
    places; 20.4% over 42 before the DGX Cloud recipe's 25.10 GB200 run was added, 3.1x its 25.05 figure on the
    same GPUs and batch; 23.8% over 38 before DeepSeek-V3's MTP depth and the recipes' first/last pipeline-rank
    blocks were stated, which scored four interleaved DeepSeek-V3 runs; 22.9% before Megatron's fp8 weights were
    cast once per step (TE's is_first_microbatch cache, which its GroupedLinear honours too: the fp8 Megatron-Bridge
    rows, already predicted too fast, lost that per-micro-batch pass); 23.1% before Megatron's Blackwell attention
    was timed as cuDNN's, which moved most Blackwell rows further over; 27.0% over 28 before the grouped GEMMs ran
    at the efficiency of their rows per expert, the DeepEP and EP-overlap runs were stated as such and the
    interleaved Qwen3-235B-A22B runs were scored), kept as bounds that may only get better, and the Megatron-Bridge
    tables ranked as measured (Spearman 0.96 over 29 layouts). The largest misses are runs the tables themselves
    show to be software-limited: the 25.11/26.02 releases' dropless Qwen3-30B-A3B rows at half the speed of the same
    layouts in 25.09 and 26.02.01, and the first GB200 DeepSeek-V3 recipe (DGX Cloud 25.05, 10% MFU).
    With the pointwise kernels timed in bytes (performance/pointwise.py) and the Hopper max refitted 0.67 -> 0.70:
    19.7% overall and 11.9% on the Hopper rows; NeMo AutoModel's two rows run Transformer Engine kernels under
    FSDP2, which the fsdp engine times as eager PyTorch's (20.5% -> 32.7%). With context-parallel attention timed
    per engine, which tips the Hopper max to 0.69 (by 0.0004 points of the fit's objective): 20.5% overall (most
    rows under-predicted), 10.5% on the Hopper rows."""
    assert throughput.median_abs_error_pct <= 20.6
    assert throughput.source_figures()["mbridge_moe"]["spearman"] >= 0.95
    hopper = [abs(r.error_pct) for r in throughput.results if r.case.resolve()[1].architecture == "hopper"]
    assert len(hopper) == 19 and statistics.median(hopper) <= 10.6
