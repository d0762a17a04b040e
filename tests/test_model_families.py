"""Issue 13: today's dense model families: parameter counts equal to transformers' (meta device), the
architecture features that change memory and time (qk-norm, sandwich norms, logit soft-capping, local and
global attention layers), `planner models --search`."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.architecture import total_params
from planner.catalog import list_models, load_gpu, load_model, search_models
from planner.cli import main
from planner.errors import PlanError
from planner.memory import activations as act
from planner.performance.flops import attention_layer_spans, attention_span, flops_per_token
from planner.performance.model import (
    FLASH_SOFTCAP_NOTE,
    SOFTCAP_PASSES,
    causal_attention_fraction,
    performance_terms,
)
from planner.plan import PlanRequest, make_plan

CONFIGS = Path(__file__).parent / "data" / "hf_configs"
FAMILIES = {
    # catalog name: parameter count this code computes (the meta-device test below checks each against
    # transformers; the values agree with the counts the model cards give, e.g. Qwen3-8B 8.2B, Gemma-2-9B 9.24B)
    "qwen3-0.6b": 596_049_920,
    "qwen3-1.7b": 1_720_574_976,
    "qwen3-4b": 4_022_468_096,
    "qwen3-8b": 8_190_735_360,
    "qwen3-14b": 14_768_307_200,
    "qwen3-32b": 32_762_123_264,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-1.5b": 1_543_714_304,
    "gemma-2-2b": 2_614_341_888,
    "gemma-2-9b": 9_241_705_984,
    "gemma-2-27b": 27_227_128_320,
    "gemma-3-1b": 999_885_952,
    "gemma-3-4b": 3_880_263_168,
    "gemma-3-12b": 11_766_034_176,
    "gemma-3-27b": 27_009_346_304,
    "phi-3-mini-4k": 3_821_079_552,
    "phi-3-medium-4k": 13_960_238_080,
    "phi-3.5-mini": 3_821_079_552,
    "phi-4": 14_659_507_200,
    "llama-3.3-70b": 70_553_706_496,
    "glm-4-9b": 9_399_951_360,
    "internlm2.5-7b": 7_737_708_544,
    "internlm2.5-20b": 19_861_149_696,
    "internlm3-8b": 8_804_241_408,
    "olmo-2-1b": 1_484_916_736,
    "olmo-2-7b": 7_298_617_344,
    "olmo-2-13b": 13_716_198_400,
    "olmo-2-32b": 32_234_279_936,
    "mistral-nemo-12b": 12_247_782_400,
    "mistral-small-24b": 23_572_403_200,
}


@pytest.mark.parametrize("name,params", sorted(FAMILIES.items()))
def test_catalog_model_equals_its_config_json(name, params):
    """The catalog YAML transcribes the config.json copy exactly, and both count the same parameters."""
    catalog = load_model(name)
    from_config = load_model(str(CONFIGS / f"{name}.json"))
    assert catalog.architecture == from_config.architecture
    assert total_params(catalog.architecture) == params


def _hf_count(config: dict) -> int:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = dict(config)
    model_type = config.pop("model_type")
    config.pop("architectures", None)
    if model_type in ("internlm2", "internlm3"):
        # Remote code, not in transformers: their fused wqkv / w1,w3,w2 are the Llama matrices, so the
        # LlamaForCausalLM with the same sizes instantiates the same count (InternLM2 has no biases).
        model_type = "llama"
        config.pop("bias", None)
        config.pop("qkv_bias", None)
    hf_config = transformers.AutoConfig.for_model(model_type, **config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    return model.num_parameters()


PUBLIC_COPIES = {"mistral-7b": "mistral-7b-v0.1"}
"""Catalog models whose config.json copy in tests/data/hf_configs has another file name."""


def _config_json(name: str, tmp_path: Path) -> dict:
    """The model's config.json: the public copy in tests/data/hf_configs when there is one; otherwise one
    written from the catalog YAML (the Llama-2/3, Qwen2/2.5, Mistral, MPT and Aquila2 files that predate the
    copies), which the planner's own config reader must turn back into the same architecture."""
    copy = CONFIGS / f"{PUBLIC_COPIES.get(name, name)}.json"
    if copy.exists():
        return json.loads(copy.read_text())
    model = load_model(name)
    arch = model.architecture
    if model.hf_model_type == "mpt":
        config = json.loads((CONFIGS / "mpt-7b.json").read_text())
        config.update(
            d_model=arch.hidden_size,
            n_heads=arch.num_attention_heads,
            n_layers=arch.num_layers,
            expansion_ratio=arch.ffn_hidden_size // arch.hidden_size,
            max_seq_len=arch.max_position_embeddings,
            vocab_size=arch.vocab_size,
        )
    else:
        config = {
            "model_type": model.hf_model_type,
            "hidden_size": arch.hidden_size,
            "intermediate_size": arch.ffn_hidden_size,
            "num_hidden_layers": arch.num_layers,
            "num_attention_heads": arch.num_attention_heads,
            "num_key_value_heads": arch.num_kv_heads,
            "vocab_size": arch.vocab_size,
            "max_position_embeddings": arch.max_position_embeddings,
            "tie_word_embeddings": arch.tied_embeddings,
        }
        if arch.head_dim:
            config["head_dim"] = arch.head_dim
        if model.hf_model_type == "llama":
            config.update(attention_bias=arch.attn_out_bias, mlp_bias=arch.mlp_bias)
        if model.hf_model_type == "qwen2":
            config["use_sliding_window"] = False
    written = tmp_path / f"{name}.json"
    written.write_text(json.dumps(config))
    assert load_model(str(written)).architecture == arch, "the written config.json must say what the YAML says"
    return config


