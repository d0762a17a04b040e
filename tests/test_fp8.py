"""fp8 as it runs: linears only, shape-dependent fp8 GEMM efficiency, the scaling recipe's memory-bound
passes and FSDP's fp8 weight all-gather, checked against every published bf16/fp8 pair of the same
layout found (issue 10: each ratio within 10%)."""

import pytest
from tests.conftest import plan_for
from tests.test_launch import MEGATRON_FLAGS

from planner.errors import PlanError
from planner.launch.megatron import megatron_arguments
from planner.launch.variants import translated_request
from planner.performance.model import (
    FP8_CAST_BYTES_PER_ELEMENT,
    HBM_EFFICIENCY,
    efficiency,
    estimate_performance,
    fp8_linear_elements,
    fp8_moe_linear_elements,
    fp8_scaling_s,
    fp8_weight_casts_per_micro_batch,
    gathered_param_bytes,
    tp_collective_byte_share,
)
from planner.plan import PlanRequest, resolve

TITAN_8B = dict(model="llama-3.1-8b", gpu="H100-96GB", engine="fsdp", zero=3, micro_batch=2, seq_len=8192, compile=True)
TORCHAO_8B = dict(
    model="llama-3-8b", gpu="H100-80GB", gpus=8, engine="fsdp", zero=3, micro_batch=1, global_batch=8, seq_len=8192
)
ASYNC_TP = dict(gpu="H100-96GB", engine="fsdp", zero=3, tp=8, seq_len=8192, compile=True)

PAIRS = [
    # torchtitan benchmarks/llama3_h100_202412_torchtitan.md (commit 31a17bf), Tables 1 and 3: FSDP + compile
    # vs FSDP + compile + Float8 (tensorwise, the only recipe then), selective (op) checkpointing, H100 96GB 500 W.
    (
        "torchtitan-2412-T1",
        {**TITAN_8B, "gpus": 8, "global_batch": 16, "checkpointing": "selective"},
        "tensorwise",
        6667,
        8532,
    ),
    (
        "torchtitan-2412-T3",
        {**TITAN_8B, "gpus": 128, "global_batch": 256, "checkpointing": "selective"},
        "tensorwise",
        6514,
        8380,
    ),
    # pytorch/ao torchao/float8/README.md, 'e2e training benchmarks' (torchao 0.10): Llama3-8b, 8 x H100,
    # batch 1, seq 8192, compile, FSDP2, per-op SAC; tensorwise with fp8 all-gather, rowwise with bf16 all-gather.
    ("torchao-tensorwise", {**TORCHAO_8B, "checkpointing": "selective", "compile": True}, "tensorwise", 6150, 7689.5),
    ("torchao-rowwise", {**TORCHAO_8B, "checkpointing": "selective", "compile": True}, "rowwise", 6150, 6768),
    # torchtitan benchmarks/asyncTP_llama3_h100_2025-06_torchtitan.md, vanilla-TP columns of its results image
    # (async-tp-perf-06-14-2025.png, as transcribed in a public torchtitan walkthrough): 70B FSDP 32 x TP 8, full
    # AC, local batch 16; 8B FSDP 8 x TP 8, per-op SAC, local batch 12; float8 tensorwise.
    (
        "asynctp-70b-tensorwise",
        {
            **ASYNC_TP,
            "model": "llama-3.1-70b",
            "gpus": 256,
            "micro_batch": 16,
            "global_batch": 512,
            "checkpointing": "full",
        },
        "tensorwise",
        597.3,
        809.8,
    ),
    (
        "asynctp-8b-tensorwise",
        {
            **ASYNC_TP,
            "model": "llama-3.1-8b",
            "gpus": 64,
            "micro_batch": 12,
            "global_batch": 96,
            "checkpointing": "selective",
        },
        "tensorwise",
        4378,
        5078.1,
    ),
]
PAIRS.append(
    # NVIDIA/dgxc-benchmarking llama3.1/README_70b.md @35a9aec (tests/data/external, dgxc_bench-11 and -17):
    # Llama 3.1 70B on 64 H100, TP 4 x PP 4 (VP 5) x CP 2, NeMo with TP comm overlap (userbuffers), TE delayed fp8.
    (
        "dgxc-70b-tp4-delayed",
        {
            "model": "llama-3.1-70b",
            "gpu": "H100-80GB",
            "gpus": 64,
            "tp": 4,
            "pp": 4,
            "cp": 2,
            "zero": 1,
            "global_batch": 128,
            "seq_len": 8192,
            "engine": "megatron",
            "pp_schedule": "interleaved",
            "virtual_stages": 5,
            "grad_reduce_bf16": True,
            "tp_comm_overlap": True,
        },
        "delayed",
        1113.0,
        1488.1,
    )
)


