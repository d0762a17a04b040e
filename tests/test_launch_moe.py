"""Launch configs of Mixture-of-Experts plans (issue 14, item 5): Megatron-LM's MoE and MLA flags, torchtitan's
MoE flavors with expert parallelism, and the engines without expert parallelism (the reference trainer refuses,
the Hugging Face engines hold every expert)."""

import json
from pathlib import Path

import pytest
from tests.conftest import plan_for

from planner.catalog import load_model
from planner.catalog.models import list_models, moe_layer_count
from planner.errors import PlannerError
from planner.estimate import evaluate
from planner.launch.bundle import TARGETS, build_launch_folder
from planner.launch.megatron import ROUTERS, Router, megatron_arguments, moe_layer_pattern
from planner.launch.torchtitan import TORCHTITAN_MOE_FLAVORS, torchtitan_module

ROOT = Path(__file__).resolve().parent.parent
HF_CONFIGS = ROOT / "tests" / "data" / "hf_configs"
MEGATRON_FLAGS = {
    line for line in (ROOT / "tests" / "data" / "megatron_lm_flags.txt").read_text().splitlines() if line[:2] == "--"
}
MOE_MODELS = sorted(m.name for m in list_models() if m.architecture.is_moe)


def _megatron(model: str, **fields) -> list[str]:
    m, _, plan = plan_for(model, "H100-80GB", engine="megatron", zero=1, seq_len=4096, **fields)
    return megatron_arguments(m, plan)


def _after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_every_catalog_moe_model_has_its_router():
    assert len(MOE_MODELS) == 10
    assert set(ROUTERS) == set(MOE_MODELS)


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_router_is_what_the_hf_config_says(name):
    """Read back from the config.json copies: scoring function, top-k renormalisation (Mixtral and gpt-oss
    always renormalise: softmax over the top-k logits in transformers, no `norm_topk_prob` key), expert
    groups, routed scaling, DeepSeek-V3's auxiliary-loss-free bias (`noaux_tc`) and the balancing loss."""
    cfg = json.loads((HF_CONFIGS / f"{name}.json").read_text())
    bias = cfg.get("topk_method") == "noaux_tc"
    balancing = "none" if bias else ("seq_aux_loss" if cfg.get("seq_aux") else "aux_loss")
    coeff = 0.0 if bias else cfg.get("router_aux_loss_coef", cfg.get("aux_loss_alpha"))
    expected = Router(
        score=cfg.get("scoring_func", "softmax"),
        normalize_topk=cfg.get("norm_topk_prob", True),
        groups=cfg.get("n_group", 1),
        group_topk=cfg.get("topk_group", 1),
        scaling=cfg.get("routed_scaling_factor", 1.0),
        expert_bias=bias,
        balancing=balancing,
        aux_loss_coeff=coeff,
    )
    assert ROUTERS[name] == expected


def test_deepseek_v3_megatron_flags():
    args = _megatron("deepseek-v3", gpus=1024, tp=2, pp=16, ep=32, micro_batch=1, global_batch=8192)
    start = args.index("--multi-latent-attention")
    moe = args[start : args.index("--tensor-model-parallel-size")]
    assert moe == [
        "--multi-latent-attention",
        *("--q-lora-rank", "1536", "--kv-lora-rank", "512", "--qk-head-dim", "128"),
        *("--qk-pos-emb-head-dim", "64", "--v-head-dim", "128"),
        *("--num-experts", "256", "--moe-router-topk", "8", "--moe-ffn-hidden-size", "2048"),
        *("--moe-shared-expert-intermediate-size", "2048", "--moe-layer-freq", "([0]*3+[1]*58)"),
        *("--moe-router-score-function", "sigmoid", "--moe-router-num-groups", "8", "--moe-router-group-topk", "4"),
        *("--moe-router-topk-scaling-factor", "2.5", "--moe-router-enable-expert-bias"),
        *("--moe-router-load-balancing-type", "none", "--moe-router-dtype", "fp32"),
        *("--expert-model-parallel-size", "32", "--moe-grouped-gemm", "--moe-token-dispatcher-type", "alltoall"),
    ]
    assert _after(args, "--ffn-hidden-size") == "18432"  # the three dense first blocks


