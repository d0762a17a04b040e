"""Collective latency (alpha-beta) terms and the engines' collective counts, each against a hand derivation
from NCCL's tuning model (src/graph/tuning.cc) and the engines' bucket defaults."""

import pytest
from tests.conftest import plan_for

from planner.catalog import load_gpu
from planner.performance import comm
from planner.performance.model import _dp_exposed_s, data_parallel_messages, zero3_fetches_per_layer


def test_ring_and_tree_latency_of_a_two_node_group():
    # 16 ranks, 8 per A100 node: 2 nodes. Ring all-gather: 8.4 base + (16 - 2) NVLink hops x 3.4 + 1 network
    # hop x 14 = 70.0 us. Ring all-reduce: (8.4 + 2 x 61.6) x 1.4 (multi-node plateau) = 184.24 us. Tree:
    # 8.4 + 2 x ((8 - 1) x 4.0 + log2(2) x 14) = 92.4 us.
    latency = comm.group_latency(load_gpu("A100-80GB"), 16, 1, 8)
    assert latency.ring_gather_s == pytest.approx(70.0e-6)
    assert latency.ring_all_reduce_s == pytest.approx(184.24e-6)
    assert latency.tree_all_reduce_s == pytest.approx(92.4e-6)


def test_ring_latency_grows_with_ranks_and_tree_with_log_nodes():
    # 1024 ranks on 128 nodes: ring all-gather 8.4 + 896 x 3.4 + 127 x 14 = 4832.8 us; tree all-reduce
    # 8.4 + 2 x (7 x 4.0 + 7 x 14) = 260.4 us.
    latency = comm.group_latency(load_gpu("A100-80GB"), 1024, 1, 8)
    assert latency.ring_gather_s == pytest.approx(4832.8e-6)
    assert latency.tree_all_reduce_s == pytest.approx(260.4e-6)


def test_group_inside_a_node_pays_nvlink_hops_only_and_a_single_rank_nothing():
    gpu = load_gpu("A100-80GB")
    inside = comm.group_latency(gpu, 8, 1, 8)
    # 8.4 + 7 x 3.4 = 32.2 us; all-reduce 8.4 + 14 x 3.4 = 56.0 us (no plateau factor inside a node).
    assert inside.ring_gather_s == pytest.approx(32.2e-6)
    assert inside.ring_all_reduce_s == pytest.approx(56.0e-6)
    alone = comm.group_latency(gpu, 1, 1, 8)
    assert (alone.ring_gather_s, alone.ring_all_reduce_s, alone.tree_all_reduce_s) == (0, 0, 0)


def test_tp_strided_group_has_fewer_members_per_node():
    # dp 32 with tp 2 on 8-GPU nodes: 4 members per node on 8 nodes. Ring all-gather:
    # 8.4 + (32 - 8) x 3.4 + 7 x 14 = 188.0 us.
    latency = comm.group_latency(load_gpu("A100-80GB"), 32, 2, 8)
    assert latency.ring_gather_s == pytest.approx(188.0e-6)


def test_all_reduce_takes_the_faster_of_ring_and_tree():
    latency = comm.group_latency(load_gpu("A100-80GB"), 1024, 1, 8)
    # 1 MB over 1024 ranks at 45 GB/s: ring 13520.08 us + 2 x 1023/1024 x 1e6 / 45e9; tree 260.4 us + 1e6 /
    # (0.46 x 45e9): the tree wins.
    small = comm.all_reduce_s(1e6, 1024, 45.0, 1, latency)
    assert small == pytest.approx(260.4e-6 + 1e6 / (0.46 * 45e9))
    # 10 GB in one message: the ring's bandwidth term (about 2 bytes per byte) beats the tree's (1 / 0.46).
    large = comm.all_reduce_s(1e10, 1024, 45.0, 1, latency)
    assert large == pytest.approx(13520.08e-6 + 2 * 1023 / 1024 * 1e10 / 45e9)


def test_latency_is_paid_per_message():
    latency = comm.group_latency(load_gpu("A100-80GB"), 16, 1, 8)
    one = comm.all_gather_s(1e9, 16, 45.0, 1, latency)
    ten = comm.all_gather_s(1e9, 16, 45.0, 10, latency)
    assert ten - one == pytest.approx(9 * 70.0e-6)
    assert comm.all_gather_s(1e9, 16, 45.0) == pytest.approx(15 / 16 * 1e9 / 45e9)


