"""Activation memory: what the backward pass keeps alive, per token of one micro-batch on one GPU.

This is the one place activation memory is computed. Each term is derived by walking the real layer's
forward and asking which tensors autograd saves for backward (inputs of matmuls, inputs/outputs of
elementwise ops, kernel statistics), in the implementation family the engine runs:

* `hf`: Hugging Face / PyTorch eager modules (DeepSpeed, FSDP). RMSNorm upcasts to fp32 and saves the
  fp32 input; SDPA/flash attention saves q, k, v (after `repeat_kv`), the output and the log-sum-exp;
  the SwiGLU MLP saves gate, act(gate), up and their product.
* `autocast`: the same code run under `torch.autocast` over fp32 weights (DDP / FSDP with ZeRO 0): the
  residual stream stays fp32 and every linear casts its input to bf16 separately.
* `megatron`: Megatron-Core with TransformerEngine: fused LayerNorm+Linear saves input and normalised
  output; flash attention with native GQA; fused SwiGLU saves the fc1 output.

Check: for Llama-2-7B (h=4096, f=11008) in bf16 the `hf` walk gives 24h + 8f + 8 = 45.5 bytes per
(token x h) per layer (Korthikanti et al. (2022) give 34 for the GPT-3 layer). `planner calibrate trace`
runs transformers' own code on fake tensors: its per-layer slope is 186,504 bytes per token for both
this walk and the trace, and the `autocast` walk (55.5 h) equals its trace too
(calibration/traced/*.yaml).
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np

from planner.architecture import layer_tensors, lora_targeted
from planner.catalog.models import Architecture
from planner.plan import Plan

Family = Literal["hf", "autocast", "megatron"]

INPUT_IDS_AND_LABELS_BYTES = 16
"""int64 token ids and labels per token (Megatron counts the ids as 8*s*b in
theoretical_memory_usage.py; labels add the same)."""

LSE_BYTES_PER_HEAD = 4
"""Flash attention keeps one fp32 log-sum-exp per query head and token for its backward."""

RSTD_BYTES = 4
"""RMSNorm keeps one fp32 reciprocal root-mean-square per token for its backward."""

FP32_BYTES = 4
"""Bytes of one fp32 element (context-parallel accumulators and merges)."""

MASK_BYTES = 1
"""A dropout mask is stored as one byte (bool) per element (Korthikanti et al. 2022, Table 1 notes)."""

CHUNKED_LOSS_CHUNKS = 8
"""torchtune's CEWithChunkedOutputLoss splits the logits into 8 chunks (num_output_chunks=8)."""
FLASH_CE_ROW_BYTES = 4 + 4
"""flash-attn's cross-entropy kernel keeps an fp32 log-sum-exp and returns an fp32 loss per token (row)."""


def te_linear_input_bytes(plan: Plan) -> int:
    """Bytes per element of what a TransformerEngine linear keeps of its input for the weight gradient: with
    fp8 the input is cast to fp8 for the forward GEMM and that fp8 copy is what is saved (TransformerEngine
    transformer_engine/pytorch/module/layernorm_mlp.py @0004dbd: the fp8 branch passes the normalised output
    and the activation output to fp8_gemm as GEMM1_INPUT / GEMM2_INPUT in fp8 and saves those), else the
    compute dtype. The fc1 output that the SwiGLU/GELU backward reads stays in the compute dtype."""
    return 1 if plan.precision == "fp8" else compute_bytes(plan)


def implementation_family(plan: Plan) -> Family:
    """Which model code the engine runs, which decides what autograd saves."""
    if plan.engine == "megatron":
        return "megatron"
    if plan.engine == "fsdp" and plan.zero == 0 and plan.precision in ("bf16", "fp16", "fp8") and not plan.peft:
        return "autocast"
    return "hf"


def compute_bytes(plan: Plan) -> int:
    """Bytes per activation element: 4 in fp32 training, else 2 (bf16/fp16; FP8 recipes keep bf16
    activations between matmuls)."""
    return 4 if plan.precision == "fp32" else 2


def sequence_shards(plan: Plan):
    """How many ways the norm/residual regions are split: tp with sequence parallelism, else 1."""
    return np.where(plan.sequence_parallel, plan.tp, 1)


def kbit_prepared_norms(plan: Plan) -> bool:
    """Whether a QLoRA plan runs with fp32 norm weights: the usual Hugging Face QLoRA recipe calls PEFT's
    prepare_model_for_kbit_training on an unsharded 4-bit model (TRL's SFTTrainer does it whenever the 4-bit
    weights are not sharded, _prepare_peft_model in trl 0.13), which casts every bf16 parameter that is not
    4-bit to fp32; TRL's peft_module_casting_to_bf16 then casts adapters, embeddings and LM head back to bf16
    and leaves the norms in fp32. A norm with an fp32 weight returns fp32 (`weight * x.to(input_dtype)`),
    the 4-bit linears return their input's dtype (bitsandbytes Linear4bit: `out.to(inp_dtype)`), so the MLP
    runs in fp32 and its output turns the residual stream fp32 from the first block on. Measured: the
    fms-acceleration QLoRA rows on one GPU (Mistral-7B, 4 and 8 x 4096 tokens) need 2 bytes x h per token per
    block more than the same LoRA runs beyond the weights, and their 2-GPU FSDP rows (no preparation) do not.
    Under FSDP/ZeRO-3 sharding the preparation is skipped (TRL; PEFT's FSDP-QLoRA guide), and DeepSpeed casts
    every parameter to bf16 when it starts (engine._configure_distributed_model, _cast_module_mixed_precision in
    0.19), which undoes the fp32 norms: only single-GPU and DDP QLoRA keep them."""
    return plan.method == "qlora" and plan.engine == "fsdp" and plan.zero == 0 and plan.precision in ("bf16", "fp16")


