"""Read a Hugging Face `config.json` offline into a `ModelSpec`.

Supported `model_type`s and the implementation each mapping follows (transformers' modeling code):
llama, mistral, qwen2 (`LlamaForCausalLM`-shaped: RMSNorm, SwiGLU, RoPE; Qwen2 adds q/k/v biases),
mpt (`MPTForCausalLM`: bias-free LayerNorm, GELU MLP, ALiBi, tied head), gpt2 (`GPT2LMHeadModel`:
LayerNorm with bias, learned positions, biases everywhere, tied head) and gpt_neox (`GPTNeoXForCausalLM`:
LayerNorm with bias, partial rotary, parallel residual, untied `embed_out`), qwen3 (q/k norms), gemma2,
gemma3/gemma3_text (GeGLU, four norms per block, local/global layers, logit soft-capping), phi3, glm and
glm4, olmo2 (full-width q/k norms) and internlm2/internlm3 (remote code, Llama-shaped).

Mixture-of-Experts types: mixtral, qwen2_moe (shared expert with a sigmoid gate), qwen3_moe, olmoe,
deepseek_v2/deepseek_v3 (multi-head latent attention, shared experts, dense first layers) and gpt_oss
(attention sinks and biases, alternating 128-token sliding window, experts and router with biases).
"""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from planner.catalog.models import Architecture, ModelSpec, check_architecture, read_json_mapping
from planner.errors import CatalogError
from planner.inputs import one_line, quoted


def _get(cfg: dict[str, Any], path: Path, *keys: str, default: Any = None, required: bool = True) -> Any:
    for key in keys:
        if key in cfg and cfg[key] is not None:
            return cfg[key]
    if required and default is None:
        raise CatalogError(f"{path}: config.json has no '{keys[0]}'", "is this a complete config.json?")
    return default


def _llama_like(
    cfg: dict[str, Any], path: Path, qkv_bias: bool, gated_acts: tuple[str, ...] = ("silu", "swish")
) -> Architecture:
    heads = _get(cfg, path, "num_attention_heads")
    act = _get(cfg, path, "hidden_activation", "hidden_act", default="silu")
    if act not in gated_acts:
        raise CatalogError(
            f"{path}: hidden_act {act!r} is not the SwiGLU (silu) MLP this type uses",
            "write a model YAML for this architecture",
        )
    return Architecture(
        num_layers=_get(cfg, path, "num_hidden_layers"),
        hidden_size=_get(cfg, path, "hidden_size"),
        num_attention_heads=heads,
        num_kv_heads=_get(cfg, path, "num_key_value_heads", default=heads),
        ffn_hidden_size=_get(cfg, path, "intermediate_size"),
        vocab_size=_get(cfg, path, "vocab_size"),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        norm="rmsnorm",
        mlp="swiglu",
        position_embedding="rope",
        max_position_embeddings=_get(cfg, path, "max_position_embeddings"),
        head_dim=int(cfg.get("head_dim") or 0),
        qkv_bias=qkv_bias or bool(cfg.get("attention_bias", False)),
        attn_out_bias=bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        sliding_window=cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None,
        attention_dropout=float(cfg.get("attention_dropout") or 0.0),
        global_attention_every=_global_every(cfg, path),
    )


def _global_every(cfg: dict[str, Any], path: Path) -> int:
    """Every N-th layer attends globally: from `layer_types` (transformers 4.5x+ configs), else
    `sliding_window_pattern`; 0 when every layer has the same kind."""
    types = cfg.get("layer_types")
    if isinstance(types, list) and types and "full_attention" in types and "sliding_attention" in types:
        full = [i for i, kind in enumerate(types) if kind == "full_attention"]
        every = full[0] + 1
        if full != list(range(every - 1, len(types), every)):
            raise CatalogError(f"{path}: layer_types do not repeat one local/global pattern", "write a model YAML")
        return every
    pattern = cfg.get("sliding_window_pattern")
    return int(pattern) if isinstance(pattern, int) and pattern > 1 else 0


def _llama(cfg: dict[str, Any], path: Path) -> Architecture:
    return _llama_like(cfg, path, qkv_bias=False)


def _qwen2(cfg: dict[str, Any], path: Path) -> Architecture:
    # Qwen2Attention builds q/k/v with bias=True and o_proj without; no attention_bias key.
    return _llama_like({**cfg, "attention_bias": False}, path, qkv_bias=True)


