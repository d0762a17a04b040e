"""Context-parallel attention as each engine runs it: the key/value exchange left exposed (PyTorch's all-gather ring
under the FSDP engine, Transformer Engine's p2p ring under Megatron), the per-step merge passes, and the buffers the
ring keeps in memory. Numbers derived by hand in each docstring."""

import pytest
from tests.conftest import plan_for

from planner.memory.activations import context_parallel_buffer_bytes
from planner.performance import comm
from planner.performance.model import context_parallel_comm_s, context_parallel_merge_bytes, ring_hop_latency_s

# Llama 3.1 8B (q_width 4096, kv_width 1024) on one 8-GPU H100 node (NVLink 900 GB/s both ways: bus bandwidth
# 450 x 0.8 = 360 GB/s), sequence 8192 over cp 2: 4096 local tokens, bf16 (a = 2).
FSDP = dict(gpus=8, cp=2, engine="fsdp", zero=3, seq_len=8192)
MEGATRON = dict(gpus=8, cp=2, engine="megatron", zero=1, seq_len=8192)
CHUNK_BYTES = 2 * 1024 * 4096 * 2
"""K and V of the local chunk: 2 x kv_width x tokens x a = 16,777,216 bytes."""
HOP_S = (8.4 + 3.4) * 1e-6
"""NCCL base latency + one NVLink ring hop: the two neighbours share the node."""


def _plan(**fields):
    return plan_for("llama-3.1-8b", "H100-80GB", **fields)


def test_ring_hop_latency_is_one_nvlink_hop_inside_the_node_and_one_network_hop_across():
    """cp 2 x tp 1 stays in the node: 8.4 + 3.4 us. cp 2 x tp 8 spans two nodes: 8.4 + 14.0 us."""
    _, gpu, plan = _plan(**FSDP)
    assert ring_hop_latency_s(gpu, plan) == pytest.approx(HOP_S)
    _, gpu, plan = _plan(**{**FSDP, "gpus": 16, "tp": 8})
    assert ring_hop_latency_s(gpu, plan) == pytest.approx((8.4 + 14.0) * 1e-6)


def test_send_recv_is_latency_plus_bytes_over_the_link():
    """16,777,216 bytes over 360 GB/s = 46.603 us, plus 11.8 us latency."""
    assert comm.send_recv_s(CHUNK_BYTES, 360.0, HOP_S) == pytest.approx(HOP_S + CHUNK_BYTES / 360e9)


def test_nothing_hidden_exposes_every_exchange():
    """Step kernels of zero length hide nothing (one layer, one forward pass).
    TE: kv hop = 11.8 + 46.603 = 58.403 us; forward 1 hop, backward 1 step of K/V + dK/dV (2 hops), the final
    dK/dV hop: 4 x 58.403 = 233.61 us.
    PyTorch: all-gather of the 2-chunk buffer = 11.8 + (1/2) x 2 x 16,777,216 / 360e9 = 58.403 us, in forward and
    again in backward; fp32 dK/dV hop = 11.8 + 33,554,432 / 360e9 = 105.007 us, after step 0 (hidden by nothing
    here) and the final one: 2 x 58.403 + 2 x 105.007 = 326.82 us."""
    model, gpu, plan = _plan(**MEGATRON)
    kv_hop = HOP_S + CHUNK_BYTES / 360e9
    te = context_parallel_comm_s(model.architecture, plan, gpu, 0.0, 0.0, 1, 1)
    assert te == pytest.approx(4 * kv_hop)
    model, gpu, plan = _plan(**FSDP)
    dkv_hop = HOP_S + 2 * CHUNK_BYTES / 360e9
    torch = context_parallel_comm_s(model.architecture, plan, gpu, 0.0, 0.0, 1, 1)
    assert torch == pytest.approx(2 * kv_hop + 2 * dkv_hop)
    assert torch == pytest.approx(326.82e-6, rel=1e-4)


def test_long_kernels_leave_only_the_last_gradient_hop():
    """Step kernels of 1 s hide every overlapped exchange; the hop that brings dK/dV home stays: TE 58.403 us (bf16),
    PyTorch 105.007 us (fp32). Two forward passes (full checkpointing) change nothing then."""
    model, gpu, plan = _plan(**MEGATRON)
    assert context_parallel_comm_s(model.architecture, plan, gpu, 1.0, 1.0, 2, 1) == pytest.approx(
        HOP_S + CHUNK_BYTES / 360e9
    )
    model, gpu, plan = _plan(**FSDP)
    assert context_parallel_comm_s(model.architecture, plan, gpu, 1.0, 1.0, 2, 1) == pytest.approx(
        HOP_S + 2 * CHUNK_BYTES / 360e9
    )


