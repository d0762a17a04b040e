"""Ranking sanity (issue 10, item 8): the search's figures stay inside what was ever measured.

1. Meta's Llama-3.1-405B layout on 8,192 H100 (Llama 3 paper, arXiv 2407.21783, Table 4 and Sec. 3.3.2:
   TP 8, CP 1, PP 16 with an interleaved schedule, DP 64, sequence 8192, 16M tokens per step, no activation
   checkpointing, 430 TFLOP/s per GPU) fits and is predicted within 10% of its published speed.
2. No top plan of a few solves claims a model FLOP utilisation more than 5 points above the highest one
   measured on its GPU family in its precision (every scored validation row, under the planner's own FLOP
   convention)."""

from pathlib import Path

import pytest

from planner import api
from planner.errors import PlanError
from planner.launch.megatron import megatron_arguments
from planner.launch.torchtitan import torchtitan_module
from planner.performance import estimate_performance
from planner.performance.model import matmul_dtype
from planner.validate.throughput import load_throughput_cases

DATA = Path(__file__).parent / "data"
CASES = [DATA / "throughput_cases.yaml", DATA / "external" / "throughput_cases.yaml"]
FAMILY = {"A100-40GB": "ampere", "A100-80GB": "ampere", "A800-80GB": "ampere", "H100-80GB": "hopper"}
FAMILY |= {"H800-80GB": "hopper", "H100-96GB": "hopper", "H200": "hopper", "H100-PCIe": "hopper"}

LLAMA3_405B_TOKENS_PER_S_PER_GPU = 163
"""tests/data/throughput_cases.yaml meta_llama3-367: the published 430 TFLOP/s per GPU over the paper's FLOPs
per token, 6N + 12 L h s (the row's derivation, kept with it)."""


def meta_405b(**changes):
    plan = dict(gpu="H100-80GB", gpus=8192, tp=8, pp=16, cp=1, zero=2, engine="fsdp", micro_batch=1)
    plan |= dict(global_batch=2048, seq_len=8192, checkpointing="none", precision="bf16")
    # 126 blocks + embedding + loss = 128 slots = 16 stages x 8 chunks of one: the paper's first chunk holds
    # only the embedding and its last only the output projection and the loss, so V = 8.
    plan |= dict(pp_schedule="interleaved", virtual_stages=8)
    return api.estimate("llama-3.1-405b", **(plan | changes))


@pytest.mark.xfail(
    strict=True,
    reason="memory side (issue 10 item 6): Meta's schedule keeps fewer micro-batches' activations live than "
    "the interleaved 1F1B the memory model holds (flexible N, early deallocation); predicted 206 GiB",
)
def test_meta_405b_layout_fits():
    estimate = meta_405b()
    assert estimate.memory.fits, f"{estimate.memory.peak_gib:.1f} GiB"


def test_meta_405b_layout_runs_within_10_percent_of_its_published_speed():
    predicted = meta_405b().performance.tokens_per_s_per_gpu
    assert predicted == pytest.approx(LLAMA3_405B_TOKENS_PER_S_PER_GPU, rel=0.10)


def highest_measured_mfu() -> dict[tuple[str, str], float]:
    """(GPU family, matmul dtype) -> the highest MFU among the scored validation rows, measured tokens/s
    times the planner's model FLOPs per token over the GPU's dense peak as it runs."""
    best: dict[tuple[str, str], float] = {}
    for path in CASES:
        for case in load_throughput_cases(path):
            model, gpu, plan = case.resolve()
            if gpu.name not in FAMILY or plan.method != "full":
                continue
            estimate = estimate_performance(model, gpu, plan)
            mfu = estimate.mfu * case.measured.tokens_per_s_per_gpu / estimate.tokens_per_s_per_gpu
            key = (FAMILY[gpu.name], matmul_dtype(plan))
            best[key] = max(best.get(key, 0.0), mfu)
    return best


@pytest.mark.parametrize(
    ("model", "budget", "options"),
    [
        ("llama-3.1-8b", "8xH100", {"seq_len": 8192, "global_batch": 64}),
        ("llama-3.1-70b", "64xH100", {"seq_len": 8192, "global_batch": 128, "pins": {"precision": "fp8"}}),
        ("llama-2-13b", "16xA100", {"seq_len": 4096, "global_batch": 64}),
    ],
)
def test_no_top_plan_beats_the_best_measured_mfu_by_more_than_5_points(model, budget, options):
    best = highest_measured_mfu()
    top = api.solve(model, budget, top=1, **options).plans[0]
    key = (FAMILY[top.gpu.name], matmul_dtype(top.plan))
    assert top.performance.mfu <= best[key] + 0.05, f"{top.performance.mfu:.3f} vs measured {best[key]:.3f}"


def test_the_interleaved_split_may_count_embedding_and_loss_as_layers():
    for virtual in (2, 4, 8):
        assert meta_405b(virtual_stages=virtual).plan.virtual_stages == virtual  # 128 slots / (16 x V)
    with pytest.raises(PlanError, match="use --virtual-stages from 2, 4, 8"):
        meta_405b(virtual_stages=3)


def test_meta_405b_launch_configs_count_embedding_and_loss_as_layers():
    megatron = meta_405b(engine="megatron", zero=1)
    args = megatron_arguments(megatron.model, megatron.plan)
    assert {"--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split"} <= set(args)
    assert args[args.index("--num-layers-per-virtual-pipeline-stage") + 1] == "1"
    assert "--pipeline-model-parallel-layout" not in args
    titan = meta_405b()
    module = torchtitan_module(titan.model, titan.plan)
    for field in ("first_stage_less_layers", "last_stage_less_layers", "layers_per_stage"):
        assert f"config.parallelism.pipeline_parallel_{field} = 1" in module
