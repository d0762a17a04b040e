"""Issue 14: Mixture-of-Experts models and expert parallelism: catalog and config.json import with total and
active parameter counts equal to transformers', the expert-parallel plan fields and their one-line errors,
and expert states sharded over the expert-data-parallel group."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.architecture import active_params, expert_params, expert_tensors, moe_layers, total_params
from planner.catalog import load_gpu, load_model
from planner.cli import main
from planner.errors import CatalogError, PlanError
from planner.memory import activations as act
from planner.memory.stages import first_and_last_stage, rank_moe_blocks
from planner.memory.states import stage_state_bytes, state_layout
from planner.performance import comm
from planner.performance import model as perf
from planner.performance.flops import flops_per_token
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
        ({"tp": 2, "etp": 1, "engine": "deepspeed", "zero": 2}, "--engine deepspeed has no expert tensor parallelism"),
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


def test_routed_load_factor_is_the_balls_into_bins_maximum():
    """Busiest of ep ranks with T x k routed copies each: 1 + sqrt(2 ln(ep) / (T k)) (Raab and Steger 1998);
    1 without EP; a capacity factor caps it."""
    arch = load_model("qwen3-30b-a3b").architecture
    plan = _plan(ep=8, seq_len=4096)
    assert act.routed_load_factor(arch, plan) == pytest.approx(1 + math.sqrt(2 * math.log(8) / (4096 * 8)), rel=1e-12)
    assert act.routed_load_factor(arch, _plan(seq_len=4096)) == 1.0
    assert act.routed_load_factor(arch, _plan(ep=8, seq_len=4096, moe_capacity_factor=1.0)) == 1.0


def test_moe_block_saved_tensors():
    """Qwen3-30B-A3B (h 2048, 128 experts of width 768, top-8), bf16, tp 1, EP 1 (load factor 1):
    router 4 x 128 fp32 probabilities + 8 x (8 + 4) index/weight bytes = 608; per routed copy, hf: the permuted
    input and the expert output (2 x 2 x 2048) and the SwiGLU inner tensors (4 x 2 x 768); Megatron: the
    permuted input (2 x 2048), the fused fc1 output and the product (3 x 2 x 768) and the copy's fp32
    probability, which its weighted SwiGLU applies (no expert output kept); under fp8 the two grouped-linear
    inputs are kept in fp8."""
    arch = load_model("qwen3-30b-a3b").architecture
    megatron = _plan(seq_len=4096)
    assert act.moe_mlp_bytes(arch, megatron) == 608 + 8 * (2 * 2048 + 3 * 2 * 768 + 4)
    fp8 = _plan(seq_len=4096, precision="fp8")
    assert act.moe_mlp_bytes(arch, fp8) == 608 + 8 * (2048 + (2 * 2 + 1) * 768 + 4)
    hf = _plan(seq_len=4096, engine="fsdp", zero=3)
    assert act.moe_mlp_bytes(arch, hf) == 608 + 8 * (8192 + 4 * 2 * 768)
    # DeepSeek-V3's shared expert (2048 wide) is a dense MLP on every token
    v3 = load_model("deepseek-v3").architecture
    plan = _plan("deepseek-v3", seq_len=4096, gpus=64)
    assert act.moe_mlp_bytes(v3, plan) == 4 * 256 + 12 * 8 + 8 * (2 * 7168 + 3 * 2 * 2048 + 4) + 3 * 2 * 2048
    # a MoE block replaces the dense MLP's tensors by these
    dense = act.layer_activations(arch, megatron)
    moe = act.layer_activations(arch, megatron, moe=True)
    assert moe.total - dense.total == act.moe_mlp_bytes(arch, megatron) - 3 * 2 * arch.ffn_hidden_size


def test_dispatch_buffers_alltoall_and_allgather():
    """alltoall: the T x k permuted copies sent and received (h values each); allgather: the EP group's
    tokens gathered (T x ep) beside the local permuted copy; ep 1 and tp 1: only the permuted copy."""
    arch = load_model("qwen3-30b-a3b").architecture
    permuted = 2 * 2048 * 8
    assert act.dispatch_buffer_bytes(arch, _plan(seq_len=4096)) == permuted
    plan = _plan(ep=8, seq_len=4096, moe_capacity_factor=1.0)  # load factor capped at exactly 1
    assert act.dispatch_buffer_bytes(arch, plan) == 2 * permuted
    gathered = _plan(ep=8, seq_len=4096, moe_capacity_factor=1.0, moe_dispatcher="allgather")
    assert act.dispatch_buffer_bytes(arch, gathered) == permuted + 2 * 2048 * 8


def test_latent_attention_saved_tensors():
    """DeepSeek-V3 MLA (128 heads, q/k 128 + 64, v 128, latents 1536 and 512), bf16, tp 1. hf: each latent
    norm keeps its fp32 input, the statistic, the normalised copy and the up-projection's input
    ((4 + 2 + 2) x w + 4); flash attention keeps q, k (192 per head) and v padded to 192; o_proj's input is
    128 per head. Megatron: TE norm input and output (4 x w + 8), v unpadded."""
    v3 = load_model("deepseek-v3").architecture
    hf = _plan("deepseek-v3", gpus=64, engine="fsdp", zero=3)
    assert act._mla_attention_bytes(v3, hf) == (8 * 2048 + 8, 2 * 128 * 3 * 192, 2 * 128 * 128)
    megatron = _plan("deepseek-v3", gpus=64)
    assert act._mla_attention_bytes(v3, megatron) == (4 * 2048 + 16, 2 * 128 * (2 * 192 + 128), 2 * 128 * 128)


def test_moe_flops_count_active_parameters():
    """Per token: matmuls of every block with the router, the shared expert and top-k routed experts
    (6 x those weights), MLA attention over (192 + 128) per head, the LM head."""
    v3 = load_model("deepseek-v3").architecture
    plan = _plan("deepseek-v3", gpus=64, seq_len=4096)
    flops = flops_per_token(v3, plan)
    expert = 3 * 2048 * 7168
    assert flops.expert_matmuls == 6 * 58 * 8 * expert
    attention = 6 * 61 * 128 * (192 + 128) * 4096
    assert flops.attention == attention
    matrices = sum(t.numel for t in (*expert_tensors(v3),) if t.is_matrix)
    assert matrices == expert
    # block + expert + head matmuls are 6 x the active matrix parameters (norms and the embedding lookup
    # excluded)
    norms = 61 * 2 * 7168 + 61 * (1536 + 512) + 7168
    embedding = 129280 * 7168
    assert flops.block_matmuls + flops.expert_matmuls + flops.lm_head == 6 * (active_params(v3) - norms - embedding)


def test_expert_gemm_is_memory_bound_at_few_tokens_per_expert():
    """Roofline: time = max(FLOPs at the matmul rate, bytes at HBM speed). DeepSeek-V3 with one sequence
    of 512 tokens per GPU and EP 1: 512 x 8 / 256 = 16 tokens per expert, far below H100's ridge point, so
    streaming the experts' weights sets the time (at full efficiency: the ridge alone)."""
    v3 = load_model("deepseek-v3").architecture
    plan = _plan("deepseek-v3", gpus=64, seq_len=512)
    rows = perf.tokens_per_expert(v3, plan)
    assert rows == 16
    weights = 3 * 2048 * 7168
    assert perf.expert_gemm_bytes(v3, plan, rows) == 2 * (weights + 16 * (2 * 7168 + 2048) + 16 * (2 * 2048 + 7168))
    gpu = load_gpu("H100")
    work = perf._stage_work(flops_per_token(v3, plan), plan, v3, 0, perf.causal_attention_fraction(v3, plan))
    full = replace(gpu, compute_efficiency=replace(gpu.compute_efficiency, max=1.0, half_tokens=0.0, half_width=0.0))
    seconds = perf.expert_gemm_s(v3, plan, full, work, 989e12, 7168, 1.0)
    # 58 MoE blocks and, trained by default under Megatron, the MTP depth's MoE block (one stage: pp 1)
    memory = (58 + 1) * 256 * 3 * perf.expert_gemm_bytes(v3, plan, rows) / (gpu.hbm_bandwidth_gbps * 1e9 * 0.8)
    assert seconds == pytest.approx(memory, rel=1e-12)


