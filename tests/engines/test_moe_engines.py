"""MoE launch configs fed to the engines' own code (the `engines` extra): megatron-core's TransformerConfig /
MLATransformerConfig built from the emitted Megatron flags (its __post_init__ checks the MoE settings: router,
groups, expert bias, dispatcher, capacity, shared experts, layer pattern), and torchtitan's ConfigManager,
ParallelDims with the expert-parallel degree and the MoE model built on the meta device with the catalog's
parameter count."""

import importlib
import sys

import pytest
from tests.conftest import plan_for

from planner.architecture import total_params
from planner.errors import PlannerError
from planner.files import write_folder
from planner.launch.megatron import megatron_arguments
from planner.launch.torchtitan import TORCHTITAN_MOE_FLAVORS, torchtitan_module

pytestmark = pytest.mark.engines

MEGATRON_MOE_PLANS = {
    "deepseek-v3-tp2-pp16-ep32": ("deepseek-v3", dict(gpus=1024, tp=2, pp=16, ep=32, global_batch=8192)),
    "deepseek-v3-pp8-vp4-stated-split": (
        "deepseek-v3",
        dict(
            gpus=1024,
            tp=2,
            pp=8,
            ep=64,
            etp=1,
            global_batch=8192,
            pp_schedule="interleaved",
            virtual_stages=4,
            first_stage_layers=7,
            last_stage_layers=6,
        ),
    ),
    "deepseek-v2-lite-ep8": ("deepseek-v2-lite", dict(gpus=8, ep=8, global_batch=64)),
    "mixtral-8x7b-tp2-ep4-capacity": (
        "mixtral-8x7b",
        dict(gpus=16, tp=2, ep=4, global_batch=64, moe_capacity_factor=1.25),
    ),
    "qwen2-57b-allgather": ("qwen2-57b-a14b", dict(gpus=16, tp=2, ep=8, global_batch=64, moe_dispatcher="allgather")),
    "qwen3-235b-pp8-ep8": ("qwen3-235b-a22b", dict(gpus=256, tp=2, pp=8, ep=8, global_batch=2048)),
    "qwen3-235b-tp2-ep32-etp1": ("qwen3-235b-a22b", dict(gpus=256, tp=2, pp=8, ep=32, etp=1, global_batch=2048)),
    "gpt-oss-120b-ep8": ("gpt-oss-120b", dict(gpus=64, pp=4, ep=8, global_batch=1280)),
    "olmoe-ep8": ("olmoe-1b-7b", dict(gpus=8, ep=8, global_batch=64)),
    "qwen3-30b-flex-ep16-overlap": (
        "qwen3-30b-a3b",
        dict(gpus=16, ep=16, global_batch=64, moe_dispatcher="flex", moe_ep_overlap=True),
    ),
}

FIELD_OF_FLAG = {
    "--num-experts": ("num_moe_experts", int),
    "--moe-router-topk": ("moe_router_topk", int),
    "--moe-ffn-hidden-size": ("moe_ffn_hidden_size", int),
    "--moe-shared-expert-intermediate-size": ("moe_shared_expert_intermediate_size", int),
    "--moe-router-score-function": ("moe_router_score_function", str),
    "--moe-router-num-groups": ("moe_router_num_groups", int),
    "--moe-router-group-topk": ("moe_router_group_topk", int),
    "--moe-router-topk-scaling-factor": ("moe_router_topk_scaling_factor", float),
    "--moe-router-load-balancing-type": ("moe_router_load_balancing_type", str),
    "--moe-aux-loss-coeff": ("moe_aux_loss_coeff", float),
    "--moe-router-dtype": ("moe_router_dtype", str),
    "--expert-model-parallel-size": ("expert_model_parallel_size", int),
    "--moe-token-dispatcher-type": ("moe_token_dispatcher_type", str),
    "--moe-expert-capacity-factor": ("moe_expert_capacity_factor", float),
    "--moe-flex-dispatcher-backend": ("moe_flex_dispatcher_backend", str),
    "--q-lora-rank": ("q_lora_rank", int),
    "--kv-lora-rank": ("kv_lora_rank", int),
    "--qk-head-dim": ("qk_head_dim", int),
    "--qk-pos-emb-head-dim": ("qk_pos_emb_head_dim", int),
    "--v-head-dim": ("v_head_dim", int),
    "--num-layers": ("num_layers", int),
    "--mtp-num-layers": ("mtp_num_layers", int),
    "--hidden-size": ("hidden_size", int),
    "--ffn-hidden-size": ("ffn_hidden_size", int),
    "--num-attention-heads": ("num_attention_heads", int),
    "--num-query-groups": ("num_query_groups", int),
    "--tensor-model-parallel-size": ("tensor_model_parallel_size", int),
    "--pipeline-model-parallel-size": ("pipeline_model_parallel_size", int),
    "--expert-tensor-parallel-size": ("expert_tensor_parallel_size", int),
}
SWITCHES = {
    "--moe-grouped-gemm": "moe_grouped_gemm",
    "--moe-router-pre-softmax": "moe_router_pre_softmax",
    "--moe-router-enable-expert-bias": "moe_router_enable_expert_bias",
    "--moe-shared-expert-gate": "moe_shared_expert_gate",
    "--sequence-parallel": "sequence_parallel",
    "--swiglu": "gated_linear_unit",
    "--multi-latent-attention": "multi_latent_attention",
    "--overlap-moe-expert-parallel-comm": "overlap_moe_expert_parallel_comm",
}


