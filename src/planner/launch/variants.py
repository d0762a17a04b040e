"""The chosen plan as each family of launch configs runs it, re-estimated for that code.

A ranked plan is predicted for one engine's bookkeeping (DeepSpeed on Hugging Face model code, FSDP2,
or Megatron-LM). The launch folder also holds configs for the other engines, and they do not all run
the same layout: Hugging Face models checkpoint whole layers only, FSDP has no optimizer-only sharding,
Megatron's distributed optimizer is ZeRO-1, the Trainer has no pipeline parallelism. Each config family
therefore gets its own *variant*: the plan translated with the fewest changes the engine needs, checked
by the same rules and models as `planner estimate`; when that translation does not fit in memory (or
cannot exist), the best plan of that engine on the same GPUs, global batch and sequence length found
by the search. Every variant carries its own memory and throughput prediction, so no config is handed
out without one.
"""

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from planner.catalog import GpuSpec, ModelSpec
from planner.errors import PlannerError
from planner.estimate import Estimate, evaluate
from planner.plan import Plan, PlanRequest, make_plan

Code = Literal["deepspeed", "fsdp-hf", "fsdp", "megatron"]
CODES: tuple[str, ...] = ("deepspeed", "fsdp-hf", "fsdp", "megatron")
CODE_TITLES = {
    "deepspeed": "DeepSpeed on Hugging Face model code (DeepSpeed launcher, Accelerate, Trainer)",
    "fsdp-hf": "FSDP on Hugging Face model code (Accelerate, Trainer; the plan's FSDP version)",
    "fsdp": "FSDP2 on PyTorch-native model code (torchtitan, torchrun + examples/train.py)",
    "megatron": "Megatron-LM (TransformerEngine layers)",
}
CODE_ENGINE = {"deepspeed": "deepspeed", "fsdp-hf": "fsdp", "fsdp": "fsdp", "megatron": "megatron"}

Origin = Literal["plan", "translated", "searched", "none"]

_COMPARED = ("engine", "gpus", "tp", "pp", "cp", "zero", "micro_batch", "grad_accum", "checkpointing")
_COMPARED += ("precision", "offload", "sequence_parallel", "compile", "optimizer", "loss", "flash_attention")
_COMPARED += ("flash_attention_version", "pp_schedule", "virtual_stages", "grad_reduce_bf16", "overlap_grad_reduce")
_COMPARED += ("overlap_param_gather", "checkpointing_every", "fsdp_version", "ep", "etp", "moe_capacity_factor")
_COMPARED += ("moe_dispatcher", "tp_comm_overlap", "moe_ep_overlap", "recompute_modules", "mtp_layers")
_COMPARED += ("first_stage_layers", "last_stage_layers")
_COMPARED += ("fp8_param_gather",)


@dataclass(frozen=True)
class Variant:
    """One engine's version of the chosen plan."""

    code: str
    """Which code runs it, one of CODES: `deepspeed` (Hugging Face models under DeepSpeed), `fsdp-hf`
    (Hugging Face models under FSDP2 via Accelerate or the Trainer), `fsdp` (PyTorch-native models under
    FSDP2: torchtitan, examples/train.py), `megatron`."""
    estimate: Estimate | None
    """Prediction for the variant's own plan; None when the engine cannot run this job (see `reason`)."""
    origin: Origin
    """`plan`: the chosen plan itself; `translated`: the plan with the changes the engine needs;
    `searched`: the translation did not fit, so the best plan for this engine on the same GPUs and batch;
    `none`: no plan for this engine fits."""
    changes: tuple[str, ...] = ()
    """How the variant differs from the chosen plan, one `field: old -> new` per difference."""
    reason: str = ""
    """Why the variant differs (or does not exist)."""

    @property
    def plan(self) -> Plan:
        if self.estimate is None:
            raise PlannerError(f"no {self.code} variant: {self.reason}", "pick another launch target")
        return self.estimate.plan


def plan_changes(chosen: Plan, other: Plan) -> tuple[str, ...]:
    """`field: old -> new` for every plan field that differs (in a fixed order)."""
    out = []
    for name in _COMPARED:
        a, b = getattr(chosen, name), getattr(other, name)
        if a != b:
            out.append(f"{name}: {_show(a)} -> {_show(b)}")
    return tuple(out)


