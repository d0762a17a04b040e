"""Pipeline schedules and the engine options of published recipes (issue 10, items 4-5): exact formula terms."""

import math
from dataclasses import replace

import pytest
from tests.conftest import plan_for

from planner.architecture import total_params
from planner.errors import PlanError
from planner.estimate import evaluate
from planner.memory.stages import checkpointed_blocks, in_flight_micro_batches
from planner.memory.states import state_layout
from planner.performance import comm
from planner.performance.flops import flops_per_token
from planner.performance.model import exposed_p2p_s, pipeline_bubble_slots, pipeline_sends_per_micro_batch
from planner.units import GIB

# Llama-3.1-70B as NVIDIA's DGX Cloud recipe runs it (80 layers, TP 4, PP 4 with 5 virtual stages, CP 2).
RECIPE_70B = dict(engine="megatron", gpus=64, tp=4, pp=4, cp=2, zero=1, micro_batch=1, global_batch=128, seq_len=8192)


def _recipe(**changes):
    return plan_for("llama-3.1-70b", "H100", **{**RECIPE_70B, **changes})


def test_interleaved_bubble_is_pp_minus_one_over_v():
    # Narayanan et al. 2021: bubble (p - 1) / (V m), i.e. (p - 1) / V idle micro-batch slots.
    assert pipeline_bubble_slots(_recipe()[2]) == 3
    assert pipeline_bubble_slots(_recipe(pp_schedule="interleaved", virtual_stages=5)[2]) == pytest.approx(0.6)


def test_interleaved_sends_v_times_the_boundary_activations():
    assert pipeline_sends_per_micro_batch(_recipe()[2]) == 2
    assert pipeline_sends_per_micro_batch(_recipe(pp_schedule="interleaved", virtual_stages=5)[2]) == 10
    one, five = (
        evaluate(*_recipe(**c)).performance.breakdown_s
        for c in ({}, {"pp_schedule": "interleaved", "virtual_stages": 5})
    )
    assert one["pipeline_p2p"] > 0
    # Megatron runs the interleaved chunks' sends during the compute (--overlap-p2p-communication): V times the
    # traffic, exposed only in the fill and flush: on the first rank 2 (pp - 1) + (V - 1) pp = 22 of the
    # m V = 64 x 5 chunk-forwards are warm-up.
    assert five["pipeline_p2p"] == pytest.approx(5 * one["pipeline_p2p"] * 22 / 320)
    assert five["compute"] == pytest.approx(one["compute"])


def test_overlapped_p2p_exposes_the_fill_and_flush_and_what_exceeds_the_compute():
    interleaved = _recipe(pp_schedule="interleaved", virtual_stages=5)[2]
    warm_up = 22 / 320
    assert interleaved.grad_accum == 64
    assert exposed_p2p_s(interleaved, 0.32, 1.0) == pytest.approx(warm_up * 0.32)
    assert exposed_p2p_s(interleaved, 1.6, 1.0) == pytest.approx(warm_up * 1.6 + (1 - warm_up) * 1.6 - 1.0)
    assert exposed_p2p_s(_recipe()[2], 0.3, 1.0) == pytest.approx(0.3)  # 1F1B waits on each transfer
    few = _recipe(global_batch=8, pp_schedule="interleaved", virtual_stages=5)[2]  # m = 4: all warm-up
    assert exposed_p2p_s(few, 0.3, 1.0) == pytest.approx(0.3)


def test_interleaved_bubble_in_the_step_time():
    est = evaluate(*_recipe(pp_schedule="interleaved", virtual_stages=5))
    b = est.performance.breakdown_s
    per_micro_batch = (b["compute"] + b["tensor_parallel_comm"] + b["context_parallel_comm"] + b["pipeline_p2p"]) / 64
    assert b["pipeline_bubble"] == pytest.approx(3 / 5 * per_micro_batch)


def test_in_flight_micro_batches_of_the_interleaved_schedule():
    # Megatron's warm-up on rank r: 2 (p - r - 1) + (V - 1) p chunk-forwards, plus one; each chunk is 1/V of
    # the rank's blocks. p = 4, V = 5: rank 0 (6 + 16 + 1) / 5 = 4.6 = p (1 + (p - 1) / (p V)); rank 3 17 / 5.
    plan = _recipe(pp_schedule="interleaved", virtual_stages=5)[2]
    assert in_flight_micro_batches(plan, 0) == pytest.approx(4.6)
    assert in_flight_micro_batches(plan, 3) == pytest.approx(3.4)
    assert in_flight_micro_batches(_recipe()[2], 0) == 4
    # With m = p micro-batches every chunk-forward runs in the warm-up: p micro-batches' worth.
    assert in_flight_micro_batches(_recipe(global_batch=8, pp_schedule="interleaved", virtual_stages=5)[2], 0) == 4


