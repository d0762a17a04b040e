"""The launch folder's README.md (the plan, each variant's prediction, the command per config) and plan.json."""

import json

from planner import __version__
from planner.estimate import Estimate
from planner.launch.layout import node_layout
from planner.launch.variants import CODE_TITLES

_ORIGIN_TEXT = {
    "plan": "the plan itself",
    "translated": "the plan, translated",
    "searched": "best plan of this engine on the same GPUs and batch",
    "none": "none fits",
}


def describe_plan(plan) -> str:
    layout = node_layout(plan)
    offload = "no offload" if plan.offload == "none" else f"{plan.offload} offloaded to CPU"
    return (
        f"{plan.gpus} GPUs ({layout.nodes} node(s) x {layout.procs_per_node}), dp {plan.dp} tp {plan.tp} "
        f"pp {plan.pp} cp {plan.cp}, {plan.engine} ZeRO-{plan.zero}, micro-batch {plan.micro_batch} x "
        f"accumulation {plan.grad_accum} = global batch {plan.global_batch} sequences of {plan.seq_len} tokens, "
        f"checkpointing {plan.checkpointing}, {plan.precision}, {offload}"
        + (", sequence parallel" if plan.sequence_parallel else "")
        + (", torch.compile" if plan.compile else "")
    )


def describe_prediction(est: Estimate) -> str:
    m, p, c = est.memory, est.performance, est.cost
    money = "" if c.usd_per_hour is None else f", ${c.usd_per_hour:,.2f}/hour"
    dollars = "" if c.total_usd is None else f" and ${c.total_usd:,.0f}"
    hours = "" if c.hours is None else f", {c.hours:,.1f} hours{dollars} for {c.tokens:,.0f} tokens"
    return (
        f"peak {m.peak_gib:.1f} GiB per GPU of {m.usable_gib:.1f} usable ({m.capacity_gib:.1f} GiB card, "
        f"set by the {m.peak_phase} phase); {p.tokens_per_s:,.0f} tokens/s ({p.tokens_per_s_per_gpu:,.0f} per GPU), "
        f"MFU {p.mfu:.1%}, step {p.step_time_s:.2f} s{money}{hours}"
    )


def render_readme(folder, targets: tuple[str, ...], origin_note: str) -> str:
    chosen = folder.chosen
    model, gpu = chosen.model, chosen.gpu
    lines = [
        f"# Launch configs: {model.name} on {chosen.plan.gpus} x {gpu.name}",
        "",
        f"Written by planner {__version__} from {origin_note}.",
        "",
        f"**Plan** ({CODE_TITLES[_code_of(chosen)]}): {describe_plan(chosen.plan)}.",
        "",
        f"**Predicted**: {describe_prediction(chosen)}.",
        "",
        "## Variants",
        "",
        "Each engine runs the closest version of the plan it supports, predicted with the same memory and",
        "throughput models (`planner estimate` flags in plan.json):",
        "",
        "| variant | what it is | peak GiB | tokens/s | MFU | differences from the plan |",
        "|---|---|---:|---:|---:|---|",
    ]
    for code, variant in folder.variants.items():
        if variant.estimate is None:
            lines.append(f"| {code} | {_ORIGIN_TEXT['none']} | - | - | - | {variant.reason} |")
            continue
        est = variant.estimate
        diff = "; ".join(variant.changes) or "-"
        if variant.reason:
            diff += f" ({variant.reason})"
        lines.append(
            f"| {code} | {_ORIGIN_TEXT[variant.origin]} | {est.memory.peak_gib:.1f} | "
            f"{est.performance.tokens_per_s:,.0f} | {est.performance.mfu:.1%} | {diff} |"
        )
    lines += ["", "## Launch", ""]
    if node_layout(chosen.plan).nodes > 1:
        lines += [
            "Multi-node: run each torchrun-based script on every node with `NODE_RANK` (0 on the main node) and",
            "`MASTER_ADDR` (the main node's address) set; the DeepSpeed launcher runs once and reaches the others",
            "over ssh from `hostfile`.",
            "",
        ]
    for label, scripts in folder.commands.items():
        lines.append(f"- **{label}**: `" + "`, `".join(f"./{s}" for s in scripts) + "`")
    if "slurm.sbatch" in folder.files:
        lines += [
            "",
            "On a cluster: `sbatch slurm.sbatch` (Slurm: one task per node runs the per-node script with NODE_RANK and",
            "MASTER_ADDR from the allocation; `LAUNCH=<script>` picks another one), or `kubectl create configmap",
            "planner-launch --from-file=.` then `kubectl apply -f pytorchjob.yaml` (Kubeflow training operator",
            "PyTorchJob; set the image and TRAIN_SCRIPT first).",
        ]
    lines += rocm_notes(chosen)
    if folder.skipped:
        lines += ["", "## Not written", ""]
        for target, reason in folder.skipped.items():
            lines.append(f"- {target}: {reason}")
    lines += ["", "## Before launching", "", *(f"- {duty}" for duty in script_duties(folder))]
    lines += [
        "- Learning rate, data, tokenizer and checkpoint paths are not part of the plan: add yours.",
        "- The batch per GPU, accumulation and global batch are the plan's; changing them changes memory.",
        f"- Predictions keep a {chosen.memory.safety_margin:.0%} safety margin of GPU memory free; they are "
        "estimates, so watch the first steps' peak memory (torch.cuda.max_memory_reserved).",
    ]
    return "\n".join(lines) + "\n"