def _show(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def translated_request(plan: Plan, model: ModelSpec, code: str) -> tuple[PlanRequest, str]:
    """The plan re-expressed for `code`, and the engine facts that forced each change."""
    values = {f.name: getattr(plan, f.name) for f in fields(PlanRequest) if hasattr(plan, f.name)}
    values.update(model=model.name, sequence_parallel=None, etp=plan.etp or None)  # Plan.etp 0 = "as tp"
    why: list[str] = []
    engine = CODE_ENGINE[code]
    values["engine"] = engine
    if code in ("deepspeed", "fsdp-hf") and plan.checkpointing == "selective":
        values["checkpointing"] = "full"
        why.append("Hugging Face models checkpoint whole layers only")
    if code in ("deepspeed", "fsdp-hf") and plan.precision == "fp8":
        values["precision"] = "bf16"
        why.append("FP8 is modelled for Megatron (TransformerEngine) and torchtitan (torchao) only")
    if engine == "fsdp" and plan.zero == 1:
        values["zero"] = 2
        why.append("FSDP has no optimizer-only sharding")
    if code == "fsdp-hf" and plan.zero == 0:
        values["zero"] = 2
        why.append("the Accelerate and Trainer FSDP configs shard (SHARD_GRAD_OP is the closest to DDP)")
    if engine == "fsdp" and plan.offload == "optimizer":
        values.update(zero=3, offload="optimizer+params")
        why.append("FSDP offloads parameters, gradients and optimizer together")
    if engine == "megatron":
        if plan.zero > 1:
            values["zero"] = 1
            why.append("Megatron's distributed optimizer is ZeRO-1")
        if plan.offload == "optimizer+params":
            values["offload"] = "optimizer"
            why.append("Megatron offloads the optimizer only")
        if plan.compile:
            values["compile"] = False
            why.append("Megatron runs TransformerEngine kernels, not torch.compile")
    if code in ("deepspeed", "fsdp-hf") and (plan.ep > 1 or plan.etp or plan.moe_capacity_factor is not None):
        values.update(ep=1, etp=None, moe_capacity_factor=None, moe_dispatcher="alltoall", moe_ep_overlap=False)
        why.append(
            "Hugging Face MoE models under DeepSpeed or FSDP have no expert parallelism and route dropless: every "
            "rank of the ZeRO group holds all experts"
        )
    if code == "fsdp-hf" and (plan.pp > 1 or plan.tp > 1 or plan.cp > 1):
        values.update(tp=1, pp=1, cp=1, pp_schedule="1f1b", virtual_stages=1)
        why.append("the Trainer and Accelerate FSDP launch data parallelism only here")
    _translate_engine_options(plan, code, values, why)
    values["global_batch"] = plan.global_batch
    return PlanRequest(**values), "; ".join(why)


def _accelerate_reduces_in_low_precision(precision: str) -> bool | None:
    """Accelerate's FSDP mixed-precision policy reduces in the compute dtype (reduce_dtype = param_dtype,
    FullyShardedDataParallelPlugin.set_mixed_precision), unlike torchtitan's fp32."""
    return True if precision in ("bf16", "fp16") else None


def _translate_engine_options(plan: Plan, code: str, values: dict, why: list[str]) -> None:
    """Engine options that another engine states differently (or not at all) go back to its default."""
    engine = CODE_ENGINE[code]
    if engine != plan.engine:
        values.update(overlap_grad_reduce=None, overlap_param_gather=None)
        if plan.tp_comm_overlap:
            values["tp_comm_overlap"] = False
            why.append("TP communication overlap is Megatron's (Transformer Engine userbuffers)")
        if plan.fp8_param_gather:
            values["fp8_param_gather"] = False
            why.append("fp8 parameters gathered in fp8 are Megatron's (--fp8-param-gather)")
        if engine == "deepspeed" and plan.grad_reduce_bf16 is False:
            values["grad_reduce_bf16"] = None
    if engine == "megatron" and plan.zero > 1:
        values["overlap_param_gather"] = None
    if engine != "megatron" and (plan.moe_dispatcher != "alltoall" or plan.moe_ep_overlap):
        values.update(moe_dispatcher="alltoall", moe_ep_overlap=False)
        why.append("DeepEP's flex dispatcher and the EP all-to-all overlap are Megatron's")
    if engine != "megatron" and plan.recompute_modules:
        values["recompute_modules"] = ()
        why.append("Megatron's recompute modules have no counterpart there")
    if engine != "megatron" and plan.mtp_layers:
        values["mtp_layers"] = None
        why.append("multi-token prediction is modelled for Megatron only (transformers drops its weights)")
    if plan.first_stage_layers is not None and (engine != "megatron" or values.get("pp") != plan.pp):
        values.update(first_stage_layers=None, last_stage_layers=None)
        why.append("the stated first/last pipeline-stage blocks are Megatron's layout for this pipeline")
    if engine != "fsdp" or code == "fsdp":
        if plan.fsdp_version != 2:
            why.append("torchtitan runs FSDP2" if code == "fsdp" else "")
        values["fsdp_version"] = 2
    if code == "fsdp" and plan.grad_reduce_bf16:
        values["grad_reduce_bf16"] = None
        why.append("torchtitan 0.3 reduce-scatters gradients in fp32 only")
    if code == "fsdp-hf":
        values["grad_reduce_bf16"] = _accelerate_reduces_in_low_precision(values["precision"])
    if code in ("deepspeed", "fsdp-hf") and plan.checkpointing_every > 1:
        values["checkpointing_every"] = 1
        why.append("Hugging Face models checkpoint every layer or none")
    why[:] = [w for w in why if w]


@dataclass(frozen=True)
class SearchContext:
    """What a fallback search needs beyond the plan: the budget and the original search's settings."""

    model_ref: str
    """The --model value the search ran on (catalog name, alias or file)."""
    budget: str
    space: str | None = None
    """Search space file of the original search (None: the default space)."""
    safety_margin: float = 0.05
    objective: str = "throughput"
    tokens: float | None = None
    price_per_gpu_hour: float | None = None
    network_gbps_per_gpu: float | None = None
    """--network-gbps-per-gpu of the original search (None: the catalog's network)."""


def build_variant(
    code: str,
    chosen: Estimate,
    context: SearchContext | None = None,
) -> Variant:
    """The variant of `chosen` for `code`: the plan itself, its translation, or a searched replacement."""
    model, gpu, plan = chosen.model, chosen.gpu, chosen.plan
    if plan.peft and code in ("fsdp", "megatron"):
        return Variant(
            code,
            None,
            "none",
            (),
            f"{'torchtitan and examples/train.py train' if code == 'fsdp' else 'Megatron-LM trains'} every parameter; "
            f"--method {plan.method} runs with the Trainer or Accelerate configs and PEFT",
        )
    if _runs_as_is(plan, code):
        return Variant(code, chosen, "plan")
    request, why = translated_request(plan, model, code)
    failure = ""
    try:
        translated = _estimate(model, gpu, request, chosen)
    except PlannerError as error:
        translated, failure = None, error.message
    if translated is not None and translated.memory.fits and _host_fits(translated):
        return Variant(code, translated, "translated", plan_changes(plan, translated.plan), why)
    if translated is not None:
        failure = (
            f"the direct translation ({', '.join(plan_changes(plan, translated.plan))}) needs "
            f"{translated.memory.peak_gib:.1f} GiB, over the {translated.memory.usable_gib:.1f} usable"
        )
    searched = _search_replacement(code, chosen, context) if context is not None else None
    if searched is not None:
        return Variant(code, searched, "searched", plan_changes(plan, searched.plan), failure)
    return Variant(code, None, "none", (), failure or why or "no plan for this engine fits")


def _runs_as_is(plan: Plan, code: str) -> bool:
    if plan.engine != CODE_ENGINE[code]:
        return False
    if code == "fsdp-hf":
        return (
            plan.checkpointing != "selective"
            and plan.tp == plan.pp == plan.cp == 1
            and plan.zero in (2, 3)
            and plan.precision != "fp8"
            and plan.checkpointing_every == 1
            and plan.grad_reduce_bf16 == _accelerate_reduces_in_low_precision(plan.precision)
        )
    if code == "fsdp":
        return plan.fsdp_version == 2 and not plan.grad_reduce_bf16
    return True


def _estimate(model: ModelSpec, gpu: GpuSpec, request: PlanRequest, chosen: Estimate) -> Estimate:
    plan = make_plan(request, model, gpu)
    plan = replace(plan, gpus_per_node=chosen.plan.gpus_per_node)
    return evaluate(model, gpu, plan, chosen.memory.safety_margin, chosen.cost.tokens, _price_override(chosen))


def _price_override(chosen: Estimate) -> float | None:
    return chosen.cost.usd_per_gpu_hour if chosen.cost.price_source == "--price-per-gpu-hour" else None


def _host_fits(estimate: Estimate) -> bool:
    return estimate.memory.host_ram_fits is not False


def _search_replacement(code: str, chosen: Estimate, context: SearchContext) -> Estimate | None:
    """Best plan for `code` on the chosen plan's GPUs, batch and sequence length (None if nothing fits)."""
    from planner.search.details import plan_estimates
    from planner.search.solve import SolveRequest, solve

    plan = chosen.plan
    request, _ = translated_request(plan, chosen.model, code)
    pins = {
        "gpus": plan.gpus,
        "engine": CODE_ENGINE[code],
        "precision": request.precision,
        "optimizer": plan.optimizer,
        "loss": plan.loss,
        "flash_attention": plan.flash_attention,
        "flash_attention_version": plan.flash_attention_version,
        "method": plan.method,  # a LoRA plan's replacement trains LoRA adapters too
    }
    if code in ("deepspeed", "fsdp-hf"):
        pins["checkpointing"] = ("none", "full")
    if code == "fsdp-hf":
        pins.update(tp=1, pp=1, cp=1, zero=(2, 3))
    search = SolveRequest(
        model=context.model_ref,
        budget=context.budget,
        seq_len=plan.seq_len,
        global_batch=plan.global_batch,
        objective=context.objective,
        tokens=context.tokens,
        space=Path(context.space) if context.space else None,
        safety_margin=context.safety_margin,
        price_per_gpu_hour=context.price_per_gpu_hour,
        network_gbps_per_gpu=context.network_gbps_per_gpu,
        pins=pins,
        method_settings={
            "lora_rank": plan.lora_rank,
            "lora_targets": plan.lora_targets,
            "lora_dropout": plan.lora_dropout,
            "trainable_layers": plan.trainable_layers,
        },
    )
    result = solve(search)
    if not len(result.feasible):
        return None
    best = int(result.feasible[0])
    return plan_estimates(result, [best])[best]
