"""Plans the launch-config tests write configs for: the two top plans the issue names (from `solve`) and
hand-made plans that reach every branch of the writers (ZeRO stages, offload, precisions, TP/PP/CP)."""

from functools import cache

from tests.conftest import plan_for

from planner.estimate import Estimate, evaluate
from planner.launch import SearchContext, build_launch_folder
from planner.launch.bundle import TARGETS
from planner.search.details import plan_estimates
from planner.search.solve import SolveRequest, solve

TOP_PLAN_SEARCHES = {
    "13b-16xA100": SolveRequest(model="13b", budget="16xA100"),
    "70b-64xH100": SolveRequest(model="70b", budget="64xH100"),
}

HAND_PLANS = {
    # name: (model, gpu, PlanRequest fields)
    "ds-zero1-offload-fp16": (
        "llama-2-7b",
        "A100-80GB",
        dict(
            gpus=8, zero=1, micro_batch=4, global_batch=64, precision="fp16", checkpointing="full", offload="optimizer"
        ),
    ),
    "ds-zero2-autotp": ("llama-2-13b", "A100-80GB", dict(gpus=8, tp=2, zero=2, micro_batch=2, global_batch=32)),
    "ds-zero3-offload-all-pure-bf16": (
        "llama-2-70b",
        "A100-80GB",
        dict(
            gpus=16,
            zero=3,
            micro_batch=1,
            global_batch=64,
            precision="pure-bf16",
            offload="optimizer+params",
            checkpointing="full",
        ),
    ),
    "ds-zero2-offload-sgd": (
        "llama-2-7b",
        "A100-80GB",
        dict(gpus=8, zero=2, micro_batch=2, global_batch=32, optimizer="sgd", offload="optimizer"),
    ),
    "ds-zero0": ("llama-3.2-1b", "A100-80GB", dict(gpus=4, zero=0, micro_batch=4, global_batch=32)),
    "fsdp-zero2-compile": (
        "llama-3.1-8b",
        "H100",
        dict(engine="fsdp", gpus=8, zero=2, micro_batch=1, global_batch=64, compile=True, checkpointing="full"),
    ),
    "fsdp-ddp": ("llama-3.2-1b", "A100-80GB", dict(engine="fsdp", gpus=8, zero=0, micro_batch=2, global_batch=32)),
    "fsdp-tp-pp-fp8": (
        "llama-3.1-70b",
        "H100",
        dict(
            engine="fsdp",
            gpus=32,
            tp=4,
            pp=2,
            zero=3,
            micro_batch=1,
            global_batch=64,
            precision="fp8",
            checkpointing="selective",
            seq_len=8192,
        ),
    ),
    "fsdp-offload-llama2": (
        "llama-2-7b",
        "A100-80GB",
        dict(engine="fsdp", gpus=8, zero=3, micro_batch=2, global_batch=64, offload="optimizer+params", loss="chunked"),
    ),
    "megatron-tp-pp": (
        "llama-2-70b",
        "H100",
        dict(
            engine="megatron", gpus=64, tp=4, pp=4, zero=1, micro_batch=1, global_batch=128, checkpointing="selective"
        ),
    ),
    "megatron-cp-full": (
        "mistral-7b",
        "H100",
        dict(
            engine="megatron",
            gpus=16,
            tp=2,
            cp=2,
            zero=1,
            micro_batch=1,
            global_batch=32,
            seq_len=16384,
            checkpointing="full",
            offload="optimizer",
        ),
    ),
    "megatron-uneven-pp": (
        "llama-2-13b",
        "A100-80GB",
        dict(engine="megatron", gpus=24, tp=2, pp=3, zero=0, micro_batch=1, global_batch=48, precision="fp16"),
    ),
    "megatron-interleaved-bf16-reduce": (
        "llama-3.1-70b",
        "H100",
        dict(
            engine="megatron",
            gpus=64,
            tp=4,
            pp=4,
            cp=2,
            zero=1,
            micro_batch=1,
            global_batch=128,
            seq_len=8192,
            pp_schedule="interleaved",
            virtual_stages=5,
            grad_reduce_bf16=True,
        ),
    ),
    "megatron-every-2nd-block": (
        "llama-2-13b",
        "A100-80GB",
        dict(
            engine="megatron",
            gpus=16,
            tp=2,
            pp=2,
            zero=1,
            micro_batch=2,
            global_batch=64,
            checkpointing="full",
            checkpointing_every=2,
            overlap_grad_reduce=False,
            overlap_param_gather=False,
        ),
    ),
    "fsdp-pp-interleaved": (
        "llama-3.1-8b",
        "H100",
        dict(
            engine="fsdp",
            gpus=16,
            pp=2,
            zero=3,
            micro_batch=1,
            global_batch=32,
            pp_schedule="interleaved",
            virtual_stages=2,
        ),
    ),
    "fsdp-every-3rd-block": (
        "llama-3.1-8b",
        "H100",
        dict(
            engine="fsdp", gpus=8, zero=3, micro_batch=2, global_batch=32, checkpointing="full", checkpointing_every=3
        ),
    ),
    "fsdp1-hf-trainer": (
        "llama-3-8b",
        "A100-80GB",
        dict(
            engine="fsdp",
            gpus=4,
            zero=3,
            micro_batch=8,
            global_batch=64,
            seq_len=512,
            checkpointing="full",
            fsdp_version=1,
            grad_reduce_bf16=True,
        ),
    ),
    "qwen-fsdp": ("qwen2.5-7b", "A100-80GB", dict(engine="fsdp", gpus=8, zero=3, micro_batch=1, global_batch=32)),
}


@cache
def top_plan(name: str) -> tuple[Estimate, SearchContext]:
    """The rank-1 plan of one of the issue's searches, and the context its variants search in."""
    request = TOP_PLAN_SEARCHES[name]
    result = solve(request)
    best = int(result.feasible[0])
    context = SearchContext(model_ref=request.model, budget=request.budget)
    return plan_estimates(result, [best])[best], context


@cache
def hand_estimate(name: str) -> Estimate:
    model, gpu, fields = HAND_PLANS[name]
    m, g, plan = plan_for(model, gpu, **fields)
    return evaluate(m, g, plan)


@cache
def top_folder(name: str):
    estimate, context = top_plan(name)
    return build_launch_folder(estimate, TARGETS, context, f"rank 1 of planner solve {name}")
