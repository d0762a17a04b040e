"""Build the Hugging Face implementation of a catalog model from its numbers: random weights, no download.

The `hf` activation family of the memory model describes exactly this code (transformers'
LlamaForCausalLM and its Mistral / Qwen2 siblings with SDPA attention), so calibration traces and
measures it. torch and transformers are imported only when a model is built (the `calibrate` extra).
"""

from typing import Any

from planner.catalog import ModelSpec
from planner.errors import PlannerError

LLAMA_LIKE = ("llama", "mistral", "qwen2")
"""model_types whose catalog numbers map one to one onto a transformers config."""


def hf_config_fields(model: ModelSpec) -> dict[str, Any]:
    """transformers config fields of a catalog model (model_type plus the architecture numbers)."""
    arch = model.architecture
    model_type = model.hf_model_type
    if model_type not in LLAMA_LIKE:
        raise PlannerError(
            f"calibration builds llama, mistral and qwen2 models, not {model_type or 'unknown'} ({model.name})",
            "pick a Llama-, Mistral- or Qwen2-shaped model",
        )
    fields: dict[str, Any] = {
        "model_type": model_type,
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.ffn_hidden_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_kv_heads,
        "vocab_size": arch.vocab_size,
        "max_position_embeddings": arch.max_position_embeddings,
        "tie_word_embeddings": arch.tied_embeddings,
        "attention_dropout": arch.attention_dropout,
        "use_cache": False,
    }
    if arch.head_dim:
        fields["head_dim"] = arch.head_dim
    if model_type == "llama":
        fields.update(attention_bias=arch.qkv_bias, mlp_bias=arch.mlp_bias)
    if model_type == "mistral":
        fields["sliding_window"] = arch.sliding_window
    return fields


def build_hf_model(model: ModelSpec, num_layers: int | None = None, dtype=None, device=None):
    """The transformers causal LM for `model` (optionally with fewer layers), SDPA attention, random init."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = hf_config_fields(model)
    if num_layers is not None:
        fields["num_hidden_layers"] = num_layers
    config = AutoConfig.for_model(**fields)
    config._attn_implementation = "sdpa"
    with torch.device(device or "cpu"):
        built = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    return built


def enable_full_checkpointing(model) -> None:
    """Checkpoint every decoder layer (non-reentrant). The pinned transformers (5.23) deprecates
    `gradient_checkpointing_enable` for `activation_checkpointing_enable` and warns on the old name; an older
    transformers (a GPU image's) has only the old one."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
