"""Step time, throughput, MFU/HFU of a plan (pure functions of model, GPU and plan).

Per micro-batch on the slowest pipeline stage:

    t_mb = compute + exposed tensor-parallel comm + exposed context-parallel comm + pipeline p2p

    compute = matmul FLOPs / (peak[matmul dtype] x eff)
              + causal share x attention FLOPs / (peak[bf16] x flash speed x eff)
              + pointwise bytes / (HBM bandwidth x HBM_EFFICIENCY)   (norms, activation, RoPE, residual adds:
                counted per engine's kernel set, planner.performance.pointwise)
              (+ score-matrix memory traffic for eager attention)
    eff     = max x T/(T + half_tokens) x w/(w + half_width)   (GPU-specific, fitted: hardware/*.yaml)
              (w: pointwise_width, the hidden size per matmul FLOP one GPU works on)

The attention FLOPs are the convention's (whole s x s, as MFU counts them); a causal flash kernel executes
about half (causal_attention_fraction), at the speed its FlashAttention version reaches on the GPU
relative to the GEMMs (flash_attention_speed, sourced per GPU in hardware/*.yaml).

Mixture-of-Experts blocks add (planner.performance.model.expert_gemm_s, expert_parallel_comm_s): the
routed experts' grouped GEMMs, each at the larger of its compute time and the time to stream its expert's
weights and tokens through HBM (small tokens-per-expert GEMMs are memory-bound), scaled by the busiest
rank's load; the permute/unpermute gathers of the routed copies (memory-bound, permute_s); and the token
exchanges over the expert-parallel group, on the critical path.

Per step: the pipeline runs grad_accum + (pp - 1)/V micro-batch slots (V = 1 for 1F1B; the bubble (pp-1)/(V m)),
then the data-parallel communication that compute could not hide, the optimizer update and CPU offload.
"""

import functools
from dataclasses import dataclass, field, fields, replace

import numpy as np

from planner.architecture import (
    blocks_params,
    dense_layers,
    expert_tensors,
    layer_tensors,
    moe_layer_tensors,
    moe_layers,
)
from planner.catalog import GpuSpec, ModelSpec
from planner.catalog.hardware import ComputeEfficiency
from planner.catalog.models import Architecture
from planner.memory.activations import (
    FP32_BYTES,
    compute_bytes,
    routed_copies_share,
    routed_load_factor,
)
from planner.memory.buffers import (
    DEEPSPEED_ALLGATHER_BUCKET_ELEMENTS,
    DEEPSPEED_PARAM_PERSISTENCE_THRESHOLD,
    DEEPSPEED_REDUCE_BUCKET_ELEMENTS,
    compute_param_bytes,
    deepspeed_overlap_comm,
    gradient_reduce_bytes,
)
from planner.memory.quantization import NF4_BITS, NF4_BLOCKSIZE
from planner.memory.stages import checkpointed_fraction, first_and_last_stage, stage_blocks, stage_moe_blocks
from planner.memory.states import optimizer_bytes_per_param, state_layout, trained_term
from planner.performance import comm
from planner.performance.flops import (
    FlopsPerToken,
    attention_layer_spans,
    block_matmul_params,
    expert_matmul_params,
    flops_per_token,
)
from planner.performance.pointwise import pointwise_bytes_per_token
from planner.plan import Plan

UNFITTED_EFFICIENCY = ComputeEfficiency(
    max=0.5, half_tokens=256.0, half_width=256.0, source="not fitted for this GPU: a conservative default"
)
"""Used only for GPUs whose catalog file has no fitted `compute_efficiency` (the output says so)."""

SOFTCAP_PASSES = 13
"""Memory passes over a soft-capped tensor (cap * tanh(x / cap), Gemma 2), each over all its values in
the compute dtype: forward divides, takes tanh and multiplies, each reading and writing it (6); backward
multiplies the incoming gradient by the cap (2), runs the tanh backward from the saved output and the
gradient (3) and divides (2). Elementwise, so memory-bound. Applies to the final logits (V values per
token) and, with eager attention, to the attention scores (heads x s per token); a FlashAttention kernel
caps the scores in registers and makes no passes."""

FLASH_SOFTCAP_NOTE = (
    "attention soft-capping inside FlashAttention is not timed: it adds one tanh per attention score on the "
    "special-function units (forward, and again in the backward's recompute), about one per 7 x head_dim "
    "attention FLOPs, at most 5-10% of the attention kernel's time and under 2% of a step up to 8192 tokens on H100"
)
"""Why the attention soft-cap (Gemma 2's attn_logit_softcapping) costs no time when a FlashAttention kernel
applies it (FlashAttention >= 2.6 `softcap`, planner.plan.SOFTCAP_FLASH_VERSIONS). The kernel caps the scores
in registers: no memory pass, one tanh per score element in the forward and one in the backward, which
recomputes the scores (Dao-AILab/flash-attention PRs #1025 and #1033: tanh after QK^T, the backward derives
dtanh from the recomputed capped scores with a multiply-add). Per score the forward does 4 x head_dim matmul
FLOPs and the backward 10 x head_dim, so tanh runs once per 7 x head_dim attention FLOPs. The special-function
units are the bottleneck that matters: H100 SXM has 3.9 TFLOP/s of them against 989 of bf16 matmul (Shah et
al. 2024, FlashAttention-3, Sec. 3), so at FlashAttention-2's 35% of peak on H100 the tanh adds at most
0.35 x 989 / (3.9 x 7 x 256) = 5% of the attention kernel's time for Gemma 2 9B (head_dim 256) and 10% for
Gemma 2 27B (head_dim 128), before any overlap with the tensor cores. Attention takes under a quarter of a
Gemma 2 step on H100 with FlashAttention-2 up to 8192 tokens (this model: 9B 25%, 27B 11% at 8192; half the
layers are 4096-token sliding windows), so the step changes by under 2%: below the accuracy of the
flash_attention_speed constants it would add to, so it is stated rather than timed."""

EAGER_ATTENTION_SCORE_PASSES = 10
"""Memory passes over the s x s score matrix without flash attention: forward writes the scores, the
softmax reads them and writes probabilities, the weighted sum reads them (4); backward reads the
probabilities twice, writes and reads their gradient and writes the scores' gradient (6)."""

HOST_MEMORY_BANDWIDTH_GBPS_PER_NODE = 280.0
"""Host DRAM bandwidth of a dual-socket GPU server: 2 sockets x 6 channels x DDR4-2933 (23.5 GB/s) =
282 GB/s (AWS p4d's Xeon 8275CL). CPU Adam is bound by it and shares it among the node's GPUs."""

HBM_EFFICIENCY = 0.8
"""Share of peak HBM bandwidth memory-bound kernels (optimizer update, eager softmax) reach."""

CUDNN_ATTENTION_ARCHITECTURES = ("hopper", "blackwell")
"""GPU families on which Transformer Engine runs attention through cuDNN's fused kernel rather than the flash-attn
package: its backend selection gives FusedAttention preference over FlashAttention on sm90 and later, Hopper and
Blackwell alike (NVIDIA/TransformerEngine transformer_engine/pytorch/attention/dot_product_attention/utils.py
get_attention_backend @d0067d0, 'give FusedAttention preference on Hopper+'); on sm80 the order is the reverse."""
CUDNN_ATTENTION_SPEEDUP = 1.5
"""Speed of Transformer Engine's cuDNN fused attention over FlashAttention-2 on Hopper. TE's selection order
on sm90 is cuDNN attention > flash-attention (on sm80 the reverse), and its benchmark on H100 measured
cuDNN 1.38x faster than flash-attn 2 forward + backward for causal attention at sequence 2048 (head dim 128)
and 1.59x at 8192 with GQA, '20-50% advantages on Hopper' (NVIDIA/TransformerEngine
docs/examples/attention/attention.ipynb @5417dbf, sections 1.3 and 2). 1.5 lies between the two causal
figures. Applies to Megatron (Transformer Engine layers) on the plans' default FlashAttention-2; a plan
that says FlashAttention-3 keeps that kernel's speed. On Blackwell the product with the FlashAttention-2
figure (0.47 x 1.5 = 0.71 of GEMM speed) matches cuDNN's own figure there: FlashAttention-4 reaches 1,605
TFLOP/s bf16 on B200 (71% of its 2,250 peak), up to 1.3x cuDNN 9.13 (FlashAttention-4 announcement,
together.ai/blog/flashattention-4, March 2026), so cuDNN runs at about 1,235 TFLOP/s, 55% of peak,
0.73 of the 75% the convention takes for GEMM-like kernels (hardware/*.yaml flash_attention_source)."""

TP_COLLECTIVES_PER_LAYER = 8
"""Per block and micro-batch with sequence parallelism: all-gather + reduce-scatter around attention and
around the MLP in forward (4) and their mirrors in backward (4) (Korthikanti et al. 2022, Fig. 5);
without sequence parallelism the 4 all-reduces move the same volume."""


@dataclass(frozen=True)
class PerformanceEstimate:
    step_time_s: float
    tokens_per_s: float
    """Whole job."""
    tokens_per_s_per_gpu: float
    mfu: float
    """Model FLOPs utilisation against the dense peak of the plan's matmul dtype."""
    hfu: float
    tflops_per_gpu: float
    """Model TFLOP/s per GPU."""
    compute_efficiency: float
    """The matmul efficiency the compute time used."""
    efficiency_source: str
    flops_per_token: dict[str, float]
    breakdown_s: dict[str, float]
    """Where the step time goes (sums to step_time_s)."""
    notes: list[str] = field(default_factory=list)
    data_parallel_comm_total_s: float = 0.0
    """The data-parallel traffic's whole time per step, hidden or not (breakdown_s holds the part not hidden
    behind compute): a plan whose reduction is fully overlapped has 0 there and this above 0."""

    def to_dict(self) -> dict:
        return {
            "step_time_s": round(self.step_time_s, 6),
            "tokens_per_s": round(self.tokens_per_s, 3),
            "tokens_per_s_per_gpu": round(self.tokens_per_s_per_gpu, 3),
            "mfu": round(self.mfu, 4),
            "hfu": round(self.hfu, 4),
            "tflops_per_gpu": round(self.tflops_per_gpu, 3),
            "compute_efficiency": round(self.compute_efficiency, 4),
            "efficiency_source": self.efficiency_source,
            "flops_per_token": {k: round(v) for k, v in self.flops_per_token.items()},
            "breakdown_s": {k: round(v, 6) for k, v in self.breakdown_s.items()},
            "data_parallel_comm_total_s": round(self.data_parallel_comm_total_s, 6),
            "notes": list(self.notes),
        }


def matmul_dtype(plan: Plan) -> str:
    """Tensor-core dtype of the matmuls: fp32 training runs TF32 matmuls (Megatron and torchtitan enable
    it; `torch.backends.cuda.matmul.allow_tf32`), FP8 recipes run linears in fp8."""
    return {"bf16": "bf16", "pure-bf16": "bf16", "fp16": "fp16", "fp32": "tf32", "fp8": "fp8"}[plan.precision]


