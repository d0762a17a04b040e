"""DeepSpeed JSON config and `deepspeed` launcher command for a plan (DeepSpeed 0.16 - 0.19 schema).

Only the keys a ZeRO stage acts on are written (DeepSpeed accepts `offload_param` below stage 3 and
ignores it, so writing it would mislead). Bucket and prefetch sizes are the engine defaults that the
memory model assumes (planner.memory.buffers), written out so that what is launched is what was modelled.
Format facts and traps: ../shared/notes/launch-configs.md section B.1.
"""

from typing import Any

from planner.errors import PlannerError
from planner.launch.layout import DEFAULT_MASTER_PORT, node_layout
from planner.memory.buffers import (
    DEEPSPEED_ALLGATHER_BUCKET_ELEMENTS,
    DEEPSPEED_MAX_LIVE_PARAMETERS,
    DEEPSPEED_MAX_REUSE_DISTANCE,
    DEEPSPEED_PARAM_PERSISTENCE_THRESHOLD,
    DEEPSPEED_REDUCE_BUCKET_ELEMENTS,
)
from planner.plan import Plan

DEEPSPEED_PREFETCH_BUCKET_ELEMENTS = 50_000_000
"""`stage3_prefetch_bucket_size` default (runtime/zero/config.py)."""
GRADIENT_CLIPPING = 1.0
"""Global-norm clipping of the Llama, Mistral and Qwen recipes; costs one reduction per step."""

AUTO = "auto"


def deepspeed_config(plan: Plan, *, hf_auto: bool = False) -> dict[str, Any]:
    """The DeepSpeed JSON of `plan`. With `hf_auto`, batch and precision fields are `"auto"` so the
    Hugging Face Trainer / Accelerate fill them from their own arguments (their check sees world size 1
    offline and would reject concrete global values, see launch-configs.md B.3)."""
    check_deepspeed_batch(plan)
    config: dict[str, Any] = {}
    if hf_auto:
        config.update(
            train_batch_size=AUTO,
            train_micro_batch_size_per_gpu=AUTO,
            gradient_accumulation_steps=AUTO,
            gradient_clipping=AUTO,
        )
    else:
        if plan.tp == 1:
            config["train_batch_size"] = plan.global_batch
        # With AutoTP (tp > 1) and no model-parallel unit, DeepSpeed 0.19 checks train_batch_size against the
        # whole world size, not the data-parallel ranks; leaving it out lets DeepSpeed derive it from these two.
        config.update(
            train_micro_batch_size_per_gpu=plan.micro_batch,
            gradient_accumulation_steps=plan.grad_accum,
            gradient_clipping=GRADIENT_CLIPPING,
        )
    config.update(_precision_blocks(plan, hf_auto))
    config["zero_optimization"] = zero_block(plan)
    if plan.tp > 1:
        config["tensor_parallel"] = {"autotp_size": plan.tp}  # AutoTP training (DeepSpeed >= 0.16.4)
    if plan.offload != "none" and plan.optimizer != "adamw":
        # The script's own optimizer (8-bit Adam, SGD, Adafactor) steps on the CPU copy; DeepSpeed refuses a
        # client optimizer under ZeRO-Offload unless told to allow it.
        config["zero_force_ds_cpu_optimizer"] = False
    optimizer = _optimizer_block(plan, hf_auto)
    if optimizer is not None:
        config["optimizer"] = optimizer
    config.update(steps_per_print=10, wall_clock_breakdown=False)
    return config


def check_deepspeed_batch(plan: Plan) -> None:
    """DeepSpeed's own rule: train_batch_size = micro-batch x gradient accumulation x data-parallel size."""
    if plan.global_batch != plan.micro_batch * plan.grad_accum * plan.dp:
        raise PlannerError(
            f"global batch {plan.global_batch} != micro-batch {plan.micro_batch} x accumulation "
            f"{plan.grad_accum} x dp {plan.dp}",
            "re-run planner solve; the plan is inconsistent",
        )


