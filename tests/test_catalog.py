"""Catalogs: parameter counts equal what Hugging Face instantiates; names, aliases and bad files."""

import pytest

from planner.architecture import total_params
from planner.catalog import list_gpus, list_models, load_gpu, load_model
from planner.errors import CatalogError

# Parameter counts as transformers instantiates them (model.num_parameters()), quoted in issue 2.
HF_PARAMS = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "mistral-7b": 7_241_732_096,
    "qwen2-7b": 7_615_616_512,
}


@pytest.mark.parametrize("name,params", sorted(HF_PARAMS.items()))
def test_parameter_counts_match_hugging_face(name, params):
    assert total_params(load_model(name).architecture) == params


def test_catalog_has_every_required_model():
    names = {m.name for m in list_models()}
    required = {
        "llama-2-7b",
        "llama-2-13b",
        "llama-2-70b",
        "llama-3.1-8b",
        "llama-3.1-70b",
        "llama-3.1-405b",
        "llama-3.2-1b",
        "llama-3.2-3b",
        "mistral-7b",
        "qwen2.5-7b",
        "qwen2.5-14b",
        "qwen2.5-32b",
        "qwen2.5-72b",
        "mpt-7b",
        "mpt-30b",
    }
    assert required <= names


@pytest.mark.parametrize("alias,name", [("7b", "llama-2-7b"), ("13b", "llama-2-13b"), ("70B", "llama-2-70b")])
def test_size_aliases_resolve_to_llama_2_and_say_so(alias, name):
    spec = load_model(alias)
    assert spec.name == name and spec.family == "llama-2"
    assert spec.resolved_from == alias


def test_canonical_name_is_not_marked_as_alias():
    assert load_model("llama-2-7b").resolved_from is None


def test_unknown_model_suggests_close_names():
    with pytest.raises(CatalogError, match=r"unknown model 'llama-2-7bb'.*llama-2-7b"):
        load_model("llama-2-7bb")


@pytest.mark.parametrize(
    "config,params",
    [
        ("llama-2-7b.json", 6_738_415_616),
        ("mistral-7b-v0.1.json", 7_241_732_096),
        ("qwen2-7b.json", 7_615_616_512),
        ("mpt-7b.json", 6_649_286_656),  # MPT-7B model card: 6.7B; MPTForCausalLM counts 6,649,286,656
        ("gpt2.json", 124_439_808),  # GPT2LMHeadModel("gpt2").num_parameters()
        ("pythia-160m.json", 162_322_944),  # GPTNeoXForCausalLM("EleutherAI/pythia-160m").num_parameters()
    ],
)
def test_hugging_face_config_json_is_read_offline(data_dir, config, params):
    spec = load_model(str(data_dir / "hf_configs" / config))
    assert total_params(spec.architecture) == params


def test_hf_config_details(data_dir):
    mpt = load_model(str(data_dir / "hf_configs" / "mpt-7b.json")).architecture
    assert (mpt.norm, mpt.mlp, mpt.position_embedding, mpt.tied_embeddings) == ("layernorm", "gelu", "alibi", True)
    gpt2 = load_model(str(data_dir / "hf_configs" / "gpt2.json")).architecture
    assert gpt2.hidden_dropout == 0.1 and gpt2.position_embedding == "learned"
    mistral = load_model(str(data_dir / "hf_configs" / "mistral-7b-v0.1.json")).architecture
    assert mistral.sliding_window == 4096 and mistral.num_kv_heads == 8


def test_unsupported_model_type_is_a_clear_error(data_dir):
    with pytest.raises(CatalogError, match="model_type 't5' is not supported"):
        load_model(str(data_dir / "hf_configs" / "unsupported-t5.json"))


def test_malformed_config_json_is_a_clear_error(data_dir):
    with pytest.raises(CatalogError, match="is not valid JSON"):
        load_model(str(data_dir / "hf_configs" / "malformed.json"))


def test_missing_config_file(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        load_model(str(tmp_path / "nope.json"))


def test_broken_model_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\narchitecture: {num_layers: [\n")
    with pytest.raises(CatalogError, match=r"broken\.yaml is not valid YAML"):
        load_model(str(path))


def test_model_yaml_with_impossible_heads(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nfamily: x\nsource: test\narchitecture: {num_layers: 2, hidden_size: 64, "
        "num_attention_heads: 4, num_kv_heads: 3, ffn_hidden_size: 128, vocab_size: 100, "
        "tied_embeddings: false, norm: rmsnorm, mlp: swiglu, position_embedding: rope, "
        "max_position_embeddings: 128}\n"
    )
    with pytest.raises(CatalogError, match="num_kv_heads"):
        load_model(str(path))


def test_gpu_catalog_and_aliases():
    names = {g.name for g in list_gpus()}
    assert {
        "A100-40GB",
        "A100-80GB",
        "H100-80GB",
        "H100-PCIe",
        "H200",
        "L40S",
        "A10G",
        "V100-32GB",
        "RTX-4090",
    } <= names
    assert load_gpu("A100").name == "A100-80GB"
    assert load_gpu("h100").name == "H100-80GB"
    # nvidia-smi totals: 81920 MiB on A100-80GB, 81559 MiB on H100-80GB.
    assert load_gpu("A100").memory_gib == 80.0
    assert load_gpu("H100").memory_gib == pytest.approx(81559 / 1024, abs=0.01)


def test_every_gpu_states_price_source_when_priced():
    for gpu in list_gpus():
        if gpu.price.usd_per_gpu_hour is not None:
            assert gpu.price.source and gpu.price.date, gpu.name


def test_unknown_gpu_suggests():
    with pytest.raises(CatalogError, match=r"unknown GPU 'A100-80'.*A100"):
        load_gpu("A100-80")
