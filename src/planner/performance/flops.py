"""FLOPs per token of training, for MFU (model FLOPs) and HFU (hardware FLOPs actually executed).

Convention (PaLM App. B; Megatron-Core `num_floating_point_operations`; torchtitan; MosaicML): 2 FLOPs
per multiply-add, backward = 2 x forward, attention counted over the full s x s score matrix (not the
causal half), embeddings' lookups free, the LM head counted. Per token:

    forward  = 2 * (L * matmul params per block + V * h) + 4 * L * q_width * s_attn
    model    = 3 * forward                      (MFU numerator; no recomputation)
    hardware = model + recomputation + the flash-attention backward's recomputed scores

with s_attn = min(seq_len, sliding window), averaged over the layers when only some layers slide
(Gemma). A Mixture-of-Experts block counts its router, shared experts and the top-k routed experts a token
passes through (its active parameters: MFU of a MoE model is on active parameters, as Megatron-Core's
num_floating_point_operations counts moe_router_topk experts); under multi-head latent attention the
score product runs over heads x (nope + rope) and the weighted sum over heads x v_head_dim.
Full checkpointing recomputes each block's forward (the LM head is not recomputed);
selective recomputes the attention core (scores and the weighted sum) under
Megatron and the matmuls its op-level policy dropped under the PyTorch engines;
FlashAttention-2's backward runs five matmuls per tile (the recomputed scores QK^T, then dV, dP, dQ,
dK) where an eager backward runs four, i.e. half an attention forward more (MosaicML's README rounds
this to "the attention multiplier would be 5 instead of 4"). See ../shared/notes/throughput-model.md §3.
"""

from dataclasses import dataclass, fields, replace

from planner.architecture import (
    dense_layers,
    expert_tensors,
    layer_tensors,
    lora_params_per_layer,
    moe_layer_tensors,
    moe_layers,
    mtp_block_architecture,
    mtp_prelude_tensors,
)
from planner.catalog.models import Architecture
from planner.memory.stages import checkpointed_fraction
from planner.plan import Plan


@dataclass(frozen=True)
class FlopsPerToken:
    """FLOPs per token of one training step (forward + backward [+ recompute]), whole model."""

    block_matmuls: float
    """Dense matmuls of all blocks (forward + backward)."""
    attention: float
    """Attention scores and weighted sum (forward + backward), full s x s."""
    lm_head: float
    """The vocabulary projection (forward + backward)."""
    recompute_matmuls: float
    """Dense matmuls activation checkpointing runs again (0 for `none`)."""
    recompute_attention: float
    """Attention scores and weighted sums activation checkpointing runs again (full: every block's;
    selective under Megatron: the core attention; 0 otherwise)."""
    flash_backward_recompute: float
    """Scores recomputed by the flash-attention backward."""
    adapter_matmuls: float = 0.0
    """LoRA adapter matmuls (forward + backward), whole model; 0 without adapters."""
    expert_matmuls: float = 0.0
    """Routed-expert matmuls of the top-k experts per token (forward + backward), whole model; they run as
    grouped GEMMs at the efficiency of their tokens per expert. 0 for a dense model."""
    recompute_expert_matmuls: float = 0.0
    """Routed-expert matmuls full checkpointing runs again."""
    forward_fraction: float = 1 / 3
    """Share of block_matmuls + attention + lm_head + adapter_matmuls that is forward work (1/3 in full
    training, where backward costs twice the forward)."""
    mtp: "FlopsPerToken | None" = None
    """The multi-token-prediction depths the plan trains, all on the last pipeline stage: each depth's block
    (as a one-block model), eh_proj (in block_matmuls) and one more LM-head pass; None without MTP."""

    @property
    def recompute(self) -> float:
        """Extra forward work of activation checkpointing."""
        return self.recompute_matmuls + self.recompute_attention + self.recompute_expert_matmuls

    @property
    def model(self) -> float:
        """Model FLOPs (MFU numerator): what one step executes without recomputation (the MTP depths included,
        as Megatron's num_floating_point_operations counts them)."""
        mtp = self.mtp.model if self.mtp is not None else 0.0
        return self.block_matmuls + self.attention + self.lm_head + self.adapter_matmuls + self.expert_matmuls + mtp

    @property
    def hardware(self) -> float:
        """FLOPs the GPUs execute (HFU numerator)."""
        mtp = self.mtp.recompute + self.mtp.flash_backward_recompute if self.mtp is not None else 0.0
        return self.model + self.recompute + self.flash_backward_recompute + mtp


