"""Issue 14: Mixture-of-Experts models and expert parallelism: catalog and config.json import with total and
active parameter counts equal to transformers', the expert-parallel plan fields and their one-line errors,
and expert states sharded over the expert-data-parallel group."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.architecture import active_params, expert_params, expert_tensors, moe_layers, total_params
from planner.catalog import load_gpu, load_model
from planner.cli import main
from planner.errors import CatalogError, PlanError
from planner.memory.stages import first_and_last_stage
from planner.memory.states import stage_state_bytes, state_layout
from planner.plan import PlanRequest, make_plan

CONFIGS = Path(__file__).parent / "data" / "hf_configs"
MOE_MODELS = {
    # catalog name: (total, active) parameters this code computes from the config.json copy. The meta-device
    # test below checks both against transformers 5; the totals agree with the model cards (Mixtral 8x7B
    # 46.7B of which 12.9B active, Qwen3-30B-A3B 30.5B / 3.3B, DeepSeek-V3 671B / 37B, gpt-oss-20b 21B).
    "mixtral-8x7b": (46_702_792_704, 12_879_925_248),
    "mixtral-8x22b": (140_630_071_296, 39_161_468_928),
    "qwen2-57b-a14b": (57_408_658_944, 14_249_270_784),
    "qwen3-30b-a3b": (30_532_122_624, 3_353_032_704),
    "qwen3-235b-a22b": (235_093_634_560, 22_190_763_520),
    "deepseek-v2-lite": (15_706_484_224, 2_661_150_208),
    "deepseek-v3": (671_026_404_352, 37_552_282_624),
    "gpt-oss-20b": (20_914_757_184, 4_187_440_704),
    "gpt-oss-120b": (116_829_156_672, 5_711_982_912),
    "olmoe-1b-7b": (6_919_161_856, 1_282_017_280),
}


@pytest.mark.parametrize("name", sorted(MOE_MODELS))
def test_catalog_moe_model_equals_its_config_json(name):
    catalog = load_model(name)
    from_config = load_model(str(CONFIGS / f"{name}.json"))
    assert catalog.architecture == from_config.architecture
    assert (total_params(catalog.architecture), active_params(catalog.architecture)) == MOE_MODELS[name]


def _hf_counts(config: dict) -> tuple[int, int]:
    """transformers' own count on the meta device, and its active count: the total less, in every MoE block,
    the (E - k) / E share of the fused routed-expert tensors (`mlp.experts.*`)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = dict(config)
    model_type = config.pop("model_type")
    config.pop("architectures", None)
    config.pop("_name_or_path", None)
    hf_config = transformers.AutoConfig.for_model(model_type, **config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    experts = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    num_experts = config.get("num_local_experts") or config.get("num_experts") or config["n_routed_experts"]
    inactive = experts * (num_experts - config["num_experts_per_tok"]) // num_experts
    return model.num_parameters(), model.num_parameters() - inactive


@pytest.mark.parametrize("name", sorted(MOE_MODELS))
def test_moe_parameter_counts_equal_transformers_on_the_meta_device(name):
    config = json.loads((CONFIGS / f"{name}.json").read_text())
    assert _hf_counts(config) == MOE_MODELS[name]


def test_layer_kinds_and_expert_tensors():
    v3 = load_model("deepseek-v3").architecture
    assert moe_layers(v3) == 58  # 61 blocks, the first 3 dense (first_k_dense_replace)
    # one routed expert: gate, up (2048 x 7168) and down (7168 x 2048)
    assert sum(t.numel for t in expert_tensors(v3)) == 3 * 2048 * 7168
    assert expert_params(v3) == 58 * 256 * 3 * 2048 * 7168
    oss = load_model("gpt-oss-20b").architecture
    # gpt-oss experts carry biases: gate and up (2880 each) and down (2880)
    assert sum(t.numel for t in expert_tensors(oss)) == 3 * 2880 * 2880 + 3 * 2880


def test_top_k_above_the_experts_is_a_one_line_error(tmp_path):
    config = json.loads((CONFIGS / "mixtral-8x7b.json").read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config, "num_experts_per_tok": 9}))
    with pytest.raises(CatalogError, match="experts_per_token"):
        load_model(str(path))
    result = CliRunner().invoke(main, ["estimate", "--model", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "top-k" in result.output


def _plan(model="qwen3-30b-a3b", **changes):
    request = PlanRequest(**{"model": model, "gpu": "H100", "gpus": 16, "engine": "megatron", "zero": 1, **changes})
    return make_plan(request, load_model(model), load_gpu("H100"))


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"ep": 3}, "--ep 3 does not divide the 128 experts"),
        ({"ep": 16, "tp": 2}, "--ep 16 does not divide dp x cp = 8"),
        ({"ep": 2, "engine": "deepspeed"}, "--engine deepspeed has no expert parallelism"),
        ({"model": "llama-2-7b", "ep": 2}, "llama-2-7b is a dense model"),
        ({"moe_capacity_factor": 1.0, "engine": "fsdp", "zero": 3}, "token dropping with a capacity factor"),
        ({"moe_capacity_factor": 0}, "--moe-capacity-factor must be a number above 0"),
        ({"moe_dispatcher": "allgather", "engine": "fsdp", "zero": 3}, "the allgather token dispatcher"),
        ({"method": "lora", "engine": "fsdp", "zero": 3, "ep": 1}, "not modelled for Mixture-of-Experts"),
    ],
)
def test_bad_expert_parallel_plans_are_refused(changes, message):
    with pytest.raises(PlanError, match=message.replace("+", r"\+")):
        _plan(**changes)