def _tokens_per_s(fields: dict, **extra) -> float:
    model, gpu, plan = resolve(PlanRequest(**fields, **extra))
    return estimate_performance(model, gpu, plan).tokens_per_s_per_gpu


@pytest.mark.parametrize("fields, recipe, bf16, fp8", [pytest.param(f, r, b, e, id=i) for i, f, r, b, e in PAIRS])
def test_published_fp8_gain_within_ten_percent(fields, recipe, bf16, fp8):
    predicted = _tokens_per_s(fields, precision="fp8", fp8_recipe=recipe) / _tokens_per_s(fields)
    assert predicted == pytest.approx(fp8 / bf16, rel=0.10)


def test_fp8_gemm_needs_twice_the_tokens_for_the_same_share_of_its_peak():
    _, gpu, _ = plan_for(gpu="H100")
    bf16, params = efficiency(gpu, 4096, 4096)
    fp8, _ = efficiency(gpu, 8192, 8192, peak_ratio=2.0)
    assert fp8 == pytest.approx(bf16)
    large, _ = efficiency(gpu, 1e9, 1e9, peak_ratio=2.0)
    assert large == pytest.approx(params.max, rel=1e-5)


def test_lm_head_and_attention_stay_bf16():
    # Same plan in bf16 and fp8 on a GPU whose fp8 peak is 2x: the head's time does not change.
    model, gpu, bf16 = plan_for(model="llama-3-8b", gpu="H100", gpus=8, engine="megatron", zero=1, pp=2)
    _, _, fp8 = plan_for(model="llama-3-8b", gpu="H100", gpus=8, engine="megatron", zero=1, pp=2, precision="fp8")
    a, b = estimate_performance(model, gpu, bf16), estimate_performance(model, gpu, fp8)
    assert b.breakdown_s["compute"] < a.breakdown_s["compute"]
    assert b.breakdown_s["compute"] > a.breakdown_s["compute"] / 2


def test_scaling_passes_are_bytes_over_bandwidth():
    # Llama-2-7B, one GPU, 2048 tokens: per block the linears' inputs and output gradients are
    # (4096 + 4096) x 4 (q, k, v, o) + (4096 + 11008) x 2 (gate, up) + (11008 + 4096) elements per token,
    # plus the weights once; delayed scaling moves 2 bytes per element.
    model, gpu, plan = plan_for(precision="fp8", gpu="H100", engine="megatron", fp8_recipe="delayed")
    per_token = 8192 * 4 + 15104 * 3
    weights = 4 * 4096**2 + 3 * 4096 * 11008
    elements = 32 * (2048 * per_token + weights)
    expected = elements * 2.0 / (3350e9 * HBM_EFFICIENCY)
    assert fp8_scaling_s(model.architecture, plan, gpu, 32) == pytest.approx(expected)
    assert FP8_CAST_BYTES_PER_ELEMENT["rowwise"] > FP8_CAST_BYTES_PER_ELEMENT["tensorwise"]