def residual_bytes(plan: Plan) -> int:
    """Bytes per element of the residual stream: fp32 under autocast over fp32 weights, and in QLoRA with
    fp32 norm weights (`kbit_prepared_norms`)."""
    if implementation_family(plan) == "autocast" or kbit_prepared_norms(plan):
        return 4
    return compute_bytes(plan)


@dataclass(frozen=True)
class LayerActivations:
    """Bytes saved for backward by one transformer block, per token, on one GPU (TP/SP already applied).
    Each field is one group of saved tensors."""

    norms: float
    """Both norms: their inputs/statistics and the normalised output the next linear saves."""
    qkv: float
    """Query, key and value as the attention kernel saves them."""
    attention_core: float
    """Flash: the log-sum-exp. Eager: the softmax probabilities (and dropout mask/output), s per head."""
    attention_output: float
    """Input of the output projection."""
    mlp: float
    """The MLP's inner tensors (SwiGLU: gate, act, up, product; GELU: pre- and post-activation)."""
    dropout_masks: float
    """Masks of the dropouts after attention and MLP (models with hidden dropout only)."""
    adapter_inputs: float = 0.0
    """LoRA: the inputs the adapters keep (and their r-wide intermediates); 0 without adapters."""

    @property
    def total(self) -> float:
        return (
            self.norms
            + self.qkv
            + self.attention_core
            + self.attention_output
            + self.mlp
            + self.dropout_masks
            + self.adapter_inputs
        )


def _norm_bytes(arch: Architecture, plan: Plan, consumers: int) -> float:
    """One norm plus the copy of its output that the following linear(s) save, per token.

    hf RMSNorm (LlamaRMSNorm): fp32 input (4h, saved by pow), the fp32 reciprocal RMS (4 bytes, saved by
    rsqrt), the normalised tensor in the input dtype (saved by the weight multiply) and the weighted
    output (saved by the linear): 4h + 4 + 2*a*h (the 4 found by `planner calibrate trace`).
    hf LayerNorm (native kernel): input + output, plus fp32 mean and rstd (8 bytes).
    autocast: input and normalised tensor in fp32 (8h) and one bf16 cast per consuming linear.
    megatron: TE LayerNormLinear saves the input and the normalised output (+ fp32 statistics).

    Tensor parallelism with sequence parallelism shards the norm over the TP ranks. TransformerEngine
    saves the sharded output and all-gathers again in backward; PyTorch's DTensor TP (torchtitan) saves
    the all-gathered input of each column-parallel linear, which is not divided by TP."""
    family = implementation_family(plan)
    a = compute_bytes(plan)
    h = arch.hidden_size
    sp = sequence_shards(plan)
    if family == "megatron":
        return (a * h + te_linear_input_bytes(plan) * h + 8) / sp
    if family == "autocast":
        norm, linear_input = 8 * h + (RSTD_BYTES if arch.norm == "rmsnorm" else 8), consumers * 2 * h
    elif arch.norm == "rmsnorm":
        norm, linear_input = 4 * h + RSTD_BYTES + a * h, a * h
    else:
        norm, linear_input = a * h + 8, a * h
    return norm / sp + linear_input


def qk_norm_bytes(arch: Architecture, plan: Plan) -> float:
    """Per-token bytes the query/key norms keep (Qwen3, Gemma 3: per head; OLMo 2: over the whole width).

    hf/autocast (Qwen3RMSNorm on the projected q and k): the fp32 input (4 bytes per value, saved by pow),
    one fp32 reciprocal RMS per normalised vector (per head, or per token for the full-width norm) and the
    normalised tensor in the compute dtype (saved by the weight multiply); RoPE multiplies by constant
    tables, so it saves nothing more. megatron (TE's q/k layernorm) and torch.compile keep the input in
    the compute dtype and the statistics; compile recomputes the rest (its saved q, k are the pre-norm
    projections already counted in `qkv`, so only the statistics are added)."""
    if arch.qk_norm == "none":
        return 0.0
    a = compute_bytes(plan)
    width = arch.q_width + arch.kv_width
    vectors = arch.num_attention_heads + arch.num_kv_heads if arch.qk_norm == "head" else 2
    stats = RSTD_BYTES * vectors
    if plan.compile:
        return stats / plan.tp
    if implementation_family(plan) == "megatron":
        return (a * width + stats) / plan.tp
    return ((4 + a) * width + stats) / plan.tp


def post_norm_bytes(arch: Architecture, plan: Plan) -> float:
    """Per-token bytes of the two extra norms on the attention and MLP outputs (Gemma's sandwich norms):
    each keeps what a norm keeps (hf: fp32 input, statistic, normalised tensor; compile: its input and
    statistic) but feeds the residual add, not a linear, so no linear input is added."""
    if not arch.post_norms:
        return 0.0
    a, h, sp = compute_bytes(plan), arch.hidden_size, sequence_shards(plan)
    if plan.compile:
        one = a * h + RSTD_BYTES
    elif implementation_family(plan) == "megatron":
        one = a * h + 8
    elif implementation_family(plan) == "autocast":
        one = 8 * h + RSTD_BYTES
    else:
        one = (4 + a) * h + RSTD_BYTES
    return 2 * one / sp