@pytest.mark.parametrize(
    "flags",
    [
        ["--ep", "3"],
        ["--ep", "2", "--engine", "deepspeed"],
        ["--model", "7b", "--ep", "2"],
    ],
)
def test_bad_expert_parallel_flags_exit_2_with_one_line(flags):
    args = ["estimate", "--model", "qwen3-30b-a3b", "--gpu", "H100", "--gpus", "16", "--engine", "megatron", *flags]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1


def test_expert_data_parallel_group_is_carved_out_of_dp_cp():
    plan = _plan(ep=4, tp=2, cp=2)  # 16 GPUs: dp 4 x tp 2 x cp 2; EP 4 from the 8 dp x cp ranks
    assert (plan.dp, plan.shard_degree, plan.expert_shard_degree) == (4, 8, 2)


def test_expert_states_shard_over_the_expert_data_parallel_group():
    """Megatron ZeRO-1 (distributed optimizer), Qwen3-30B-A3B on 16 GPUs with EP 8: each rank holds 16 of the
    128 experts of all 48 blocks, whole (tp 1); their fp32 master weights and Adam moments shard over the
    16 / 8 = 2 expert-data-parallel ranks, the other parameters' over all 16."""
    plan = _plan(ep=8)
    arch = load_model("qwen3-30b-a3b").architecture
    stage = first_and_last_stage(arch, plan)[0]
    local_experts = 48 * 16 * 3 * 768 * 2048
    assert stage.expert_params == local_experts
    rest = total_params(arch) - expert_params(arch)
    assert stage.params == rest + local_experts
    terms = {t.name: t for t in state_layout(arch, plan)}
    assert stage_state_bytes(terms["optimizer_states"], stage, plan) == 8 * rest / 16 + 8 * local_experts / 2
    assert stage_state_bytes(terms["weights"], stage, plan) == 2 * (rest + local_experts)
    # EP 1: every rank holds all experts, their states sharded over all 16 ranks
    plain = _plan()
    plain_stage = first_and_last_stage(arch, plain)[0]
    assert stage_state_bytes(terms["optimizer_states"], plain_stage, plain) == 8 * total_params(arch) / 16
