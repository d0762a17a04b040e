"""PEFT settings of LoRA, QLoRA and freeze plans, for the Trainer and Accelerate launches.

* `peft_config.json`: keyword arguments of `peft.LoraConfig` (load with `LoraConfig(**json.load(f))` and
  pass to `get_peft_model`, whose default autocast_adapter_dtype=True gives the fp32 adapters the memory
  model counts).
* `bnb_config.json` (QLoRA): keyword arguments of `transformers.BitsAndBytesConfig`. NF4 with double
  quantization and bf16 compute are the QLoRA paper's settings, not BitsAndBytesConfig's defaults (fp4,
  no double quantization), so they are written out. `bnb_4bit_quant_storage` is bf16 so that FSDP and
  DeepSpeed ZeRO-3 can shard the packed weights together with the bf16 parameters (the dtype every
  sharded parameter must share; PEFT's and Accelerate's FSDP-QLoRA guides).
* `freeze_config.json` (freeze): which blocks train, as LLaMA-Factory's freeze tuning chooses them.
"""

from typing import Any

from planner.architecture import ATTENTION_PROJECTIONS
from planner.catalog import ModelSpec
from planner.plan import Plan

LORA_ALPHA_PER_RANK = 2
"""lora_alpha = 2 x r, LLaMA-Factory's default (PEFT's own default is a fixed 8); it scales the update and
changes no memory or time."""


def peft_config(plan: Plan) -> dict[str, Any]:
    """LoraConfig keyword arguments of a LoRA/QLoRA plan."""
    targets = "all-linear" if plan.lora_targets == "all-linear" else list(ATTENTION_PROJECTIONS)
    return {
        "r": plan.lora_rank,
        "lora_alpha": LORA_ALPHA_PER_RANK * plan.lora_rank,
        "lora_dropout": plan.lora_dropout,
        "target_modules": targets,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def bnb_config(plan: Plan) -> dict[str, Any]:
    """BitsAndBytesConfig keyword arguments of a QLoRA plan."""
    compute = "float16" if plan.precision == "fp16" else "bfloat16"
    return {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": compute,
        "bnb_4bit_quant_storage": compute,
    }


def freeze_config(plan: Plan, model: ModelSpec) -> dict[str, Any]:
    """The blocks a freeze plan trains (the last `trainable_layers`; embeddings, final norm and LM head stay
    frozen, as LLaMA-Factory's freeze tuning without freeze_extra_modules)."""
    layers = model.architecture.num_layers
    first = layers - plan.trainable_layers
    return {
        "trainable_layers": list(range(first, layers)),
        "llamafactory": {"finetuning_type": "freeze", "freeze_trainable_layers": plan.trainable_layers},
        "note": "set requires_grad=False on every parameter outside these blocks (model.model.layers[i])",
    }


def peft_files(plan: Plan, model: ModelSpec) -> dict[str, dict[str, Any]]:
    """File name -> JSON content for a PEFT plan (empty for full fine-tuning)."""
    if plan.method in ("lora", "qlora"):
        files = {"peft_config.json": peft_config(plan)}
        if plan.method == "qlora":
            files["bnb_config.json"] = bnb_config(plan)
        return files
    if plan.method == "freeze":
        return {"freeze_config.json": freeze_config(plan, model)}
    return {}