def test_expert_gemm_runs_at_the_efficiency_of_its_rows_per_expert():
    """The compute side's token factor takes the rows of one expert's GEMM, not the micro-batch: Qwen3-30B-A3B,
    one 4k sequence, EP 8: 4096 x 8 x 8 / 128 = 2,048 rows (x the balls-into-bins load), so H100's factor
    T / (T + 1024) is 2/3 rather than 0.8 at the micro-batch's 4,096 tokens."""
    arch = load_model("qwen3-30b-a3b").architecture
    plan = _plan("qwen3-30b-a3b", gpus=8, ep=8, seq_len=4096, micro_batch=1, global_batch=64)
    gpu = load_gpu("H100")
    rows = perf.tokens_per_expert(arch, plan)
    assert rows == pytest.approx(2048 * (1 + math.sqrt(2 * math.log(8) / (4096 * 8))), rel=1e-12)
    work = perf._stage_work(flops_per_token(arch, plan), plan, arch, 0, perf.causal_attention_fraction(arch, plan))
    eff = perf.efficiency(gpu, rows, 2048, 1.0)[0]
    flops = plan.tokens_per_micro_batch * perf.routed_load_factor(arch, plan) * work.expert_flops
    assert perf.expert_gemm_s(arch, plan, gpu, work, 989e12, 2048, 1.0) == pytest.approx(
        flops / (989e12 * eff), rel=1e-12
    )
    assert eff == pytest.approx(gpu.compute_efficiency.max * rows / (rows + 1024) * 2048 / (2048 + 1024), rel=1e-12)