def block_matmul_params(arch: Architecture) -> int:
    """Weights of one block that take part in matmuls (norms and biases excluded)."""
    return sum(t.numel for t in layer_tensors(arch) if t.is_matrix)


def moe_block_matmul_params(arch: Architecture) -> int:
    """Weights of one MoE block that every token multiplies: attention, router and shared experts."""
    return sum(t.numel for t in moe_layer_tensors(arch) if t.is_matrix)


def expert_matmul_params(arch: Architecture) -> int:
    """Weights of one routed expert (its gate/up and down matrices)."""
    return sum(t.numel for t in expert_tensors(arch) if t.is_matrix)


def attention_layer_spans(arch: Architecture, seq_len: int) -> tuple[tuple[int, int], ...]:
    """(layers, keys each query attends to) per kind of attention layer: the sequence for full-attention
    layers, min(sequence, window) for sliding-window layers (all layers with a window, or all but every
    `global_attention_every`-th: Gemma 2 alternates, Gemma 3 has one global layer in six)."""
    layers = arch.num_layers
    if not arch.sliding_window:
        return ((layers, seq_len),)
    window = min(seq_len, arch.sliding_window)
    if not arch.global_attention_every:
        return ((layers, window),)
    full = layers // arch.global_attention_every
    return ((layers - full, window), (full, seq_len))


def attention_span(arch: Architecture, seq_len: int) -> float:
    """Keys each query attends to in the FLOPs convention, averaged over the layers: the sequence, the
    sliding window, or the layer-weighted mix of both."""
    return sum(n * w for n, w in attention_layer_spans(arch, seq_len)) / arch.num_layers


def selective_recompute_flops(arch: Architecture, plan: Plan, forward_attention: float) -> tuple[float, float]:
    """(matmul, attention) forward work selective checkpointing redoes in backward, per token, whole model.

    Megatron (core-attention recompute, Korthikanti et al.): the attention scores and weighted sum.
    PyTorch engines (torchtitan's op-level policy, see planner.memory.activations.selective_saved_bytes):
    the matmuls whose outputs were not kept and are needed again: wk (k feeds the attention backward), wo
    (its output is the next norm's input) and, for SwiGLU, w3 (the up projection)."""
    if plan.engine == "megatron":
        return 0.0, forward_attention
    h, f = arch.hidden_size, arch.ffn_hidden_size
    recomputed = h * arch.kv_width + arch.q_width * h + (h * f if arch.mlp == "swiglu" else 0)
    return 2 * arch.num_layers * recomputed, 0.0


def mtp_flops_per_token(arch: Architecture, plan: Plan) -> FlopsPerToken | None:
    """Training FLOPs per token of the plan's multi-token-prediction depths (None without them). Each depth
    costs what a one-block model of the same architecture costs (its block, its attention, one LM-head pass,
    their recomputation) plus eh_proj, 2 x 2h x h per token forward; its norms are not counted, as no norm is.
    This is Megatron's count (training.py num_floating_point_operations, core_r0.14.0: the MTP layers as
    transformer layers, 2h^2 for eh_proj, one more logit product per depth)."""
    if not plan.mtp_layers:
        return None
    one = flops_per_token(mtp_block_architecture(arch), replace(plan, mtp_layers=0))
    eh_proj = 3 * 2 * sum(t.numel for t in mtp_prelude_tensors(arch) if t.is_matrix)
    one = replace(one, block_matmuls=one.block_matmuls + eh_proj)
    if plan.checkpointing == "full":  # Megatron checkpoints the MTP layer with the blocks (uniform method)
        one = replace(one, recompute_matmuls=one.recompute_matmuls + eh_proj / 3)
    depths = plan.mtp_layers
    return replace(one, **{f.name: getattr(one, f.name) * depths for f in fields(one) if f.name in _SUMMED})


_SUMMED = (
    "block_matmuls",
    "attention",
    "lm_head",
    "recompute_matmuls",
    "recompute_attention",
    "flash_backward_recompute",
    "adapter_matmuls",
    "expert_matmuls",
    "recompute_expert_matmuls",
)
"""The FlopsPerToken fields that add up over blocks (all but forward_fraction and mtp)."""


