"""Parameter tensors of a decoder-only transformer, as the Hugging Face implementations instantiate them.

Everything that depends on *which* weights exist (counts, the largest tensor, how tensor parallelism
splits them, which pipeline stage holds them) is derived from one list of `ParamTensor`s, so the
parameter count, the memory model and the FLOPs model cannot disagree.
"""

from dataclasses import dataclass, replace
from functools import cache
from typing import Literal

from planner.catalog.models import Architecture, moe_layer_count

TpSplit = Literal["column", "row", "vocab", "replicated"]
"""How Megatron-style tensor parallelism divides a tensor: column/row-parallel linears and the
vocab-parallel embedding are split `tp` ways; norms (and row-parallel biases) stay whole on every rank."""

Scope = Literal["layer", "embedding", "head"]
"""Where a tensor lives: inside every transformer block, in the input embedding (first pipeline stage),
or in the final norm + LM head (last pipeline stage)."""


@dataclass(frozen=True)
class ParamTensor:
    name: str
    numel: int
    tp_split: TpSplit
    scope: Scope
    is_matrix: bool
    rows: int = 0
    cols: int = 0


def _matrix(name: str, rows: int, cols: int, split: TpSplit, scope: Scope) -> ParamTensor:
    return ParamTensor(name, rows * cols, split, scope, True, rows, cols)


def _vector(name: str, size: int, split: TpSplit, scope: Scope) -> ParamTensor:
    return ParamTensor(name, size, split, scope, False, size, 1)


def _norm(name: str, arch: Architecture, scope: Scope) -> list[ParamTensor]:
    tensors = [_vector(f"{name}.weight", arch.hidden_size, "replicated", scope)]
    if arch.norm == "layernorm" and arch.norm_bias:
        tensors.append(_vector(f"{name}.bias", arch.hidden_size, "replicated", scope))
    return tensors


def _attention(arch: Architecture) -> list[ParamTensor]:
    """The attention projections of one block (ordinary, grouped-query, or multi-head latent attention)."""
    if arch.is_mla:
        return _latent_attention(arch)
    h, q, kv = arch.hidden_size, arch.q_width, arch.kv_width
    t = [
        _matrix("q_proj", q, h, "column", "layer"),
        _matrix("k_proj", kv, h, "column", "layer"),
        _matrix("v_proj", kv, h, "column", "layer"),
    ]
    if arch.qk_norm == "head":  # one weight of head_dim each, shared by all heads (Qwen3RMSNorm(head_dim))
        t += [
            _vector("q_norm.weight", arch.attention_head_dim, "replicated", "layer"),
            _vector("k_norm.weight", arch.attention_head_dim, "replicated", "layer"),
        ]
    elif arch.qk_norm == "full":  # over the whole projection (Olmo2RMSNorm(num_heads * head_dim))
        t += [_vector("q_norm.weight", q, "column", "layer"), _vector("k_norm.weight", kv, "column", "layer")]
    if arch.qkv_bias:
        t += [
            _vector("q_proj.bias", q, "column", "layer"),
            _vector("k_proj.bias", kv, "column", "layer"),
            _vector("v_proj.bias", kv, "column", "layer"),
        ]
    if arch.attention_sinks:  # GptOssAttention.sinks: one logit per head, split with the heads
        t.append(_vector("sinks", arch.num_attention_heads, "column", "layer"))
    t.append(_matrix("o_proj", h, q, "row", "layer"))
    if arch.attn_out_bias:
        t.append(_vector("o_proj.bias", h, "replicated", "layer"))
    return t