def test_all_to_all_uses_nvlink_inside_the_node_and_the_nic_across():
    """EP 8 with tp 1 stays in an 8-GPU node: 7/8 of the buffer over NVLink's bus bandwidth; EP 16 sends
    8/16 through the GPU's network interface, the slower link."""
    gpu = load_gpu("H100")
    send = 1e9
    inside = comm.all_to_all_s(send, 8, 1, gpu, 8)
    assert inside == pytest.approx(send * 7 / 8 / (comm.intra_node_bandwidth_gbps(gpu) * 1e9), rel=1e-12)
    across = comm.all_to_all_s(send, 16, 1, gpu, 8)
    network = gpu.node.inter_node_bandwidth_gbps_per_gpu * comm.NETWORK_BUS_EFFICIENCY * 1e9
    assert across == pytest.approx(send * 8 / 16 / network, rel=1e-12)
    assert comm.all_to_all_s(send, 1, 1, gpu, 8) == 0.0


def test_expert_parallel_exchange_appears_in_the_step():
    model, gpu = load_model("qwen3-30b-a3b"), load_gpu("H100")
    plan = _plan(ep=8, seq_len=4096, gpus=16, global_batch=64)
    terms = perf.performance_terms(model, gpu, plan)
    exchange = terms["breakdown_s"]["expert_parallel_comm"]
    # 48 MoE blocks x 4 exchanges of T x k x h x 2 bytes (x load factor) per micro-batch, 4 micro-batches
    send = 4096 * 8 * 2048 * 2 * act.routed_load_factor(model.architecture, plan)
    expected = 4 * 48 * 4 * comm.all_to_all_s(send, 8, 1, gpu, 8)
    assert exchange == pytest.approx(expected, rel=1e-12)
    assert "active parameters" in perf.estimate_performance(model, gpu, plan).notes[-1]
    dense = perf.performance_terms(load_model("llama-2-7b"), gpu, replace(plan, ep=1))
    assert "expert_parallel_comm" not in dense["breakdown_s"]


