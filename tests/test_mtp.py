"""Issue 14: DeepSeek-V3's multi-token-prediction (MTP) module as an architecture field, trained by Megatron plans
(its weights, activations and work on the last pipeline stage, --mtp-num-layers), and the first/last pipeline-rank
block counts recipes state for DeepSeek-V3's 61 blocks (Megatron's uneven pipeline and layouts)."""

from pathlib import Path

import pytest
from tests.conftest import plan_for

from planner.architecture import (
    expert_tensors,
    moe_layer_tensors,
    mtp_checkpoint_params,
    mtp_depth_params,
    numel,
    total_params,
)
from planner.catalog.hf_config import model_from_hf_config
from planner.errors import PlanError
from planner.launch.megatron import megatron_arguments, stated_pipeline_layout
from planner.memory import activations as act
from planner.memory.model import stage_phases
from planner.memory.stages import (
    first_and_last_stage,
    model_chunk_blocks,
    rank_moe_blocks,
    second_stage,
    stage_blocks,
)
from planner.performance import model as perf
from planner.performance.flops import flops_per_token

CONFIGS = Path(__file__).parent / "data" / "hf_configs"
H, V = 7168, 129280  # DeepSeek-V3 hidden size and vocabulary
V3_PLAN = dict(gpu="H100-80GB", gpus=256, pp=4, ep=64, engine="megatron", zero=1, seq_len=4096, global_batch=4096)


def test_catalog_keeps_the_mtp_depth_out_of_the_transformers_parameter_count():
    """transformers drops the MTP weights on load: 671.03B stays the total; the checkpoint's 685B on Hugging Face
    (DeepSeek-V3 README: 671B main model + 14B MTP module) is that plus one MTP depth with its own copies of the
    embedding and the LM head."""
    m, _, _ = plan_for("deepseek-v3", **V3_PLAN)
    arch = m.architecture
    assert arch.mtp_layers == 1
    assert total_params(arch) == 671_026_404_352
    moe_block = numel(moe_layer_tensors(arch)) + 256 * numel(expert_tensors(arch))
    assert mtp_depth_params(arch) == 3 * H + 2 * H * H + moe_block  # enorm, hnorm, final norm; eh_proj; block
    assert mtp_checkpoint_params(arch) == mtp_depth_params(arch) + 2 * V * H
    assert round((total_params(arch) + mtp_checkpoint_params(arch)) / 1e9) == 684  # 684.49B: "685B" rounded up
    assert round(mtp_checkpoint_params(arch) / 1e9, 1) == 13.5  # the README's "14B"


def test_config_json_import_reads_num_nextn_predict_layers():
    assert model_from_hf_config(CONFIGS / "deepseek-v3.json").architecture.mtp_layers == 1
    assert model_from_hf_config(CONFIGS / "deepseek-v2-lite.json").architecture.mtp_layers == 0


def test_megatron_trains_the_mtp_depth_by_default_and_other_engines_cannot():
    assert plan_for("deepseek-v3", **V3_PLAN)[2].mtp_layers == 1
    assert plan_for("deepseek-v3", **{**V3_PLAN, "mtp_layers": 0})[2].mtp_layers == 0
    fsdp = {**V3_PLAN, "engine": "fsdp", "zero": 3, "pp": 1}
    assert plan_for("deepseek-v3", **fsdp)[2].mtp_layers == 0
    with pytest.raises(PlanError, match="multi-token prediction is modelled for Megatron-Core"):
        plan_for("deepseek-v3", **fsdp, mtp_layers=1)
    with pytest.raises(PlanError, match="--mtp-layers must be 0 or 1 for deepseek-v3"):
        plan_for("deepseek-v3", **V3_PLAN, mtp_layers=2)
    with pytest.raises(PlanError, match="--mtp-layers must be 0 for qwen3-30b-a3b"):
        plan_for("qwen3-30b-a3b", gpu="H100-80GB", gpus=8, engine="megatron", zero=1, mtp_layers=1)


def test_the_last_stage_holds_the_mtp_depth_and_a_copy_of_the_embedding():
    """Per rank at pp 4, tp 1, ep 64: the MTP depth's MoE block (4 of 256 experts), its norms and eh_proj, and
    the embedding Megatron builds on the MTP stage; the first stage is unchanged."""
    m, _, with_mtp = plan_for("deepseek-v3", **V3_PLAN)
    _, _, without = plan_for("deepseek-v3", **{**V3_PLAN, "mtp_layers": 0})
    arch = m.architecture
    first, last = first_and_last_stage(arch, with_mtp)
    first0, last0 = first_and_last_stage(arch, without)
    assert first.params == first0.params
    block = numel(moe_layer_tensors(arch)) + 4 * numel(expert_tensors(arch))
    assert last.params - last0.params == block + (3 * H + 2 * H * H) + V * H
    assert last.expert_params - last0.expert_params == 4 * numel(expert_tensors(arch))  # sharded as experts