def _latent_attention(arch: Architecture) -> list[ParamTensor]:
    """DeepSeek-V2/V3 multi-head latent attention (transformers DeepseekV2Attention/DeepseekV3Attention):
    q_a_proj (h -> q_lora_rank), q_a_layernorm, q_b_proj (-> heads x (nope + rope)), or one q_proj when
    q_lora_rank is 0; kv_a_proj_with_mqa (h -> kv_lora_rank + rope: the latent and the shared RoPE key),
    kv_a_layernorm, kv_b_proj (-> heads x (nope + v)); o_proj (heads x v -> h). No biases in these models.
    Tensor parallelism follows Megatron-Core's MLASelfAttention: the down projections and their norms are
    duplicated on every TP rank, the up projections column-parallel, o_proj row-parallel."""
    h, heads = arch.hidden_size, arch.num_attention_heads
    qk, rope, latent = arch.qk_head_dim, arch.qk_rope_head_dim, arch.kv_lora_rank
    t: list[ParamTensor] = []
    if arch.q_lora_rank:
        t += [
            _matrix("q_a_proj", arch.q_lora_rank, h, "replicated", "layer"),
            _vector("q_a_layernorm.weight", arch.q_lora_rank, "replicated", "layer"),
            _matrix("q_b_proj", heads * qk, arch.q_lora_rank, "column", "layer"),
        ]
    else:
        t.append(_matrix("q_proj", heads * qk, h, "column", "layer"))
    t += [
        _matrix("kv_a_proj_with_mqa", latent + rope, h, "replicated", "layer"),
        _vector("kv_a_layernorm.weight", latent, "replicated", "layer"),
        _matrix("kv_b_proj", heads * (arch.qk_nope_head_dim + arch.v_head_dim), latent, "column", "layer"),
        _matrix("o_proj", h, heads * arch.v_head_dim, "row", "layer"),
    ]
    return t


def _mlp(arch: Architecture, width: int, prefix: str = "", bias: bool = False) -> list[ParamTensor]:
    """A SwiGLU (gate, up, down) or GELU (up, down) MLP of inner width `width`."""
    h = arch.hidden_size
    t: list[ParamTensor] = []
    up_names = ("gate_proj", "up_proj") if arch.mlp == "swiglu" else ("up_proj",)
    for name in up_names:
        t.append(_matrix(prefix + name, width, h, "column", "layer"))
        if bias:
            t.append(_vector(f"{prefix}{name}.bias", width, "column", "layer"))
    t.append(_matrix(prefix + "down_proj", h, width, "row", "layer"))
    if bias:
        t.append(_vector(f"{prefix}down_proj.bias", h, "replicated", "layer"))
    return t


def _block(arch: Architecture, mlp: list[ParamTensor]) -> tuple[ParamTensor, ...]:
    t: list[ParamTensor] = []
    t += _norm("input_norm", arch, "layer")
    t += _attention(arch)
    if arch.post_norms:
        t += _norm("attention_output_norm", arch, "layer")
    t += _norm("post_attention_norm", arch, "layer")
    t += mlp
    if arch.post_norms:
        t += _norm("mlp_output_norm", arch, "layer")
    return tuple(t)


@cache
def layer_tensors(arch: Architecture) -> tuple[ParamTensor, ...]:
    """The tensors of one transformer block with a dense MLP of width `ffn_hidden_size` (attention, MLP,
    norms): every block of a dense model, the first `first_dense_layers` blocks of a MoE model."""
    return _block(arch, _mlp(arch, arch.ffn_hidden_size, bias=arch.mlp_bias))


@cache
def moe_layer_tensors(arch: Architecture) -> tuple[ParamTensor, ...]:
    """The tensors of one MoE block except its routed experts: attention, norms, the router (E x h, plus a
    bias for gpt-oss; replicated on every TP rank as Megatron's TopKRouter is) and the shared experts
    (one MLP, plus Qwen2-MoE's Linear(h, 1) gate)."""
    h = arch.hidden_size
    mlp = [_matrix("router", arch.num_experts, h, "replicated", "layer")]
    if arch.router_bias:
        mlp.append(_vector("router.bias", arch.num_experts, "replicated", "layer"))
    if arch.shared_experts:
        mlp += _mlp(arch, arch.shared_expert_ffn_hidden_size, prefix="shared_expert.")
        if arch.shared_expert_gate:
            mlp.append(_matrix("shared_expert_gate", 1, h, "replicated", "layer"))
    return _block(arch, mlp)


@cache
def expert_tensors(arch: Architecture) -> tuple[ParamTensor, ...]:
    """One routed expert: an MLP of width `moe_ffn_hidden_size` (gpt-oss adds biases). Megatron splits
    each expert over the expert-tensor-parallel ranks like a dense MLP (column, then row)."""
    return tuple(_mlp(arch, arch.moe_ffn_hidden_size, prefix="experts.", bias=arch.expert_bias))


def moe_layers(arch: Architecture) -> int:
    """MoE blocks of the model (0 for a dense model)."""
    return int(moe_layer_count(arch, arch.num_layers))