def _peak_tflops(gpu: GpuSpec, dtype: str) -> float:
    value = gpu.peak_tflops(dtype) or gpu.peak_tflops("fp16") or gpu.peak_tflops("fp32")
    return float(value)


def recomputed_tp_collectives(plan: Plan, arch_layers: int = 1) -> float:
    """Tensor-parallel collectives per block that checkpointing runs again in backward. Full: the whole
    forward, 4. Selective under the PyTorch engines (torchtitan's op-level policy): the policy keeps the
    reduce-scatters but not the all-gathers in front of the column-parallel matmuls, whose outputs the
    recomputed matmuls need again, 2 (a count of examples/train.py's collectives found the recompute
    before the reduce-scatters were saved). Megatron's selective
    recompute is the core attention, inside one TP rank: 0."""
    if plan.checkpointing == "full" and plan.checkpointing_every > 1:
        return 4 * checkpointed_fraction(arch_layers, plan)
    if plan.checkpointing == "full":
        return 4
    if plan.checkpointing == "selective" and plan.engine != "megatron":
        return 2
    return 0


def tp_collective_byte_share(plan: Plan):
    """Bytes of the average tensor-parallel collective over those of a compute-dtype activation. Under fp8
    with sequence parallelism, Transformer Engine casts before it gathers: the forward all-gathers in front
    of the column-parallel GEMMs move the fp8 input (Linear/LayerNormLinear cast, then
    gather_along_first_dim), and so do the backward all-gathers of the output gradient in front of the
    row-parallel GEMMs' dgrad (grad_output_preprocess: "FP8 case with gather: ... cast, transpose for
    efficient gather"; NVIDIA/TransformerEngine transformer_engine/pytorch/module/base.py and linear.py).
    The reduce-scatters carry GEMM outputs and data gradients, which stay in bf16. Half the collectives
    (every all-gather) at 1 byte instead of 2: 3/4 of the bf16 volume. Megatron runs its linears through
    TE; without sequence parallelism the all-reduces move bf16 outputs, and the PyTorch engines' float8
    tensor-parallel paths are not modelled."""
    fp8_gathers = (plan.precision == "fp8") & (plan.engine == "megatron") & plan.sequence_parallel
    return np.where(fp8_gathers, 0.75, 1.0)


def exposed_tp_comm_s(tp_comm_s, linear_gemm_s):
    """Tensor-parallel traffic left on the critical path under Megatron's --tp-comm-overlap.

    Transformer Engine's userbuffers pair every sequence-parallel collective of a block with the GEMM next
    to it: the all-gather in front of the QKV and FC1 GEMMs and the reduce-scatter after the projection and
    FC2 GEMMs are split into tp chunks, each chunk's exchange running while the previous chunk multiplies;
    in backward the mirrored collectives overlap the data-gradient GEMMs, and the all-gather the weight
    gradient needs is overlapped in bulk (TransformerEngine's userbuffers comm_gemm_overlap; Megatron-LM
    --tp-comm-overlap and its ub_overlap_ag/ub_overlap_rs/ub_bulk_dgrad/ub_bulk_wgrad defaults). So the
    traffic hides behind the blocks' linear GEMMs of the same micro-batch and only what exceeds them stays
    exposed."""
    return np.maximum(0.0, tp_comm_s - linear_gemm_s)


def replicated_pointwise_share(arch: Architecture) -> float:
    """Share of a block's pointwise memory traffic that tensor parallelism does not split, counted in
    elements read and written per token: the regions on the full hidden width h, i.e. the two norms (read h,
    write h each), the two residual adds (read 2h, write h each) and, with hidden dropout, the two dropouts'
    one-byte masks (h / 2 two-byte elements each), all in forward (backward moves about twice as much in the
    same proportions). The rest works on the
    TP-split widths and shrinks with the GEMMs: the MLP activation (gated: read 2f, write f; otherwise read
    f, write f) and rotary embeddings on the query and key heads (read and write q + kv). Korthikanti et al.
    2022, Sec. 4.2.2: the layer norms and the dropouts after attention and MLP are replicated across the
    tensor-parallel group, while the GeLU works on the f/tp slice of the column-parallel GEMM's output."""
    h, f = arch.hidden_size, arch.ffn_hidden_size
    replicated = 2 * (2 * h) + 2 * (3 * h) + (h if arch.hidden_dropout else 0)
    activation = 3 * f if arch.mlp == "swiglu" else 2 * f
    rotary = 2 * (arch.q_width + arch.kv_width) if arch.position_embedding == "rope" else 0
    return replicated / (replicated + activation + rotary)


def pointwise_width(arch: Architecture, plan: Plan):
    """The width in the efficiency's width factor: the hidden size h, or without sequence parallelism h over
    r x tp + (1 - r) with r = replicated_pointwise_share, as if the per-FLOP overhead grew like the
    pointwise regions every TP rank repeats (Korthikanti et al. 2022, Sec. 4.2.2).

    The factor used to stand for the pointwise kernels themselves; their time is now counted in bytes
    (pointwise_s) and the factor, still fitted, keeps what shrinks with the width beyond them (the GEMMs'
    fixed per-tile costs, epilogues and last waves, amortised over fewer FLOPs at a small width). Its width
    kept the TP adjustment: with the plain h the Megatron 2021/2022 papers' TP-8 runs without sequence
    parallelism improve (left out 26% -> 20%), but the A100 fit that leaves MosaicML out moves to where
    MosaicML is predicted at 14.2% (7.7% with this width). (h / tp for every TP plan put the
    sequence-parallel TP-8 cases of tests/data 10-35% too slow.)"""
    share = replicated_pointwise_share(arch)
    return np.where(plan.sequence_parallel, arch.hidden_size, arch.hidden_size / (share * plan.tp + 1 - share))


def efficiency(gpu: GpuSpec, tokens: float, width: float, peak_ratio: float = 1.0) -> tuple[float, ComputeEfficiency]:
    """Achieved fraction of peak for GEMMs with `tokens` rows; `width` is `pointwise_width`.

    `peak_ratio` is the GEMM dtype's peak over the bf16 peak the constants were fitted at (2 for fp8 on
    Hopper). Both factors have the form 1 / (1 + overhead time / matmul time): a per-GEMM fixed cost (tile
    ramp-up, wave quantisation, epilogue, launch) for the token factor, what shrinks with the width for the
    width factor (pointwise_width). Neither overhead gets faster when the matmuls run on fp8 tensor cores, while
    the matmul time divides by `peak_ratio`, so both half points scale by it: an fp8 GEMM needs `peak_ratio`
    times the tokens (and width) to reach the same share of its own peak. That is fp8's shape-dependent
    efficiency: near 2x for large shapes, much less for small ones (torchao float8 README, 'Performance':
    the GEMM speedup approaches 2x as M, K, N grow and falls below 1 for small shapes). torch.compile does not
    enter here: what it fuses is counted in bytes (planner.performance.pointwise)."""
    params = gpu.compute_efficiency or UNFITTED_EFFICIENCY
    half_width = params.half_width * peak_ratio
    half_tokens = params.half_tokens * peak_ratio
    value = params.max * tokens / (tokens + half_tokens) * width / (width + half_width)
    return value, params


FP8_CAST_BYTES_PER_ELEMENT = {"tensorwise": 6.0, "delayed": 2.0, "rowwise": 10.0, "mxfp8": 6.0 + 2 / 32}
"""HBM bytes moved per element of a bf16 operand (2 bytes) to scale and cast it to fp8 for one linear.
Each operand is needed in two layouts, one per GEMM that reads it (the forward GEMM and the backward GEMM
that uses its transpose), written as 1-byte fp8 each.
tensorwise (dynamic, torchao Float8Linear / TE Float8CurrentScaling): an amax pass (read 2) and one cast
pass writing both layouts (read 2, write 1 + 1) = 6. delayed (TE DelayedScaling): the scale comes from
the amax history, so the producing kernel (TE's LayerNormLinear norm, the fused activation, the backward's
cast_transpose) writes the two fp8 layouts itself and takes the amax on the way: of the bf16 write
(2 bytes) it would have done, 1 + 1 fp8 bytes remain, no extra read: 2. rowwise (torchao):
one scale per row of each layout, so each layout has its own amax and cast pass: 2 x (2 + 2 + 1) = 10.
mxfp8 (one e8m0 scale per 32 elements, taken inside the cast kernel; torchao casts dim0 and dim1
separately): 2 x (2 + 1) plus a 1-byte scale per 32 elements per layout. These passes are memory-bound,
so they cost bytes / (HBM bandwidth x HBM_EFFICIENCY) (torchao float8 README, 'Derivation': the fp8
overhead is bounded by memory bandwidth)."""


def fp8_linear_elements(arch: Architecture, plan: Plan, weight_divisor=1.0):
    """(activation elements per token, weight elements) one GPU scales and casts per block and micro-batch:
    every linear's input and output gradient (T x in, T x out), and its weight (divided by `weight_divisor`
    where FSDP casts the local shard before an fp8 all-gather), all split over the TP ranks."""
    matrices = [t for t in layer_tensors(arch) if t.is_matrix]
    activations = sum(t.rows + t.cols for t in matrices) / plan.tp
    weights = sum(t.numel for t in matrices) / plan.tp / weight_divisor
    return activations, weights


FP8_UNCAST_MOE_LINEARS = ("router", "shared_expert_gate")
"""Linears of a MoE block that run outside the fp8 recipe: Megatron-Core's router multiplies in its own dtype
(megatron/core/transformer/moe/router.py, Router.gating: router_gating_linear(input, weight, bias, router_dtype),
bf16 or fp32, not a Transformer Engine module), as does Qwen2-MoE's one-output shared-expert gate."""


def fp8_moe_block_matrices(arch: Architecture) -> list:
    """The weight matrices of one MoE block, routed experts aside, that run in fp8: attention and shared experts,
    not the router (FP8_UNCAST_MOE_LINEARS)."""
    return [t for t in moe_layer_tensors(arch) if t.is_matrix and not t.name.startswith(FP8_UNCAST_MOE_LINEARS)]


def fp8_moe_linear_elements(arch: Architecture, plan: Plan, weight_divisor=1.0, expert_weight_divisor=1.0):
    """(activation elements per token, weight elements) one GPU scales and casts per MoE block and micro-batch.
    The block's attention and shared-expert linears as in a dense block (fp8_linear_elements); no dense MLP, but
    the routed experts' grouped linears: each of the rank's routed copies (T x k x the busiest rank's load,
    routed_copies_share of the tokens) casts its input and output gradient of every expert matrix, on the
    expert-TP share of the inner width, and each of the rank's num_experts / ep local experts casts its weights
    once (Transformer Engine's GroupedLinear quantizes per expert; under an fp8 all-gather the shard of the
    expert-data-parallel group, `expert_weight_divisor`)."""
    matrices = fp8_moe_block_matrices(arch)
    activations = sum(t.rows + t.cols for t in matrices) / plan.tp
    weights = sum(t.numel for t in matrices) / plan.tp / weight_divisor
    etp = plan.expert_tp
    experts = [t for t in expert_tensors(arch) if t.is_matrix]
    per_copy = sum(t.rows / etp + t.cols if "down" not in t.name else t.rows + t.cols / etp for t in experts)
    copies = arch.experts_per_token * routed_copies_share(plan) * routed_load_factor(arch, plan)
    local = arch.num_experts // plan.ep
    expert_weights = local * expert_matmul_params(arch) / etp / expert_weight_divisor
    return activations + copies * per_copy, weights + expert_weights