def test_the_mtp_loss_keeps_its_fp32_softmax_while_the_main_loss_runs():
    """Megatron computes the MTP loss first; its vocab-parallel cross-entropy keeps 4 V / tp bytes per token."""
    m, _, with_mtp = plan_for("deepseek-v3", **V3_PLAN)
    _, _, without = plan_for("deepseek-v3", **{**V3_PLAN, "mtp_layers": 0})
    arch = m.architecture
    tokens = 4096
    loss = stage_phases(m, with_mtp, first_and_last_stage(arch, with_mtp)[1])["loss"]["logits_and_loss"]
    loss0 = stage_phases(m, without, first_and_last_stage(arch, without)[1])["loss"]["logits_and_loss"]
    assert loss - loss0 == 4 * V * tokens
    assert act.mtp_prelude_bytes(arch, with_mtp) == 2 * (2 * H + 4) + 2 * 2 * H + act.final_norm_bytes(arch, with_mtp)


def test_mtp_flops_are_one_more_block_eh_proj_and_one_more_head_pass():
    """Per token, forward x 3: the MoE block's attention, router and shared expert, 8 routed experts, the MLA
    score and weighted sum over the 4096-token sequence, eh_proj (2h x h) and the LM head (V x h)."""
    m, _, plan = plan_for("deepseek-v3", **V3_PLAN)
    arch = m.architecture
    mtp = flops_per_token(arch, plan).mtp
    block = sum(t.numel for t in moe_layer_tensors(arch) if t.is_matrix)
    assert mtp.block_matmuls == 3 * 2 * (block + 2 * H * H)
    assert mtp.expert_matmuls == 3 * 2 * 8 * 3 * H * 2048
    assert mtp.attention == 3 * 2 * 128 * (192 + 128) * 4096
    assert mtp.lm_head == 3 * 2 * V * H


def test_mtp_flops_match_megatron_bridges_published_with_and_without_mtp():
    """Megatron-Bridge publishes model TFLOP/s with tokens/s for DeepSeek-V3 on 256 GB200 (PP 4 x VP 4, seq 4096):
    1,276 at 4,912 tokens/s with MTP (26.08, docs/performance-summary.md) and 782 at 3,139 without (25.11,
    docs/performance-summary-archive.md, both @4ab94dfad): 10.65 GFLOP per token apart. The MTP depth adds
    10.69 here (Megatron's num_floating_point_operations counts the MTP layer, eh_proj and one more logit
    product); the published figures are rounded to 1 TFLOP/s (0.1 GFLOP per token)."""
    m, _, with_mtp = plan_for("deepseek-v3", **V3_PLAN)
    _, _, without = plan_for("deepseek-v3", **{**V3_PLAN, "mtp_layers": 0})
    arch = m.architecture
    added = flops_per_token(arch, with_mtp).model - flops_per_token(arch, without).model
    published = 1276e12 / 4912 - 782e12 / 3139
    assert added == pytest.approx(published, rel=0.01)


def test_the_last_stage_runs_the_mtp_head_pass():
    m, _, plan = plan_for("deepseek-v3", **V3_PLAN)
    arch = m.architecture
    flops = flops_per_token(arch, plan)
    causal = perf.causal_attention_fraction(arch, plan)
    first, last = (perf._stage_work(flops, plan, arch, stage, causal) for stage in (0, 3))
    assert first.head_flops == 0
    assert last.head_flops == 2 * flops.lm_head
    assert (last.layers, last.moe_layers) == (15 + 1, 15 + 1)


def test_stated_split_places_the_recipes_blocks():
    """dgxc DeepSeek-V3 on 4 ranks: 15 blocks on the first, 14 on the last, 16 on each between."""
    m, _, plan = plan_for("deepseek-v3", **V3_PLAN, first_stage_layers=15, last_stage_layers=14)
    assert [int(stage_blocks(61, plan, s)) for s in range(4)] == [15, 16, 16, 14]
    assert [int(rank_moe_blocks(m.architecture, plan, s)) for s in (0, 1, 3)] == [12, 16, 14]