def flops_per_token(arch: Architecture, plan: Plan) -> FlopsPerToken:
    """Training FLOPs per token for the plan's sequence length and checkpointing."""
    layers = arch.num_layers
    forward_experts = 0
    if arch.is_moe:
        blocks = dense_layers(arch) * block_matmul_params(arch) + moe_layers(arch) * moe_block_matmul_params(arch)
        forward_matmuls = 2 * blocks
        forward_experts = 2 * moe_layers(arch) * arch.experts_per_token * expert_matmul_params(arch)
    else:
        forward_matmuls = 2 * layers * block_matmul_params(arch)
    if arch.is_mla:  # QK^T over heads x (nope + rope), PV over heads x v_head_dim
        width = arch.num_attention_heads * (arch.qk_head_dim + arch.value_head_dim)
        forward_attention = 2 * layers * width * attention_span(arch, plan.seq_len)
    else:
        forward_attention = 4 * layers * arch.q_width * attention_span(arch, plan.seq_len)
    forward_head = 2 * arch.vocab_size * arch.hidden_size
    recompute_experts = 0.0
    if plan.checkpointing == "full":
        share = checkpointed_fraction(arch.num_layers, plan) if plan.checkpointing_every > 1 else 1.0
        recompute = forward_matmuls * share, forward_attention * share
        recompute_experts = forward_experts * share
    elif plan.checkpointing == "selective":
        recompute = selective_recompute_flops(arch, plan, forward_attention)
    else:
        recompute = 0.0, 0.0
    flash = forward_attention / 2 if plan.flash_attention else 0.0
    if plan.peft:
        return _peft_flops_per_token(arch, plan, forward_matmuls, forward_attention, forward_head, recompute, flash)
    return FlopsPerToken(
        block_matmuls=3 * forward_matmuls,
        attention=3 * forward_attention,
        lm_head=3 * forward_head,
        recompute_matmuls=recompute[0],
        recompute_attention=recompute[1],
        flash_backward_recompute=flash,
        expert_matmuls=3 * forward_experts,
        recompute_expert_matmuls=recompute_experts,
        mtp=mtp_flops_per_token(arch, plan),
    )


def _peft_flops_per_token(
    arch: Architecture,
    plan: Plan,
    forward_matmuls: float,
    forward_attention: float,
    forward_head: float,
    recompute: tuple[float, float],
    flash: float,
) -> FlopsPerToken:
    """FLOPs per token when only part of the model trains.

    A frozen weight needs no weight gradient, so its backward is one matmul (the input gradient) instead
    of two: LoRA/QLoRA blocks and the frozen LM head cost 2 x forward instead of 3 x. Each adapter
    (lora_A: r x in, lora_B: out x r) adds 2 FLOPs per weight per token forward and twice that backward.
    Under freeze, the lower blocks have no trainable parameter before them and run forward only (autograd
    records nothing there); the last N blocks train in full, and only they are recomputed by activation
    checkpointing."""
    if plan.method == "freeze":
        trained = min(plan.trainable_layers, arch.num_layers) / arch.num_layers
        block = forward_matmuls * (1 + 2 * trained)
        attention = forward_attention * (1 + 2 * trained)
        adapters = 0.0
        recompute = (recompute[0] * trained, recompute[1] * trained)
        flash = flash * trained
        forward = forward_matmuls + forward_attention + forward_head
    else:
        block = 2 * forward_matmuls
        attention = 3 * forward_attention
        adapter_forward = 2 * arch.num_layers * lora_params_per_layer(arch, plan.lora_rank, plan.lora_targets)
        adapters = 3 * adapter_forward
        if plan.checkpointing == "full":
            recompute = (recompute[0] + adapter_forward, recompute[1])
        forward = forward_matmuls + forward_attention + forward_head + adapter_forward
    head = 2 * forward_head
    total = block + attention + head + adapters
    return FlopsPerToken(
        block_matmuls=block,
        attention=attention,
        lm_head=head,
        recompute_matmuls=recompute[0],
        recompute_attention=recompute[1],
        flash_backward_recompute=flash,
        adapter_matmuls=adapters,
        forward_fraction=forward / total,
    )