def fsdp_fp8_all_gather(plan: Plan) -> bool:
    """torchao's enable_fsdp_float8_all_gather: FSDP2 casts each Float8Linear weight shard to fp8 before
    the all-gather (tensorwise scaling only; torchtitan docs/float8.md), halving the gathered bytes of the
    linears and casting 1/N of each weight per GPU."""
    return plan.precision == "fp8" and plan.engine == "fsdp" and plan.zero == 3 and plan.fp8_recipe == "tensorwise"


def fp8_weight_casts_per_micro_batch(plan: Plan):
    """How often each fp8 weight is cast per micro-batch. Megatron-Core's Transformer Engine layers pass
    `is_first_microbatch` (True on a step's first micro-batch, then False; None only under
    disable_parameter_transpose_cache), and TE then casts the weight and its transpose once and reuses the
    cached fp8 copies for the step's other micro-batches ("it allows caching of the FP8 versions of the
    weights": TransformerEngine pytorch/module/linear.py, Linear.forward docstring, and its
    update_fp8_weights; Megatron-LM megatron/core/extensions/transformer_engine.py, TELinear.forward): once
    per grad_accum micro-batches. torchao's Float8Linear and TE layers called without the flag cast every
    micro-batch."""
    return np.where(plan.engine == "megatron", 1.0 / plan.grad_accum, 1.0)


def fp8_scaling_s(arch: Architecture, plan: Plan, gpu: GpuSpec, layers, moe_layers=0):
    """Per micro-batch: the memory-bound amax and cast passes of the plan's fp8 recipe over `layers` blocks, of
    which `moe_layers` are MoE blocks (fp8_moe_linear_elements; 0 unless precision is fp8); the weights' share at
    fp8_weight_casts_per_micro_batch."""
    if plan.precision != "fp8":
        return 0.0
    divisor = plan.shard_degree if fsdp_fp8_all_gather(plan) else 1.0
    tokens = plan.tokens_per_micro_batch
    activations, weights = fp8_linear_elements(arch, plan, divisor)
    casts = fp8_weight_casts_per_micro_batch(plan)
    elements = (layers - moe_layers) * (tokens * activations + weights * casts)
    if arch.is_moe:
        expert_divisor = plan.expert_shard_degree if fsdp_fp8_all_gather(plan) else 1.0
        moe_activations, moe_weights = fp8_moe_linear_elements(arch, plan, divisor, expert_divisor)
        elements = elements + moe_layers * (tokens * moe_activations + moe_weights * casts)
    return elements * FP8_CAST_BYTES_PER_ELEMENT[plan.fp8_recipe] / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY)


def pointwise_s(arch: Architecture, plan: Plan, gpu: GpuSpec, layers, moe_layers=0):
    """Per micro-batch: the pointwise kernels of `layers` blocks (of which `moe_layers` are MoE blocks) at the
    HBM efficiency of memory-bound kernels (planner.performance.pointwise counts their bytes per engine)."""
    dense = (layers - moe_layers) * pointwise_bytes_per_token(arch, plan)
    moe = moe_layers * pointwise_bytes_per_token(arch, plan, moe_block=True) if arch.is_moe else 0.0
    return plan.tokens_per_micro_batch * (dense + moe) / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY)


def gathered_param_bytes(arch: Architecture, plan: Plan, routed_experts: bool = True) -> float:
    """Bytes per parameter of the parameter all-gather (FSDP/ZeRO-3 before each use, Megatron's distributed
    optimizer after the step): the compute dtype, except the blocks' linear weights gathered in fp8 (1 byte)
    under fsdp_fp8_all_gather or Megatron's --fp8-param-gather, weighted by their share of the parameters
    (norms, embeddings, the LM head and MoE routers stay bf16). Dense blocks' linears are their matmul weights;
    a MoE block's are its attention and shared-expert linears and all its routed experts' matrices
    (fp8_moe_block_matrices: Megatron-Core's router is no fp8 module). DeepSeek-V3: 669.1B of its 671.0B parameters
    (embedding and head counted twice) are fp8 linears, 2 - 0.997 = 1.003 bytes per parameter.
    `routed_experts=False`: the same average over the parameters other than the routed experts (what the
    dense data-parallel group gathers when the experts gather over their own group, expert_data_parallel)."""
    c = compute_param_bytes(plan)
    if not (fsdp_fp8_all_gather(plan) or plan.fp8_param_gather):
        return float(c)
    experts = arch.num_experts * expert_matmul_params(arch)
    moe_linear = sum(t.numel for t in fp8_moe_block_matrices(arch)) + experts * routed_experts
    linear = dense_layers(arch) * block_matmul_params(arch) + moe_layers(arch) * moe_linear
    total = blocks_params(arch, arch.num_experts) + 2 * arch.vocab_size * arch.hidden_size
    if not routed_experts:
        total -= moe_layers(arch) * arch.num_experts * sum(t.numel for t in expert_tensors(arch))
    return c - (c - 1) * linear / total


def expert_gathered_param_bytes(arch: Architecture, plan: Plan) -> float:
    """Bytes per parameter of the routed experts' all-gather: their matrices in fp8 (1 byte) under the fp8
    gathers of gathered_param_bytes, their biases (gpt-oss) in the compute dtype."""
    c = compute_param_bytes(plan)
    if not (fsdp_fp8_all_gather(plan) or plan.fp8_param_gather):
        return float(c)
    return c - (c - 1) * expert_matmul_params(arch) / sum(t.numel for t in expert_tensors(arch))


def pipeline_bubble_slots(plan: Plan):
    """Idle micro-batch slots per step: (pp - 1) for 1F1B, (pp - 1) / V with V interleaved chunks per rank,
    i.e. the bubble fraction (pp - 1) / (V m) of Narayanan et al. 2021 (Sec. 2.2.2)."""
    return (plan.pp - 1) / plan.virtual_stages


def pipeline_sends_per_micro_batch(plan: Plan):
    """Boundary activations a rank sends and receives per micro-batch (forward output, backward gradient),
    once per model chunk: interleaving multiplies the point-to-point traffic by V (Narayanan et al. 2021,
    Sec. 2.2.2)."""
    return 2 * plan.virtual_stages


def exposed_p2p_s(plan: Plan, p2p_s, compute_s):
    """Pipeline point-to-point time left on the critical path, per micro-batch. Megatron's interleaved schedule
    posts each chunk's sends and receives asynchronously and waits for them only before the chunk that needs
    them, so in the steady 1F1B phase they run during the other direction's compute (Megatron-LM
    --overlap-p2p-communication, on by default: training/arguments.py defines only --no-overlap-p2p-communication,
    and forces it off for the non-interleaved schedule; core/pipeline_parallel/schedules.py,
    forward_backward_pipelining_with_interleaving). The transfers of the pipeline fill and flush stay exposed
    (NeMo docs, features/optimizations/communication_overlap.rst, "Pipeline-parallel Communication Overlap"):
    on the first rank 2 (pp - 1) + (V - 1) pp of the step's m V chunk-forwards are warm-up, and as many
    chunk-backwards cool-down (get_num_warmup_microbatches), so that share of the traffic is exposed and the
    rest only where it outlasts the compute. 1F1B and the other engines wait on each transfer."""
    overlapped = (plan.engine == "megatron") & (plan.pp_schedule == "interleaved") & (plan.virtual_stages > 1)
    v = plan.virtual_stages
    warm_up = np.minimum(1.0, (2 * (plan.pp - 1) + (v - 1) * plan.pp) / (plan.grad_accum * v))
    steady = (1.0 - warm_up) * p2p_s
    return np.where(overlapped, warm_up * p2p_s + np.maximum(0.0, steady - compute_s), p2p_s)


def tokens_per_expert(arch: Architecture, plan: Plan):
    """Rows of each local expert's GEMM per micro-batch: the rank's T x k routed copies (the busiest rank's
    load) over its num_experts / ep experts."""
    copies = plan.tokens_per_micro_batch * arch.experts_per_token * routed_copies_share(plan)
    return copies * routed_load_factor(arch, plan) * plan.ep / arch.num_experts


def expert_gemm_bytes(arch: Architecture, plan: Plan, rows) -> float:
    """HBM bytes of one pass (forward, input gradient or weight gradient) over one local expert's matrices
    with `rows` tokens: each GEMM reads its two operands and writes its result, rows x K + K x N + rows x N
    elements (the three passes move the same three tensors); the expert's inner width is split over the
    expert-tensor-parallel ranks."""
    a, etp = compute_bytes(plan), plan.expert_tp
    total = 0.0
    for t in expert_tensors(arch):
        if not t.is_matrix:
            continue
        out_dim, in_dim = (t.rows / etp, t.cols) if "down" not in t.name else (t.rows, t.cols / etp)
        total = total + a * (rows * in_dim + in_dim * out_dim + rows * out_dim)
    return total


def expert_gemm_s(arch: Architecture, plan: Plan, gpu: GpuSpec, work, peak_flops, width, peak_ratio):
    """Per micro-batch: the routed experts' grouped GEMMs of a stage on its busiest rank.

    Roofline (Williams, Waterman and Patterson, CACM 2009): a GEMM takes the larger of its FLOPs at the
    achieved matmul rate and its bytes at the achieved HBM bandwidth. An expert GEMM with M tokens and a
    K x N weight has arithmetic intensity M K N / (M K + K N + M N) FLOPs per byte-pair, about M for small
    M: below the GPU's ridge point (peak FLOP/s over HBM bandwidth, about 295 for H100 bf16) it is
    memory-bound, streaming the expert's weights for a few tokens. Fine-grained experts (DeepSeek-V3,
    Qwen3-MoE) reach few tokens per expert at small micro-batches or high EP, which is where MoE training
    loses its efficiency; no fitted per-row factor is used.

    The compute side runs at the efficiency of a GEMM with the expert's M rows (`tokens_per_expert`), not
    the micro-batch's tokens: a grouped GEMM is one GEMM problem per local expert, each tiled on its own M
    (its last tile partly empty, its ramp-up and epilogue its own; DeepGEMM issue #211 on per-group
    M-occupancy), so the token factor of the dense fit applies per expert. gpt-oss-120b at EP 8 and one
    4k-token sequence: 1,024 rows per expert, 0.5 of the factor's ceiling against 0.8 at 4,096."""
    if not arch.is_moe:
        return 0.0
    rows = tokens_per_expert(arch, plan)
    eff = efficiency(gpu, rows, width, peak_ratio)[0]
    compute = plan.tokens_per_micro_batch * routed_load_factor(arch, plan) * work.expert_flops / plan.tp
    compute = compute / (peak_flops * eff)
    passes = 3 + work.expert_recompute_share
    local = arch.num_experts // plan.ep
    moved = work.moe_layers * local * passes * expert_gemm_bytes(arch, plan, rows)
    memory = moved / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY)
    return np.maximum(compute, memory)