def test_all_gather_hidden_only_by_the_first_step():
    """PyTorch at cp 8 (seq 32768: 4096 tokens per rank, same chunk): the all-gather moves 7/8 of 8 chunks,
    7 x 16,777,216 / 360e9 = 326.22 us plus the 8-rank latency 8.4 + 7 x 3.4 = 32.2 us: 358.42 us, of which a
    100 us first-step kernel hides 100 us: 258.42 us exposed per pass. The 7 fp32 dK/dV hops (105.007 us) hide
    behind 200 us backward steps except the last: forward 258.42 + backward (358.42 - 200) + 105.007
    = 521.85 us."""
    model, gpu, plan = _plan(**{**FSDP, "seq_len": 32768, "cp": 8})
    gather = 32.2e-6 + 7 * CHUNK_BYTES / 360e9
    exposed = context_parallel_comm_s(model.architecture, plan, gpu, 100e-6, 200e-6, 1, 1)
    assert exposed == pytest.approx((gather - 100e-6) + (gather - 200e-6) + HOP_S + 2 * CHUNK_BYTES / 360e9)
    assert exposed == pytest.approx(521.85e-6, rel=1e-4)


def test_no_context_parallelism_no_exchange_no_merges():
    model, gpu, plan = _plan(**{**FSDP, "cp": 1})
    assert context_parallel_comm_s(model.architecture, plan, gpu, 0.0, 0.0, 1, 1) == 0.0
    assert tuple(float(x) for x in context_parallel_merge_bytes(model.architecture, plan)) == (0.0, 0.0)


def test_merge_bytes_per_engine():
    """4096 tokens x q_width 4096 = 16,777,216 output elements; K (and V) 4096 x 1024 = 4,194,304 elements.
    TE (bf16): a correction pass 2a for the first step, 3a for the other: 2 x 2 + 3 x 2 = 10 bytes per element;
    forward the output (167,772,160), backward dQ, dK and dV (25,165,824 elements: 251,658,240).
    PyTorch forward: upcast 6 + one merged step (6 + 32) + downcast 6 = 50 per output element (838,860,800) plus
    one K/V send copy (2 x 4,194,304 x 4 = 33,554,432): 872,415,232. Backward: dQ zero-fill 4 + 2 accumulations
    x 10 + downcast 6 = 30 per element (503,316,480); dK and dV each 4 + 2 x 10 + 2 fp32 send copies x 8 + one
    K/V copy 4 + downcast 6 = 50 (8,388,608 x 50 = 419,430,400): 922,746,880."""
    model, _, plan = _plan(**MEGATRON)
    assert tuple(float(x) for x in context_parallel_merge_bytes(model.architecture, plan)) == (
        167_772_160,
        251_658_240,
    )
    model, _, plan = _plan(**FSDP)
    assert tuple(float(x) for x in context_parallel_merge_bytes(model.architecture, plan)) == (
        872_415_232,
        922_746_880,
    )


def test_buffers_per_engine():
    """Per local token: TE double-buffers the received K and V, 2 x 2 x a x kv_width = 8192 bytes. PyTorch holds
    the gathered K and V of the whole sequence (cp x 2 x a x kv_width = 8192), fp32 dQ, dK, dV accumulators
    (4 x (4096 + 2 x 1024) = 24,576) and two fp32 dK/dV copies in flight (2 x 4 x 2 x 1024 = 16,384): 49,152.
    At cp 8 the gathered part is 4 x larger: 32,768 + 40,960 = 73,728."""
    model, _, plan = _plan(**MEGATRON)
    assert float(context_parallel_buffer_bytes(model.architecture, plan)) == 8192
    model, _, plan = _plan(**FSDP)
    assert float(context_parallel_buffer_bytes(model.architecture, plan)) == 49_152
    model, _, plan = _plan(**{**FSDP, "cp": 8})
    assert float(context_parallel_buffer_bytes(model.architecture, plan)) == 73_728
    model, _, plan = _plan(**{**FSDP, "cp": 1})
    assert float(context_parallel_buffer_bytes(model.architecture, plan)) == 0.0