def _attention_probs_bytes(arch: Architecture, family: Family, a: int, seq_len: int) -> float:
    """Eager attention per token: softmax probabilities over seq_len keys for every head.

    hf: softmax in fp32 then cast back (4 + a bytes; in fp32 training the cast is a no-op: 4).
    megatron: fused scale-mask-softmax keeps the probabilities in the compute dtype (a bytes).
    With attention dropout: a 1-byte mask and the dropped-out probabilities (a bytes) on top
    (Korthikanti's 5*a*s/h term for fp16 with dropout).
    With attention soft-capping (Gemma 2: scores / cap, tanh, * cap before the mask and softmax, as in
    transformers' eager Gemma 2 attention and Megatron's unfused path): tanh saves its output for the
    backward, one more score in the compute dtype (a bytes); dividing and multiplying by the constant cap
    save nothing."""
    per_score = a if family == "megatron" else 4 + (0 if a == 4 else 2)
    if arch.attention_dropout > 0:
        per_score += MASK_BYTES + (2 if a == 2 else 4)
    if arch.attn_logit_softcap:
        per_score += a
    return arch.num_attention_heads * seq_len * per_score


def _attention_core_bytes(arch: Architecture, plan: Plan) -> float:
    if plan.flash_attention:
        return LSE_BYTES_PER_HEAD * arch.num_attention_heads / plan.tp
    family = implementation_family(plan)
    return _attention_probs_bytes(arch, family, compute_bytes(plan), plan.seq_len) / plan.tp


def _dropout_mask_bytes(arch: Architecture, plan: Plan):
    """One-byte masks of the dropouts after attention and after the MLP (models with hidden dropout)."""
    return (2 * MASK_BYTES * arch.hidden_size / sequence_shards(plan)) if arch.hidden_dropout > 0 else 0.0


ROUTER_PROBS_BYTES = 4
"""Routing probabilities are computed and kept in fp32: transformers' routers call softmax(..., dtype=float)
(DeepSeek also its logits: F.linear in fp32), Megatron's --moe-router-dtype fp32; one value per expert."""

TOPK_INDEX_BYTES = 8
"""The selected experts of each token are int64 indices (torch.topk), kept for the unpermute/scatter."""

TOPK_WEIGHT_BYTES = 4
"""The top-k routing weights stay fp32 until the combine multiplies each expert output by its weight."""


def routed_load_factor(arch: Architecture, plan: Plan):
    """Tokens the busiest expert-parallel rank processes, as a multiple of the mean (T x k per rank).

    Dropless routing: with ep ranks each receiving the tokens routed to its num_experts / ep experts, the
    busiest rank's load is the maximum of ep bins filled by m = T x k x ep assignments; for m >> ep ln ep
    that maximum is m/ep + sqrt(2 (m/ep) ln ep) (Raab and Steger, "Balls into Bins - A Simple and Tight
    Analysis", RANDOM 1998, Theorem 1), i.e. a factor 1 + sqrt(2 ln(ep) / (T x k)). This is the imbalance of
    balanced routing (what auxiliary losses and DeepSeek's bias-based balancing aim at); a skewed router is
    not modelled. With one EP rank all tokens stay local: factor 1. A capacity factor caps every expert at
    that multiple of its even share (Megatron --moe-expert-capacity-factor; the excess is dropped), which
    bounds the factor from above."""
    if not arch.is_moe:
        return 1.0
    mean = np.maximum(plan.tokens_per_micro_batch * arch.experts_per_token, 1)
    factor = 1 + np.sqrt(2 * np.log(plan.ep) / mean)
    if plan.moe_capacity_factor is not None:
        factor = np.minimum(factor, plan.moe_capacity_factor)
    return factor


def routed_copies_share(plan: Plan):
    """Routed copies one rank processes per micro-batch token, over T x k: its tokens enter the MoE layer
    sequence-sharded over TP and are gathered over the expert-TP group (Megatron's token dispatcher with
    ETP: tp sequence shards of T / tp, etp of them gathered), i.e. etp / tp; 1 with the default etp = tp."""
    return plan.expert_tp / plan.tp


def _mla_attention_bytes(arch: Architecture, plan: Plan) -> tuple[float, float, float]:
    """(latent norms, q/k/v, attention output) per token for DeepSeek's multi-head latent attention.

    Walk of transformers' DeepseekV3Attention / Megatron-Core's MLASelfAttention: the compressed query
    (q_lora_rank wide) and the kv latent (kv_lora_rank) each pass an RMSNorm that keeps what a norm keeps
    (hf: fp32 input, statistic, normalised copy saved by the up-projection; megatron: input, normalised
    output, statistics), on every TP rank (the down projections are duplicated). The attention kernel keeps
    the up-projected query and key (heads x (nope + rope)) and the value (heads x v_head_dim); transformers
    pads the value to the query width for flash attention when the widths differ, TransformerEngine takes
    them as they are. The output projection keeps its heads x v_head_dim input."""
    a, tp = compute_bytes(plan), plan.tp
    family = implementation_family(plan)
    heads, qk = arch.num_attention_heads, arch.qk_head_dim
    latents = [arch.kv_lora_rank] + ([arch.q_lora_rank] if arch.q_lora_rank else [])
    if family == "megatron":
        norms = sum(2 * a * width + 8 for width in latents)
        value = arch.v_head_dim
    else:
        norms = sum((4 + a) * width + RSTD_BYTES + a * width for width in latents)
        value = qk if plan.flash_attention and arch.v_head_dim != qk else arch.v_head_dim
    qkv = a * heads * (2 * qk + value) / tp
    return norms, qkv, a * heads * arch.v_head_dim / tp


def _mlp_tensor_count(arch: Architecture, plan: Plan) -> int:
    """f-wide tensors an MLP keeps (SwiGLU, hf: gate, act(gate), up, product; megatron: the fused 2f fc1
    output and the product; GELU: its input and output)."""
    return (3 if implementation_family(plan) == "megatron" else 4) if arch.mlp == "swiglu" else 2