def test_megatron_casts_each_weight_once_per_step():
    # Megatron-Core's TE layers pass is_first_microbatch: the fp8 weights are cast on a step's first micro-batch
    # and reused for the other grad_accum - 1; FSDP's torchao Float8Linear casts on every micro-batch.
    model, gpu, megatron = plan_for(
        precision="fp8", gpu="H100", engine="megatron", fp8_recipe="delayed", micro_batch=1, global_batch=8
    )
    _, _, fsdp = plan_for(precision="fp8", gpu="H100", engine="fsdp", zero=3, micro_batch=1, global_batch=8)
    assert megatron.grad_accum == 8 and fsdp.grad_accum == 8
    assert fp8_weight_casts_per_micro_batch(megatron) == pytest.approx(1 / 8)
    assert fp8_weight_casts_per_micro_batch(fsdp) == 1.0
    activations, weights = fp8_linear_elements(model.architecture, megatron)
    expected = 32 * (2048 * activations + weights / 8) * 2.0 / (3350e9 * HBM_EFFICIENCY)
    assert fp8_scaling_s(model.architecture, megatron, gpu, 32) == pytest.approx(expected)


def test_tensor_parallel_all_gathers_move_fp8_under_transformer_engine():
    # Sequence parallelism, TP 8: TE casts before the forward input and backward output-gradient all-gathers,
    # so half the collectives move 1-byte elements; the reduce-scatters stay bf16.
    recipe = dict(model="llama-3-8b", gpu="H100", gpus=8, tp=8, engine="megatron", zero=1, sequence_parallel=True)
    _, _, fp8 = plan_for(**recipe, precision="fp8")
    _, _, bf16 = plan_for(**recipe)
    _, _, no_sp = plan_for(**{**recipe, "sequence_parallel": False}, precision="fp8")
    assert tp_collective_byte_share(fp8) == 0.75
    assert tp_collective_byte_share(bf16) == 1.0
    assert tp_collective_byte_share(no_sp) == 1.0  # all-reduces of bf16 outputs


def test_moe_blocks_cast_their_routed_copies_not_a_dense_mlp():
    # Qwen3-30B-A3B, EP 8, capacity factor 1 (load factor 1): per token the attention linears' inputs and output
    # gradients (4096 + 2048) + 2 x (512 + 2048) + (2048 + 4096) = 17,408 elements, and per routed copy the
    # expert's gate/up (768 + 2048 each) and down (2048 + 768): 8 copies x 8,448. The router multiplies in its own
    # dtype and is not cast. Weights: the attention's 18,874,368 and 16 local experts x 3 x 768 x 2048, once.
    model, gpu, plan = plan_for(
        model="qwen3-30b-a3b",
        gpu="H100",
        gpus=8,
        ep=8,
        engine="megatron",
        zero=1,
        precision="fp8",
        seq_len=4096,
        moe_capacity_factor=1.0,
    )
    arch = model.architecture
    per_token = 17408 + 8 * 8448
    weights = 18874368 + 16 * 3 * 768 * 2048
    assert fp8_moe_linear_elements(arch, plan) == pytest.approx((per_token, weights))
    expected = 48 * (4096 * per_token + weights) * FP8_CAST_BYTES_PER_ELEMENT["tensorwise"] / (3350e9 * HBM_EFFICIENCY)
    assert fp8_scaling_s(arch, plan, gpu, 48, 48) == pytest.approx(expected)


def test_fsdp_gathers_linear_weights_in_fp8_under_tensorwise():
    model, _, tensorwise = plan_for(model="llama-3-8b", gpu="H100", gpus=8, engine="fsdp", zero=3, precision="fp8")
    _, _, rowwise = plan_for(
        model="llama-3-8b", gpu="H100", gpus=8, engine="fsdp", zero=3, precision="fp8", fp8_recipe="rowwise"
    )
    arch = model.architecture
    linear = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    assert gathered_param_bytes(arch, rowwise) == 2.0
    assert 1.0 < gathered_param_bytes(arch, tensorwise) < 2.0
    total = linear / (2 - gathered_param_bytes(arch, tensorwise))
    assert total == pytest.approx(8.03e9, rel=0.01)