@pytest.mark.parametrize("name", [m.name for m in list_models()])
def test_parameter_count_equals_transformers_on_the_meta_device(name, tmp_path):
    """Every catalog model: the planner's parameter count equals transformers' model of the same config,
    instantiated on the meta device (no weights)."""
    assert _hf_count(_config_json(name, tmp_path)) == total_params(load_model(name).architecture)


def _plan(model: str, **changes):
    request = PlanRequest(**{"model": model, "gpu": "H100", "gpus": 1, "seq_len": 4096, "engine": "fsdp", **changes})
    return make_plan(request, load_model(model), load_gpu("H100"))


def test_qk_norm_activations_per_head_and_full_width():
    plan = _plan("qwen3-8b", engine="deepspeed")
    arch = load_model("qwen3-8b").architecture
    # hf: fp32 input (4) + normalised bf16 (2) per value of q (32 x 128) and k (8 x 128), one fp32 rstd
    # per head: 6 * 5120 + 4 * 40 = 30,880 bytes per token.
    assert act.qk_norm_bytes(arch, plan) == 6 * (4096 + 1024) + 4 * 40 == 30_880
    olmo = load_model("olmo-2-7b").architecture
    # OLMo 2: the norm spans the whole q (4096) and k (4096) width, one rstd per token for each.
    assert act.qk_norm_bytes(olmo, _plan("olmo-2-7b", engine="deepspeed")) == 6 * 8192 + 8
    assert act.qk_norm_bytes(load_model("llama-3.1-8b").architecture, plan) == 0.0
    with_norm = act.layer_activations(arch, plan).norms
    without = act.layer_activations(replace_arch(arch, qk_norm="none"), plan).norms
    assert with_norm - without == 30_880


def replace_arch(arch, **changes):
    return replace(arch, **changes)


def test_sandwich_norms_add_two_norms_per_block():
    arch = load_model("gemma-2-9b").architecture
    plan = _plan("gemma-2-9b", engine="deepspeed")
    # hf RMSNorm on the attention and MLP outputs: fp32 input 4h + rstd 4 + normalised 2h, twice.
    assert act.post_norm_bytes(arch, plan) == 2 * (6 * 3584 + 4)
    # Parameters: four norm vectors per block instead of two.
    assert total_params(arch) - total_params(replace_arch(arch, post_norms=False)) == 2 * 3584 * 42


def test_logit_softcap_keeps_one_more_logits_tensor_and_costs_memory_passes():
    arch = load_model("gemma-2-9b").architecture
    plan = _plan("gemma-2-9b", engine="deepspeed")
    capped, plain = act.logits_bytes(arch, plan), act.logits_bytes(replace_arch(arch, final_logit_softcap=None), plan)
    assert capped - plain == 2 * 256_000  # tanh's saved bf16 output, V values per token
    fused = _plan("gemma-2-9b", engine="deepspeed", loss="fused")
    assert act.logits_bytes(arch, fused) == act.logits_bytes(replace_arch(arch, final_logit_softcap=None), fused)
    model = load_model("gemma-2-9b")
    with_cap = performance_terms(model, load_gpu("H100"), plan)
    without = performance_terms(replace_model(model, final_logit_softcap=None), load_gpu("H100"), plan)
    tokens = plan.tokens_per_micro_batch
    extra = tokens * 256_000 * SOFTCAP_PASSES * 2 / (3350e9 * 0.8)
    assert with_cap["breakdown_s"]["compute"] - without["breakdown_s"]["compute"] == pytest.approx(extra, rel=1e-9)


def replace_model(model, **changes):
    return replace(model, architecture=replace(model.architecture, **changes))


