"""The memory-bound (pointwise) work of a transformer block, per engine's kernel set.

A block's norms, activation, rotary embeddings, residual adds and dropouts do no matmul work: each kernel
reads its inputs from HBM and writes its output, so its time is the bytes it moves over the memory bandwidth.
How many bytes depends on which kernels the engine runs: eager PyTorch runs every operator of a composite
function as its own kernel (torchtitan's RMSNorm is seven: upcast, square, mean, rsqrt, scale, downcast,
weight), while a fused kernel reads the input once and writes the output once. This module counts those
bytes per token for the three kernel sets the engines run (POINTWISE_KERNELS); planner.performance.model
times them at the HBM efficiency of other memory-bound kernels.

Counted per element of the region's width, bf16 activations (2 bytes) and fp32 intermediates (4 bytes),
forward and backward separately (a checkpointed forward runs its kernels again). Not counted: the final
norm, the embedding and the loss (once per token, not per block), bias gradients (a reduction of a gradient
that the next kernel reads anyway) and the per-token statistics (one fp32 number per row).
"""

from typing import Literal

import numpy as np

from planner.catalog.models import Architecture
from planner.memory.activations import compute_bytes, routed_copies_share, routed_load_factor
from planner.memory.stages import checkpointed_fraction
from planner.plan import Plan

KernelSet = Literal["eager", "compiled", "fused"]

POINTWISE_BYTES: dict[str, dict[str, tuple[float, float]]] = {
    "rmsnorm": {"eager": (36.0, 76.0), "compiled": (4.0, 6.0), "fused": (4.0, 6.0)},
    "layernorm": {"eager": (4.0, 6.0), "compiled": (4.0, 6.0), "fused": (4.0, 6.0)},
    "residual": {"eager": (6.0, 6.0), "compiled": (4.0, 4.0), "fused": (6.0, 6.0)},
    "dropout": {"eager": (5.0, 5.0), "compiled": (1.0, 1.0), "fused": (1.0, 1.0)},
    "swiglu": {"eager": (10.0, 18.0), "compiled": (6.0, 10.0), "fused": (6.0, 10.0)},
    "gelu": {"eager": (4.0, 6.0), "compiled": (4.0, 6.0), "fused": (4.0, 6.0)},
    "rope": {"eager": (20.0, 20.0), "compiled": (4.0, 4.0), "fused": (4.0, 4.0)},
}
"""(forward, backward) HBM bytes per element of a region's width per token, with 2-byte activations.

rmsnorm (width h, twice per block; qk-norm on the query and key widths). eager, torchtitan's RMSNorm
(torchtitan/models/norms.py @026e23a: `x.float()`, `x.pow(2).mean(-1)`, `x * rsqrt(...)`, `.type_as(x)`,
`* weight`) and Hugging Face's LlamaRMSNorm (the same operators): forward upcast (read 2, write 4), square
(4, 4), mean (4), scale (4, 4), downcast (4, 2), weight (2, 2) = 36; backward, autograd's mirror of each
(weight 4 and its gradient 8, downcast 6, scale 8 and its per-row sum 16, mean 4, square 12, the two input
gradients added 12, upcast 6) = 76. fused (Apex's FusedRMSNorm, Transformer Engine's LayerNormLinear, the
Triton kernel of torchtitan's `fused_rmsnorm`, Liger) and compiled (Inductor emits one reduction kernel):
read x and write y, 4; backward read dy and x, write dx, 6.
layernorm: PyTorch's own layer_norm is one CUDA kernel (forward and backward), so eager PyTorch (llm-foundry's
low-precision LayerNorm, Hugging Face GPT-2) moves what Apex's fused LayerNorm moves: 4 and 6.
residual (width h, twice per block): the sum is the residual stream and is written once: read 2 + 2, write 2;
backward, autograd adds the gradients of the skip and of the branch, 6. compiled: Inductor fuses the add into
the next norm's kernel, which then reads the two addends instead of the sum and writes both the sum and its
output (4 instead of 6 + the norm's re-read), and the gradient sum into the norm's backward (4).
dropout (width h, after attention and MLP, when the model has hidden dropout): eager runs it as its own kernel
(read 2, write 2 and a 1-byte mask; backward read 2 and the mask, write 2): 5 and 5. fused (Megatron's
bias-dropout-add, a scripted function that nvFuser fuses; Narayanan et al. 2021 Sec. 4.2) and compiled: the
add's kernel also writes the mask (1) and its backward reads it (1).
gelu (width f, non-gated MLP): one kernel in every set, read 2, write 2; backward read dy and x, write dx,
6. Megatron's fused bias-GeLU saves the separate bias add that eager PyTorch folds into the GEMM's epilogue
(nn.Linear's addmm), so the traffic is the same.
swiglu (per element of f; its input is the 2f-wide gate and up projections): eager `silu(gate) * up`
(torchtitan's FeedForward, Hugging Face's LlamaMLP): silu (2, 2) and multiply (4, 2) = 10; backward, the
multiply's two gradients (4 + 2 each = 12) and silu's (6) = 18. fused (Megatron-Core's bias_swiglu_impl, the
default `bias_swiglu_fusion`; InternEvo's TorchScript `Silu`; Liger's SwiGLU) and compiled: read gate and up
(4), write 2 = 6; backward read dy, gate and up (6), write both gradients (4) = 10.
rope (width q + kv, the query and key heads): eager, torchtitan's complex rotation (`xq.float()`,
`view_as_complex`, multiply by freqs_cis, `view_as_real`, `type_as`): upcast (2, 4), complex multiply (4, 4),
downcast (4, 2) = 20, and the same in backward; Hugging Face's rotate_half (two multiplies, a negated half,
a concatenation and an add) also moves 20. fused (Megatron-Core's `apply_rope_fusion`, default on;
flash-attn's Triton rotary that InternEvo calls; Liger) and compiled: read 2, write 2 each way."""