def moe_mlp_bytes(arch: Architecture, plan: Plan) -> float:
    """Per-token bytes one MoE block's MLP part keeps for backward (instead of the dense MLP's).

    * router: the fp32 routing probabilities (4 x E), the int64 top-k indices and fp32 top-k weights, per
      local token (sequence-sharded over TP with sequence parallelism, as Megatron's router runs on the
      local tokens);
    * routed experts: each token is copied to its k experts. Per copy the grouped GEMMs keep the permuted
      input (h wide, saved by fc1), the expert MLP's inner tensors (f_e wide, split over the expert-tensor-
      parallel = TP ranks) and the expert output (h wide, kept by the combine's multiply by the routing
      weight). The expert input is the tokens of the rank's expert-TP group (`routed_copies_share`), scaled
      by the busiest rank's load (`routed_load_factor`);
    * shared experts: a dense MLP of their width on every token.
    Megatron-Core multiplies the routing probabilities inside the experts' activation (TEGroupedMLP's
    weighted SwiGLU, 'memory efficient token permutation by moving the probs multiplication from
    unpermutation to activation function of GroupedMLP', megatron/core/transformer/moe/README.md @d98e8a6),
    so the combine keeps no expert output; the activation keeps each copy's fp32 probability instead. Its
    grouped linears save their inputs as TransformerEngine's linears do (fp8 under fp8:
    `te_linear_input_bytes`): per copy the permuted input, the fc1 output (2 f_e, compute dtype) and the fc2
    input (f_e).
    Source: the walk of transformers' MoE blocks (Qwen3MoeSparseMoeBlock, DeepseekV3MoE) and Megatron-Core's
    MoELayer (router, token dispatcher permute/unpermute, TEGroupedMLP)."""
    a, tp, h = compute_bytes(plan), plan.tp, arch.hidden_size
    k, sp = arch.experts_per_token, sequence_shards(plan)
    router = (ROUTER_PROBS_BYTES * arch.num_experts + (TOPK_INDEX_BYTES + TOPK_WEIGHT_BYTES) * k) / sp
    tensors = _mlp_tensor_count(arch, plan)
    width = arch.moe_ffn_hidden_size / plan.expert_tp
    if implementation_family(plan) == "megatron":
        linear_input = te_linear_input_bytes(plan)
        per_copy = linear_input * h + ((tensors - 1) * a + linear_input) * width + ROUTER_PROBS_BYTES
    else:
        per_copy = 2 * a * h + tensors * a * width
    routed = k * routed_copies_share(plan) * routed_load_factor(arch, plan) * per_copy
    shared = tensors * a * arch.shared_expert_ffn_hidden_size / tp
    return router + routed + shared


def dispatch_buffer_bytes(arch: Architecture, plan: Plan) -> float:
    """Per-token bytes of the token dispatcher's transient buffers in one MoE block (forward and backward
    alike; nothing of them is saved). alltoall (Megatron MoEAlltoAllTokenDispatcher, torchtitan): the
    permuted tokens sent and the tokens received, T x k copies of h values each (the received side scaled by
    the busiest rank's load). allgather (MoEAllGatherTokenDispatcher): the hidden states of the whole EP x TP
    group gathered on every rank (T x ep tokens of the TP group) beside the local permuted copy. With ep 1 and
    tp 1 nothing travels and only the permuted copy exists."""
    if not arch.is_moe:
        return 0.0
    a, h, k = compute_bytes(plan), arch.hidden_size, arch.experts_per_token
    permuted = a * h * k * routed_copies_share(plan)
    load = routed_load_factor(arch, plan)
    travels = (plan.ep * plan.tp) > 1
    if plan.moe_dispatcher == "allgather":
        return permuted * load + travels * a * h * plan.ep
    return permuted + travels * permuted * load


def layer_activations(arch: Architecture, plan: Plan, moe: bool = False) -> LayerActivations:
    """Saved bytes per token for one block with no recomputation (checkpointing `none`); `moe`: a MoE
    block of a MoE model (its MLP part is `moe_mlp_bytes`), else a dense-MLP block."""
    if plan.compile:
        return compiled_layer_activations(arch, plan, moe)
    if plan.method in ("lora", "qlora"):
        return lora_layer_activations(arch, plan)
    family = implementation_family(plan)
    a = compute_bytes(plan)
    f = arch.ffn_hidden_size
    q, kv = arch.q_width, arch.kv_width
    tp = plan.tp

    attn_consumers = 1 if arch.fused_qkv else 3
    mlp_consumers = 2 if arch.mlp == "swiglu" else 1
    norms = _norm_bytes(arch, plan, attn_consumers) + _norm_bytes(arch, plan, mlp_consumers)
    norms = norms + post_norm_bytes(arch, plan) + qk_norm_bytes(arch, plan)
    # hf/autocast: transformers' SDPA path and torchtitan expand k/v to every query head (repeat_kv)
    # before the kernel, so the saved k and v are q-sized; TransformerEngine handles GQA natively.
    kv_saved = kv if family == "megatron" else q
    qkv = a * (q + 2 * kv_saved) / tp
    attention_output = a * q / tp
    # SwiGLU, hf: gate out (silu input), silu out, up out, product (down_proj input) = 4 f-wide tensors;
    # megatron: fused bias-SwiGLU saves the 2f-wide fc1 output and fc2 the f-wide product.
    # GELU: its input (fc1 out) and output (fc2 in).
    mlp_tensors = (3 if family == "megatron" else 4) if arch.mlp == "swiglu" else 2
    mlp = mlp_tensors * a * f / tp
    if family == "megatron":
        # TE LayerNormMLP: fc1 output (2f for SwiGLU, f for GELU) in the compute dtype, fc2's input as fc2 saves it;
        # the attention projection (TE Linear) keeps its own fp8 copy of the attention output under fp8.
        mlp = ((mlp_tensors - 1) * a + te_linear_input_bytes(plan)) * f / tp
        attention_output = attention_output + (plan.precision == "fp8") * q / tp
    if moe:
        mlp = moe_mlp_bytes(arch, plan)
    if arch.is_mla:
        latent_norms, qkv, attention_output = _mla_attention_bytes(arch, plan)
        norms = norms + latent_norms
    return LayerActivations(
        norms, qkv, _attention_core_bytes(arch, plan), attention_output, mlp, _dropout_mask_bytes(arch, plan)
    )


