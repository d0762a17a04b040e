"""What would make a plan fit: variants of the nearest misses, checked with the memory model."""

from dataclasses import replace

from planner.errors import PlanError
from planner.memory import estimate_memory
from planner.plan import Plan, PlanRequest, make_plan
from planner.search.candidates import CATEGORIES


def candidate_request(result, index: int) -> PlanRequest:
    """The PlanRequest of candidate `index` of a solve result."""
    cands = result.candidates
    categorical = dict(zip(CATEGORIES, cands.categories[cands.group[index]], strict=True))
    gpus = int(cands.gpus[index])
    return PlanRequest(
        model=result.model.definition_path or result.model.name,
        gpu=result.budget.gpu.name,
        gpus=gpus,
        gpus_per_node=min(gpus, result.budget.gpus_per_node),
        tp=int(cands.tp[index]),
        pp=int(cands.pp[index]),
        cp=int(cands.cp[index]),
        micro_batch=int(cands.micro_batch[index]),
        global_batch=result.global_batch,
        seq_len=result.request.seq_len,
        **categorical,
    )


def candidate_plan(result, index: int) -> Plan:
    return make_plan(candidate_request(result, index), result.model, result.budget.gpu)


def _variants(request: PlanRequest) -> list[tuple[str, PlanRequest]]:
    out = []
    if request.zero < 3:
        engine = request.engine if request.engine != "megatron" else "fsdp"
        out.append(
            (
                f"ZeRO-3 ({engine})",
                replace(
                    request,
                    zero=3,
                    engine=engine,
                    tp=request.tp if engine == "fsdp" else 1,
                    pp=request.pp if engine == "fsdp" else 1,
                ),
            )
        )
    if request.checkpointing != "full":
        out.append(("full activation checkpointing", replace(request, checkpointing="full")))
    if request.micro_batch > 1:
        out.append(("micro-batch 1", replace(request, micro_batch=1)))
    if request.offload == "none" and request.engine in ("deepspeed", "fsdp"):
        out.append(
            (
                "CPU offload of optimizer and parameters (ZeRO-3)",
                replace(request, offload="optimizer+params", zero=3, tp=1, pp=1),
            )
        )
    out.append(
        (f"{2 * request.gpus} GPUs", replace(request, gpus=2 * request.gpus, gpus_per_node=request.gpus_per_node))
    )
    return out


def nearest_miss_advice(result) -> list[str]:
    """For the nearest miss, each single change that makes it fit, as sentences."""
    if not result.rejections.nearest_misses:
        return []
    index = result.rejections.nearest_misses[0]
    request = candidate_request(result, index)
    advice = []
    for label, variant in _variants(request):
        try:
            plan = make_plan(variant, result.model, result.budget.gpu)
        except PlanError:
            continue
        memory = estimate_memory(result.model, result.budget.gpu, plan, result.request.safety_margin)
        if memory.fits:
            advice.append(f"with {label} the nearest miss fits (needs {memory.required_gib:.1f} GiB per GPU)")
    return advice