def test_interleaved_activation_memory_is_megatrons_factor():
    one = evaluate(*_recipe()).memory
    five = evaluate(*_recipe(pp_schedule="interleaved", virtual_stages=5)).memory
    assert one.peak_stage == five.peak_stage == 0
    assert five.breakdown_gib["activations"] / one.breakdown_gib["activations"] == pytest.approx(
        1 + 3 / (4 * 5), rel=1e-3
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"pp_schedule": "interleaved", "virtual_stages": 3}, "do not split into pp x virtual stages"),
        ({"pp_schedule": "interleaved", "virtual_stages": 5, "global_batch": 12}, "multiple of --pp 4"),
        ({"pp_schedule": "interleaved"}, "needs --virtual-stages 2 or more"),
        ({"virtual_stages": 2}, "needs the interleaved schedule"),
        ({"pp_schedule": "interleaved", "virtual_stages": 2, "pp": 1, "gpus": 16}, "needs pipeline parallelism"),
    ],
)
def test_interleaving_rules(changes, message):
    with pytest.raises(PlanError, match=message):
        _recipe(**changes)


def test_megatron_bf16_gradient_reduction_halves_the_main_grad_buffer():
    model, gpu, plan = plan_for("llama-2-7b", engine="megatron", gpus=8, zero=1, micro_batch=1, global_batch=8)
    bf16 = replace(plan, grad_reduce_bf16=True)
    fp32_terms = {t.name: t for t in state_layout(model.architecture, plan)}
    bf16_terms = {t.name: t for t in state_layout(model.architecture, bf16)}
    assert fp32_terms["gradients"].bytes_per_param == 4
    assert bf16_terms["gradients"].bytes_per_param == 2
    # The distributed optimizer casts its shard of the bf16 buffer to fp32 for the step: 4 bytes / D.
    assert "optimizer_step_temporaries" not in fp32_terms
    step = bf16_terms["optimizer_step_temporaries"]
    assert (step.bytes_per_param, step.sharded, step.lifetime) == (4, True, "step")
    a, b = evaluate(model, gpu, plan).memory, evaluate(model, gpu, bf16).memory
    params = 6_738_415_616
    assert (a.breakdown_gib["gradients"] - b.breakdown_gib["gradients"]) * GIB == pytest.approx(2 * params, rel=1e-6)


def test_bf16_reduction_and_overlap_in_the_data_parallel_time():
    # Megatron ZeRO-1 without overlap exposes reduce-scatter (grad bytes) + all-gather (bf16 params): with
    # a bf16 reduction (2 + 2) / (4 + 2) of the fp32 one.
    model, gpu, plan = plan_for(
        "llama-2-7b",
        engine="megatron",
        gpus=16,
        gpus_per_node=8,
        zero=1,
        micro_batch=1,
        global_batch=16,
        overlap_grad_reduce=False,
        overlap_param_gather=False,
    )
    fp32 = evaluate(model, gpu, plan).performance.breakdown_s["data_parallel_comm"]
    bf16 = evaluate(model, gpu, replace(plan, grad_reduce_bf16=True)).performance.breakdown_s["data_parallel_comm"]
    # Both pay the same NCCL latency: one reduce-scatter and one all-gather per max(40M, 16M)-parameter bucket.
    buckets = math.ceil(total_params(model.architecture) / 40e6)
    latency = 2 * buckets * comm.group_latency(gpu, 16, 1, 8).ring_gather_s
    assert (bf16 - latency) / (fp32 - latency) == pytest.approx(4 / 6)
    overlapped = evaluate(model, gpu, replace(plan, overlap_grad_reduce=None, overlap_param_gather=None))
    assert overlapped.performance.breakdown_s["data_parallel_comm"] < fp32


def test_deepspeed_overlap_comm_doubles_the_zero2_bucket():
    model, gpu, plan = plan_for("llama-2-7b", gpus=8, zero=2, micro_batch=1, global_batch=8)
    on = evaluate(model, gpu, replace(plan, overlap_grad_reduce=True)).memory.breakdown_gib
    off = evaluate(model, gpu, plan).memory.breakdown_gib
    assert off["communication_buckets"] * GIB == 500_000_000 * 2
    assert on["communication_buckets"] * GIB == 2 * 500_000_000 * 2