def dense_layers(arch: Architecture) -> int:
    """Blocks with a dense MLP."""
    return arch.num_layers - moe_layers(arch)


@cache
def embedding_tensors(arch: Architecture) -> tuple[ParamTensor, ...]:
    """The input embedding (and learned position table, if any)."""
    t = [_matrix("embed_tokens", arch.vocab_size, arch.hidden_size, "vocab", "embedding")]
    if arch.position_embedding == "learned":
        t.append(_matrix("embed_positions", arch.max_position_embeddings, arch.hidden_size, "replicated", "embedding"))
    return tuple(t)


@cache
def head_tensors(arch: Architecture, separate_copy_of_tied: bool = False) -> tuple[ParamTensor, ...]:
    """The final norm and, if untied (or when a pipeline puts a copy of a tied embedding on the last
    stage, as Megatron does), the V x h LM head."""
    t = list(_norm("final_norm", arch, "head"))
    if not arch.tied_embeddings or separate_copy_of_tied:
        t.append(_matrix("lm_head", arch.vocab_size, arch.hidden_size, "vocab", "head"))
    return tuple(t)


def mtp_block_architecture(arch: Architecture) -> Architecture:
    """The transformer block of one multi-token-prediction depth, as a one-block model: Megatron-Core builds
    it from the decoder's last layer spec (gpt_layer_specs.get_gpt_mtp_block_spec), so it is a MoE block when
    the model's last block is one (DeepSeek-V3), with the same attention, router and experts."""
    last_is_moe = moe_layer_count(arch, arch.num_layers) > moe_layer_count(arch, arch.num_layers - 1)
    dense_first = 0 if last_is_moe or not arch.is_moe else 1
    return replace(arch, num_layers=1, first_dense_layers=dense_first, moe_layer_every=1, mtp_layers=0)


@cache
def mtp_prelude_tensors(arch: Architecture) -> tuple[ParamTensor, ...]:
    """What one multi-token-prediction depth adds around its transformer block (Megatron-Core
    transformer/multi_token_prediction.py, MultiTokenPredictionLayer, core_r0.14.0 @32ad5c8; DeepSeek-V3 report,
    arXiv 2412.19437, Sec. 2.2): enorm on the next token's embedding and hnorm on the previous depth's hidden
    state, eh_proj over their concatenation (2h -> h, a ColumnParallelLinear without bias) and the final norm
    before the shared LM head. The embedding and the LM head are shared with the main model."""
    h = arch.hidden_size
    return (
        *_norm("mtp.enorm", arch, "head"),
        *_norm("mtp.hnorm", arch, "head"),
        _matrix("mtp.eh_proj", h, 2 * h, "column", "head"),
        *_norm("mtp.final_norm", arch, "head"),
    )


def mtp_depth_params(arch: Architecture) -> int:
    """Parameters of one multi-token-prediction depth with all its experts (prelude and block; without the
    shared embedding and head)."""
    block = mtp_block_architecture(arch)
    return numel(mtp_prelude_tensors(arch)) + blocks_params(block, block.num_experts)


def mtp_checkpoint_params(arch: Architecture) -> int:
    """What the released checkpoint stores for the multi-token-prediction module beyond the main model: each
    depth with its own copies of the embedding and the LM head (DeepSeek-V3's model.layers.61.embed_tokens and
    shared_head.head, whose shared_head.norm is the final norm here; its README: 671B main model + 14B MTP
    module = 685B on Hugging Face)."""
    return arch.mtp_layers * (mtp_depth_params(arch) + 2 * arch.vocab_size * arch.hidden_size)