BLOCK_LINEAR_INPUTS = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "o_proj": "attn_out",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "down_proj": "mlp_mid",
}
"""Which tensor each linear of a block reads: linears reading the same tensor share one saved copy of it."""


def adapters_copy_their_input(plan: Plan) -> bool:
    """Whether each LoRA adapter makes its own copy of its input before lora_A.

    PEFT's plain Linear (tuners/lora/layer.py) casts x to the adapter's dtype (_cast_input_dtype): with the
    fp32 adapters of autocast_adapter_dtype (DDP/FSDP in bf16/fp16 mixed precision) that is an fp32 copy,
    which autocast casts back to a new bf16 tensor that lora_A's matmul saves, one per adapter. No copy when
    the adapters already have the input's dtype: DeepSpeed casts the module to bf16, pure-bf16 trains bf16
    adapters, fp32 training has fp32 everywhere. PEFT's bitsandbytes 4-bit layer (tuners/lora/bnb.py
    Linear4bit) casts only outside autocast (`requires_conversion = not torch.is_autocast_enabled()`), so
    under the Trainer's autocast QLoRA adapters share their input too."""
    mixed = plan.precision in ("bf16", "fp16", "fp8")
    return plan.method == "lora" and mixed and plan.engine != "deepspeed"


def _adapter_input_bytes(arch: Architecture, plan: Plan) -> float:
    """What the LoRA adapters (and, under QLoRA, the 4-bit base linears) of one block keep for backward,
    per token (PEFT tuners/lora/layer.py Linear.forward: result = base_layer(x) + lora_B(lora_A(dropout(x)))
    * scaling).

    * A frozen nn.Linear keeps nothing of its input: PyTorch's generated autograd code saves the input of a
      matmul only when the weight's gradient will be computed (gen_variable_type.py, guard_for).
    * bitsandbytes' MatMul4Bit (QLoRA's base linears) saves (A, B), the input and the packed weight, whenever
      the input needs a gradient (`ctx.tensors = (A, B)` in autograd/_functions.py, bitsandbytes 0.41 to
      0.45): every quantized linear keeps its input, shared by the linears reading the same tensor.
    * lora_A keeps the input it multiplies: its own bf16 copy per adapter when PEFT casts it
      (`adapters_copy_their_input`), else the tensor itself, shared with the other readers of that tensor:
      the attention norm output (q, k, v), the attention output (o), the MLP norm output (gate, up) and
      the MLP product (down), each once.
    * lora_dropout > 0 (nn.Dropout instead of nn.Identity): each adapter drops out its own copy, kept with
      a one-byte mask, i.e. in_features x (2 + 1) per adapter whatever the dtype.
    * fp32 norm weights (`kbit_prepared_norms`): the tensors they feed are fp32, so each reader keeps its own
      bf16 cast of them.
    lora_B keeps lora_A's r-wide output."""
    a = compute_bytes(plan)
    targeted = lora_targeted(arch, plan.lora_targets)
    rank_outputs = len(targeted) * a * plan.lora_rank
    # With fp32 norms (kbit_prepared_norms) the norm outputs and the MLP product are fp32: every 4-bit linear
    # and every adapter reading them casts its own bf16 copy (Linear4bit `x.to(compute_dtype)`, autocast).
    fp32_inputs = {"attn_in", "mlp_in", "mlp_mid"} if kbit_prepared_norms(plan) else set()
    own = 0.0
    shared: dict[str, int] = {}
    readers = list(targeted)
    if plan.method == "qlora":
        readers += [t for t in layer_tensors(arch) if t.name in BLOCK_LINEAR_INPUTS]
    for index, t in enumerate(readers):
        source = BLOCK_LINEAR_INPUTS[t.name]
        is_adapter = index < len(targeted)
        if is_adapter and plan.lora_dropout > 0:
            own += (a + MASK_BYTES) * t.cols
        elif source in fp32_inputs or (is_adapter and adapters_copy_their_input(plan)):
            own += a * t.cols
        else:
            shared[source] = t.cols
    return own + a * sum(shared.values()) + rank_outputs