def test_solve_searches_ep_for_moe_models_only():
    from planner.search.solve import expert_parallel_degrees
    from planner.search.space import SearchSpace

    space = SearchSpace(
        gpus=(16,), tp=(1,), pp=(1,), cp=(1,), micro_batch=(1,), zero=(1,), checkpointing=("full",),
        precision=("bf16",), offload=("none",), engine=("megatron",), optimizer=("adamw",), loss=("standard",),
        flash_attention=(True,), compile=(False,), ep=(1, 2, 3, 8, 64, 256),
    )  # fmt: skip
    assert expert_parallel_degrees(space, load_model("mixtral-8x7b")).ep == (1, 2, 8)
    assert expert_parallel_degrees(space, load_model("deepseek-v3")).ep == (1, 2, 8, 64, 256)
    assert expert_parallel_degrees(space, load_model("llama-2-7b")).ep == (1,)


def test_expert_optimizer_work_shards_over_the_expert_data_parallel_group():
    """16 GPUs, EP 8: the experts' optimizer states shard 2 ways, not 16 (8 x the work per rank)."""
    assert perf.expert_shard_equivalent(1000.0, 300.0, _plan(ep=8)) == 700 + 300 * 8
    assert perf.expert_shard_equivalent(1000.0, 300.0, _plan()) == 1000.0  # EP 1: the group is dp x cp itself


NIC_GBS = 50.0 * comm.NETWORK_BUS_EFFICIENCY
"""One H100's own network interface (hardware/h100-80gb.yaml: 50 GB/s per GPU) at the ring's bus efficiency."""


def _bandwidth_only(plan, dense, experts):
    """(exposed, total) data-parallel seconds of `dense` parameters and `experts` routed-expert parameters,
    bandwidth only (no message counts), with no compute to hide behind."""
    share = perf.expert_data_parallel(load_model("qwen3-30b-a3b").architecture, plan, experts, 48)
    return perf._dp_exposed_s(plan, load_gpu("H100"), dense, 0.0, 0.0, experts=share)


def test_expert_collectives_cross_each_gpu_own_network_interface():
    """FSDP ZeRO-3 on 2 nodes of 8 H100s with EP 8: the experts' group (expert_shard_degree 2) has its two
    ranks 8 apart, one per node, so each GPU's expert shards go through its own NIC (45 GB/s), where the dense
    dp x cp ring of 16 (8 ranks per node) runs at the node's NVLink-capped bus bandwidth (8 NICs, 360 GB/s).
    Per micro-batch: the forward and backward bf16 gathers and the fp32 reduce-scatter, (n - 1) / n each."""
    plan = _plan(engine="fsdp", zero=3, ep=8)
    assert (plan.expert_shard_degree, perf.expert_data_parallel_stride(plan)) == (2, 8)
    dense, experts = 1e9, 3e9
    dense_s = (2 * 2 + 4) * dense * (15 / 16) / (360.0 * 1e9)
    expert_s = (2 * 2 + 4) * experts * (1 / 2) / (NIC_GBS * 1e9)
    exposed, total = _bandwidth_only(plan, dense, experts)
    assert total == pytest.approx(dense_s + expert_s, rel=1e-12)
    assert exposed == pytest.approx(total, rel=1e-12)
    # EP 1: the experts stay in the dense ring (torchtitan wraps them apart only with EP), timed as before.
    plain = _plan(engine="fsdp", zero=3)
    assert _bandwidth_only(plain, dense + experts, experts)[1] == pytest.approx(
        (2 * 2 + 4) * (dense + experts) * (15 / 16) / (360.0 * 1e9), rel=1e-12
    )