def test_local_and_global_layers_split_the_attention_cost():
    gemma2 = load_model("gemma-2-9b").architecture  # 42 layers, window 4096, every 2nd layer global
    assert attention_layer_spans(gemma2, 8192) == ((21, 4096), (21, 8192))
    assert attention_span(gemma2, 8192) == (21 * 4096 + 21 * 8192) / 42
    gemma3 = load_model("gemma-3-27b").architecture  # 62 layers, window 1024, every 6th global
    assert attention_layer_spans(gemma3, 8192) == ((52, 1024), (10, 8192))
    assert attention_layer_spans(gemma3, 512) == ((52, 512), (10, 512))
    plan = _plan("gemma-3-27b", seq_len=8192)
    flops = flops_per_token(gemma3, plan)
    assert flops.attention == 3 * 4 * gemma3.q_width * (52 * 1024 + 10 * 8192)
    # Causal flash attention executes w - w^2/(2s) of each layer kind's w keys.
    executed = (52 * 1024 * (1 - 1024 / 16384) + 10 * 8192 * 0.5) / (52 * 1024 + 10 * 8192)
    assert float(causal_attention_fraction(gemma3, plan)) == pytest.approx(executed)
    # Mistral-style: every layer slides.
    mistral = load_model("mistral-7b").architecture
    assert attention_layer_spans(mistral, 8192) == ((32, 4096),)


def test_models_search():
    names = {m.name for m in search_models("qwen3")}
    dense = {"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b"}
    assert names == dense | {"qwen3-30b-a3b", "qwen3-235b-a22b"}  # the MoE ones are family qwen3-moe
    assert {m.name for m in search_models("Gemma 2")} == {"gemma-2-2b", "gemma-2-9b", "gemma-2-27b"}
    result = CliRunner().invoke(main, ["models", "--search", "phi"])
    assert result.exit_code == 0 and "phi-4" in result.output and "qwen" not in result.output
    missing = CliRunner().invoke(main, ["models", "--search", "nosuchmodel"])
    assert missing.exit_code == 2 and "no catalog model matches" in missing.output


def test_attention_softcap_comes_from_the_config_and_only_gemma_2_has_it():
    assert load_model("gemma-2-9b").architecture.attn_logit_softcap == 50.0  # config.json attn_logit_softcapping
    assert load_model("gemma-3-12b").architecture.attn_logit_softcap is None  # Gemma 3: qk-norm instead
    assert load_model("llama-3-8b").architecture.attn_logit_softcap is None


def test_eager_attention_softcap_keeps_tanh_output_and_costs_score_passes():
    arch = load_model("gemma-2-9b").architecture
    plain = replace_arch(arch, attn_logit_softcap=None)
    eager = _plan("gemma-2-9b", engine="deepspeed", flash_attention=False)
    # tanh's saved bf16 output: 2 bytes per score, 16 heads x 4096 keys per token, per layer.
    extra = act.layer_activations(arch, eager).attention_core - act.layer_activations(plain, eager).attention_core
    assert extra == 2 * 16 * 4096 == 131_072
    flash = _plan("gemma-2-9b", engine="deepspeed")
    assert act.layer_activations(arch, flash) == act.layer_activations(plain, flash)  # capped in the kernel
    model, h100 = load_model("gemma-2-9b"), load_gpu("H100")
    with_cap = performance_terms(model, h100, eager)["breakdown_s"]["compute"]
    without = performance_terms(replace_model(model, attn_logit_softcap=None), h100, eager)["breakdown_s"]["compute"]
    scores = 42 * eager.tokens_per_micro_batch * 16 * 4096  # layers x tokens x heads x keys
    assert with_cap - without == pytest.approx(scores * SOFTCAP_PASSES * 2 / (3350e9 * 0.8), rel=1e-9)
    flash_terms = performance_terms(model, h100, flash)["breakdown_s"]["compute"]
    plain_flash = performance_terms(replace_model(model, attn_logit_softcap=None), h100, flash)
    assert flash_terms == plain_flash["breakdown_s"]["compute"]


def test_flash_attention_soft_cap_is_stated_not_timed():
    """Inside a FlashAttention kernel the cap is one tanh per score on the special-function units, not a
    memory pass: the step time does not change (above) and the estimate says why."""
    model, h100 = load_model("gemma-2-9b"), load_gpu("H100")
    assert FLASH_SOFTCAP_NOTE in performance_terms(model, h100, _plan("gemma-2-9b"))["notes"]
    eager = _plan("gemma-2-9b", engine="deepspeed", flash_attention=False)
    assert FLASH_SOFTCAP_NOTE not in performance_terms(model, h100, eager)["notes"]  # timed as memory passes
    llama = load_model("llama-3-8b")
    assert FLASH_SOFTCAP_NOTE not in performance_terms(llama, h100, _plan("llama-3-8b"))["notes"]


def test_flash_attention_1_cannot_run_a_soft_capped_model():
    with pytest.raises(PlanError, match="FlashAttention-1 cannot soft-cap the attention scores"):
        _plan("gemma-2-9b", flash_attention_version=1)
    assert _plan("gemma-2-9b", flash_attention_version=3).flash_attention_version == 3
    assert _plan("gemma-3-12b", flash_attention_version=1).flash_attention_version == 1
    assert not _plan("gemma-2-9b", flash_attention=False, flash_attention_version=1).flash_attention