MOE_MFU_NOTE = (
    "MoE: model TFLOP/s and MFU count the active parameters (router, shared and the top-k routed experts per "
    "token), not all experts"
)

PERMUTE_PASSES_PER_DIRECTION = 2
"""Token reorderings of one MoE block per direction: the permute that groups each token's k copies by expert
and the unpermute that scatters the expert outputs back and sums them with their routing weights
(Megatron-Core moe_utils.permute / unpermute, TransformerEngine's fused moe_permute / moe_unpermute; the
backward runs both again for the gradients). Each is a gather or scatter: it reads one side and writes the
other, memory-bound."""


def permute_s(arch: Architecture, plan: Plan, gpu: GpuSpec, work):
    """Per micro-batch: the permute/unpermute passes of a stage's MoE blocks on its busiest rank: per pass
    the rank's tokens (T x etp / tp, h values) and their routed copies (k x load of each) are read or
    written once, in forward, backward and a fully recomputed forward, at the HBM efficiency of other
    memory-bound kernels."""
    if not arch.is_moe:
        return 0.0
    tokens = plan.tokens_per_micro_batch * routed_copies_share(plan)
    copies = tokens * arch.experts_per_token * routed_load_factor(arch, plan)
    per_pass = compute_bytes(plan) * arch.hidden_size * (tokens + copies)
    passes = PERMUTE_PASSES_PER_DIRECTION * (2 + work.expert_recompute_share)
    return work.moe_layers * passes * per_pass / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY)


EXCHANGES_PER_MOE_BLOCK = 4
"""Token exchanges per MoE block and micro-batch: dispatch and combine in forward, their mirrors for the
gradients in backward (Megatron-Core MoEAlltoAllTokenDispatcher token_permutation / token_unpermutation);
a fully recomputed forward runs its two again."""


def expert_parallel_comm_s(arch: Architecture, plan: Plan, gpu: GpuSpec, work):
    """Per micro-batch: the token exchanges of a stage's MoE blocks over the expert-parallel group, exposed.

    alltoall: each rank sends its T x k routed copies of h values (the busiest rank receives its load
    factor's share more) to the ranks of their experts; the EP group's ranks sit etp apart (Megatron-Core's
    expert rank order tp-ep-dp: the expert-TP ranks are adjacent, then EP), so it stays on NVLink while
    ep x etp fits the node (comm.all_to_all_s). allgather: the EP group's tokens are gathered on every rank
    and the outputs reduce-scattered back (ring all-gather of T x ep tokens). flex (DeepEP / HybridEP): as
    alltoall inside the NVLink domain, but across domains each token crosses the network once per node
    that holds any of its experts (`flex_network_share`). None overlaps with compute in the default
    Megatron and torchtitan schedules; Megatron's combined 1F1B (`moe_ep_overlap`) is applied by the caller
    (`ep_overlap_exposed_s`)."""
    if not arch.is_moe:
        return 0.0
    a, h = compute_bytes(plan), arch.hidden_size
    tokens = plan.tokens_per_micro_batch
    exchanges = work.moe_layers * (EXCHANGES_PER_MOE_BLOCK + 2 * work.expert_recompute_share)
    if plan.moe_dispatcher == "allgather":
        bw = comm.group_bandwidth_gbps(gpu, plan.ep, plan.expert_tp, plan.gpus_per_node)
        return exchanges * comm.all_gather_s(tokens * h * a * plan.ep, plan.ep, bw)
    send = tokens * arch.experts_per_token * routed_copies_share(plan) * h * a * routed_load_factor(arch, plan)
    if plan.moe_dispatcher == "flex":
        return exchanges * flex_all_to_all_s(arch, plan, gpu, send)
    return exchanges * comm.all_to_all_s(send, plan.ep, plan.expert_tp, gpu, plan.gpus_per_node)