def test_stated_interleaved_split_is_megatron_bridges_layout():
    """Megatron-Bridge's H100 DeepSeek-V3 recipe (25.09): 'Et|(tt|)*30mL' on pp 8 x V 4: rank 0 holds 1 + 3 x 2
    = 7 blocks, the last rank 3 x 2 = 6, the others 8."""
    h100 = dict(gpu="H100-80GB", gpus=1024, tp=2, pp=8, ep=64, etp=1, engine="megatron", zero=1, seq_len=4096)
    m, _, plan = plan_for(
        "deepseek-v3",
        **h100,
        global_batch=8192,
        pp_schedule="interleaved",
        virtual_stages=4,
        first_stage_layers=7,
        last_stage_layers=6,
    )
    layout = stated_pipeline_layout(61, plan)
    assert layout.replace("t*2", "tt").replace("t*1", "t") == "Et|" + "tt|" * 30 + "mL"
    args = megatron_arguments(m, plan)
    assert args[args.index("--pipeline-model-parallel-layout") + 1] == layout
    assert args[args.index("--mtp-num-layers") + 1] == "1"
    assert "--num-layers-per-virtual-pipeline-stage" not in args


def test_interleaved_ranks_count_their_moe_blocks_chunk_by_chunk():
    """The same H100 layout: chunk 0 holds block 0, chunks 1-30 two blocks each (chunk c from block 2c - 1), chunk
    31 none. Rank r holds chunks r, r + 8, r + 16, r + 24: rank 0 blocks 0, 15-16, 31-32, 47-48 (1 of the 3 dense
    blocks, 6 MoE), rank 1 blocks 1-2, 17-18, 33-34, 49-50 (2 dense, 6 MoE), rank 7 blocks 13-14, 29-30, 45-46
    (6 MoE; the MTP depth's MoE block joins it), ranks 2-6 8 MoE each (rank 2: 3-4, 19-20, 35-36, 51-52). Memory and
    speed count the same; their middle position, rank 1's 8 blocks, carries the most MoE blocks of ranks 1-6."""
    h100 = dict(gpu="H100-80GB", gpus=1024, tp=2, pp=8, ep=64, etp=1, engine="megatron", zero=1, seq_len=4096)
    layout = dict(pp_schedule="interleaved", virtual_stages=4, first_stage_layers=7, last_stage_layers=6)
    m, _, plan = plan_for("deepseek-v3", **h100, global_batch=8192, **layout)
    arch = m.architecture
    assert [int(rank_moe_blocks(arch, plan, r)) for r in range(8)] == [6, 6, 8, 8, 8, 8, 8, 6]
    assert [int(model_chunk_blocks(61, plan, c)[0]) for c in (0, 1, 8, 9, 31)] == [0, 1, 15, 17, 61]
    first, last = first_and_last_stage(arch, plan)
    second = second_stage(arch, plan)
    assert (first.num_layers, first.moe_layers) == (7, 6)
    assert (second.num_layers, second.moe_layers) == (8, 8)
    assert (last.num_layers, last.moe_layers) == (6 + 1, 6 + 1)
    flops = flops_per_token(arch, plan)
    causal = perf.causal_attention_fraction(arch, plan)
    assert [perf._stage_work(flops, plan, arch, s, causal).moe_layers for s in (0, 1, 7)] == [6, 8, 6 + 1]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"first_stage_layers": 15}, "--first-stage-layers and --last-stage-layers go together"),
        ({"first_stage_layers": 15, "last_stage_layers": 15}, "leave 31 of the 61 blocks"),
        # a rank without blocks would leave the model nothing to scale (0/0): at least one block per rank
        ({"first_stage_layers": 0, "last_stage_layers": 14}, "block count from 1 to 61, got 0"),
        ({"first_stage_layers": 30, "last_stage_layers": 30}, "leave 1 of the 61 blocks for the 2 ranks between"),
        ({"first_stage_layers": 15, "last_stage_layers": 14, "pp": 1}, "need pipeline parallelism"),
        (
            {"first_stage_layers": 15, "last_stage_layers": 14, "engine": "fsdp", "zero": 3},
            "stated first/last pipeline-stage blocks are Megatron's",
        ),
        (
            {"first_stage_layers": 9, "last_stage_layers": 8, "pp_schedule": "interleaved", "virtual_stages": 2},
            "middle ranks' 22 blocks must split into equal chunks and the first \\(9\\) and last \\(8\\)",
        ),
    ],
)
def test_stated_split_errors_are_one_line(changes, message):
    with pytest.raises(PlanError, match=message):
        plan_for("deepseek-v3", **{**V3_PLAN, "global_batch": 4096 * 4, **changes})