def test_mxfp8_needs_blackwell():
    with pytest.raises(PlanError, match="mxfp8 needs Blackwell"):
        plan_for(gpu="H100", engine="megatron", precision="fp8", fp8_recipe="mxfp8")
    _, _, plan = plan_for(gpu="B200", engine="megatron", precision="fp8", fp8_recipe="mxfp8")
    assert plan.fp8_recipe == "mxfp8"


MEGATRON_FP8 = dict(model="llama-3-8b", gpu="H100", gpus=16, engine="megatron", zero=1, precision="fp8")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"engine": "fsdp", "zero": 3}, "--engine fsdp has no such option"),
        ({"precision": "bf16"}, "--precision bf16 has none"),
        ({"zero": 0}, "use --zero 1"),
        ({"fp8_param_gather": "yes"}, "must be true or false"),
    ],
)
def test_fp8_param_gather_refused_where_it_does_not_apply(fields, message):
    with pytest.raises(PlanError, match=message):
        plan_for(**{**MEGATRON_FP8, "fp8_param_gather": True, **fields})


def test_fp8_param_gather_gathers_the_linear_weights_in_one_byte():
    # Llama-3-8B: 32 blocks of 218.1M linear weights in 8.03B parameters gather at 1 byte, the rest at 2;
    # only the distributed optimizer's parameter gather changes, and the Megatron writer passes the flag.
    model, gpu, plain = plan_for(**MEGATRON_FP8)
    _, _, fp8_params = plan_for(**MEGATRON_FP8, fp8_param_gather=True)
    assert plain.fp8_param_gather is False
    linear = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    assert gathered_param_bytes(model.architecture, plain) == 2.0
    assert gathered_param_bytes(model.architecture, fp8_params) == pytest.approx(2 - linear / 8.03e9, rel=1e-3)
    before = estimate_performance(model, gpu, plain)
    after = estimate_performance(model, gpu, fp8_params)
    assert after.data_parallel_comm_total_s < before.data_parallel_comm_total_s
    assert after.breakdown_s["compute"] == before.breakdown_s["compute"]
    args = megatron_arguments(model, fp8_params)
    assert "--fp8-param-gather" in args and "--fp8-param-gather" in MEGATRON_FLAGS
    assert "--fp8-param-gather" not in megatron_arguments(model, plain)


def test_other_engines_translate_fp8_param_gather_away():
    model, _, plan = plan_for(**MEGATRON_FP8, fp8_param_gather=True)
    request, why = translated_request(plan, model, "fsdp")
    assert request.fp8_param_gather is False and "--fp8-param-gather" in why
    same, _ = translated_request(plan, model, "megatron")
    assert same.fp8_param_gather is True


def test_fp8_param_gather_counts_moe_blocks_linears():
    # Mixtral-8x7B (32 MoE blocks, h 4096, 8 experts of width 14336, GQA with 8 of 32 heads, vocab 32000): a block's
    # fp8 linears are its attention, 2 x 4096 x 4096 + 2 x 1024 x 4096 = 41,943,040, and its experts,
    # 8 x 3 x 4096 x 14336 = 1,409,286,144; its router (8 x 4096) and two norms (2 x 4096) stay bf16. Of
    # 32 x 1,451,270,144 + 2 x 32000 x 4096 = 46,702,788,608 parameters, 46,439,333,888 gather at 1 byte.
    model, _, plan = plan_for(**{**MEGATRON_FP8, "model": "mixtral-8x7b", "gpus": 16, "fp8_param_gather": True})
    linear = 32 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 8 * 3 * 4096 * 14336)
    assert linear == 46_439_333_888
    assert gathered_param_bytes(model.architecture, plan) == pytest.approx(2 - linear / 46_702_788_608, rel=1e-12)