def ep_domain_split(plan: Plan, gpu: GpuSpec):
    """(EP ranks per NVLink domain, NVLink domains the EP group spans): its ranks sit etp apart, so a domain
    of D GPUs holds D / etp of them (at most ep)."""
    domain = gpu.nvlink_domain(plan.gpus_per_node)
    local = np.maximum(1, np.minimum(plan.ep, domain // plan.expert_tp))
    return local, plan.ep / local


def flex_network_share(arch: Architecture, plan: Plan, gpu: GpuSpec):
    """Network bytes of DeepEP's / HybridEP's dispatch over those of a plain all-to-all, for a group spanning
    n NVLink domains: DeepEP's internode kernels send a token once over RDMA to each node that holds one or
    more of its k experts and forward it to them over NVLink there (deepseek-ai/DeepEP README, 'Normal
    kernels'; DeepSeek-V3 report, arXiv 2412.19437, Sec. 3.2.2), where NCCL's all-to-all sends each of the
    k copies. With the experts spread evenly and a balanced router picking k distinct experts at random, a
    given node of E / n experts is missed with probability C(E - E/n, k) / C(E, k), so a token reaches
    (n - 1)(1 - miss) other nodes where the all-to-all sends k (n - 1) / n copies: a share n (1 - miss) / k
    (0.25 for Qwen3's 128 experts top-8 over two nodes, 0.45 over four). 1 inside one domain."""
    _, nodes = ep_domain_split(plan, gpu)
    experts, k = arch.num_experts, arch.experts_per_token
    picks = np.arange(k)
    outside = experts - experts / np.asarray(nodes, dtype=float)[..., None]
    miss = np.prod(np.clip(outside - picks, 0.0, None) / (experts - picks), axis=-1)
    return np.where(nodes > 1, np.minimum(1.0, nodes * (1 - miss) / k), 1.0)


def flex_all_to_all_s(arch: Architecture, plan: Plan, gpu: GpuSpec, send):
    """One flex (DeepEP / HybridEP) exchange of `send` bytes per rank: the copies for experts in the rank's
    NVLink domain over NVLink (an all-to-all among the domain's EP ranks), the deduplicated remainder over
    the network (`flex_network_share` of what comm.all_to_all_s sends there); the slower sets the time."""
    local, _ = ep_domain_split(plan, gpu)
    inside = comm.all_to_all_s(send * local / plan.ep, local, plan.expert_tp, gpu, plan.gpus_per_node)
    across = comm.all_to_all_s(
        send * flex_network_share(arch, plan, gpu), plan.ep, plan.expert_tp, gpu, plan.gpus_per_node
    )
    return np.maximum(inside, across)


OVERLAPPED_COMM_SM_SHARE = 20 / 132
"""Share of the SMs the token exchanges occupy while they run beside compute: DeepEP's kernels take 20 SMs
by default (Megatron-Core transformer_config.py, moe_deepep_num_sms 'historical default 20'), of H100's
132; NCCL's all-to-all runs one block per channel on a similar number. Compute overlapped with an exchange
runs on the remaining SMs, so it is slowed by this share of the overlap."""


def ep_overlap_exposed_s(plan: Plan, ep_s, compute_s, expert_s):
    """Per micro-batch, the expert-parallel exchanges' cost on the critical path. Without overlap: all of them.

    Megatron's combined 1F1B (--overlap-moe-expert-parallel-comm; Megatron-Core combined_1f1b.py and the
    'Combined 1F1B: Expert-Parallel All-to-All Overlap' guide) runs one micro-batch's forward beside another's
    backward, layer by layer, each exchange of one beside a compute chunk of the other: the backward's combine
    beside the forward's attention, the forward's dispatch beside the backward's experts, the backward's
    dispatch beside the forward's experts, the forward's combine beside the backward's attention. With the
    four exchanges equal (ep_s / 4 each) and the forward a third of the compute (attention part a, experts
    part m = expert_s / compute_s), the chunks are a/3, 2m/3, m/3 and 2a/3 of compute_s; each pair takes the
    longer of the two plus the SM share the exchange takes from the compute it overlaps
    (OVERLAPPED_COMM_SM_SHARE), and what exceeds the compute alone is the exposed cost."""
    if not plan.moe_ep_overlap:
        return ep_s
    expert_share = np.clip(expert_s / np.maximum(compute_s, 1e-30), 0.0, 1.0)
    attention_share = 1.0 - expert_share
    exchange = ep_s / 4
    total = 0.0
    for share in (attention_share / 3, 2 * expert_share / 3, expert_share / 3, 2 * attention_share / 3):
        chunk = share * compute_s
        total = total + np.maximum(exchange, chunk) + OVERLAPPED_COMM_SM_SHARE * np.minimum(exchange, chunk)
    return total - compute_s


def astuple_shallow(work: object) -> tuple:
    """The fields of a dataclass value in order, not copied (dataclasses.astuple deep-copies arrays)."""
    return tuple(getattr(work, f.name) for f in fields(work))


@dataclass(frozen=True)
class _StageWork:
    matmul_flops: object
    """Block matmuls (fp8 under an fp8 recipe)."""
    head_flops: object
    """The LM head (bf16 under every fp8 recipe: torchao's and Megatron's fp8 cover the blocks' linears)."""
    attention_flops: object
    forward_share: object
    layers: object
    has_head: object
    """The stage holds the LM head (the last one)."""
    expert_flops: object = 0.0
    """Routed-expert matmuls per token of the stage (forward + backward + recompute), on T x k copies."""
    moe_layers: object = 0
    expert_recompute_share: object = 0.0
    """Share of the stage's MoE blocks whose forward full checkpointing runs again."""


def causal_attention_fraction(arch: Architecture, plan: Plan):
    """Share of the conventional attention FLOPs (every query against its whole span, flops.attention_span)
    that a causal flash-attention kernel executes. FlashAttention skips the key tiles above the diagonal
    (Dao 2023, FlashAttention-2 Sec. 3.1.1 "causal masking": about half the blocks), so query i computes
    against min(i, w) keys for a window w (the sequence without one): on average w - w^2 / (2 s) of the
    w the convention counts, 1/2 without a window; with several kinds of layers (Gemma's local and
    global ones) the shares are weighted by each kind's conventional count. Eager attention computes
    and then masks the whole s x s score matrix, so it executes all of it. The MFU/HFU conventions keep
    counting the whole span;
    only the compute time uses this."""
    s = plan.seq_len
    spans = attention_layer_spans(arch, s)
    executed = sum(n * w * (1.0 - w / (2.0 * s)) for n, w in spans) / sum(n * w for n, w in spans)
    return np.where(plan.flash_attention, executed, 1.0)


def flash_attention_speed(gpu: GpuSpec, plan: Plan) -> float:
    """The plan's flash-attention kernels relative to the GEMMs on this GPU (hardware/*.yaml, sourced per
    FlashAttention version); 1 for a version the catalog does not list (make_plan refuses those). Megatron
    runs attention through Transformer Engine, which on Hopper and Blackwell picks cuDNN's fused flash attention
    instead of the flash-attn package (CUDNN_ATTENTION_ARCHITECTURES, CUDNN_ATTENTION_SPEEDUP)."""
    speed = gpu.flash_attention_speed.get(plan.flash_attention_version)
    speed = 1.0 if speed is None else speed
    if gpu.architecture in CUDNN_ATTENTION_ARCHITECTURES and plan.flash_attention_version == 2:
        speed = np.where(plan.engine == "megatron", min(1.0, speed * CUDNN_ATTENTION_SPEEDUP), speed)
    return speed


def _stage_work(flops: FlopsPerToken, plan: Plan, arch: Architecture, stage, causal_fraction) -> _StageWork:
    """FLOPs per token one pipeline stage executes (before dividing by TP); the attention's are the causal
    share `causal_fraction` of the conventional count."""
    num_layers = arch.num_layers
    layers = stage_blocks(num_layers, plan, stage)
    share = layers / num_layers
    head = flops.lm_head * (stage == plan.pp - 1)
    executed_attention = flops.attention + flops.flash_backward_recompute + flops.recompute_attention
    attention = executed_attention * share * causal_fraction
    blocks = flops.block_matmuls + flops.adapter_matmuls
    matmul = (blocks + flops.recompute_matmuls) * share
    if plan.peft:
        forward = ((blocks + flops.attention * causal_fraction) * share + head) * flops.forward_fraction
    else:
        forward = (flops.block_matmuls + flops.attention * causal_fraction) * share / 3 + head / 3
    mtp, is_last = flops.mtp, stage == plan.pp - 1
    if mtp is not None:  # the MTP depths run on the last stage: their blocks count among its layers
        matmul = matmul + (mtp.block_matmuls + mtp.recompute_matmuls) * is_last
        head = head + mtp.lm_head * is_last
        mtp_attention = mtp.attention + mtp.flash_backward_recompute + mtp.recompute_attention
        attention = attention + mtp_attention * causal_fraction * is_last
        forward = forward + (mtp.block_matmuls + mtp.attention * causal_fraction + mtp.lm_head) / 3 * is_last
        layers = layers + plan.mtp_layers * is_last
    if not arch.is_moe:
        return _StageWork(matmul, head, attention, forward / (matmul + head + attention), layers, stage == plan.pp - 1)
    moe = stage_moe_blocks(arch, plan, stage)
    moe_share = moe / moe_layers(arch)
    experts = (flops.expert_matmuls + flops.recompute_expert_matmuls) * moe_share
    forward = forward + flops.expert_matmuls * moe_share / 3
    recompute_share = flops.recompute_expert_matmuls / (flops.expert_matmuls / 3)
    if mtp is not None and mtp.expert_matmuls:
        experts = experts + (mtp.expert_matmuls + mtp.recompute_expert_matmuls) * is_last
        forward = forward + mtp.expert_matmuls / 3 * is_last
        moe = moe + plan.mtp_layers * is_last
    return _StageWork(
        matmul,
        head,
        attention,
        forward / (matmul + head + attention + experts),
        layers,
        stage == plan.pp - 1,
        experts,
        moe,
        recompute_share,
    )


MEGATRON_BUCKET_PARAMS_FLOOR = 40_000_000
MEGATRON_BUCKET_PARAMS_PER_RANK = 1_000_000
"""Megatron-Core's default gradient/parameter bucket: max(40M, 1M x data-parallel size) parameters
(DistributedDataParallelConfig.bucket_size: "larger DP sizes need larger buckets to ensure collectives do not
become latency-bound")."""

DDP_BUCKET_BYTES = 25 * 2**20
"""PyTorch DistributedDataParallel's bucket_cap_mb default (25 MiB of gradients per all-reduce)."""


@dataclass(frozen=True)
class DataParallelMessages:
    """How many collectives carry each data-parallel transfer (arrays allowed): each pays NCCL's latency."""

    reduction: object
    """Per gradient reduction (all-reduce or reduce-scatter)."""
    gather: object
    """Per parameter gather (one forward or backward pass under ZeRO-3/FSDP, one step below)."""


def zero3_fetches_per_layer(arch: Architecture) -> float:
    """Modules DeepSpeed ZeRO-3 fetches (one all-gather each) for one block, averaged over the blocks: its
    linear layers (PartitionedParameterCoordinator.fetch_sub_module gathers a module's parameters when the
    module runs); norms and small biases stay gathered (stage3_param_persistence_threshold). A MoE block
    fetches its routed experts one module each."""

    def fetched(tensors) -> int:
        return sum(t.is_matrix and t.numel >= DEEPSPEED_PARAM_PERSISTENCE_THRESHOLD for t in tensors)

    dense = fetched(layer_tensors(arch))
    if not arch.is_moe:
        return float(dense)
    moe = fetched(moe_layer_tensors(arch)) + arch.num_experts * fetched(expert_tensors(arch))
    return (dense_layers(arch) * dense + moe_layers(arch) * moe) / arch.num_layers


def _buckets(amount, bucket):
    """Buckets of size `bucket` that hold `amount` (at least one: a transfer is one collective or more)."""
    return np.maximum(1.0, np.ceil(amount / bucket))


def data_parallel_messages(arch: Architecture, plan: Plan, params, layers) -> DataParallelMessages:
    """Collectives per data-parallel transfer of `params` parameters for a stage of `layers` blocks, as the
    engines cut them:
    * Megatron: buckets of max(40M, 1M x dp) parameters (MEGATRON_BUCKET_PARAMS_*), for the gradient reduce
      and the distributed optimizer's parameter gather alike;
    * DeepSpeed: reduce_bucket_size and allgather_bucket_size (5e8 elements) below ZeRO-3; under ZeRO-3 one
      gather per fetched module (zero3_fetches_per_layer) plus the embedding and the LM head;
    * FSDP: one all-gather and one reduce-scatter per wrapped block plus the root (embeddings, final norm,
      head); DDP (FSDP engine without sharding): buckets of 25 MiB of gradients."""
    if plan.engine == "megatron":
        bucket = np.maximum(MEGATRON_BUCKET_PARAMS_FLOOR, MEGATRON_BUCKET_PARAMS_PER_RANK * plan.shard_degree)
        count = _buckets(params, bucket)
        return DataParallelMessages(count, count)
    if plan.engine == "deepspeed":
        reduction = _buckets(params, DEEPSPEED_REDUCE_BUCKET_ELEMENTS)
        if plan.zero == 3:
            return DataParallelMessages(reduction, layers * zero3_fetches_per_layer(arch) + 2)
        return DataParallelMessages(reduction, _buckets(params, DEEPSPEED_ALLGATHER_BUCKET_ELEMENTS))
    if plan.zero == 0:
        count = _buckets(params * 4, DDP_BUCKET_BYTES)
        return DataParallelMessages(count, count)
    return DataParallelMessages(layers + 1, layers + 1)


def expert_data_parallel_stride(plan: Plan):
    """Rank distance between the members of an expert-data-parallel group: ep x etp. Megatron-Core builds the
    expert layers' groups with a RankGenerator of tp = expert_tensor_parallel_size, ep, dp =
    expert_data_parallel_size and cp = 1 in the dense order 'tp-cp-ep-dp-pp' (NVIDIA/Megatron-LM
    megatron/core/parallel_state.py, initialize_model_parallel), so the expert-TP ranks are adjacent, then the
    EP ranks, then the expert-data-parallel ranks, pipeline stages outermost. torchtitan's experts' FSDP mesh
    (dp_shard_mod_ep, 'efsdp') sits outside dp_shard_in_ep x cp x tp, whose product is ep x etp as well
    (torchtitan/distributed/parallel_dims.py). EP 8 x etp 1 on 8-GPU nodes: one member per node."""
    return plan.ep * plan.expert_tp


@dataclass(frozen=True)
class ExpertDataParallel:
    """The routed experts' share of a stage's data-parallel transfers, which run over their own
    expert-data-parallel group (arrays allowed; `params` is 0 where they stay with the dense parameters)."""

    params: object
    """Routed-expert parameters of the stage on this rank, reduced and gathered over the expert group."""
    messages: DataParallelMessages
    """Collectives per transfer over that group (expert_data_parallel_messages)."""
    gather_bytes: object
    """Bytes per parameter of their all-gather (expert_gathered_param_bytes)."""


def experts_apart(plan: Plan):
    """Whether the routed experts reduce and gather over a group of their own: with EP, or an expert-TP degree
    other than tp, their expert-data-parallel group differs from the dp x cp group. Otherwise it is the same
    ring, and torchtitan does not even wrap them apart (apply_fsdp gives the experts their own FSDP unit only
    when ep > 1); Megatron keeps them in separate buckets even then (parameters with allreduce=False), which
    changes nothing but one bucket boundary, so they are timed with the dense parameters."""
    return (np.asarray(plan.ep) > 1) | (np.asarray(plan.expert_tp) != np.asarray(plan.tp))


def expert_data_parallel_messages(arch: Architecture, plan: Plan, experts, moe_blocks) -> DataParallelMessages:
    """Collectives per transfer of the stage's routed experts over their group: Megatron cuts their gradient
    buffer into buckets of the same size as the dense one (DistributedDataParallel allocates the expert buffers
    over the expert-data-parallel group with the same ddp_config.bucket_size); torchtitan wraps each MoE block's
    experts in an FSDP unit of their own (apply_fsdp: fully_shard(transformer_block.moe.experts,
    mesh=edp_mesh)), one gather and one reduce-scatter per block; DDP in its 25 MiB buckets
    (data_parallel_messages)."""
    if plan.engine == "fsdp" and plan.zero >= 1:
        return DataParallelMessages(moe_blocks, moe_blocks)
    return data_parallel_messages(arch, plan, experts, moe_blocks)


def expert_data_parallel(arch: Architecture, plan: Plan, experts, moe_blocks) -> ExpertDataParallel:
    """The routed experts' data-parallel share (ExpertDataParallel) of a stage with `experts` routed-expert
    parameters in `moe_blocks` MoE blocks on this rank; empty where experts_apart is false."""
    apart = experts_apart(plan)
    messages = expert_data_parallel_messages(arch, plan, experts, moe_blocks)
    return ExpertDataParallel(
        np.where(apart, experts, 0.0),
        DataParallelMessages(*(np.where(apart, m, 0.0) for m in (messages.reduction, messages.gather))),
        expert_gathered_param_bytes(arch, plan),
    )


@dataclass(frozen=True)
class _GroupShare:
    """One process group's part of the data-parallel transfers: its parameters, link and collectives."""

    params: object
    trainable: object
    size: object
    bandwidth_gbps: object
    latency: comm.GroupLatency
    messages: DataParallelMessages
    gather_bytes: object


def _group_shares(plan: Plan, gpu: GpuSpec, params, trainable, gather_bytes, messages, experts):
    """The dense share over the dp x cp group (ranks tp apart) and, where experts_apart, the routed experts'
    over their expert-data-parallel group (plan.expert_shard_degree ranks, ep x etp apart:
    expert_data_parallel_stride), each placed on its links by comm.group_bandwidth_gbps / comm.group_latency. With
    EP filling a node (EP 8 on 8-GPU nodes) the expert group has one rank per node: each GPU's expert shards
    cross its own network interface, not NVLink nor the node's other NICs."""
    timed = messages is not None
    c = compute_param_bytes(plan)
    if messages is None:
        messages = DataParallelMessages(1, 1)
    n, e = plan.shard_degree, plan.expert_shard_degree

    def latency(size, stride):
        return comm.group_latency(gpu, size, stride, plan.gpus_per_node) if timed else comm.NO_LATENCY

    dense = _GroupShare(
        params,
        trainable,
        n,
        comm.group_bandwidth_gbps(gpu, n, plan.tp, plan.gpus_per_node),
        latency(n, plan.tp),
        messages,
        c if gather_bytes is None else gather_bytes,
    )
    if experts is None:
        return (dense,)
    stride = expert_data_parallel_stride(plan)
    expert = _GroupShare(
        experts.params,
        experts.params,
        e,
        comm.group_bandwidth_gbps(gpu, e, stride, plan.gpus_per_node),
        latency(e, stride),
        experts.messages if timed else DataParallelMessages(1, 1),
        experts.gather_bytes,
    )
    return dense, expert


def _dp_exposed_s(
    plan: Plan,
    gpu: GpuSpec,
    params,
    fwd_s,
    bwd_s,
    trainable=None,
    gather_bytes=None,
    messages=None,
    experts: ExpertDataParallel | None = None,
):
    """(per-step exposed data-parallel communication, per-step total) for the plan's engine and ZeRO stage.

    Volumes: DeepSpeed reduces and gathers bf16 (ZeRO-1/2: reduce-scatter + all-gather per step, ZeRO-2
    reduce-scatters every micro-batch; ZeRO-3 gathers parameters in forward and backward and reduce-
    scatters every micro-batch); FSDP2 gathers bf16 and reduce-scatters fp32; Megatron reduces fp32
    main_grads (all-reduce, or reduce-scatter + bf16 all-gather with the distributed optimizer).
    Overlap: DeepSpeed ZeRO-0/1/2 default overlap_comm=false (exposed); ZeRO-3, FSDP and DDP overlap with
    the compute of the same pass; Megatron with --overlap-grad-reduce/--overlap-param-gather (the launch
    configs enable them) hides the step's reduction behind the last micro-batch's backward and the
    gather behind the next step's first forward. A group of one rank moves nothing.
    PEFT plans reduce (and, below ZeRO-3, re-gather) only the `trainable` parameters; ZeRO-3/FULL_SHARD
    still gather every frozen weight for forward and backward.
    `params`, `trainable`, `gather_bytes` and `messages` are the dense parameters' share over the dp x cp
    group; a MoE stage's routed experts (`experts`, ExpertDataParallel) move the same way over their own
    group, on its own links (_group_shares): every transfer is the two groups' collectives one after the
    other (they share the nodes' network interfaces), so Megatron's distributed optimizer reduces and
    gathers the experts once per step and FSDP per micro-batch pass, as it does the dense parameters.
    Each transfer is cut into the engine's collectives (`messages`, data_parallel_messages), each paying
    NCCL's latency over its group (comm.group_latency), and overlap hides all but one of them: the last
    gradient bucket is reduced after the backward has ended, the first parameters are gathered before the
    forward can start (Megatron's finish_grad_sync / first-bucket param gather, FSDP's root unshard and last
    reduce-scatter, DeepSpeed's first module fetch); of two groups, the longer such collective. None:
    bandwidth only, everything hideable."""
    trainable = params if trainable is None else trainable
    pipelined_overlap = messages is not None
    shares = _group_shares(plan, gpu, params, trainable, gather_bytes, messages, experts)
    c = compute_param_bytes(plan)
    ga = plan.grad_accum

    def transfer(op, bytes_per_param, count, collectives):
        """Per group: (seconds, collectives) of one transfer; bytes_per_param None = the group's gather bytes."""
        return tuple(
            (
                op(
                    getattr(g, count) * (g.gather_bytes if bytes_per_param is None else bytes_per_param),
                    g.size,
                    g.bandwidth_gbps,
                    getattr(g.messages, collectives),
                    g.latency,
                ),
                getattr(g.messages, collectives),
            )
            for g in shares
        )

    def seconds(parts):
        return sum(s for s, _ in parts)

    def last_of(parts):
        """The one collective of a transfer that no compute can hide: the last gradient bucket is reduced
        after the backward that fills it has ended, the first parameters gathered before the forward that
        needs them can start (zero without a message count)."""
        if not pipelined_overlap:
            return 0.0
        return functools.reduce(np.maximum, (np.where(m > 0, s / np.maximum(m, 1), 0.0) for s, m in parts))

    def ag(bytes_per_param):
        """Gradient reduce-scatter (ring all-gather's volume) of the trained parameters."""
        return transfer(comm.reduce_scatter_s, bytes_per_param, "trainable", "reduction")

    def ar(bytes_per_param):
        return transfer(comm.all_reduce_s, bytes_per_param, "trainable", "reduction")

    def gather(bytes_per_param=None):
        """Parameter gathers of the updated (trained) parameters."""
        return transfer(comm.all_gather_s, bytes_per_param, "trainable", "gather")

    def gather_all(bytes_per_param=None):
        """ZeRO-3/FULL_SHARD parameter gathers: every parameter, trained or frozen."""
        return transfer(comm.all_gather_s, bytes_per_param, "params", "gather")

    def hidden_behind(comm_s, window_s, exposed_at_least_s=0.0):
        return np.maximum(exposed_at_least_s, comm_s - window_s)

    reduce_bytes = gradient_reduce_bytes(plan)
    if plan.engine == "deepspeed":
        overlap = deepspeed_overlap_comm(plan)
        reduction, params_gather, fetch = ag(c), gather(c), gather_all(c)
        if plan.zero == 0:
            total = seconds(ar(c))
            return total, total
        if plan.zero in (1, 2):
            # overlap_comm reduces each bucket while backward goes on; ZeRO-2 reduces every micro-batch.
            per_reduction = seconds(reduction)
            if overlap:
                per_reduction = hidden_behind(per_reduction, bwd_s, last_of(reduction))
            reductions = per_reduction * (ga if plan.zero == 2 else 1)
            total = seconds(reduction) * (ga if plan.zero == 2 else 1) + seconds(params_gather)
            return reductions + seconds(params_gather), total
        total = ga * (2 * seconds(fetch) + seconds(reduction))
        if not overlap:
            return total, total
        per_mb_exposed = hidden_behind(seconds(fetch), fwd_s, last_of(fetch)) + hidden_behind(
            seconds(fetch) + seconds(reduction), bwd_s, last_of(reduction)
        )
        return ga * per_mb_exposed, total
    if plan.engine == "fsdp":
        if plan.zero == 0:
            grad_bytes = 4 if plan.precision in ("bf16", "fp16", "fp8", "fp32") else c
            reduction = ar(grad_bytes)
            total = seconds(reduction)
            return hidden_behind(total, bwd_s, last_of(reduction)), total
        gathers_per_mb = 2 if plan.zero == 3 else 1
        fetch, reduction = gather_all(), ag(reduce_bytes)
        forward = seconds(fetch)
        backward = seconds(fetch) * (gathers_per_mb - 1) + seconds(reduction)
        first_gather = last_of(fetch)
        last_reduce = last_of(reduction)
        # Every micro-batch waits for its first gather (parameters were resharded after the last backward); the
        # last reduce-scatter of one micro-batch overlaps the next one's forward, only the step's final one waits.
        per_step = ga * hidden_behind(forward, fwd_s, first_gather) + (ga - 1) * hidden_behind(backward, bwd_s)
        per_step = per_step + hidden_behind(backward, bwd_s, last_reduce)
        # Pipelining keeps parameters unsharded and skips gradient sync until the last micro-batch.
        pipelined = hidden_behind(forward, fwd_s, first_gather) + hidden_behind(seconds(reduction), bwd_s, last_reduce)
        pipelined_total = forward + seconds(reduction)
        return (
            np.where(plan.pp > 1, pipelined, per_step),
            np.where(plan.pp > 1, pipelined_total, ga * (forward + backward)),
        )
    # megatron: main_grad reduction (fp32, or bf16 with --grad-reduce-in-bf16), hidden when overlapped
    overlap_reduce = plan.overlap_grad_reduce is not False
    overlap_gather = plan.overlap_param_gather is not False
    if plan.zero == 0:
        reduction = ar(reduce_bytes)
        total = seconds(reduction)
        return (hidden_behind(total, bwd_s, last_of(reduction)) if overlap_reduce else total), total
    reduction, params_gather = ag(reduce_bytes), gather()
    reduce, gathered = seconds(reduction), seconds(params_gather)
    exposed_reduce = hidden_behind(reduce, bwd_s, last_of(reduction)) if overlap_reduce else reduce
    exposed_gather = hidden_behind(gathered, fwd_s, last_of(params_gather)) if overlap_gather else gathered
    return exposed_reduce + exposed_gather, reduce + gathered


def expert_shard_equivalent(params, experts, plan: Plan):
    """Parameters whose optimizer work, divided by the dp x cp shard degree, equals the rank's: the experts'
    states shard over the expert-data-parallel group only (n / e times as many per rank)."""
    if plan.zero < 1:
        return params
    return params - experts + experts * plan.shard_degree / plan.expert_shard_degree


def _optimizer_step_s(model: ModelSpec, plan: Plan, gpu: GpuSpec, params):
    """(GPU update time, CPU offload time) of one optimizer step.

    The update is memory-bound: it reads and writes the master weights and optimizer states, reads the
    gradients and writes the low-precision weights. With offload the update runs on the host, bound by
    host DRAM bandwidth shared by the node's GPUs, and PCIe carries (not hidden behind compute):
    * the gradients, every micro-batch (DeepSpeed ZeRO-Offload accumulates them in host memory; FSDP2's
      CPUOffloadPolicy copies each reduce-scattered fp32 shard to the host);
    * the updated weights back once per step when only the optimizer is offloaded;
    * with parameter offload instead, the weights for every forward and every backward of every
      micro-batch (DeepSpeed keeps the bf16 partition on the host, FSDP2 the fp32 shard, cast on the GPU)."""
    arch = model.architecture
    terms = state_layout(arch, plan)
    opt = optimizer_bytes_per_param(arch, plan)
    master_term = trained_term(terms, "master_weights")
    master = master_term.bytes_per_param if master_term is not None else 0.0
    grad = trained_term(terms, "gradients").bytes_per_param
    low = compute_param_bytes(plan)
    shard = plan.shard_degree if plan.zero >= 1 else 1
    local = params / shard
    touched = (2 * master + 2 * opt + grad + low) * local
    if plan.offload == "none":
        return touched / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY), 0.0 * touched
    host_bw = HOST_MEMORY_BANDWIDTH_GBPS_PER_NODE / plan.gpus_per_node * 1e9
    pcie = comm.host_link_bandwidth_gbps(gpu) * 1e9
    fsdp = plan.engine == "fsdp"
    grads_down = plan.grad_accum * (4 if fsdp else low) * local
    if plan.offload == "optimizer+params":
        weights_up = plan.grad_accum * 2 * (4 if fsdp else low) * local
    else:
        weights_up = low * local
    return 0.0 * touched, touched / host_bw + (grads_down + weights_up) / pcie


def dequantization_passes(plan: Plan) -> int:
    """How often QLoRA dequantizes each NF4 weight per micro-batch: the backward's input gradient always
    (bitsandbytes MatMul4Bit.backward), the forward (bitsandbytes up to 0.49 dequantizes there too; 0.50
    runs a fused 4-bit GEMM, which reads the packed weight instead), and the recomputed forward under full
    checkpointing. Counted as in 0.45-0.49, the versions the validation rows ran."""
    return 2 + (plan.checkpointing == "full")


def dequantization_s(gpu: GpuSpec, plan: Plan, quantized_params) -> float:
    """Time of QLoRA's dequantization per micro-batch: memory-bound kernels that read the packed 4-bit
    weight with its constants and write the bf16 weight, at the HBM efficiency of other memory-bound
    kernels. 0 without quantized weights."""
    if plan.method != "qlora":
        return 0.0
    bytes_per_pass = quantized_params * (NF4_BITS / 8 + 1 / NF4_BLOCKSIZE + 2)
    return dequantization_passes(plan) * bytes_per_pass / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY)


