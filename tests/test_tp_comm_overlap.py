"""Megatron's --tp-comm-overlap (Transformer Engine userbuffers): a plan field that hides the tensor-parallel
collectives behind the blocks' linear GEMMs, refused where it does not exist, emitted by the Megatron writer."""

import pytest
from click.testing import CliRunner
from tests.conftest import plan_for
from tests.test_launch import MEGATRON_FLAGS

from planner.cli import main
from planner.errors import PlanError
from planner.launch.megatron import megatron_arguments
from planner.performance.flops import flops_per_token
from planner.performance.model import efficiency, estimate_performance, exposed_tp_comm_s, pointwise_width
from planner.search.solve import SolveRequest, solve

MEGATRON = dict(gpus=8, engine="megatron", zero=1, micro_batch=1, global_batch=8, seq_len=4096)


def test_exposed_traffic_is_what_the_gemms_cannot_hide():
    assert exposed_tp_comm_s(3.0, 1.0) == 2.0
    assert exposed_tp_comm_s(1.0, 3.0) == 0.0


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"engine": "fsdp", "zero": 3, "tp": 4}, "--engine fsdp has no such option"),
        ({"tp": 1}, "--tp 1 has none"),
        ({"tp": 4, "sequence_parallel": False}, "needs sequence parallelism"),
        ({"tp": 4, "tp_comm_overlap": "yes"}, "must be true or false"),
    ],
)
def test_refused_where_it_does_not_apply(fields, message):
    with pytest.raises(PlanError, match=message):
        plan_for("llama-2-7b", "H100-80GB", **{**MEGATRON, "tp_comm_overlap": True, **fields})


def test_default_off_and_cli_refusal_is_one_line_exit_2():
    assert plan_for("llama-2-7b", "H100-80GB", **MEGATRON, tp=4)[2].tp_comm_overlap is False
    args = ["estimate", "--model", "llama-2-7b", "--gpu", "H100", "--gpus", "8", "--engine", "megatron"]
    result = CliRunner().invoke(main, [*args, "--zero", "1", "--tp-comm-overlap"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --tp-comm-overlap overlaps tensor-parallel traffic, and --tp 1 has none (use --tp 2 or more)"
    ]


def _linear_gemm_s(model, gpu, plan) -> float:
    """The blocks' linear GEMMs of one step on the single pipeline stage, as the compute time counts them."""
    flops = flops_per_token(model.architecture, plan)
    tokens = plan.tokens_per_micro_batch
    eff = efficiency(gpu, tokens, pointwise_width(model.architecture, plan))[0]
    per_mb = tokens / plan.tp * (flops.block_matmuls + flops.recompute_matmuls) / (gpu.peak_tflops("bf16") * 1e12 * eff)
    return plan.grad_accum * per_mb


@pytest.mark.parametrize("model_name, gpu_name", [("llama-3.2-1b", "L40S"), ("llama-2-70b", "H100-80GB")])
def test_overlap_hides_the_collectives_behind_the_linear_gemms(model_name, gpu_name):
    model, gpu, plain = plan_for(model_name, gpu_name, **MEGATRON, tp=8)
    _, _, overlapped = plan_for(model_name, gpu_name, **MEGATRON, tp=8, tp_comm_overlap=True)
    before = estimate_performance(model, gpu, plain).breakdown_s
    after = estimate_performance(model, gpu, overlapped).breakdown_s
    expected = max(0.0, before["tensor_parallel_comm"] - _linear_gemm_s(model, gpu, plain))
    assert after["tensor_parallel_comm"] == pytest.approx(expected, rel=1e-9)
    assert after["compute"] == before["compute"]
    # a 1B model's (h = 2048) exchanges over PCIe outlast its GEMMs at TP 8; a 70B's over NVLink hide entirely
    assert (after["tensor_parallel_comm"] > 0) == (model_name == "llama-3.2-1b")


def test_megatron_writer_emits_the_flag():
    model, _, plan = plan_for("llama-2-7b", "H100-80GB", **MEGATRON, tp=4, tp_comm_overlap=True)
    args = megatron_arguments(model, plan)
    assert "--tp-comm-overlap" in args and "--tp-comm-overlap" in MEGATRON_FLAGS
    assert args.index("--tp-comm-overlap") == args.index("--sequence-parallel") + 1
    _, _, plain = plan_for("llama-2-7b", "H100-80GB", **MEGATRON, tp=4)
    assert "--tp-comm-overlap" not in megatron_arguments(model, plain)


def test_solve_pin_keeps_megatron_plans_with_tensor_parallelism():
    pins = {"tp_comm_overlap": True, "engine": "megatron", "zero": 1, "checkpointing": "none", "micro_batch": 1}
    result = solve(SolveRequest(model="llama-2-7b", budget="8xH100", global_batch=64, seq_len=4096, pins=pins))
    c = result.candidates
    assert len(result.feasible) and set(c.tp[result.feasible]) <= {2, 4, 8}
