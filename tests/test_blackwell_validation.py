"""The dense Blackwell rows (tests/data/blackwell): Megatron-Bridge's B200/GB200 Llama runs, scored with the Hopper
fit that hardware/b200.yaml and gb200.yaml borrow, at the stated tolerance."""

from pathlib import Path

import pytest
import yaml

from planner.validate.throughput import load_throughput_cases, validate_throughput

CASES = Path(__file__).resolve().parent / "data" / "blackwell" / "throughput_cases.yaml"


@pytest.fixture(scope="module")
def data():
    return yaml.safe_load(CASES.read_text())


@pytest.fixture(scope="module")
def summary():
    return validate_throughput(load_throughput_cases(CASES))


def test_every_case_is_a_cited_blackwell_run(data):
    assert len(data["cases"]) == 13
    for case_id, case in data["cases"].items():
        assert case["gpu"] in ("B200", "GB200"), case_id
        assert "@4ab94dfad36641cabdeb96452b21bf676aac4772" in case["source"], case_id
        assert "Release" in case["notes"] and case["measured"]["tokens_per_s_per_gpu"] > 0, case_id


def test_blackwell_throughput_bound(summary):
    """Median |error| 11.6% over the 13 runs with Megatron's attention timed as Transformer Engine's cuDNN kernel on
    Blackwell too (16.8% with FlashAttention-2's speed there); every run but two under-predicted, so the borrowed
    Hopper constants are, if anything, pessimistic for dense Blackwell runs (the MoE rows of ../moe on Blackwell are
    mostly over-predicted, so their misses are not the borrowed GEMM efficiency). Kept as a bound that may only
    improve, with the ranking of the runs as measured. Since Megatron's fp8 weights are cast once per step, its
    sequence-parallel all-gathers move fp8 and its interleaved sends overlap the compute: 8.2%, and Spearman 0.95 ->
    0.945: the two GB200 405B runs that differ only in V (4: 843, 8: 783 measured) are predicted within 0.5% of each
    other either way (834 vs 838 now, the other order before); the 7.7% the larger V costs is not in the model.
    With the pointwise kernels timed in bytes (planner.performance.pointwise) and the Hopper max refitted 0.67 -> 0.70:
    8.8%; the Llama 3 8B rows at TP 1, under-predicted by 3-14% before, lose another 1.5-2.5% to their fused
    kernels' HBM time. With context-parallel attention timed per engine (the in-sample Llama 3 405B CP 16 run moves
    from +7.3% to +1.4%, which tips the Hopper max to 0.69 by 0.0004 points of the fit's objective): 10.5%."""
    assert len(summary.results) == 13
    assert summary.median_abs_error_pct <= 10.5
    assert summary.source_figures()["megatron_bridge_perf"]["spearman"] >= 0.94