def test_megatron_buckets_grow_with_data_parallel_size():
    # max(40M, 1M x dp) parameters per bucket: 7e9 parameters at dp 8 -> 175 buckets, at dp 1024 -> 7.
    model, _, small = plan_for(engine="megatron", gpus=8, zero=1)
    assert data_parallel_messages(model.architecture, small, 7e9, 32).reduction == 175
    _, _, large = plan_for(engine="megatron", gpus=1024, zero=1)
    assert data_parallel_messages(model.architecture, large, 7e9, 32).gather == 7


def test_deepspeed_buckets_and_zero3_module_fetches():
    model, _, plan = plan_for(engine="deepspeed", gpus=8, zero=3)
    arch = model.architecture
    # Llama-2-7B block: q, k, v, o, gate, up, down are fetched; the two RMSNorm weights (4096) stay gathered.
    assert zero3_fetches_per_layer(arch) == 7
    messages = data_parallel_messages(arch, plan, 6.74e9, 32)
    assert messages.gather == 32 * 7 + 2  # plus the embedding and the LM head
    assert messages.reduction == 14  # reduce_bucket_size 5e8: ceil(6.74e9 / 5e8)
    _, _, zero2 = plan_for(engine="deepspeed", gpus=8, zero=2)
    assert data_parallel_messages(arch, zero2, 6.74e9, 32).gather == 14  # allgather_bucket_size 5e8


def test_fsdp_collectives_per_block_and_ddp_buckets():
    model, _, fsdp = plan_for(engine="fsdp", gpus=8, zero=3)
    arch = model.architecture
    assert data_parallel_messages(arch, fsdp, 6.74e9, 32).gather == 33  # 32 blocks + the root
    _, _, ddp = plan_for(engine="fsdp", gpus=8, zero=0)
    # fp32 gradients in 25 MiB buckets: ceil(1e8 x 4 / 26214400) = 16
    assert data_parallel_messages(arch, ddp, 1e8, 32).reduction == 16


def test_overlap_still_exposes_the_last_bucket_and_the_first_gather():
    # Megatron, distributed optimizer, both overlaps on, compute windows far longer than the communication:
    # what stays exposed is one reduce-scatter bucket (fp32 main grads) and one all-gather bucket (bf16).
    model, gpu, plan = plan_for(engine="megatron", gpus=64, zero=1)
    params = 7e9
    messages = data_parallel_messages(model.architecture, plan, params, 32)
    assert messages.reduction == 110  # max(40M, 64M) = 64M parameters per bucket: ceil(109.4)
    exposed, total = _dp_exposed_s(plan, gpu, params, 1e6, 1e6, messages=messages)
    bandwidth = comm.group_bandwidth_gbps(gpu, 64, 1, 8)
    latency = comm.group_latency(gpu, 64, 1, 8)
    reduce = comm.all_gather_s(params * 4, 64, bandwidth, 110, latency)
    gather = comm.all_gather_s(params * 2, 64, bandwidth, 110, latency)
    assert total == pytest.approx(reduce + gather)
    assert exposed == pytest.approx(reduce / 110 + gather / 110)
    # Without message counts (bandwidth only) a long enough window hides everything, as before.
    assert _dp_exposed_s(plan, gpu, params, 1e6, 1e6)[0] == 0


def test_fsdp_waits_for_each_micro_batch_first_gather_and_the_step_last_reduce_scatter():
    # FSDP ZeRO-3, 4 micro-batches, windows long enough to hide the rest: each micro-batch waits for its first
    # unit's all-gather (parameters were resharded after the previous backward); one micro-batch's last
    # reduce-scatter overlaps the next forward, so only the step's final one is exposed.
    model, gpu, plan = plan_for(engine="fsdp", gpus=16, zero=3, micro_batch=1, global_batch=64)
    assert plan.grad_accum == 4
    params = 6.74e9
    messages = data_parallel_messages(model.architecture, plan, params, 32)
    exposed, _ = _dp_exposed_s(plan, gpu, params, 1e6, 1e6, messages=messages)
    bandwidth = comm.group_bandwidth_gbps(gpu, 16, 1, 8)
    latency = comm.group_latency(gpu, 16, 1, 8)
    gather = comm.all_gather_s(params * 2, 16, bandwidth, 33, latency)  # bf16, 32 blocks + the root
    reduce = comm.all_gather_s(params * 4, 16, bandwidth, 33, latency)  # fp32 reduce-scatter
    assert exposed == pytest.approx(4 * gather / 33 + reduce / 33)