def _precision_blocks(plan: Plan, hf_auto: bool) -> dict[str, Any]:
    if plan.precision == "fp16":
        return {"fp16": {"enabled": AUTO if hf_auto else True, "loss_scale": 0}}  # 0 = dynamic loss scaling
    if plan.precision == "bf16":
        return {"bf16": {"enabled": AUTO if hf_auto else True}}
    if plan.precision == "pure-bf16":
        # bf16 master weights, gradients and Adam states (DeepSpeed >= 0.18; ZeRO 1-3 only).
        return {"bf16": {"enabled": True, "bf16_master_weights_and_grads": True, "bf16_optimizer_states": True}}
    if plan.precision == "fp32":
        return {}
    raise PlannerError(f"DeepSpeed has no {plan.precision} training mode here", "use --precision bf16")


def zero_block(plan: Plan) -> dict[str, Any]:
    """`zero_optimization` with the keys the stage uses. overlap_comm stays at DeepSpeed's per-stage default
    (off for 1-2, on for 3), which is what the memory model's bucket count and the performance model's
    exposed communication assume."""
    if plan.zero == 0:
        return {"stage": 0}
    block: dict[str, Any] = {
        "stage": plan.zero,
        "overlap_comm": plan.zero == 3,
        "contiguous_gradients": True,
        "reduce_bucket_size": DEEPSPEED_REDUCE_BUCKET_ELEMENTS,
    }
    if plan.zero in (1, 2):
        block.update(reduce_scatter=True, allgather_bucket_size=DEEPSPEED_ALLGATHER_BUCKET_ELEMENTS)
    else:
        block.update(
            stage3_prefetch_bucket_size=DEEPSPEED_PREFETCH_BUCKET_ELEMENTS,
            stage3_param_persistence_threshold=DEEPSPEED_PARAM_PERSISTENCE_THRESHOLD,
            stage3_max_live_parameters=DEEPSPEED_MAX_LIVE_PARAMETERS,
            stage3_max_reuse_distance=DEEPSPEED_MAX_REUSE_DISTANCE,
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if plan.offload in ("optimizer", "optimizer+params"):
        block["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if plan.offload == "optimizer+params":
        block["offload_param"] = {"device": "cpu", "pin_memory": True}
    return block


def _optimizer_block(plan: Plan, hf_auto: bool) -> dict[str, Any] | None:
    """ZeRO-Offload steps on the CPU with DeepSpeed's CPU Adam, which DeepSpeed builds from this block; a
    torch optimizer passed by the script would run on the CPU at a fraction of the speed modelled. Without
    offload, the training script's own optimizer is used (no block)."""
    if plan.offload == "none" or plan.optimizer != "adamw":
        return None
    params: dict[str, Any] = {"lr": AUTO, "weight_decay": AUTO} if hf_auto else {}
    return {"type": "AdamW", "params": params}


def deepspeed_command(
    plan: Plan, script: str = "${TRAIN_SCRIPT}", config_path: str = "ds_config.json", hostfile: str = "hostfile"
) -> list[str]:
    """`deepspeed` launcher arguments (pdsh over a hostfile; `--num_gpus` per node)."""
    layout = node_layout(plan)
    args = ["deepspeed"]
    if layout.nodes > 1:
        args += ["--hostfile", hostfile, "--num_nodes", str(layout.nodes)]
        args += ["--master_addr", "${MASTER_ADDR}", "--master_port", f"${{MASTER_PORT:-{DEFAULT_MASTER_PORT}}}"]
    args += ["--num_gpus", str(layout.procs_per_node), script, "--deepspeed", config_path]
    return args


def hostfile_example(plan: Plan) -> str:
    """A hostfile with placeholder names: one `host slots=N` line per node."""
    lines = ["# One line per node: its hostname (reachable over passwordless ssh) and the GPUs it offers."]
    layout = node_layout(plan)
    lines += [f"node{i} slots={layout.procs_per_node}" for i in range(layout.nodes)]
    return "\n".join(lines) + "\n"
