"""The pointwise (memory-bound) bytes of a block per engine's kernel set (planner.performance.pointwise)."""

import pytest
from tests.conftest import plan_for

from planner.performance.model import HBM_EFFICIENCY, pointwise_s
from planner.performance.pointwise import pointwise_bytes_per_token, pointwise_kernels

# Llama 3.1 8B: h 4096, SwiGLU f 14336, 32 query heads and 8 KV heads of 128 (q 4096, kv 1024), RMSNorm, RoPE.
H, F, Q, KV = 4096, 14336, 4096, 1024
LLAMA = {"model": "llama-3.1-8b", "gpu": "H100", "gpus": 8, "micro_batch": 1, "global_batch": 8, "seq_len": 4096}


def test_each_engine_runs_its_own_kernel_set():
    assert pointwise_kernels(plan_for(**LLAMA, engine="megatron")[2]) == "fused"
    assert pointwise_kernels(plan_for(**LLAMA, engine="fsdp", zero=3)[2]) == "eager"
    assert pointwise_kernels(plan_for(**LLAMA, engine="fsdp", zero=3, compile=True)[2]) == "compiled"
    assert pointwise_kernels(plan_for(**LLAMA, engine="deepspeed", zero=3)[2]) == "eager"


def test_eager_block_moves_the_bytes_of_every_composite_operator():
    # forward: two RMSNorms of 7 kernels (36 bytes per element), two residual adds (6), silu and multiply (10 per
    # element of f), the complex RoPE on q and k (20); backward 76, 6, 18 and 20.
    model, _, plan = plan_for(**LLAMA, engine="fsdp", zero=3)
    forward = 36 * 2 * H + 6 * 2 * H + 10 * F + 20 * (Q + KV)
    backward = 76 * 2 * H + 6 * 2 * H + 18 * F + 20 * (Q + KV)
    assert pointwise_bytes_per_token(model.architecture, plan) == forward + backward


def test_fused_block_reads_and_writes_each_region_once():
    model, _, plan = plan_for(**LLAMA, engine="megatron")
    forward = 4 * 2 * H + 6 * 2 * H + 6 * F + 4 * (Q + KV)
    backward = 6 * 2 * H + 6 * 2 * H + 10 * F + 4 * (Q + KV)
    assert pointwise_bytes_per_token(model.architecture, plan) == forward + backward
    # an eager Llama block moves 3.6x the fused one's bytes (1,622,016 against 450,560 per token)
    eager = pointwise_bytes_per_token(model.architecture, plan_for(**LLAMA, engine="fsdp", zero=3)[2])
    assert eager / (forward + backward) == pytest.approx(3.6, rel=1e-12)


def test_selective_checkpointing_reruns_pointwise_kernels_only_under_the_pytorch_engines():
    # torchtitan's op-level policy saves matmul and attention outputs and recomputes the rest; Megatron's selective
    # recompute reruns the core attention only.
    model, _, fsdp = plan_for(**LLAMA, engine="fsdp", zero=3, compile=True)
    _, _, fsdp_selective = plan_for(**LLAMA, engine="fsdp", zero=3, compile=True, checkpointing="selective")
    compiled_forward = 4 * 2 * H + 4 * 2 * H + 6 * F + 4 * (Q + KV)
    arch = model.architecture
    assert pointwise_bytes_per_token(arch, fsdp_selective) - pointwise_bytes_per_token(arch, fsdp) == compiled_forward
    _, _, megatron = plan_for(**LLAMA, engine="megatron")
    _, _, megatron_selective = plan_for(**LLAMA, engine="megatron", checkpointing="selective")
    assert pointwise_bytes_per_token(arch, megatron_selective) == pointwise_bytes_per_token(arch, megatron)


def test_tensor_parallelism_splits_the_norm_regions_only_with_sequence_parallelism():
    model, _, sp = plan_for(**LLAMA, engine="megatron", tp=4)
    _, _, no_sp = plan_for(**LLAMA, engine="megatron", tp=4, sequence_parallel=False)
    split = (4 + 6 + 6 + 6) * 2 * H  # norms and residual adds, forward and backward
    rest = (6 + 10) * F + (4 + 4) * (Q + KV)
    assert pointwise_bytes_per_token(model.architecture, sp) == pytest.approx((split + rest) / 4)
    assert pointwise_bytes_per_token(model.architecture, no_sp) == pytest.approx(split + rest / 4)


def test_pointwise_time_is_the_bytes_over_the_memory_bandwidth():
    model, gpu, plan = plan_for(**LLAMA, engine="megatron")
    per_token = pointwise_bytes_per_token(model.architecture, plan)
    expected = 32 * 4096 * per_token / (3350e9 * HBM_EFFICIENCY)
    assert pointwise_s(model.architecture, plan, gpu, 32) == pytest.approx(expected, rel=1e-12)


def test_fp32_training_doubles_the_bytes_but_drops_the_eager_norm_casts():
    model, _, bf16 = plan_for(**LLAMA, engine="fsdp", zero=3)
    _, _, fp32 = plan_for(**LLAMA, engine="fsdp", zero=3, precision="fp32")
    arch = model.architecture
    norms_bf16, norms_fp32 = (36 + 76) * 2 * H, (28 + 76) * 2 * H
    rest = pointwise_bytes_per_token(arch, bf16) - norms_bf16
    assert pointwise_bytes_per_token(arch, fp32) == 2 * rest + norms_fp32
