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