def test_expert_group_placement_follows_megatron_rank_order():
    """32 GPUs on 8-GPU nodes: EP 4 puts the expert-data-parallel ranks 4 apart, two per node (two NICs per
    ring); EP 16 spans two nodes and its expert group of 2 sits 16 apart, one per node."""
    ep4 = _plan(engine="fsdp", zero=3, ep=4, gpus=32)
    ep16 = _plan(engine="fsdp", zero=3, ep=16, gpus=32)
    assert (ep4.expert_shard_degree, perf.expert_data_parallel_stride(ep4)) == (8, 4)
    assert (ep16.expert_shard_degree, perf.expert_data_parallel_stride(ep16)) == (2, 16)
    dense_s = (2 * 2 + 4) * 1e9 * (31 / 32) / (360.0 * 1e9)
    assert _bandwidth_only(ep4, 1e9, 3e9)[1] == pytest.approx(
        dense_s + 8 * 3e9 * (7 / 8) / (2 * NIC_GBS * 1e9), rel=1e-12
    )
    assert _bandwidth_only(ep16, 1e9, 3e9)[1] == pytest.approx(dense_s + 8 * 3e9 * (1 / 2) / (NIC_GBS * 1e9), rel=1e-12)


def test_expert_collectives_once_per_step_under_the_distributed_optimizer_every_pass_under_fsdp():
    """Megatron's distributed optimizer reduce-scatters the experts' gradients and gathers their parameters
    once per step, whatever the accumulation; FSDP ZeRO-3 gathers and reduce-scatters them every micro-batch."""
    for engine, zero, grows in (("megatron", 1, False), ("fsdp", 3, True)):
        one, four = (_plan(engine=engine, zero=zero, ep=8, global_batch=16 * ga) for ga in (1, 4))
        assert four.grad_accum == 4
        totals = [_bandwidth_only(p, 1e9, 3e9)[1] for p in (one, four)]
        assert totals[1] == pytest.approx(totals[0] * (4 if grows else 1), rel=1e-12)


def test_deepseek_v3_fsdp_ep8_gathers_its_experts_through_one_nic():
    """The worked example of the fix: DeepSeek-V3 on 256 H100s, FSDP ZeRO-3, EP 8, one 4k sequence per GPU.
    Each GPU holds 58 MoE blocks x 32 experts x 3 x 7168 x 2048 = 81.7B expert parameters (163.5 GB in bf16);
    its expert group has 32 ranks, one per node, so each gather moves 31/32 of them through its 45 GB/s NIC
    (3.5 s), twice per micro-batch, and the fp32 reduce-scatter twice that: 14.1 s of the step's data-parallel
    communication (2.36 s in all when the experts were timed on the whole dp ring). Each of the three transfers
    is one collective per MoE block over 32 nodes, each paying NCCL's ring latency."""
    request = PlanRequest(
        model="deepseek-v3", gpu="H100", gpus=256, engine="fsdp", zero=3, ep=8, seq_len=4096,
        checkpointing="full", global_batch=256,
    )  # fmt: skip
    model, gpu = load_model("deepseek-v3"), load_gpu("H100")
    plan = make_plan(request, model, gpu)
    experts = 58 * 32 * 3 * 7168 * 2048
    assert max(s.expert_params for s in first_and_last_stage(model.architecture, plan)) == experts
    gather_s = experts * 2 * (31 / 32) / (NIC_GBS * 1e9)
    assert gather_s == pytest.approx(3.52, abs=0.01)
    terms = perf.performance_terms(model, gpu, plan)
    latency = comm.group_latency(gpu, 32, 8, 8).ring_gather_s * 58  # one gather per MoE block's experts
    dense = max(s.params for s in first_and_last_stage(model.architecture, plan)) - experts
    dense_total = perf._dp_exposed_s(
        plan, gpu, dense, 0.0, 0.0, messages=perf.data_parallel_messages(model.architecture, plan, dense, 61)
    )[1]
    expected = dense_total + 4 * gather_s + 3 * latency
    assert terms["data_parallel_comm_total_s"] == pytest.approx(expected, rel=1e-9)