def test_deepseek_v2_lite_has_no_query_compression_and_one_dense_block():
    args = _megatron("deepseek-v2-lite", gpus=8, ep=8, micro_batch=1, global_batch=64)
    assert "--q-lora-rank" not in args and _after(args, "--kv-lora-rank") == "512"
    assert _after(args, "--moe-layer-freq") == "([0]*1+[1]*26)"
    assert _after(args, "--moe-shared-expert-intermediate-size") == "2816"  # 2 shared experts x 1408
    assert "--moe-router-pre-softmax" in args
    assert _after(args, "--moe-router-load-balancing-type") == "seq_aux_loss"


def test_capacity_factor_and_dispatcher_reach_megatron():
    args = _megatron("mixtral-8x7b", gpus=16, tp=2, ep=4, micro_batch=1, global_batch=64, moe_capacity_factor=1.25)
    assert _after(args, "--moe-expert-capacity-factor") == "1.25"
    assert _after(args, "--expert-model-parallel-size") == "4"
    assert _after(args, "--moe-aux-loss-coeff") == "0.02"
    args = _megatron("qwen2-57b-a14b", gpus=16, tp=2, ep=8, micro_batch=1, global_batch=64, moe_dispatcher="allgather")
    assert _after(args, "--moe-token-dispatcher-type") == "allgather"
    assert "--moe-shared-expert-gate" in args and "--moe-expert-capacity-factor" not in args


def test_flex_dispatcher_and_ep_overlap_reach_megatron():
    args = _megatron("qwen3-30b-a3b", gpus=16, ep=16, micro_batch=1, global_batch=64, moe_dispatcher="flex")
    assert _after(args, "--moe-token-dispatcher-type") == "flex"
    assert _after(args, "--moe-flex-dispatcher-backend") == "deepep"
    assert "--overlap-moe-expert-parallel-comm" not in args
    args = _megatron("qwen3-30b-a3b", gpus=16, ep=16, micro_batch=1, global_batch=64, moe_ep_overlap=True)
    assert "--overlap-moe-expert-parallel-comm" in args and "--moe-flex-dispatcher-backend" not in args


def test_expert_tensor_parallelism_reaches_megatron_only_when_it_differs_from_tp():
    folded = _megatron("qwen3-235b-a22b", gpus=256, tp=2, pp=8, ep=32, etp=1, micro_batch=1, global_batch=2048)
    assert _after(folded, "--expert-tensor-parallel-size") == "1"
    assert _after(folded, "--expert-model-parallel-size") == "32"  # ep x etp = 32 of the 32 tp x dp ranks
    default = _megatron("qwen3-235b-a22b", gpus=256, tp=2, pp=8, ep=8, micro_batch=1, global_batch=2048)
    assert "--expert-tensor-parallel-size" not in default


def test_dense_models_get_no_moe_flags():
    args = _megatron("llama-3.1-8b", gpus=8, micro_batch=1, global_batch=64)
    assert not [a for a in args if a.startswith(("--moe", "--num-experts", "--expert-", "--multi-latent"))]


@pytest.mark.parametrize("name", MOE_MODELS)
def test_every_moe_flag_is_a_megatron_lm_flag(name):
    arch = load_model(name).architecture
    ep = next(e for e in (8, 4, 2, 1) if arch.num_experts % e == 0)
    if arch.qk_norm == "full":  # OLMoE: Megatron's --qk-layernorm is per head, so the writer refuses it
        with pytest.raises(PlannerError, match="no query/key norms over the whole projection"):
            _megatron(name, gpus=8, ep=ep, micro_batch=1, global_batch=64)
        return
    args = _megatron(name, gpus=8, ep=ep, micro_batch=1, global_batch=64)
    assert {a for a in args if a.startswith("--")} <= MEGATRON_FLAGS