def lora_layer_activations(arch: Architecture, plan: Plan) -> LayerActivations:
    """Saved bytes per token for one LoRA/QLoRA block (hf family; frozen bf16 base weights).

    Differences from full fine-tuning (layer_activations): with frozen norm weights the weight multiply
    no longer keeps the normalised tensor (RMSNorm keeps its fp32 input and statistics; LayerNorm's kernel
    its input, mean and rstd), and no frozen linear keeps its input; what the adapters keep is counted in
    `_adapter_input_bytes`. Attention (q, k, v, its output and log-sum-exp, which the kernel's backward
    needs) and the MLP's inner tensors the activation needs for the input gradient (SwiGLU: gate,
    act(gate) and up; GELU: its input) are unchanged. Check: tests/engines/test_peft.py counts what
    autograd saves in transformers' Llama block wrapped by PEFT and finds this walk."""
    a = compute_bytes(plan)
    h, f, q = arch.hidden_size, arch.ffn_hidden_size, arch.q_width
    norm = 4 * h + RSTD_BYTES if arch.norm == "rmsnorm" else a * h + 8
    mlp_tensors = 3 if arch.mlp == "swiglu" else 1
    mlp_bytes = 4 if kbit_prepared_norms(plan) else a  # fp32 norms: the 4-bit gate/up return fp32
    return LayerActivations(
        norms=2 * norm,
        qkv=a * (q + 2 * q),
        attention_core=_attention_core_bytes(arch, plan),
        attention_output=a * q,
        mlp=mlp_tensors * mlp_bytes * f,
        dropout_masks=_dropout_mask_bytes(arch, plan),
        adapter_inputs=_adapter_input_bytes(arch, plan),
    )


def compiled_layer_activations(arch: Architecture, plan: Plan, moe: bool = False) -> LayerActivations:
    """Saved bytes per token for one torch.compile'd block (hf/autocast families).

    AOTAutograd's min-cut partitioner keeps what is expensive to recompute and recomputes pointwise
    work: each norm keeps only its input (the residual stream) and statistics; the attention keeps the
    projected q, k, v before RoPE and head expansion, its output and log-sum-exp; the MLP keeps the two
    up-projections (act(gate) and the product are recomputed). Check: torchtune's Llama-3.2-3B row
    (compile, no AC, 2 x 4096 tokens, chunked loss) measures 42.9 GiB active; this accounting predicts
    34.7 and the eager one 50.8: the real partitioner keeps somewhat more than the minimum."""
    a = compute_bytes(plan)
    res = residual_bytes(plan)
    h, f = arch.hidden_size, arch.ffn_hidden_size
    q, kv = arch.q_width, arch.kv_width
    tp = plan.tp
    sp = sequence_shards(plan)
    up_projections = 2 if arch.mlp == "swiglu" else 1
    norms = 2 * (res * h + 4) / sp
    norms = norms + post_norm_bytes(arch, plan) + qk_norm_bytes(arch, plan)
    qkv, attention_output = a * (q + 2 * kv) / tp, a * q / tp
    if arch.is_mla:  # MoE/MLA blocks under compile: the eager accounting of those parts (not traced)
        latent_norms, qkv, attention_output = _mla_attention_bytes(arch, plan)
        norms = norms + latent_norms
    return LayerActivations(
        norms=norms,
        qkv=qkv,
        attention_core=_attention_core_bytes(arch, plan),
        attention_output=attention_output,
        mlp=moe_mlp_bytes(arch, plan) if moe else up_projections * a * f / tp,
        dropout_masks=_dropout_mask_bytes(arch, plan),
    )


def checkpoint_input_bytes(arch: Architecture, plan: Plan) -> float:
    """Full recomputation keeps only each block's input (the residual stream), per token; sharded over
    TP with sequence parallelism (Korthikanti et al. 2022: 2*s*b*h per layer in fp16)."""
    sp_divisor = sequence_shards(plan)
    return residual_bytes(plan) * arch.hidden_size / sp_divisor


def selective_saved_bytes(arch: Architecture, plan: Plan, moe: bool = False) -> float:
    """Per-token bytes one block keeps under selective recomputation.

    megatron (`--recompute-granularity selective`, core attention): everything except the eager
    attention probabilities; with flash attention nothing is dropped (Korthikanti's 34*s*b*h case).
    hf/autocast (torchtitan's op-level SAC policy, `_save_list` in torchtitan's activation
    checkpointing): the block input, the outputs of every other matmul (wq, wv, w1, w2 of the seven in
    order wq, wk, wv, wo, w1, w3, w2) and the SDPA output with its log-sum-exp."""
    full = layer_activations(arch, plan, moe)
    if implementation_family(plan) == "megatron":
        return full.total - (0.0 if plan.flash_attention else full.attention_core - _lse(arch, plan))
    a = compute_bytes(plan)
    tp = plan.tp
    sp = sequence_shards(plan)
    h, f, q, kv = arch.hidden_size, arch.ffn_hidden_size, arch.q_width, arch.kv_width
    saved_matmuls = a * (q + kv + f) / tp + a * h / sp  # wq, wv, w1 (column) and w2 (row) outputs
    if moe:  # a MoE block's grouped GEMMs and token exchanges are kept whole (taken as not recomputed)
        saved_matmuls = a * (q + kv) / tp + moe_mlp_bytes(arch, plan)
    return checkpoint_input_bytes(arch, plan) + saved_matmuls + full.attention_output + _lse(arch, plan)


def _lse(arch: Architecture, plan: Plan) -> float:
    return LSE_BYTES_PER_HEAD * arch.num_attention_heads / plan.tp


def saved_bytes_per_layer(arch: Architecture, plan: Plan, moe: bool = False) -> float:
    """Per-token bytes one block keeps between its forward and its backward, per checkpointing mode
    (`moe`: a MoE block of a MoE model), less what Megatron's recompute modules discard."""
    if plan.checkpointing == "full":
        return checkpoint_input_bytes(arch, plan)
    if plan.checkpointing == "selective":
        return selective_saved_bytes(arch, plan, moe) - recompute_module_bytes(arch, plan, moe)
    return layer_activations(arch, plan, moe).total - recompute_module_bytes(arch, plan, moe)


