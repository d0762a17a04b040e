"""Read a Hugging Face `config.json` offline into a `ModelSpec`.

Supported `model_type`s and the implementation each mapping follows (transformers' modeling code):
llama, mistral, qwen2 (`LlamaForCausalLM`-shaped: RMSNorm, SwiGLU, RoPE; Qwen2 adds q/k/v biases),
mpt (`MPTForCausalLM`: bias-free LayerNorm, GELU MLP, ALiBi, tied head), gpt2 (`GPT2LMHeadModel`:
LayerNorm with bias, learned positions, biases everywhere, tied head) and gpt_neox (`GPTNeoXForCausalLM`:
LayerNorm with bias, partial rotary, parallel residual, untied `embed_out`).
"""

from collections.abc import Callable
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


def _llama_like(cfg: dict[str, Any], path: Path, qkv_bias: bool) -> Architecture:
    heads = _get(cfg, path, "num_attention_heads")
    act = _get(cfg, path, "hidden_act", default="silu")
    if act not in ("silu", "swish"):
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
    )


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


_PARSERS: dict[str, Callable[[dict[str, Any], Path], Architecture]] = {
    "llama": _llama,
    "mistral": _llama,
    "qwen2": _qwen2,
    "mpt": _mpt,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
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