@pytest.mark.parametrize("name", MOE_MODELS)
def test_moe_layer_pattern_is_the_catalogs_rule(name):
    """Megatron evaluates the pattern as a Python list expression (arguments.py moe_freq_type)."""
    arch = load_model(name).architecture
    pattern = moe_layer_pattern(load_model(name))
    layers = eval(pattern) if pattern else [1] * arch.num_layers
    assert layers == [moe_layer_count(arch, i + 1) - moe_layer_count(arch, i) for i in range(arch.num_layers)]


def test_torchtitan_runs_its_moe_flavors_with_expert_parallelism():
    m, _, plan = plan_for("qwen3-30b-a3b", "H100-80GB", engine="fsdp", zero=3, gpus=16, ep=8, global_batch=512)
    text = torchtitan_module(m, plan)
    assert "from torchtitan.models.qwen3 import model_registry" in text
    assert 'return model_registry("30B-A3B")' in text
    assert "config.parallelism.expert_parallel_degree = 8" in text
    assert "config.parallelism.data_parallel_shard_degree = 16" in text
    assert set(TORCHTITAN_MOE_FLAVORS) < set(MOE_MODELS)
    m, _, plan = plan_for("qwen3-30b-a3b", "H100-80GB", engine="fsdp", zero=3, gpus=16, tp=2, ep=8, etp=1)
    assert "config.parallelism.tensor_parallel_degree = 2" in torchtitan_module(m, plan)  # EP over FSDP x TP


@pytest.mark.parametrize(
    "model, fields, words",
    [
        ("mixtral-8x7b", dict(gpus=8, ep=8), "no model for mixtral-8x7b"),
        ("qwen3-30b-a3b", dict(gpus=8, ep=4, tp=2), "--etp 1"),
    ],
)
def test_torchtitan_refuses_what_it_cannot_run(model, fields, words):
    m, _, plan = plan_for(model, "H100-80GB", engine="fsdp", zero=3, global_batch=64, **fields)
    with pytest.raises(PlannerError, match=words):
        torchtitan_module(m, plan)


@pytest.fixture(scope="module")
def moe_folder():
    m, g, plan = plan_for(
        "qwen3-30b-a3b",
        "H100-80GB",
        engine="fsdp",
        zero=3,
        gpus=16,
        ep=8,
        micro_batch=2,
        global_batch=512,
        seq_len=4096,
        checkpointing="full",
    )
    return build_launch_folder(evaluate(m, g, plan), TARGETS, None, "test")


def test_reference_trainer_refuses_moe_plans_with_one_line(moe_folder):
    reason = moe_folder.skipped["torchrun"]
    assert "Mixture-of-Experts" in reason and "\n" not in reason
    assert "train.py" not in moe_folder.files and "launch_torchrun.sh" not in moe_folder.files


def test_engines_without_expert_parallelism_hold_every_expert(moe_folder):
    for code in ("deepspeed", "fsdp-hf"):
        variant = moe_folder.variants[code]
        assert "ep: 8 -> 1" in variant.changes and "no expert parallelism" in variant.reason
        assert variant.plan.ep == 1
    assert moe_folder.variants["fsdp"].origin == "plan"
    assert {"torchtitan_plan.py", "megatron_args.txt", "ds_config.json"} <= set(moe_folder.files)
    assert "--expert-model-parallel-size 8" in moe_folder.files["megatron_args.txt"]


def test_recompute_modules_reach_megatron():
    args = _megatron(
        "deepseek-v3",
        gpus=1024,
        tp=2,
        pp=16,
        ep=32,
        micro_batch=1,
        global_batch=8192,
        recompute_modules="mla_up_proj,layernorm",
        checkpointing="selective",
    )
    start = args.index("--recompute-granularity")
    assert args[start : start + 6] == [
        "--recompute-granularity",
        "selective",
        "--recompute-modules",
        "core_attn",
        "layernorm",
        "mla_up_proj",
    ]
    assert {a for a in args if a.startswith("--")} <= MEGATRON_FLAGS