def recompute_module_bytes(arch: Architecture, plan: Plan, moe: bool = False) -> float:
    """Per-token bytes of a block that Megatron's output-discarding recompute modules free (--recompute-modules;
    megatron/core/transformer/moe/README.md @d98e8a6, 'Fine-grained Recomputation'): the output of a module is
    released once its consumers ran and recomputed from the module's input (kept anyway) before their
    backward.
    * layernorm: the two norms' normalised outputs, which the following linears keep (the norms' inputs
      are the residual stream, kept anyway);
    * moe_act: each routed copy's activation output, the fc2 input (`moe_mlp_bytes`);
    * mla_up_proj: the up-projected query, key and value MLA's attention keeps (`_mla_attention_bytes`); the
      compressed latents stay.
    The recomputation itself (norms, an activation, two up-projections) is a few % of a block's FLOPs and
    is not timed."""
    modules = plan.recompute_modules
    if not modules:
        return 0.0
    h, linear_input = arch.hidden_size, te_linear_input_bytes(plan)
    freed = 0.0
    if "layernorm" in modules:
        freed += 2 * linear_input * h / sequence_shards(plan)
    if "moe_act" in modules and moe:
        copies = arch.experts_per_token * routed_copies_share(plan) * routed_load_factor(arch, plan)
        freed = freed + copies * linear_input * arch.moe_ffn_hidden_size / plan.expert_tp
    if "mla_up_proj" in modules and arch.is_mla:
        freed += _mla_attention_bytes(arch, plan)[1]
    return freed


def _largest_block(arch: Architecture, plan: Plan, per_block) -> float:
    """The larger of a dense and a MoE block's value (MoE models may have both kinds)."""
    if not arch.is_moe:
        return per_block(False)
    return np.maximum(per_block(False), per_block(True)) if arch.first_dense_layers else per_block(True)


def recompute_bytes(arch: Architecture, plan: Plan) -> float:
    """Per-token bytes of the one block being recomputed during backward (checkpointed modes only):
    it holds its whole no-recompute set until its backward finishes (the larger block kind)."""
    if plan.checkpointing == "none":
        return 0.0
    return _largest_block(arch, plan, lambda moe: layer_activations(arch, plan, moe).total)


def backward_workspace_bytes(arch: Architecture, plan: Plan) -> float:
    """Per-token gradients alive inside one block's backward: the gradients of the MLP's inner tensors
    (SwiGLU: the product's gradient and those of act(gate) and up, 3 f-wide tensors; GELU: 2) and of
    the residual stream entering and leaving the block (2 h-wide). A MoE block: those of every routed copy
    (k x the busiest rank's load) and of the shared experts, plus the token dispatcher's buffers."""
    a = compute_bytes(plan)
    per_tensor = 3 if arch.mlp == "swiglu" else 2

    def block(moe: bool):
        if not moe:
            return per_tensor * a * arch.ffn_hidden_size / plan.tp
        routed = arch.experts_per_token * routed_load_factor(arch, plan) * arch.moe_ffn_hidden_size
        inner = per_tensor * a * (routed + arch.shared_expert_ffn_hidden_size) / plan.tp
        return inner + dispatch_buffer_bytes(arch, plan)

    return _largest_block(arch, plan, block) + residual_gradient_bytes(arch, plan)


def residual_gradient_bytes(arch: Architecture, plan: Plan) -> float:
    """Per-token gradients of the residual stream entering and leaving the block being back-propagated
    (2 h-wide, sequence-parallel shards), alive through the whole block's backward."""
    return 2 * residual_bytes(plan) * arch.hidden_size / sequence_shards(plan)


TORCH_CP_BACKWARD_FP32_TENSORS = 2
"""fp32 dK/dV copies in flight in PyTorch's ring-attention backward besides the accumulators: the concatenated
buffer a rank sends to its neighbour and the one it receives (_templated_ring_attention_backward: torch.cat of
grad_key and grad_value, then the dkv rotater's permute_tensor)."""


def context_parallel_buffer_bytes(arch: Architecture, plan: Plan) -> float:
    """Per local token, the context-parallel attention's buffers alive in one block's backward.
    Transformer Engine's p2p ring (Megatron) double-buffers the key/value block it receives from its neighbour:
    2 x (k + v) (AttnFuncWithCPAndKVP2P).
    PyTorch's ring attention (FSDP engine; torch.distributed.tensor.experimental._attention, all-gather rotation,
    torchtitan's default context_parallel_rotate_method) all-gathers the whole sequence's K and V (cp x (k + v)
    per local token), accumulates dQ, dK and dV in fp32 (_cp_options.convert_to_f32) and passes the fp32 dK/dV
    around the ring (TORCH_CP_BACKWARD_FP32_TENSORS more copies of them).
    Both exchange the grouped-query K and V (kv_width), as torchtitan since #2259 (ff0829c, Jan 2026: SDPA with
    enable_gqa) and Meta's all-gather CP (Llama 3 paper, Sec. 3.3.2) do. torchtitan's Llama before that expanded K
    and V to the query heads with repeat_kv before SDPA (models/llama/model.py @9dec370), so its runs of 2024-25
    moved and gathered num_heads / num_kv_heads times more; that model-code version is not a plan field."""
    a = compute_bytes(plan)
    width = arch.kv_width
    ring = 2 * 2 * a * width
    gathered = plan.cp * 2 * a * width
    accumulators = FP32_BYTES * (arch.q_width + 2 * width) + TORCH_CP_BACKWARD_FP32_TENSORS * FP32_BYTES * 2 * width
    per_token = np.where(plan.engine == "fsdp", gathered + accumulators, ring)
    return (plan.cp > 1) * per_token / plan.tp