TORCH_CP_MERGE_STEP_FP32_BYTES = 32
"""HBM bytes per element of the local attention output that PyTorch's ring attention moves to fold one more
step's block into the running output, in fp32 (_SDPAMerger with _cp_options.convert_to_f32, pytorch/pytorch
torch/distributed/tensor/experimental/_attention.py): out - block_out (read 8, write 4), the sigmoid of the
log-sum-exp difference times that (read 4, write 4; the log-sum-exp factor is one value per row, 1/head_dim of
the traffic, left out), out minus the product (read 8, write 4). Three eager kernels: the ring runs outside
torch.compile's fused graph. The block's upcast to fp32 (read a, write 4) comes on top."""


def ring_hop_latency_s(gpu: GpuSpec, plan: Plan):
    """NCCL latency of one ring-attention hop between neighbouring context-parallel ranks: a two-rank exchange
    (comm.group_latency), across the network when the cp group leaves the NVLink domain (the ring waits for its
    slowest hop)."""
    domain = gpu.nvlink_domain(plan.gpus_per_node)
    stride = np.where(plan.cp * plan.tp > domain, domain, plan.tp)
    return comm.group_latency(gpu, 2, stride, plan.gpus_per_node).ring_gather_s


def context_parallel_comm_s(
    arch: Architecture, plan: Plan, gpu: GpuSpec, forward_step_s, backward_step_s, forward_passes, layers
):
    """Exposed key/value exchange of context-parallel attention per micro-batch, on a stage of `layers` blocks.
    `forward_step_s` and `backward_step_s` are one ring step's attention kernels in one block: both engines split
    the causal sequence into 2 cp chunks and give rank r chunks r and 2cp-1-r (PyTorch's round-robin load
    balancer; TE's AttnFuncWithCPAndKVP2P), so each of the cp steps computes the same half block and no masked
    work. `forward_passes`: forward runs of the attention per micro-batch (2 under full checkpointing, which
    repeats the exchange). K and V are the grouped-query ones (memory.activations.context_parallel_buffer_bytes
    says which engine versions that covers).

    Transformer Engine's p2p ring (Megatron's default --cp-comm-type p2p) sends the next step's K and V while the
    current step's kernel runs: each of the cp - 1 hops is exposed only where it
    outlasts a step's kernel. In backward each step also passes the dK/dV accumulated so far (bf16), and the last
    hop, which brings them home, has no kernel left to hide behind.

    PyTorch's ring attention (FSDP engine; torchtitan's default context_parallel_rotate_method 'allgather',
    _cp_options.rotate_method ALL_GATHER) all-gathers every rank's K and V once, issued before step 0's kernel
    and waited for at step 1: only the first step's kernel hides it. Backward gathers them again the same way and
    passes the fp32 dK/dV (convert_to_f32) to the next rank after every step (the dkv rotater is always
    ALL_TO_ALL, a permute), each hidden by the next step's kernel, the last one exposed."""
    a = compute_bytes(plan)
    chunk = 2 * arch.kv_width * plan.tokens_per_micro_batch * a / plan.tp
    bandwidth = comm.group_bandwidth_gbps(gpu, plan.cp, plan.tp, plan.gpus_per_node)
    hop = ring_hop_latency_s(gpu, plan)
    steps = plan.cp - 1
    kv_hop = comm.send_recv_s(chunk, bandwidth, hop)
    te = (
        forward_passes * steps * np.maximum(0.0, kv_hop - forward_step_s)
        + steps * np.maximum(0.0, 2 * kv_hop - backward_step_s)
        + kv_hop
    )
    latency = comm.group_latency(gpu, plan.cp, plan.tp, plan.gpus_per_node)
    gather = comm.all_gather_s(plan.cp * chunk, plan.cp, bandwidth, latency=latency)
    dkv_hop = comm.send_recv_s(chunk * FP32_BYTES / a, bandwidth, hop)
    torch = (
        forward_passes * np.maximum(0.0, gather - forward_step_s)
        + np.maximum(0.0, gather - backward_step_s)
        + steps * np.maximum(0.0, dkv_hop - backward_step_s)
        + dkv_hop
    )
    return np.where(plan.cp > 1, layers * np.where(plan.engine == "fsdp", torch, te), 0.0)