def _sub_config(cfg: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = cfg.get(key) or {}
    if not isinstance(value, dict):
        raise CatalogError(f"{path}: '{key}' must be an object, got {quoted(value)}", "check the config.json")
    return value


def _qwen3(cfg: dict[str, Any], path: Path) -> Architecture:
    # Qwen3Attention: q/k/v/o with bias=attention_bias (false), q_norm/k_norm RMSNorm(head_dim).
    arch = _llama_like(cfg, path, qkv_bias=False)
    return replace(arch, qk_norm="head")


def _gemma(cfg: dict[str, Any], path: Path) -> Architecture:
    """Gemma 2 and Gemma 3 text models: GeGLU MLP (gelu_pytorch_tanh; the same three matrices as SwiGLU),
    four norms per block, tied embeddings, local/global attention layers; Gemma 2 soft-caps the final
    logits and the attention scores, Gemma 3 normalises queries and keys per head. Gemma 3's multimodal
    configs hold the text model under `text_config`."""
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    model_type = cfg.get("model_type")
    merged = {"tie_word_embeddings": True, **text}
    arch = _llama_like(merged, path, qkv_bias=False, gated_acts=("gelu_pytorch_tanh", "gelu"))
    gemma3 = model_type in ("gemma3", "gemma3_text")
    every = arch.global_attention_every or (6 if gemma3 else 2)
    softcap = merged.get("final_logit_softcapping")
    attn_softcap = merged.get("attn_logit_softcapping")
    return replace(
        arch,
        post_norms=True,
        qk_norm="head" if gemma3 else "none",
        global_attention_every=every if arch.sliding_window else 0,
        final_logit_softcap=float(softcap) if softcap else None,
        attn_logit_softcap=float(attn_softcap) if attn_softcap else None,
    )


def _phi3(cfg: dict[str, Any], path: Path) -> Architecture:
    # Phi3: fused qkv_proj and gate_up_proj, no biases: the Llama parameter count.
    return replace(_llama_like(cfg, path, qkv_bias=False), fused_qkv=True)


def _glm(cfg: dict[str, Any], path: Path) -> Architecture:
    # GlmAttention: q/k/v with bias=attention_bias, o_proj without; fused gate_up_proj; partial RoPE.
    arch = _llama_like({**cfg, "attention_bias": False}, path, qkv_bias=bool(cfg.get("attention_bias", True)))
    return replace(arch, post_norms=cfg.get("model_type") == "glm4")


def _olmo2(cfg: dict[str, Any], path: Path) -> Architecture:
    # Olmo2: norms after attention and MLP (two per block, like pre-norm), q_norm/k_norm over the whole width.
    return replace(_llama_like(cfg, path, qkv_bias=False), qk_norm="full")


def _internlm(cfg: dict[str, Any], path: Path) -> Architecture:
    # InternLM2/3 (remote code): wqkv fused, w1/w3/w2 SwiGLU, RMSNorm; `bias` switches all linear biases.
    bias = bool(cfg.get("bias", False))
    arch = _llama_like({**cfg, "attention_bias": False}, path, qkv_bias=bias or bool(cfg.get("qkv_bias", False)))
    return replace(arch, attn_out_bias=bias, fused_qkv=cfg.get("model_type") == "internlm2")


def _mpt(cfg: dict[str, Any], path: Path) -> Architecture:
    attn = _sub_config(cfg, "attn_config", path)
    ffn = _sub_config(cfg, "ffn_config", path)
    d_model = _get(cfg, path, "d_model")
    heads = _get(cfg, path, "n_heads")
    no_bias = bool(cfg.get("no_bias", True))
    kv_heads = attn.get("kv_n_heads", heads) if attn.get("attn_type") == "grouped_query_attention" else heads
    ffn_size = ffn.get("ffn_hidden_size") or int(_get(cfg, path, "expansion_ratio", default=4) * d_model)
    return Architecture(
        num_layers=_get(cfg, path, "n_layers"),
        hidden_size=d_model,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        ffn_hidden_size=ffn_size,
        vocab_size=_get(cfg, path, "vocab_size"),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        norm="layernorm",
        norm_bias=not no_bias,
        mlp="gelu",
        position_embedding="alibi" if attn.get("alibi", False) else "learned",
        max_position_embeddings=_get(cfg, path, "max_seq_len"),
        qkv_bias=not no_bias,
        attn_out_bias=not no_bias,
        mlp_bias=not no_bias,
        fused_qkv=True,
        attention_dropout=float(attn.get("attn_pdrop") or 0.0),
        hidden_dropout=float(cfg.get("resid_pdrop") or 0.0),
    )


def _gpt2(cfg: dict[str, Any], path: Path) -> Architecture:
    hidden = _get(cfg, path, "n_embd", "hidden_size")
    return Architecture(
        num_layers=_get(cfg, path, "n_layer", "num_hidden_layers"),
        hidden_size=hidden,
        num_attention_heads=_get(cfg, path, "n_head", "num_attention_heads"),
        num_kv_heads=_get(cfg, path, "n_head", "num_attention_heads"),
        ffn_hidden_size=cfg.get("n_inner") or 4 * hidden,
        vocab_size=_get(cfg, path, "vocab_size"),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        norm="layernorm",
        norm_bias=True,
        mlp="gelu",
        position_embedding="learned",
        max_position_embeddings=_get(cfg, path, "n_positions", "max_position_embeddings"),
        qkv_bias=True,
        attn_out_bias=True,
        mlp_bias=True,
        fused_qkv=True,
        attention_dropout=float(cfg.get("attn_pdrop", 0.1) or 0.0),
        hidden_dropout=float(cfg.get("resid_pdrop", 0.1) or 0.0),
    )


def _gpt_neox(cfg: dict[str, Any], path: Path) -> Architecture:
    heads = _get(cfg, path, "num_attention_heads")
    bias = bool(cfg.get("attention_bias", True))
    return Architecture(
        num_layers=_get(cfg, path, "num_hidden_layers"),
        hidden_size=_get(cfg, path, "hidden_size"),
        num_attention_heads=heads,
        num_kv_heads=heads,
        ffn_hidden_size=_get(cfg, path, "intermediate_size"),
        vocab_size=_get(cfg, path, "vocab_size"),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        norm="layernorm",
        norm_bias=True,
        mlp="gelu",
        position_embedding="rope",
        max_position_embeddings=_get(cfg, path, "max_position_embeddings"),
        qkv_bias=bias,
        attn_out_bias=bias,
        mlp_bias=True,
        parallel_residual=bool(cfg.get("use_parallel_residual", True)),
        fused_qkv=True,
        attention_dropout=float(cfg.get("attention_dropout") or 0.0),
        hidden_dropout=float(cfg.get("hidden_dropout") or 0.0),
    )


def _experts(cfg: dict[str, Any], path: Path, count_key: str) -> dict[str, Any]:
    """The routed-expert fields common to every MoE type."""
    return {
        "num_experts": _get(cfg, path, count_key),
        "experts_per_token": _get(cfg, path, "num_experts_per_tok"),
    }


def _qwen_moe_layers(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """Qwen2/3-MoE: block i is MoE unless listed in `mlp_only_layers`, when (i + 1) % decoder_sparse_step == 0.
    A leading run of mlp_only_layers maps to first_dense_layers; any other list is refused."""
    dense = cfg.get("mlp_only_layers") or []
    if not isinstance(dense, list) or dense != list(range(len(dense))):
        raise CatalogError(f"{path}: mlp_only_layers other than the first N layers are not modelled", "write a YAML")
    return {"first_dense_layers": len(dense), "moe_layer_every": int(cfg.get("decoder_sparse_step") or 1)}


def _mixtral(cfg: dict[str, Any], path: Path) -> Architecture:
    # MixtralSparseMoeBlock: router Linear(h, E) without bias; E SwiGLU experts of intermediate_size.
    arch = _llama_like(cfg, path, qkv_bias=False)
    return replace(arch, **_experts(cfg, path, "num_local_experts"), moe_ffn_hidden_size=arch.ffn_hidden_size)


def _qwen2_moe(cfg: dict[str, Any], path: Path) -> Architecture:
    # Qwen2MoeSparseMoeBlock: router, experts of moe_intermediate_size, one shared expert of
    # shared_expert_intermediate_size gated by sigmoid(Linear(h, 1)); q/k/v biases as Qwen2.
    arch = _llama_like({**cfg, "attention_bias": False}, path, qkv_bias=bool(cfg.get("qkv_bias", True)))
    shared = int(cfg.get("shared_expert_intermediate_size") or 0)
    return replace(
        arch,
        **_experts(cfg, path, "num_experts"),
        **_qwen_moe_layers(cfg, path),
        moe_ffn_hidden_size=_get(cfg, path, "moe_intermediate_size"),
        shared_experts=1 if shared else 0,
        shared_expert_ffn_hidden_size=shared,
        shared_expert_gate=bool(shared),
    )


def _qwen3_moe(cfg: dict[str, Any], path: Path) -> Architecture:
    # Qwen3MoeSparseMoeBlock: router and experts, no shared expert; q/k norms per head as Qwen3.
    arch = _llama_like(cfg, path, qkv_bias=False)
    return replace(
        arch,
        qk_norm="head",
        **_experts(cfg, path, "num_experts"),
        **_qwen_moe_layers(cfg, path),
        moe_ffn_hidden_size=_get(cfg, path, "moe_intermediate_size"),
    )


def _olmoe(cfg: dict[str, Any], path: Path) -> Architecture:
    # OlmoeAttention: q_norm over h, k_norm over the key width (full-width, as OLMo 2); experts of
    # intermediate_size, no shared expert. clip_qkv changes no tensor.
    arch = _llama_like(cfg, path, qkv_bias=False)
    return replace(arch, qk_norm="full", **_experts(cfg, path, "num_experts"), moe_ffn_hidden_size=arch.ffn_hidden_size)


def _deepseek(cfg: dict[str, Any], path: Path) -> Architecture:
    """DeepSeek-V2/V3 (transformers deepseek_v2/deepseek_v3): multi-head latent attention, the first
    first_k_dense_replace blocks dense (intermediate_size), the others MoE with n_shared_experts shared experts
    built as one MLP of n_shared x moe_intermediate_size. moe_layer_freq is not read by the transformers code
    (every block after the dense ones is MoE); V3's e_score_correction_bias is a buffer, not a parameter; the
    multi-token-prediction layers (num_nextn_predict_layers) are not instantiated there and stay out of the
    parameter counts, but are kept as `mtp_layers` for the plans that train them (Megatron)."""
    if cfg.get("attention_bias"):
        raise CatalogError(f"{path}: attention biases in multi-head latent attention are not modelled", "write a YAML")
    heads = _get(cfg, path, "num_attention_heads")
    nope, rope = _get(cfg, path, "qk_nope_head_dim"), _get(cfg, path, "qk_rope_head_dim")
    moe_width = _get(cfg, path, "moe_intermediate_size")
    shared = int(cfg.get("n_shared_experts") or 0)
    arch = _llama_like({**cfg, "num_key_value_heads": heads, "head_dim": nope + rope}, path, qkv_bias=False)
    return replace(
        arch,
        sliding_window=None,
        **_experts(cfg, path, "n_routed_experts"),
        moe_ffn_hidden_size=moe_width,
        shared_experts=shared,
        shared_expert_ffn_hidden_size=shared * moe_width,
        first_dense_layers=int(cfg.get("first_k_dense_replace") or 0),
        q_lora_rank=int(cfg.get("q_lora_rank") or 0),
        kv_lora_rank=_get(cfg, path, "kv_lora_rank"),
        qk_rope_head_dim=rope,
        qk_nope_head_dim=nope,
        v_head_dim=_get(cfg, path, "v_head_dim"),
        mtp_layers=int(cfg.get("num_nextn_predict_layers") or 0),
    )


def _gpt_oss(cfg: dict[str, Any], path: Path) -> Architecture:
    # GptOssAttention: q/k/v/o with bias=attention_bias (true), one sink logit per head, layer_types
    # alternating a 128-token sliding window with full attention; GptOssTopKRouter: Linear(h, E) with bias;
    # GptOssExperts: gate_up_proj (h x 2f) and down_proj (f x h) per expert, each with a bias.
    arch = _llama_like(cfg, path, qkv_bias=False)
    return replace(
        arch,
        attention_sinks=True,
        **_experts(cfg, path, "num_local_experts"),
        moe_ffn_hidden_size=arch.ffn_hidden_size,
        router_bias=True,
        expert_bias=True,
    )


_PARSERS: dict[str, Callable[[dict[str, Any], Path], Architecture]] = {
    "llama": _llama,
    "mistral": _llama,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "gemma2": _gemma,
    "gemma3": _gemma,
    "gemma3_text": _gemma,
    "phi3": _phi3,
    "glm": _glm,
    "glm4": _glm,
    "olmo2": _olmo2,
    "internlm2": _internlm,
    "internlm3": _internlm,
    "mpt": _mpt,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "mixtral": _mixtral,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
    "olmoe": _olmoe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "gpt_oss": _gpt_oss,
}

SUPPORTED_MODEL_TYPES = tuple(sorted(_PARSERS))


def model_from_hf_config(path: Path) -> ModelSpec:
    """Build a ModelSpec from a Hugging Face config.json without any download."""
    cfg = read_json_mapping(path)
    path = Path(one_line(str(path)))
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or model_type not in _PARSERS:
        raise CatalogError(
            f"{path}: model_type {quoted(model_type)} is not supported",
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}; or describe it as a model YAML",
        )
    try:
        arch = _PARSERS[model_type](cfg, path)
    except (TypeError, ValueError, OverflowError) as exc:  # int("abc"), float([1]), int(inf)
        raise CatalogError(f"{path}: malformed config value ({one_line(exc, 80)})", "check the config.json") from None
    check_architecture(arch, str(path))
    name = cfg.get("_name_or_path")
    name = name if isinstance(name, str) and name.strip() else path.parent.name or path.stem
    return ModelSpec(
        name=one_line(name, 200),
        family=model_type,
        architecture=arch,
        source=str(path),
        hf_model_type=model_type,
        definition_path=str(path),
    )