def rocm_notes(chosen: Estimate) -> list[str]:
    """For AMD Instinct GPUs (CDNA): the same commands run on ROCm builds, and where the stack differs.
    Sources: ROCm's PyTorch maps torch.cuda and the "nccl" backend to HIP and RCCL; flash-attention's ROCm
    port is FlashAttention-2 on Composable Kernel (hardware/mi300x.yaml); TransformerEngine's ROCm fork runs
    FP8 on gfx94x/gfx95x (ROCm/TransformerEngine issues #76, #79 train FP8 on 8 x MI300X; #359 quotes its
    gfx94x/gfx95x check), in the e4m3fnuz/e5m2fnuz formats MI300X uses (meta-pytorch/tritonbench PR #553)."""
    gpu = chosen.gpu
    if not gpu.architecture.startswith("cdna"):
        return []
    return [
        "",
        f"On {gpu.name} (AMD, ROCm): the same scripts and commands run with ROCm builds of PyTorch, DeepSpeed and",
        "Accelerate (torch.distributed's `nccl` backend is RCCL there, `torch.cuda` is HIP); flash attention is",
        "the ROCm (Composable Kernel) port of FlashAttention-2. Megatron-LM runs from AMD's ROCm fork with ROCm",
        "TransformerEngine, whose FP8 recipes run on MI300-class GPUs in the e4m3fnuz/e5m2fnuz formats; the",
        "torchtitan FP8 path (torchao float8) is not checked on ROCm here.",
    ]


def script_duties(folder) -> list[str]:
    """What a training script must do itself for the prediction to hold (the configs cannot say it)."""
    duties = []
    hf_launchers = {"deepspeed": "the DeepSpeed launcher and Accelerate + DeepSpeed", "fsdp-hf": "Accelerate FSDP"}
    for code, who in hf_launchers.items():
        variant = folder.variants.get(code)
        if variant is None or variant.estimate is None:
            continue
        plan = variant.plan
        if plan.checkpointing == "full" and code == "deepspeed":
            duties.append(
                f"With {who}, call `model.activation_checkpointing_enable()` (older transformers: "
                f"`gradient_checkpointing_enable()`) in your script: the {code} variant is "
                "predicted with full checkpointing, which DeepSpeed's JSON cannot switch on for Hugging Face "
                "models (the Trainer files do it)."
            )
        if code == "fsdp-hf" and plan.grad_accum > 1:
            duties.append(
                "With Accelerate FSDP, create the Accelerator with `GradientAccumulationPlugin(num_steps="
                f"{plan.grad_accum}, sync_each_batch=True)`: by default `accelerator.accumulate` defers the "
                "reduce-scatter to the last micro-batch and keeps unsharded fp32 gradients of the whole model "
                "meanwhile, which the prediction does not include (the Trainer files set it)."
            )
        if plan.precision == "pure-bf16":
            duties.append(
                f"With {who} and the Trainer, load the model in bf16 (`torch_dtype=torch.bfloat16`): the {code} "
                "variant keeps weights, gradients and optimizer states in bf16."
            )
            if plan.method in ("lora", "qlora") and plan.engine != "deepspeed":
                duties.append(
                    f"With {who}, call `get_peft_model(model, config, autocast_adapter_dtype=False)`: PEFT's "
                    "default upcasts the adapters to fp32, and the prediction counts bf16 adapters without autocast "
                    "(the Trainer's bf16 flag is off for this reason)."
                )
    return duties


def _code_of(est: Estimate) -> str:
    return "deepspeed" if est.plan.engine == "deepspeed" else ("megatron" if est.plan.engine == "megatron" else "fsdp")


def estimate_flags(est: Estimate, model_ref: str) -> str:
    """The `planner estimate` command that reproduces a prediction."""
    p = est.plan
    flags = [
        f"--model {model_ref}",
        f"--gpu {est.gpu.name}",
        f"--gpus {p.gpus}",
        f"--gpus-per-node {p.gpus_per_node}",
        f"--tp {p.tp} --pp {p.pp} --cp {p.cp}",
        f"--zero {p.zero}",
        f"--micro-batch {p.micro_batch} --global-batch {p.global_batch} --seq-len {p.seq_len}",
        f"--checkpointing {p.checkpointing} --precision {p.precision} --optimizer {p.optimizer}",
        f"--offload {p.offload} --engine {p.engine} --loss {p.loss}",
        "--flash-attention" if p.flash_attention else "--no-flash-attention",
        "--sequence-parallel" if p.sequence_parallel else "--no-sequence-parallel",
        *(["--tp-comm-overlap"] if p.tp_comm_overlap else []),
        *(["--fp8-param-gather"] if p.fp8_param_gather else []),
        "--compile" if p.compile else "--no-compile",
        f"--safety-margin {est.memory.safety_margin}",
    ]
    return "planner estimate " + " ".join(flags)


def _variant_entry(variant, model_ref: str) -> dict:
    entry = {"origin": variant.origin, "changes": list(variant.changes), "reason": variant.reason}
    if variant.estimate is not None:
        est = variant.estimate
        entry.update(
            plan=est.plan.to_dict(),
            estimate_command=estimate_flags(est, model_ref),
            peak_gib=round(est.memory.peak_gib, 3),
            usable_gib=round(est.memory.usable_gib, 3),
            tokens_per_s=round(est.performance.tokens_per_s, 1),
            mfu=round(est.performance.mfu, 4),
        )
    return entry


def render_plan_json(folder, origin_note: str) -> str:
    """plan.json: the chosen plan with its full estimate, the architecture, and every variant. Read by
    examples/train.py (`--variant fsdp`)."""
    chosen = folder.chosen
    data = {
        "planner_version": __version__,
        "source": origin_note,
        "chosen": chosen.to_dict(),
        "estimate_command": estimate_flags(chosen, folder.model_ref),
        "variants": {code: _variant_entry(v, folder.model_ref) for code, v in folder.variants.items()},
    }
    return json.dumps(data, indent=1) + "\n"