def test_checkpointing_every_nth_block():
    model, gpu, plan = plan_for(
        "llama-3.1-8b", "H100", engine="fsdp", gpus=8, zero=3, micro_batch=1, global_batch=16, checkpointing="full"
    )
    every3 = replace(plan, checkpointing_every=3)
    assert checkpointed_blocks(32, plan) == 32 and checkpointed_blocks(32, every3) == 10
    full, none = (
        flops_per_token(model.architecture, plan),
        flops_per_token(model.architecture, replace(plan, checkpointing="none")),
    )
    partial = flops_per_token(model.architecture, every3)
    assert partial.recompute_matmuls == pytest.approx(full.recompute_matmuls * 10 / 32)
    assert none.recompute_matmuls == 0
    # Saved activations (with accumulation, so the saved activations are alive at every phase's peak): 10
    # checkpointed blocks keep their input, 22 keep everything.
    act = {
        c: evaluate(model, gpu, p).memory.breakdown_gib["activations"] for c, p in (("full", plan), ("every3", every3))
    }
    act["none"] = evaluate(model, gpu, replace(plan, checkpointing="none")).memory.breakdown_gib["activations"]
    assert act["every3"] == pytest.approx(act["full"] * 10 / 32 + act["none"] * 22 / 32, rel=1e-6)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"checkpointing_every": 2}, "add --checkpointing full"),
        ({"engine": "deepspeed", "checkpointing": "full", "checkpointing_every": 2}, "every layer or none"),
        ({"engine": "fsdp", "zero": 3, "overlap_grad_reduce": False}, "always overlaps"),
        ({"engine": "megatron", "zero": 0, "overlap_param_gather": True}, "distributed optimizer"),
        ({"engine": "deepspeed", "zero": 2, "grad_reduce_bf16": False}, "fp32 reduction is not modelled"),
        ({"engine": "megatron", "fsdp_version": 1}, "applies to --engine fsdp"),
        ({"engine": "fsdp", "zero": 3, "fsdp_version": 3}, "must be 1 or 2"),
    ],
)
def test_engine_option_rules(fields, message):
    with pytest.raises(PlanError, match=message):
        plan_for("llama-2-7b", gpus=8, micro_batch=1, global_batch=8, **fields)


def test_defaults_keep_todays_plan():
    _, _, plan = plan_for("llama-2-7b", gpus=8, zero=3)
    assert (plan.pp_schedule, plan.virtual_stages, plan.checkpointing_every, plan.fsdp_version) == ("1f1b", 1, 1, 2)
    assert plan.grad_reduce_bf16 is plan.overlap_grad_reduce is plan.overlap_param_gather is None


def test_fsdp1_keeps_side_stream_blocks_reserved():
    # Llama-3-8B: the largest FSDP unit is the final norm + LM head (4096 + 128256 x 4096 parameters). FSDP1 keeps
    # two gathered units (bf16, the rate limiter's two all-gathers) and one unit's padded unsharded gradient
    # plus its shard (fp32 reduce, 4 ranks) in its side streams' pools: 525,336,576 x (2 x 2 + 4 x 1.25) bytes.
    model, gpu, plan = plan_for("llama-3-8b", engine="fsdp", gpus=4, zero=3, micro_batch=1, global_batch=32)
    v1 = replace(plan, fsdp_version=1)
    two, one = evaluate(model, gpu, plan).memory, evaluate(model, gpu, v1).memory
    assert two.breakdown_gib["fsdp1_stream_blocks"] == 0
    assert one.breakdown_gib["fsdp1_stream_blocks"] * GIB == pytest.approx((4096 + 525_336_576) * (2 * 2 + 4 * 1.25))
    assert one.allocated_peak_gib == two.allocated_peak_gib
    assert one.reserved_peak_gib - two.reserved_peak_gib == pytest.approx(one.breakdown_gib["fsdp1_stream_blocks"])


def test_accelerate_fsdp_variant_reduces_in_bf16_and_keeps_the_fsdp_version():
    from planner.launch.variants import build_variant

    model, gpu, plan = plan_for("llama-3-8b", engine="fsdp", gpus=4, zero=3, micro_batch=1, global_batch=32)
    chosen = evaluate(model, gpu, replace(plan, fsdp_version=1))
    variant = build_variant("fsdp-hf", chosen)
    assert variant.origin == "translated" and variant.plan.grad_reduce_bf16 is True
    assert variant.plan.fsdp_version == 1
    torchtitan = build_variant("fsdp", chosen)
    assert torchtitan.plan.fsdp_version == 2 and "fsdp_version: 1 -> 2" in torchtitan.changes