def final_norm_bytes(arch: Architecture, plan: Plan) -> float:
    """The final norm before the LM head, with the head's saved input, per token (last stage)."""
    return _norm_bytes(arch, plan, 1)


def logits_bytes(arch: Architecture, plan: Plan) -> float:
    """Per-token bytes of logits and cross-entropy at their peak (last pipeline stage), divided by TP
    (vocab-parallel loss: Megatron's vocab_parallel_cross_entropy, torchtitan's loss_parallel).

    standard, hf: the loss upcasts the bf16 logits (a*V) to fp32 (4*V) for log-softmax, which saves its
      fp32 output (4*V): a*V + 8*V in forward. In backward the saved output, its incoming gradient from
      nll_loss and the gradient it produces are alive together: 12*V, the larger of the two.
    standard, megatron: compute_language_model_loss casts to fp32 (4*V) and the vocab-parallel loss
      subtracts the max into a new fp32 tensor (4*V) beside the bf16 logits: a*V + 8*V in forward; the
      backward works in place on the saved softmax.
    Measured: torchtune's chunked loss saved 8.3*V per token, Liger's fused loss about 8*V, a fake-tensor
      MemTracker run counted 8.0*V of fp32 temporaries beside the bf16 logits
      (../shared/notes/memory-model.md §3).
    chunked: the bf16 logits stay whole, the fp32 work happens one chunk (1/8) at a time.
    soft-capping (Gemma 2, cap * tanh(logits / cap)): tanh saves its output, one more a*V logits-sized
      tensor alive from forward to its backward (not with the fused loss, which caps inside its chunks).
    fused: logits never exist beyond a chunk (Liger sizes chunks so one chunk is about B*T*h values),
      leaving the precomputed input gradient (a*h) and the chunk (about 6*h) per token.
    flash-ce: flash-attn's CrossEntropyLoss (flash_attn/ops/triton/cross_entropy.py; llm-foundry's default
      `loss_fn: fused_crossentropy`) reads the compute-dtype logits and works in fp32 inside the kernel: it
      saves the logits, an fp32 log-sum-exp and the labels, returns an fp32 loss per token, and its backward
      writes the logits' gradient into a new tensor of the logits' dtype (`inplace_backward` off, the
      default): a*V + a*V + 4 + 4 bytes per token at the backward.
    shifted: Hugging Face's loss before transformers 4.49 upcasts the logits to fp32 and then copies them shifted by one
      token (`logits[..., :-1, :].contiguous()`) before the cross-entropy: a*V + 4*V + 4*V + 4*V at log-softmax in
      forward (14*V in bf16; the upcast is the logits themselves in fp32 training, 12*V). transformers 4.46-4.48's
      ForCausalLMLoss (loss/loss_utils.py; PR #35646, opened three days after 4.48.0, pads and shifts the labels
      instead, leaving one fp32 copy), the inline losses of the older modelling code (LlamaForCausalLM up to 4.45 casts
      with `logits.float()` first) and ChatGLM3's own code (`lm_logits.to(torch.float32)`, then the shifted copy) do it.
      The backward is that of `standard` (12*V): the copy is a slice of the upcast, whose gradient is one more fp32
      tensor only after log-softmax's own are freed. Measured: fms-acceleration's one-GPU LoRA runs of Mistral-7B
      (transformers 4.48.1) sit 2*V bytes per token above `standard` (0.95 and 1.8 GiB at 16,384 and 32,768 tokens;
      refs/a100_80gb.csv rows 34 and 36)."""
    a = compute_bytes(plan)
    if plan.loss == "fused":
        return (a + 6) * arch.hidden_size
    vocab = arch.vocab_size / plan.tp
    if plan.loss == "flash-ce":
        return 2 * a * vocab + FLASH_CE_ROW_BYTES
    softcap = a * vocab if arch.final_logit_softcap else 0.0
    if plan.loss == "chunked":
        return a * vocab + softcap + 12 * vocab / CHUNKED_LOSS_CHUNKS
    forward = a * vocab + 8 * vocab
    if plan.loss == "shifted":
        forward = a * vocab + (4 * vocab if a < 4 else 0.0) + 8 * vocab
    backward = 12 * vocab if implementation_family(plan) != "megatron" else 0.0
    return np.maximum(forward, backward) + softcap


def mtp_prelude_bytes(arch: Architecture, plan: Plan) -> float:
    """Per-token bytes one multi-token-prediction depth saves outside its transformer block (Megatron-Core
    MultiTokenPredictionLayer with Transformer Engine, core_r0.14.0): enorm on the next token's embedding and
    hnorm on the hidden state each keep their input and fp32 reciprocal RMS, eh_proj keeps its 2h-wide input
    (the concatenation, as a TE linear keeps an input; sequence-parallel shard), and the final norm keeps what
    the main model's final norm and LM head keep (final_norm_bytes). The eh_proj output's TP gather saves
    nothing."""
    a, h, sp = compute_bytes(plan), arch.hidden_size, sequence_shards(plan)
    norms = 2 * (a * h + RSTD_BYTES) / sp
    concatenation = te_linear_input_bytes(plan) * 2 * h / sp
    return norms + concatenation + final_norm_bytes(arch, plan)


def mtp_loss_bytes(arch: Architecture, plan: Plan) -> float:
    """Per-token bytes one multi-token-prediction depth's loss keeps while the main loss peaks: Megatron-Core
    computes the MTP losses before the main one (GPTModel._postprocess, core_r0.14.0) and its
    vocab_parallel_cross_entropy saves the fp32 softmax (V / tp values, tensor_parallel/cross_entropy.py
    save_for_backward(exp_logits, ...)) until the backward."""
    return 4 * arch.vocab_size / plan.tp