def numel(tensors: tuple[ParamTensor, ...] | list[ParamTensor], tp: int = 1) -> int:
    """Elements one tensor-parallel rank holds of `tensors` (split tensors divided by tp, rounded up)."""
    return sum(t.numel if t.tp_split == "replicated" else -(-t.numel // tp) for t in tensors)


def params_per_layer(arch: Architecture, tp: int = 1) -> int:
    """Parameters of one dense-MLP block on one tensor-parallel rank."""
    return numel(layer_tensors(arch), tp)


def blocks_params(arch: Architecture, experts_per_block: int) -> int:
    """Parameters of all transformer blocks when each MoE block holds `experts_per_block` routed experts."""
    moe = moe_layers(arch)
    per_moe = numel(moe_layer_tensors(arch)) + experts_per_block * numel(expert_tensors(arch)) if moe else 0
    return dense_layers(arch) * params_per_layer(arch) + moe * per_moe


def total_params(arch: Architecture) -> int:
    """The parameter count of the whole model, tied head counted once (what `model.num_parameters()`
    reports in Hugging Face transformers)."""
    return blocks_params(arch, arch.num_experts) + numel(embedding_tensors(arch)) + numel(head_tensors(arch))


def active_params(arch: Architecture) -> int:
    """Parameters one token passes through: the total with only top-k routed experts per MoE block (the
    embedding and LM head included, the convention of the model cards: Mixtral 8x7B 12.9B of 46.7B,
    DeepSeek-V3 37B of 671B). Equal to `total_params` for a dense model."""
    return blocks_params(arch, arch.experts_per_token) + numel(embedding_tensors(arch)) + numel(head_tensors(arch))


def expert_params(arch: Architecture) -> int:
    """Parameters of all routed experts of the model (what expert parallelism divides)."""
    return moe_layers(arch) * arch.num_experts * numel(expert_tensors(arch))


def embedding_params(arch: Architecture) -> int:
    """Parameters of the token (and position) embeddings plus an untied LM head."""
    head = [t for t in head_tensors(arch) if t.name == "lm_head"]
    return numel(embedding_tensors(arch)) + numel(head)


def non_embedding_params(arch: Architecture) -> int:
    return total_params(arch) - embedding_params(arch)


def largest_tensor_numel(arch: Architecture) -> int:
    """Elements of the biggest single parameter tensor (usually the embedding, V x h)."""
    blocks = (
        (*layer_tensors(arch), *moe_layer_tensors(arch), *expert_tensors(arch)) if arch.is_moe else layer_tensors(arch)
    )
    return max(t.numel for t in (*blocks, *embedding_tensors(arch), *head_tensors(arch)))


ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def lora_targeted(arch: Architecture, targets: str) -> tuple[ParamTensor, ...]:
    """The weight matrices of one block that get a LoRA adapter. `attention`: q, k, v, o; `all-linear`:
    every linear of the block (PEFT's "all-linear" matches every nn.Linear except the output layer)."""
    names = ATTENTION_PROJECTIONS + (MLP_PROJECTIONS if targets == "all-linear" else ())
    return tuple(t for t in layer_tensors(arch) if t.is_matrix and t.name in names)


def lora_params_per_layer(arch: Architecture, rank: int, targets: str) -> int:
    """Adapter parameters of one block: lora_A (r x in) and lora_B (out x r) per targeted linear
    (PEFT tuners/lora/layer.py update_layer; no bias, lora_bias=False by default)."""
    return sum(rank * (t.cols + t.rows) for t in lora_targeted(arch, targets))


def quantized_params_per_layer(arch: Architecture) -> int:
    """Weights bitsandbytes stores in 4 bits: every nn.Linear weight of a block (biases, norms,
    embeddings and the LM head stay in bf16; transformers skips the output embedding)."""
    return sum(t.numel for t in layer_tensors(arch) if t.is_matrix)


def parameter_text(arch: Architecture) -> str:
    """`13.02B parameters`, or for a MoE model `30.53B parameters, 3.35B active per token`."""
    text = f"{total_params(arch) / 1e9:.2f}B parameters"
    return text + (f", {active_params(arch) / 1e9:.2f}B active per token" if arch.is_moe else "")


def moe_plan_text(plan) -> str:
    """The expert layout of a plan in words: `ep 8 (expert dp 2), dropless, alltoall`."""
    routing = "dropless" if plan.moe_capacity_factor is None else f"capacity factor {plan.moe_capacity_factor:g}"
    etp = f", etp {plan.etp}" if plan.etp else ""
    overlap = ", EP all-to-all overlapped (combined 1F1B)" if plan.moe_ep_overlap else ""
    mtp = f", MTP {plan.mtp_layers} depth(s) trained" if plan.mtp_layers else ""
    text = f"ep {plan.ep}{etp} (expert dp {plan.expert_shard_degree}), {routing}, {plan.moe_dispatcher}{overlap}"
    return text + mtp
