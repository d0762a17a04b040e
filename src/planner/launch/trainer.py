"""Hugging Face `TrainingArguments` for a plan (transformers 5.x, checked with the pinned 5.23), as an args file
and as flags.

DeepSpeed runs from a copy of the plan's JSON whose batch, clipping and precision fields are `"auto"`:
the Trainer fills them from these arguments, and offline it sees a world size of 1, so concrete global
values would be rejected (launch-configs.md B.3). FSDP (version 1 or 2, as predicted) takes `fsdp=True`
with an `fsdp_config`; with FSDP, checkpointing goes through `fsdp_config.activation_checkpointing`, which
avoids the extra all-gather the Trainer's own checkpointing causes. Checkpointing is `activation_checkpointing`
(transformers 5.23 deprecates its old name, `gradient_checkpointing`, warning on every use).
"""

import json
from typing import Any

from planner.catalog import ModelSpec
from planner.errors import PlannerError
from planner.launch.layout import hf_fsdp2_settings, require_whole_layer_checkpointing
from planner.plan import Plan

OPTIM = {"adamw": "adamw_torch_fused", "adamw-8bit": "adamw_bnb_8bit", "sgd": "sgd", "adafactor": "adafactor"}
"""`optim` names of the Trainer per plan optimizer."""
MAX_GRAD_NORM = 1.0


def trainer_bf16(plan: Plan) -> bool:
    """The Trainer's `bf16` flag (autocast mixed precision) for the plan's precision.

    pure-bf16 (the script loads the model in bf16, `torch_dtype=torch.bfloat16`): on only under DeepSpeed, whose
    bf16 section the flag fills ("auto") and whose engine keeps bf16 weights. Under FSDP or DDP the flag would
    train something else than what was predicted: it turns on Accelerate's mixed precision, which upcasts every
    trainable bf16 parameter to an fp32 master copy before sharding (accelerate 1.15 fsdp2_prepare_model and
    the FSDP1 branch of Accelerator.prepare_model: "FSDP upcast of low precision parameters"), where the plan
    counts bf16 weights, gradients and optimizer states (and bf16 LoRA adapters) without autocast."""
    if plan.precision == "pure-bf16":
        return plan.engine == "deepspeed"
    return plan.precision == "bf16"


def trainer_arguments(plan: Plan, model: ModelSpec, ds_config: str | dict = "ds_config_trainer.json") -> dict[str, Any]:
    """TrainingArguments fields of the plan (the data, learning rate and output settings stay yours). `ds_config`
    is the DeepSpeed config's path or, for an args file that works from any directory, the config itself."""
    if plan.engine not in ("deepspeed", "fsdp") or plan.tp * plan.pp * plan.cp > 1:
        raise PlannerError(
            f"the Trainer runs data-parallel DeepSpeed or FSDP plans, got {plan.engine} tp{plan.tp} pp{plan.pp}",
            "planner launch writes the Trainer files for the plan's DeepSpeed or HF-FSDP variant",
        )
    require_whole_layer_checkpointing(plan)
    args: dict[str, Any] = {
        "output_dir": "output",
        "per_device_train_batch_size": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "bf16": trainer_bf16(plan),
        "fp16": plan.precision == "fp16",
        "optim": OPTIM[plan.optimizer],
        "max_grad_norm": MAX_GRAD_NORM,
        "torch_compile": plan.compile,
    }
    if plan.engine == "deepspeed":
        args["activation_checkpointing"] = plan.checkpointing == "full"
        if plan.checkpointing == "full":
            args["activation_checkpointing_kwargs"] = {"use_reentrant": False}
        args["deepspeed"] = ds_config
        return args
    fsdp_config = hf_fsdp2_settings(plan, model)
    if "transformer_layer_cls_to_wrap" in fsdp_config:
        fsdp_config["transformer_layer_cls_to_wrap"] = [fsdp_config["transformer_layer_cls_to_wrap"]]
    args.update(activation_checkpointing=False, fsdp=True, fsdp_config=fsdp_config)
    if plan.grad_accum > 1:
        # The Trainer skips FSDP's gradient reduction until the last micro-batch by default, which keeps
        # unsharded fp32 gradients of the whole model between micro-batches; reduce-scattering every
        # micro-batch is what the memory model (and torchtitan) assume.
        args["accelerator_config"] = {"gradient_accumulation_kwargs": {"sync_each_batch": True}}
    return args


def trainer_flags(
    args: dict[str, Any],
    fsdp_config_path: str = "trainer_fsdp_config.json",
    accelerator_config_path: str = "trainer_accelerator_config.json",
) -> list[str]:
    """The same arguments as command-line flags of a script that parses TrainingArguments with
    HfArgumentParser (e.g. transformers' examples/pytorch/language-modeling/run_clm.py). Nested settings
    go by file: on the command line the Trainer reads a string as a path to JSON."""
    flags: list[str] = []
    for name, value in args.items():
        if name == "fsdp":
            flags.append("--fsdp")  # bare flag = True; a value would take the deprecated string path
        elif name == "fsdp_config":
            flags += ["--fsdp_config", fsdp_config_path]
        elif name == "accelerator_config":
            flags += ["--accelerator_config", accelerator_config_path]
        elif isinstance(value, dict):
            flags += [f"--{name}", json.dumps(value)]
        else:
            flags += [f"--{name}", str(value)]
    return flags