def context_parallel_merge_bytes(arch: Architecture, plan: Plan):
    """(per forward pass, per backward) HBM bytes of one block's context-parallel bookkeeping per micro-batch:
    the memory-bound kernels around the cp per-step attention kernels, which merge each step's partial output
    and accumulate each step's gradients.

    Transformer Engine (AttnFuncWithCPAndKVP2P, bf16): after the ring, one fused correction per step rescales
    that step's output by exp(lse_step - lse) into the output (the first writes it: read a, write a; the
    others read the step's output and read and write the output: 3a); backward accumulates dQ, dK and dV in
    place per step the same way (copy_ then add_).

    PyTorch (_templated_ring_attention and its backward, convert_to_f32): the first block's output is upcast
    (read a, write 4), every further step upcasts its block and merges it (TORCH_CP_MERGE_STEP_FP32_BYTES), the
    result is cast back (read 4, write a), and each step but the last copies K and V into one send buffer
    (torch.cat: read a, write a each). Backward zero-fills fp32 dQ, dK, dV (write 4 each), adds each step's
    bf16 gradients into them (read 4 + a, write 4), concatenates dK and dV into the fp32 send buffer every step
    (read 4, write 4), copies K and V as forward does, and casts the three back at the end (read 4, write a).
    The per-row log-sum-exp merges are 1/head_dim of this and left out."""
    a = compute_bytes(plan)
    fp32 = FP32_BYTES
    cp = plan.cp
    query = plan.tokens_per_micro_batch * arch.q_width / plan.tp
    kv = plan.tokens_per_micro_batch * arch.kv_width / plan.tp  # of K, and of V
    te_pass = 2 * a + (cp - 1) * 3 * a
    te = (query * te_pass, (query + 2 * kv) * te_pass)
    upcast, downcast, accumulate = a + fp32, fp32 + a, fp32 + a + fp32
    torch_forward = query * (upcast + (cp - 1) * (upcast + TORCH_CP_MERGE_STEP_FP32_BYTES) + downcast)
    torch_forward = torch_forward + (cp - 1) * 2 * kv * 2 * a
    torch_backward = query * (fp32 + cp * accumulate + downcast) + 2 * kv * (
        fp32 + cp * accumulate + cp * 2 * fp32 + (cp - 1) * 2 * a + downcast
    )
    fsdp = plan.engine == "fsdp"
    on = plan.cp > 1
    return (
        np.where(on, np.where(fsdp, torch_forward, te[0]), 0.0),
        np.where(on, np.where(fsdp, torch_backward, te[1]), 0.0),
    )


def context_parallel_merge_s(arch: Architecture, plan: Plan, gpu: GpuSpec, forward_passes, layers):
    """Time of the context-parallel merge kernels (context_parallel_merge_bytes) per micro-batch on a stage of
    `layers` blocks: memory-bound, at the HBM efficiency of other memory-bound kernels."""
    forward, backward = context_parallel_merge_bytes(arch, plan)
    return layers * (forward_passes * forward + backward) / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY)