@pytest.mark.parametrize("label", sorted(MEGATRON_MOE_PLANS))
def test_megatron_core_accepts_the_moe_config(label):
    pytest.importorskip("megatron.core")
    import torch
    from megatron.core.transformer.transformer_config import MLATransformerConfig, TransformerConfig

    model, fields = MEGATRON_MOE_PLANS[label]
    m, _, plan = plan_for(model, "H100-80GB", engine="megatron", zero=1, micro_batch=1, seq_len=4096, **fields)
    if m.architecture.qk_norm == "full":  # OLMoE: the writer refuses full-width query/key norms in one line
        with pytest.raises(PlannerError, match="no query/key norms over the whole projection"):
            megatron_arguments(m, plan)
        return
    args = megatron_arguments(m, plan)
    values = {}
    for flag, (name, kind) in FIELD_OF_FLAG.items():
        if flag in args:
            values[name] = kind(args[args.index(flag) + 1])
    values.update({name: True for flag, name in SWITCHES.items() if flag in args})
    if "--moe-layer-freq" in args:  # Megatron's moe_freq_type evaluates the list expression
        values["moe_layer_freq"] = eval(args[args.index("--moe-layer-freq") + 1])
    values["add_bias_linear"] = "--disable-bias-linear" not in args
    values["bf16"] = True
    values["pipeline_dtype"] = torch.bfloat16 if plan.pp > 1 else None
    layout = "--pipeline-model-parallel-layout"
    values["pipeline_model_parallel_layout"] = args[args.index(layout) + 1] if layout in args else None
    config = (MLATransformerConfig if m.architecture.is_mla else TransformerConfig)(**values)
    assert config.num_moe_experts == m.architecture.num_experts
    assert config.expert_model_parallel_size == plan.ep
    assert (config.expert_tensor_parallel_size or config.tensor_model_parallel_size) == plan.expert_tp
    assert config.moe_token_dispatcher_type == plan.moe_dispatcher
    assert config.moe_expert_capacity_factor == plan.moe_capacity_factor
    assert config.overlap_moe_expert_parallel_comm == plan.moe_ep_overlap
    assert (config.mtp_num_layers or 0) == plan.mtp_layers  # DeepSeek-V3 trains its MTP depth by default
    if isinstance(config.moe_layer_freq, list):
        assert len(config.moe_layer_freq) == m.architecture.num_layers


@pytest.mark.parametrize("name", sorted(TORCHTITAN_MOE_FLAVORS))
def test_torchtitan_builds_the_moe_config_and_model(tmp_path, monkeypatch, name):
    pytest.importorskip("torchtitan")
    import torch
    from torchtitan.config import ConfigManager
    from torchtitan.distributed.parallel_dims import ParallelDims

    m, _, plan = plan_for(name, "H100-80GB", engine="fsdp", zero=3, gpus=64, ep=8, global_batch=128)
    module_name = f"torchtitan_moe_plan_{name.replace('-', '_').replace('.', '_')}"
    write_folder(tmp_path / "launch", {f"{module_name}.py": torchtitan_module(m, plan)})
    monkeypatch.syspath_prepend(str(tmp_path / "launch"))
    config = importlib.import_module(module_name).planner_plan()
    parsed = ConfigManager().parse_args(["--module", module_name, "--config", "planner_plan"])
    p = parsed.parallelism
    assert p.expert_parallel_degree == plan.ep
    dims = ParallelDims(
        dp_replicate=p.data_parallel_replicate_degree,
        dp_shard=p.data_parallel_shard_degree,
        cp=p.context_parallel_degree,
        tp=p.tensor_parallel_degree,
        pp=p.pipeline_parallel_degree,
        ep=p.expert_parallel_degree,
        world_size=plan.gpus,
    )
    # torchtitan's expert FSDP group (dp_shard x cp x tp / ep) is the plan's expert-data-parallel group.
    assert dims.dp_shard * dims.cp * dims.tp // dims.ep == plan.expert_shard_degree
    with torch.device("meta"):
        model = config.model_spec.model.build()
    assert sum(t.numel() for t in model.parameters()) == total_params(m.architecture)
    sys.modules.pop(module_name, None)