FP32_EAGER_RMSNORM_BYTES = (28.0, 76.0)
"""(forward, backward) bytes per element of torchtitan's/Hugging Face's eager RMSNorm in fp32 training, where
the upcast and downcast are no-ops and every access is 4 bytes: square (4, 4), mean (4), scale (4, 4), weight
(4, 4) = 28; backward weight 8 and its gradient 16, scale 8 and its per-row sum 16, mean 4, square 12, the two
input gradients added 12 = 76. Every other region moves twice its bf16 bytes in fp32 (no cast kernels: the
complex RoPE's upcast becomes a view, but Hugging Face's rotate_half, which fp32 runs in the data use, has none)."""

POINTWISE_KERNELS_NOTE = (
    "Megatron (Megatron-Core with Transformer Engine, Megatron-LM with Apex, and the frameworks built on them: "
    "NeMo, InternEvo) runs fused kernels; the PyTorch engines run eager operators, or Inductor's fused kernels "
    "under --compile"
)


def pointwise_kernels(plan: Plan) -> KernelSet:
    """The kernel set a plan's engine runs the pointwise regions with (POINTWISE_KERNELS_NOTE)."""
    if plan.engine == "megatron":
        return "fused"
    return "compiled" if plan.compile else "eager"


def _rope_width(arch: Architecture) -> float:
    """Query and key elements per token that rotary embeddings rotate: all of them, or under multi-head latent
    attention the rope part of each query head and the one shared rope key."""
    if arch.position_embedding != "rope":
        return 0.0
    if arch.is_mla:
        return (arch.num_attention_heads + 1) * arch.qk_rope_head_dim
    return arch.q_width + arch.kv_width


def _region_widths(arch: Architecture, plan: Plan, moe_block: bool) -> dict[str, object]:
    """Elements per token one GPU touches in each region of a block. The norm, residual and dropout regions
    work on the full width h and are split over TP only with sequence parallelism (Korthikanti et al. 2022,
    Sec. 4.2.2: without it every TP rank repeats them); the activation and the rotary embeddings work on the
    column-parallel GEMMs' split outputs. A MoE block's activation runs on the routed copies this rank
    processes (T x k x its share of them) and on the shared experts."""
    h = arch.hidden_size
    shards = np.where(plan.sequence_parallel, plan.tp, 1)
    widths: dict[str, object] = {arch.norm: 2 * h / shards, "residual": 2 * h / shards}
    if arch.hidden_dropout:
        widths["dropout"] = 2 * h / shards
    if arch.qk_norm != "none":
        widths["rmsnorm"] = widths.get("rmsnorm", 0.0) + (arch.q_width + arch.kv_width) / plan.tp
    if moe_block:
        copies = arch.experts_per_token * routed_copies_share(plan) * routed_load_factor(arch, plan)
        inner = copies * arch.moe_ffn_hidden_size / plan.expert_tp + arch.shared_expert_ffn_hidden_size / plan.tp
    else:
        inner = arch.ffn_hidden_size / plan.tp
    widths[arch.mlp] = inner
    widths["rope"] = _rope_width(arch) / plan.tp
    return widths


def forward_recomputed_share(arch: Architecture, plan: Plan):
    """Share of the blocks whose forward pointwise kernels run a second time in backward. Full checkpointing:
    the checkpointed blocks. Selective under Megatron: only the core attention, no pointwise region
    (Korthikanti et al. 2022, Sec. 5). Selective under the PyTorch engines (torchtitan's op-level policy, which
    saves matmul and attention outputs and recomputes the rest): every pointwise region."""
    if plan.checkpointing == "full":
        return checkpointed_fraction(arch.num_layers, plan)
    if plan.checkpointing == "selective" and plan.engine != "megatron":
        return 1.0
    return 0.0


def pointwise_bytes_per_token(arch: Architecture, plan: Plan, moe_block: bool = False):
    """HBM bytes one GPU's pointwise kernels move per token of a block in one training step's forward,
    recompute and backward (POINTWISE_BYTES under the plan's kernel set; twice that in fp32 training, with
    FP32_EAGER_RMSNORM_BYTES for the eager RMSNorm, whose casts vanish)."""
    kernels = pointwise_kernels(plan)
    scale = compute_bytes(plan) / 2
    table = {region: (scale * sets[kernels][0], scale * sets[kernels][1]) for region, sets in POINTWISE_BYTES.items()}
    if scale == 2 and kernels == "eager":
        table["rmsnorm"] = FP32_EAGER_RMSNORM_BYTES
    widths = _region_widths(arch, plan, moe_block)
    forward = sum(table[region][0] * width for region, width in widths.items())
    backward = sum(table[region][1] * width for region, width in widths.items())
    return forward * (1 + forward_recomputed_share(arch, plan)) + backward
