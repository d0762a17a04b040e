"""Plan resolution: derived degrees and every impossible plan rejected with a fix."""

import pytest
from tests.conftest import plan_for

from planner.errors import PlanError


def test_dp_and_grad_accum_are_derived():
    _, _, plan = plan_for(gpus=16, tp=2, pp=2, micro_batch=2, global_batch=64, seq_len=4096, engine="megatron", zero=1)
    assert plan.dp == 4 and plan.grad_accum == 8 and plan.shard_degree == 4
    assert plan.sequence_parallel and plan.nodes == 2
    assert plan.tokens_per_micro_batch == 8192


def test_default_global_batch_means_no_accumulation():
    _, _, plan = plan_for(gpus=8, micro_batch=3)
    assert plan.global_batch == 24 and plan.grad_accum == 1


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(gpus=8, tp=3), "does not divide --gpus 8"),
        (dict(gpus=12, tp=12, model="llama-2-70b"), "must divide the 64 attention heads and 8 key/value heads"),
        (dict(gpus=8, micro_batch=3, global_batch=20), "not a multiple of micro_batch \\* dp"),
        (dict(gpus=0), "at least 1"),
        (dict(micro_batch=-2), "at least 1"),
        (dict(seq_len=10**9), "beyond what this tool models"),
        (dict(gpus=2, pp=2, engine="deepspeed"), "DeepSpeed pipeline parallelism"),
        (dict(zero=1, engine="fsdp", gpus=2), "FSDP has no optimizer-only sharding"),
        (dict(zero=3, engine="megatron", gpus=2), "distributed optimizer is ZeRO-1"),
        (dict(offload="optimizer", zero=0), "optimizer offload needs ZeRO-1"),
        (dict(gpu="V100-32GB", precision="bf16"), "no bf16 tensor cores"),
        (dict(precision="fp8", gpu="A100", engine="fsdp"), "no fp8 tensor cores"),
        (dict(precision="fp8", gpu="H100"), "FP8 training is modelled for Megatron"),
        (dict(cp=2, gpus=2, flash_attention=False, engine="megatron"), "context parallelism needs flash"),
        (dict(checkpointing="selective"), "checkpoint whole layers only"),
        (dict(zero=7), "--zero must be 0, 1, 2 or 3"),
        (dict(precision="bf17"), "--precision must be one of"),
        (dict(pp=100, gpus=100, engine="megatron"), "exceeds the 32 layers"),
    ],
)
def test_impossible_plans_are_rejected(kwargs, message):
    model = kwargs.pop("model", "llama-2-7b")
    with pytest.raises(PlanError, match=message):
        plan_for(model=model, **kwargs)


def test_tp_may_split_grouped_query_heads_evenly():
    _, _, plan = plan_for(model="llama-2-70b", engine="megatron", gpus=8, tp=8)
    assert plan.tp == 8 and plan.dp == 1


def test_uneven_pipeline_split_is_allowed_and_puts_extra_layers_first():
    from planner.memory.stages import layers_on_stage

    assert [layers_on_stage(126, 8, s) for s in range(8)] == [16] * 6 + [15] * 2


def _rank_blocks(plan, num_layers):
    from planner.memory.stages import stage_blocks

    return [int(stage_blocks(num_layers, plan, rank)) for rank in range(plan.pp)]


def test_rank_blocks_come_from_the_chunk_map():
    """Each rank's blocks are the sum of its model chunks (rank, rank + pp, ...)."""
    # 1F1B, 126 blocks on pp 8: 126 = 8 x 15 + 6, the first 6 ranks one more (as layers_on_stage).
    _, _, plan = plan_for(model="llama-3.1-405b", gpu="H100-80GB", gpus=64, tp=8, pp=8, engine="megatron", zero=1)
    assert _rank_blocks(plan, 126) == [16] * 6 + [15] * 2
    # Stated 1F1B split, 32 blocks on pp 4: first 7, last 7, the 18 between over 2 ranks = 9 each.
    stated = dict(gpus=4, pp=4, engine="megatron", zero=1, first_stage_layers=7, last_stage_layers=7)
    _, _, plan = plan_for(**stated)
    assert _rank_blocks(plan, 32) == [7, 9, 9, 7]
    # Stated interleaved split, pp 4 x V 2, first 6, last 6: the middle ranks' 10 make chunks of 5; rank 0's
    # chunks are 6 - 5 = 1 and 5, the last rank's 5 and 1; still 6, 10, 10, 6.
    interleaved = stated | dict(
        first_stage_layers=6, last_stage_layers=6, pp_schedule="interleaved", virtual_stages=2, global_batch=4
    )
    _, _, plan = plan_for(**interleaved)
    assert _rank_blocks(plan, 32) == [6, 10, 10, 6]
    # Llama 3.1 405B, 126 blocks on pp 16 x V 8 (Meta's layout): 126 + 2 = 128 one-layer slots in 128 chunks,
    # the first chunk only the embedding, the last only the loss: rank 0 holds 7 blocks, rank 15 7, the others 8
    # (the front-loaded split would give 126 = 16 x 7 + 14: 8 on ranks 0-13, 7 on 14-15).
    meta = dict(
        gpus=128, tp=8, pp=16, engine="megatron", zero=1, pp_schedule="interleaved", virtual_stages=8, global_batch=16
    )
    _, _, plan = plan_for(model="llama-3.1-405b", gpu="H100-80GB", **meta)
    assert _rank_blocks(plan, 126) == [7] + [8] * 14 + [7]