def test_pipeline_stages_count_their_moe_blocks():
    """DeepSeek-V3 over 4 stages: 16, 15, 15, 15 blocks; the first holds the 3 dense ones (13 MoE), the last
    15 MoE blocks and the MTP depth's MoE block (trained by default under Megatron); memory and speed count
    the same."""
    v3 = load_model("deepseek-v3").architecture
    plan = _plan("deepseek-v3", gpus=64, pp=4, ep=16)
    first, last = first_and_last_stage(v3, plan)
    assert (first.num_layers, first.moe_layers, last.num_layers, last.moe_layers) == (16, 13, 15 + 1, 15 + 1)
    assert (rank_moe_blocks(v3, plan, 0), rank_moe_blocks(v3, plan, 3)) == (13, 15)
    assert first.local_expert_params == 16 * 3 * 2048 * 7168  # 256 / 16 experts, tp 1


def test_expert_tensor_parallelism_one_keeps_experts_whole_under_tp():
    """Megatron's --expert-tensor-parallel-size 1 with TP 2 on 16 GPUs: EP 8 is carved out of tp x cp x dp = 16
    ranks (dp alone is 8), experts stay whole, and each rank routes its own sequence shard: T x k / 2 copies
    of the full expert width; the experts' ZeRO group is 16 / 8 = 2 ranks."""
    arch = load_model("qwen3-30b-a3b").architecture
    plan = _plan(tp=2, ep=16, etp=1, seq_len=4096)
    assert (plan.dp, plan.expert_tp, plan.expert_shard_degree) == (8, 1, 1)
    stage = first_and_last_stage(arch, plan)[0]
    assert stage.local_expert_params == 8 * 3 * 768 * 2048  # 128 / 16 experts, whole
    assert act.routed_copies_share(plan) == 0.5
    capped = replace(plan, moe_capacity_factor=1.0)
    assert act.moe_mlp_bytes(arch, capped) == 608 / 2 + 8 * 0.5 * (2 * 2048 + 3 * 2 * 768 + 4)
    assert perf.tokens_per_expert(arch, capped) == 4096 * 8 * 0.5 * 16 / 128
    default = _plan(tp=2, ep=8, seq_len=4096)  # etp = tp: EP from dp x cp = 8
    assert (default.expert_tp, default.expert_shard_degree, act.routed_copies_share(default)) == (2, 1, 1.0)
    with pytest.raises(PlanError, match="--ep 16 does not divide dp x cp = 8"):
        _plan(tp=2, ep=16, seq_len=4096)
    with pytest.raises(PlanError, match="--etp 3 does not divide --tp 2"):
        _plan(tp=2, ep=2, etp=3)


def test_permute_passes_are_memory_bound_gathers():
    """Qwen3-30B-A3B, 4096 tokens, EP 1 (load 1), no recompute: 48 blocks x 2 passes x 2 directions, each
    reading or writing the 4096 tokens and their 8 x 4096 copies of 2048 bf16 values, at 80% of HBM."""
    model, gpu = load_model("qwen3-30b-a3b"), load_gpu("H100")
    plan = _plan(seq_len=4096)
    work = perf._stage_work(flops_per_token(model.architecture, plan), plan, model.architecture, 0, 0.5)
    per_pass = 2 * 2048 * (4096 + 8 * 4096)
    expected = 48 * 4 * per_pass / (gpu.hbm_bandwidth_gbps * 1e9 * 0.8)
    assert perf.permute_s(model.architecture, plan, gpu, work) == pytest.approx(expected, rel=1e-12)


def test_a_resolved_plan_round_trips_through_its_dict():
    """report.json stores Plan.to_dict(); etp 0 there means "equal to tp" and must read back as such."""
    for model, changes in (
        ("qwen3-30b-a3b", {"ep": 8}),
        ("qwen3-30b-a3b", {"tp": 2, "ep": 16, "etp": 1}),
        ("llama-2-7b", {}),
    ):
        plan = _plan(model, **changes)
        fields = {k: v for k, v in plan.to_dict().items() if k in PlanRequest.__dataclass_fields__}
        again = make_plan(PlanRequest(**{**fields, "model": model, "gpu": "H100"}), load_model(model), load_gpu("H100"))
        assert again == plan


