"""Parameter tensors of a decoder-only transformer, as the Hugging Face implementations instantiate them.

Everything that depends on *which* weights exist (counts, the largest tensor, how tensor parallelism
splits them, which pipeline stage holds them) is derived from one list of `ParamTensor`s, so the
parameter count, the memory model and the FLOPs model cannot disagree.
"""

from dataclasses import dataclass
from functools import cache
from typing import Literal

from planner.catalog.models import Architecture

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


@cache
def layer_tensors(arch: Architecture) -> tuple[ParamTensor, ...]:
    """The tensors of one transformer block (attention, MLP, two norms)."""
    h, f = arch.hidden_size, arch.ffn_hidden_size
    q, kv = arch.q_width, arch.kv_width
    t: list[ParamTensor] = []
    t += _norm("input_norm", arch, "layer")
    t += [
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
    t.append(_matrix("o_proj", h, q, "row", "layer"))
    if arch.attn_out_bias:
        t.append(_vector("o_proj.bias", h, "replicated", "layer"))
    if arch.post_norms:
        t += _norm("attention_output_norm", arch, "layer")
    t += _norm("post_attention_norm", arch, "layer")
    up_names = ("gate_proj", "up_proj") if arch.mlp == "swiglu" else ("up_proj",)
    for name in up_names:
        t.append(_matrix(name, f, h, "column", "layer"))
        if arch.mlp_bias:
            t.append(_vector(f"{name}.bias", f, "column", "layer"))
    t.append(_matrix("down_proj", h, f, "row", "layer"))
    if arch.mlp_bias:
        t.append(_vector("down_proj.bias", h, "replicated", "layer"))
    if arch.post_norms:
        t += _norm("mlp_output_norm", arch, "layer")
    return tuple(t)


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


def numel(tensors: tuple[ParamTensor, ...] | list[ParamTensor], tp: int = 1) -> int:
    """Elements one tensor-parallel rank holds of `tensors` (split tensors divided by tp, rounded up)."""
    return sum(t.numel if t.tp_split == "replicated" else -(-t.numel // tp) for t in tensors)


def params_per_layer(arch: Architecture, tp: int = 1) -> int:
    return numel(layer_tensors(arch), tp)


def total_params(arch: Architecture) -> int:
    """The parameter count of the whole model, tied head counted once (what `model.num_parameters()`
    reports in Hugging Face transformers)."""
    return params_per_layer(arch) * arch.num_layers + numel(embedding_tensors(arch)) + numel(head_tensors(arch))


def embedding_params(arch: Architecture) -> int:
    """Parameters of the token (and position) embeddings plus an untied LM head."""
    head = [t for t in head_tensors(arch) if t.name == "lm_head"]
    return numel(embedding_tensors(arch)) + numel(head)


def non_embedding_params(arch: Architecture) -> int:
    return total_params(arch) - embedding_params(arch)


def largest_tensor_numel(arch: Architecture) -> int:
    """Elements of the biggest single parameter tensor (usually the embedding, V x h)."""
    return max(t.numel for t in (*layer_tensors(arch), *embedding_tensors(arch), *head_tensors(arch)))


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