def performance_terms(model: ModelSpec, gpu: GpuSpec, plan: Plan) -> dict[str, object]:
    """Every quantity of the performance model; values are arrays when the plan's numeric fields are
    (the search's bulk evaluation), floats otherwise."""
    arch = model.architecture
    flops = flops_per_token(arch, plan)
    tokens = plan.tokens_per_micro_batch
    width = pointwise_width(arch, plan)
    eff, eff_params = efficiency(gpu, tokens, width)
    peak_matmul = _peak_tflops(gpu, matmul_dtype(plan)) * 1e12
    peak_high = _peak_tflops(gpu, "tf32" if plan.precision == "fp32" else "bf16") * 1e12
    peak_attention = peak_high * np.where(plan.flash_attention, flash_attention_speed(gpu, plan), 1.0)
    linear_eff = efficiency(gpu, tokens, width, peak_matmul / peak_high)[0]
    head_eff = eff if plan.precision == "fp8" else linear_eff
    peak_head = peak_high if plan.precision == "fp8" else peak_matmul
    a = compute_bytes(plan)

    def expert_parts_s(work: _StageWork):
        """(expert grouped GEMMs, token permutation) of a stage, kept apart so each is added in turn."""
        experts = expert_gemm_s(arch, plan, gpu, work, peak_matmul, width, peak_matmul / peak_high)
        return experts, permute_s(arch, plan, gpu, work)

    def stage_compute(work: _StageWork, expert_parts):
        compute = (
            tokens
            / plan.tp
            * (
                work.matmul_flops / (peak_matmul * linear_eff)
                + work.head_flops / (peak_head * head_eff)
                + work.attention_flops / (peak_attention * eff)
            )
        )
        if arch.final_logit_softcap:
            logits = work.has_head * tokens * arch.vocab_size / plan.tp
            compute = compute + logits * SOFTCAP_PASSES * a / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY)
        compute = compute + fp8_scaling_s(arch, plan, gpu, work.layers, work.moe_layers)
        compute = compute + pointwise_s(arch, plan, gpu, work.layers, work.moe_layers)
        compute = compute + expert_parts[0]
        compute = compute + expert_parts[1]
        if not plan.flash_attention:
            scores = work.layers * tokens * arch.num_attention_heads / plan.tp * plan.seq_len
            passes = EAGER_ATTENTION_SCORE_PASSES + (SOFTCAP_PASSES if arch.attn_logit_softcap else 0)
            compute = compute + scores * passes * a / (gpu.hbm_bandwidth_gbps * 1e9 * HBM_EFFICIENCY)
        return compute

    causal = causal_attention_fraction(arch, plan)
    first, second, last = (
        _stage_work(flops, plan, arch, s, causal) for s in (0, np.minimum(1, plan.pp - 1), plan.pp - 1)
    )
    first_experts, second_experts, last_experts = expert_parts_s(first), expert_parts_s(second), expert_parts_s(last)
    first_s, second_s, last_s = (
        stage_compute(*w) for w in ((first, first_experts), (second, second_experts), (last, last_experts))
    )
    # The second rank stands for the front of the pipeline where it is slower than the first: a stated split
    # can load the middle ranks most, and DeepSeek's dense first blocks exchange no tokens.
    front_is_first = first_s >= second_s
    first = _StageWork(
        *(np.where(front_is_first, a, b) for a, b in zip(astuple_shallow(first), astuple_shallow(second), strict=True))
    )
    first_experts = tuple(np.where(front_is_first, a, b) for a, b in zip(first_experts, second_experts, strict=True))
    first_s = np.where(front_is_first, first_s, second_s)
    slowest_is_first = first_s >= last_s
    compute_s = np.where(slowest_is_first, first_s, last_s)
    layers = np.where(slowest_is_first, first.layers, last.layers)
    attention_flops = np.where(slowest_is_first, first.attention_flops, last.attention_flops)
    forward_s = compute_s * np.where(slowest_is_first, first.forward_share, last.forward_share)
    backward_s = compute_s - forward_s

    tp_bw = comm.group_bandwidth_gbps(gpu, plan.tp, 1, plan.gpus_per_node)
    collectives = TP_COLLECTIVES_PER_LAYER + recomputed_tp_collectives(plan, arch.num_layers)
    tp_bytes = tokens * arch.hidden_size * a * tp_collective_byte_share(plan)
    tp_s = layers * collectives * comm.all_gather_s(tp_bytes, plan.tp, tp_bw)
    if plan.tp_comm_overlap:
        linear_s = tokens / plan.tp * np.where(slowest_is_first, first.matmul_flops, last.matmul_flops)
        tp_s = exposed_tp_comm_s(tp_s, linear_s / (peak_matmul * linear_eff))

    # The stage's attention kernels split into one forward pass, its recomputations and the backward.
    attention_s = tokens / plan.tp * attention_flops / (peak_attention * eff)
    forward_attention = flops.attention * flops.forward_fraction
    executed_attention = flops.attention + flops.flash_backward_recompute + flops.recompute_attention
    forward_passes = 1 + flops.recompute_attention / forward_attention
    attention_forward_s = attention_s * forward_attention / executed_attention
    attention_backward_s = attention_s - forward_passes * attention_forward_s
    cp_s = context_parallel_comm_s(
        arch,
        plan,
        gpu,
        attention_forward_s / (layers * plan.cp),
        attention_backward_s / (layers * plan.cp),
        forward_passes,
        layers,
    )
    cp_merge_s = context_parallel_merge_s(arch, plan, gpu, forward_passes, layers)
    compute_s = compute_s + cp_merge_s

    # Sequence parallelism, and Megatron's scatter/gather of the boundary tensor across TP ranks (on by
    # default), send 1/tp of the activation per GPU.
    split = np.where(plan.sequence_parallel | (plan.engine == "megatron"), plan.tp, 1)
    pp_bw = comm.group_bandwidth_gbps(gpu, np.minimum(plan.pp, 2), plan.tp * plan.cp * plan.dp, plan.gpus_per_node)
    p2p_s = pipeline_sends_per_micro_batch(plan) * tokens * arch.hidden_size * a / split / (pp_bw * 1e9)

    p2p_s = exposed_p2p_s(plan, p2p_s, compute_s)

    micro_batch_s = compute_s + tp_s + cp_s + p2p_s
    unpaired_ep_s = 0.0
    if arch.is_moe:
        all_ep_s = np.where(
            slowest_is_first,
            expert_parallel_comm_s(arch, plan, gpu, first),
            expert_parallel_comm_s(arch, plan, gpu, last),
        )
        expert_s = np.where(slowest_is_first, sum(first_experts), sum(last_experts))
        ep_s = ep_overlap_exposed_s(plan, all_ep_s, compute_s, expert_s)
        # The combined schedule's first forward and last backward have no partner: one micro-batch's
        # exchanges stay exposed per step.
        unpaired_ep_s = all_ep_s - ep_s
        micro_batch_s = micro_batch_s + ep_s
    stages = first_and_last_stage(arch, plan)
    params = np.maximum(*(s.params for s in stages))
    trainable = np.maximum(*(s.trainable_params for s in stages))
    dequantize_s = dequantization_s(gpu, plan, np.maximum(*(s.quantized_params for s in stages)))
    compute_s = compute_s + dequantize_s
    micro_batch_s = micro_batch_s + dequantize_s
    local_trainable = trainable
    gather_bytes, expert_dp = gathered_param_bytes(arch, plan), None
    if arch.is_moe:
        experts = np.maximum(*(s.expert_params for s in stages))
        local_trainable = expert_shard_equivalent(local_trainable, experts, plan)
        expert_dp = expert_data_parallel(arch, plan, experts, np.maximum(*(s.moe_layers for s in stages)))
        params, trainable = params - expert_dp.params, trainable - expert_dp.params
        dense_gather_bytes = gathered_param_bytes(arch, plan, routed_experts=False)
        gather_bytes = np.where(experts_apart(plan), dense_gather_bytes, gather_bytes)
    messages = data_parallel_messages(arch, plan, trainable, layers)
    dp_exposed_s, dp_total_s = _dp_exposed_s(
        plan, gpu, params, forward_s, backward_s, trainable, gather_bytes, messages, expert_dp
    )
    optimizer_s, offload_s = _optimizer_step_s(model, plan, gpu, local_trainable)
    breakdown = {
        "compute": plan.grad_accum * compute_s,
        "tensor_parallel_comm": plan.grad_accum * tp_s,
        "context_parallel_comm": plan.grad_accum * cp_s,
        "pipeline_p2p": plan.grad_accum * p2p_s,
        **({"expert_parallel_comm": plan.grad_accum * ep_s + unpaired_ep_s} if arch.is_moe else {}),
        "pipeline_bubble": pipeline_bubble_slots(plan) * micro_batch_s,
        "data_parallel_comm": dp_exposed_s,
        "optimizer_step": optimizer_s,
        "offload": offload_s,
    }
    step = micro_batch_s * (plan.grad_accum + pipeline_bubble_slots(plan)) + dp_exposed_s + optimizer_s + offload_s
    step = step + unpaired_ep_s
    tokens_per_s = plan.global_batch * plan.seq_len / step
    per_gpu = tokens_per_s / plan.gpus
    return {
        "step_time_s": step,
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_per_gpu": per_gpu,
        "mfu": flops.model * per_gpu / peak_matmul,
        "hfu": flops.hardware * per_gpu / peak_matmul,
        "tflops_per_gpu": flops.model * per_gpu / 1e12,
        "compute_efficiency": eff,
        "efficiency_params": eff_params,
        "flops": flops,
        "breakdown_s": breakdown,
        "data_parallel_comm_total_s": dp_total_s,
        "notes": ([MOE_MFU_NOTE] if arch.is_moe else [])
        + ([FLASH_SOFTCAP_NOTE] if arch.attn_logit_softcap and np.any(plan.flash_attention) else []),
    }


def _at(value, index: int | None) -> float:
    array = np.asarray(value, dtype=float)
    return float(array if array.ndim == 0 or index is None else array[index])


def performance_estimate_at(terms: dict, index: int | None, gpu: GpuSpec) -> PerformanceEstimate:
    """The PerformanceEstimate of one plan out of `performance_terms` results (index None for a scalar plan)."""
    notes = []
    if gpu.compute_efficiency is None:
        notes.append(f"{gpu.name} has no fitted compute efficiency; a conservative default was used")
    elif gpu.speed_extrapolated_from:
        notes.append(
            f"speed extrapolated: no measured run on {gpu.architecture} yet, {gpu.name} uses the "
            f"{gpu.speed_extrapolated_from} fit of the compute efficiency"
        )
    if gpu.peak_derated:
        notes.append(
            f"peak extrapolated: {gpu.name} runs at a {gpu.power_limit_w or gpu.tdp_w:.0f} W limit and its catalog "
            f"TFLOP/s are rated at {gpu.tflops_rated_power_w:.0f} W; the clock is scaled by "
            f"{gpu.clock_ratio:.3f} (power ~ clock^3), not a datasheet figure"
        )
    notes += terms.get("notes", [])
    flops = terms["flops"]
    return PerformanceEstimate(
        step_time_s=_at(terms["step_time_s"], index),
        tokens_per_s=_at(terms["tokens_per_s"], index),
        tokens_per_s_per_gpu=_at(terms["tokens_per_s_per_gpu"], index),
        mfu=_at(terms["mfu"], index),
        hfu=_at(terms["hfu"], index),
        tflops_per_gpu=_at(terms["tflops_per_gpu"], index),
        compute_efficiency=_at(terms["compute_efficiency"], index),
        efficiency_source=terms["efficiency_params"].source,
        flops_per_token={"model": flops.model, "hardware": flops.hardware},
        breakdown_s={k: _at(v, index) for k, v in terms["breakdown_s"].items()},
        notes=notes,
        data_parallel_comm_total_s=_at(terms["data_parallel_comm_total_s"], index),
    )


def estimate_performance(model: ModelSpec, gpu: GpuSpec, plan: Plan) -> PerformanceEstimate:
    """Step time and throughput of `plan` for `model` on `gpu`."""
    return performance_estimate_at(performance_terms(model, gpu, plan), None, gpu)


def tokens_per_s_per_gpu_over_efficiencies(
    model: ModelSpec, gpu: GpuSpec, plan: Plan, constants: ComputeEfficiency
) -> np.ndarray:
    """Tokens/s per GPU of one plan under many compute-efficiency constants at once (for fitting them:
    scripts/fit_throughput.py, scripts/loso.py). `constants.max`, `.half_tokens` and `.half_width` may be
    numpy arrays that broadcast against each other (a grid: shapes (a, 1, 1), (1, b, 1), (1, 1, c)); the
    result has their broadcast shape, and each entry is exactly estimate_performance's tokens_per_s_per_gpu
    with those scalar constants on `gpu` (tests/test_efficiency_grid.py compares them). `plan` must be a
    single plan, not the search's arrays.

    The constants enter the model only through `efficiency`, so this is one `performance_terms` evaluation:
    every term that does not depend on them (FLOPs, communication volumes and latencies, the stage layout,
    the optimizer step) is computed once, and only what lies downstream of the efficiency (compute times and
    what overlaps with them) carries the grid's shape. The formulas stay in `performance_terms`."""
    terms = performance_terms(model, replace(gpu, compute_efficiency=constants), plan)
    shape = np.broadcast_shapes(*(np.shape(v) for v in (constants.max, constants.half_tokens, constants.half_width)))
    return np.broadcast_to(np.asarray(terms["tokens_per_s_per_gpu"], dtype=float), shape)