def test_flex_dispatcher_sends_each_token_once_per_remote_node():
    """DeepEP / HybridEP across nodes: Qwen3-30B-A3B at EP 16 spans two 8-GPU nodes; a token's 8 experts (of 128,
    64 per node) miss the other node with probability C(64, 8) / C(128, 8), so it crosses the network
    1 - miss times where the all-to-all sends 8 x 8 / 16 = 4 copies. Inside one node nothing changes."""
    arch = load_model("qwen3-30b-a3b").architecture
    gpu = load_gpu("H100")
    plan = _plan(ep=16, seq_len=4096, moe_dispatcher="flex")
    miss = math.comb(64, 8) / math.comb(128, 8)
    assert perf.flex_network_share(arch, plan, gpu) == pytest.approx(2 * (1 - miss) / 8, rel=1e-12)
    assert perf.flex_network_share(arch, _plan(ep=8, gpus=8, seq_len=4096, moe_dispatcher="flex"), gpu) == 1.0
    send = 1e9
    network = gpu.node.inter_node_bandwidth_gbps_per_gpu * comm.NETWORK_BUS_EFFICIENCY * 1e9
    assert perf.flex_all_to_all_s(arch, plan, gpu, send) == pytest.approx(send * (1 - miss) / 8 / network, rel=1e-12)
    assert comm.all_to_all_s(send, 16, 1, gpu, 8) == pytest.approx(send * 8 / 16 / network, rel=1e-12)


def test_ep_overlap_hides_each_exchange_behind_the_other_micro_batchs_chunk():
    """Combined 1F1B: four equal exchanges, each beside one compute chunk of the other micro-batch (a/3, 2m/3,
    m/3, 2a/3 of the compute); a chunk longer than its exchange hides it but runs 20/132 slower meanwhile."""
    plan = _plan(ep=16, seq_len=4096, moe_ep_overlap=True)
    share = perf.OVERLAPPED_COMM_SM_SHARE
    # compute 12, half of it in the experts: chunks 2, 4, 2, 4; exchanges of 1 each are hidden
    assert perf.ep_overlap_exposed_s(plan, 4.0, 12.0, 6.0) == pytest.approx(4 * share)
    # exchanges of 3 each: exposed 1 + 0 + 1 + 0, plus the SM share of what overlaps (2 + 3 + 2 + 3)
    assert perf.ep_overlap_exposed_s(plan, 12.0, 12.0, 6.0) == pytest.approx(2 + 10 * share)
    assert perf.ep_overlap_exposed_s(replace(plan, moe_ep_overlap=False), 12.0, 12.0, 6.0) == 12.0


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"moe_ep_overlap": True, "ep": 1}, "--ep is 1"),
        ({"moe_ep_overlap": True, "ep": 8, "checkpointing": "full"}, "does not run with full recomputation"),
        ({"moe_ep_overlap": True, "ep": 8, "pp": 2}, "needs the interleaved schedule"),
        ({"moe_ep_overlap": True, "ep": 8, "engine": "fsdp", "zero": 3}, "is Megatron's"),
        ({"moe_dispatcher": "flex", "ep": 8, "engine": "fsdp", "zero": 3}, "the flex token dispatcher is Megatron's"),
        ({"model": "llama-2-7b", "moe_ep_overlap": True}, "--moe-ep-overlap apply to Mixture-of-Experts"),
    ],
)
def test_flex_and_ep_overlap_are_checked(changes, message):
    with pytest.raises(PlanError, match=message):
        _plan(**changes)


def test_ep_overlap_speeds_up_a_cross_node_run():
    """Qwen3-235B-A22B on 256 H100 with EP 32 over four nodes (Megatron-MoE-ModelZoo's layout): the overlap
    hides most of the exchanges, so the step is shorter, by less than the exchanges' whole time."""
    model, gpu = load_model("qwen3-235b-a22b"), load_gpu("H100")
    fields = dict(model="qwen3-235b-a22b", gpu="H100", gpus=256, tp=2, pp=8, ep=32, etp=1, engine="megatron")
    fields.update(zero=1, seq_len=4096, micro_batch=1, global_batch=2048, pp_schedule="interleaved", virtual_stages=4)
    plain = make_plan(PlanRequest(**fields, moe_dispatcher="flex"), model, gpu)
    overlapped = replace(plain, moe_ep_overlap=True)
    before, after = (perf.estimate_performance(model, gpu, p) for p in (plain, overlapped))
    assert after.step_time_s < before.step_time_s
    assert before.step_time_s - after.step_time_s < before.breakdown_s["expert_parallel_comm"]
    assert sum(after.breakdown_s.values()) == pytest.approx(after.step_time_s, rel=1e-9)


def test_uneven_pipeline_degrees_are_searched_only_where_no_even_one_exists():
    """DeepSeek-V3's 61 blocks divide by no pp above one: the search then tries every degree of the space with
    two or more blocks per stage (the earliest stages one block heavier); Qwen3-30B-A3B's 48 keep the divisors."""
    from planner.search.candidates import searched_pipeline_degrees

    assert searched_pipeline_degrees(61, [1, 2, 4, 8]) == [1, 2, 4, 8]
    assert searched_pipeline_degrees(61, [1, 2, 4, 8, 32, 64]) == [1, 2, 4, 8]
    assert searched_pipeline_degrees(48, [1, 2, 4, 8, 32]) == [1, 2, 4, 8]
    assert searched_pipeline_degrees(94, [1, 2, 4, 8]) == [1, 2]


def test_megatron_recompute_modules_free_their_outputs():
    """Megatron's output-discarding recompute modules, per token of a Qwen3-235B-A22B MoE block (h 4096, top-8
    of 128 experts 1536 wide), bf16, tp 2 with sequence parallelism, etp 1, EP 8 over tp x dp: layernorm frees the
    two norms' outputs (2 x 2 x 4096 / 2), moe_act each routed copy's fc2 input (2 x 1536 per copy, 8 x 1/2 x
    load copies); DeepSeek-V3's mla_up_proj frees the up-projected q, k, v."""
    arch = load_model("qwen3-235b-a22b").architecture
    base = dict(gpus=256, tp=2, pp=8, ep=8, etp=1, seq_len=4096, micro_batch=1, global_batch=2048)
    plain = _plan("qwen3-235b-a22b", **base)
    modules = replace(plain, recompute_modules=("layernorm", "moe_act"))
    copies = 8 * 0.5 * act.routed_load_factor(arch, plain)
    freed = 2 * 2 * 4096 / 2 + copies * 2 * 1536
    assert act.recompute_module_bytes(arch, modules, moe=True) == pytest.approx(freed, rel=1e-12)
    assert act.saved_bytes_per_layer(arch, plain, moe=True) - act.saved_bytes_per_layer(
        arch, modules, moe=True
    ) == pytest.approx(freed, rel=1e-12)
    assert act.recompute_module_bytes(arch, plain, moe=True) == 0.0
    v3 = load_model("deepseek-v3").architecture
    mla = _plan("deepseek-v3", gpus=64, seq_len=4096, recompute_modules="mla_up_proj")
    assert act.recompute_module_bytes(v3, mla, moe=True) == act._mla_attention_bytes(v3, mla)[1]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"recompute_modules": "norm"}, "unknown recompute module"),
        ({"recompute_modules": ["moe_act"], "checkpointing": "full"}, "full already recomputes"),
        ({"recompute_modules": "moe_act", "engine": "fsdp", "zero": 3}, "Megatron's fine-grained"),
        ({"recompute_modules": "mla_up_proj"}, "applies to latent-attention models"),
        ({"model": "llama-2-7b", "recompute_modules": "moe_act"}, "applies to Mixture-of-Experts"),
    ],
)
def test_recompute_modules_are_checked(changes, message):
    with pytest.raises(PlanError, match=message):
        _plan(**changes)
