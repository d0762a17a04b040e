"""torchtune LoRA/QLoRA recipe configs (issue 12, item 5) for the models torchtune 0.6.1 ships builders for.

`torchtune_lora.yaml` is a config for torchtune's own recipes, run with `tune run`: lora_finetune_single_device
on one GPU, lora_finetune_distributed (FSDP2) on more. Its keys are those of the recipe configs torchtune 0.6.1
ships (recipes/configs/llama3_1/8B_lora_single_device.yaml and 8B_lora.yaml, tag v0.6.1, commit a6290a5b);
tests/test_torchtune_config.py checks them against a copy of those key sets, the model builders against the
package's model __init__ files, and, where torchtune is installed, loads the file with torchtune's parser.

What maps from the plan: the LoRA rank, alpha (2 x rank, as peft_config.json), dropout and targets (attention:
q, k, v and output projections; all-linear: also the MLP, never the LM head, as PEFT's "all-linear"), the
4-bit base for QLoRA (torchtune's qlora_* builders: torchao NF4, scales per 64 weights, double quantized), the
micro-batch, accumulation, sequence length (the tokenizer's max_seq_len, packed dataset), checkpointing, dtype
and loss. What torchtune cannot run is refused with the reason: DeepSpeed, DDP (several GPUs without
sharding), autocast mixed precision (torchtune trains in pure bf16 or fp32: plan with --precision pure-bf16),
freeze tuning, Adafactor, and models without a builder (QLoRA: Qwen has none).
"""

from dataclasses import dataclass
from typing import Any

import yaml

from planner.catalog import ModelSpec
from planner.errors import PlannerError
from planner.launch.peft import LORA_ALPHA_PER_RANK
from planner.plan import Plan

TORCHTUNE_VERSION = "0.6.1"


@dataclass(frozen=True)
class Builder:
    """One torchtune model: its package, the builder name after `lora_`/`qlora_`, the tokenizer and its
    file arguments, the checkpointer's ModelType, and whether a qlora_ builder exists."""

    package: str
    name: str
    tokenizer: str
    tokenizer_files: tuple[str, ...]
    model_type: str
    qlora: bool = True
    output_lora: bool = True
    """Whether the builder takes apply_lora_to_output (Gemma's tied LM head: no)."""


_LLAMA3_TOKENIZER = ("torchtune.models.llama3.llama3_tokenizer", ("path",))
_QWEN2_5 = ("torchtune.models.qwen2_5.qwen2_5_tokenizer", ("path", "merges_file"))


def _b(package: str, name: str, tokenizer: tuple[str, tuple[str, ...]], model_type: str, qlora: bool = True):
    return Builder(package, name, tokenizer[0], tokenizer[1], model_type, qlora, output_lora=package != "gemma2")


BUILDERS: dict[str, Builder] = {
    "llama-2-7b": _b("llama2", "llama2_7b", ("torchtune.models.llama2.llama2_tokenizer", ("path",)), "LLAMA2"),
    "llama-2-13b": _b("llama2", "llama2_13b", ("torchtune.models.llama2.llama2_tokenizer", ("path",)), "LLAMA2"),
    "llama-2-70b": _b("llama2", "llama2_70b", ("torchtune.models.llama2.llama2_tokenizer", ("path",)), "LLAMA2"),
    "llama-3-8b": _b("llama3", "llama3_8b", _LLAMA3_TOKENIZER, "LLAMA3"),
    "llama-3.1-8b": _b("llama3_1", "llama3_1_8b", _LLAMA3_TOKENIZER, "LLAMA3"),
    "llama-3.1-70b": _b("llama3_1", "llama3_1_70b", _LLAMA3_TOKENIZER, "LLAMA3"),
    "llama-3.1-405b": _b("llama3_1", "llama3_1_405b", _LLAMA3_TOKENIZER, "LLAMA3"),
    "llama-3.2-1b": _b("llama3_2", "llama3_2_1b", _LLAMA3_TOKENIZER, "LLAMA3_2"),
    "llama-3.2-3b": _b("llama3_2", "llama3_2_3b", _LLAMA3_TOKENIZER, "LLAMA3_2"),
    "llama-3.3-70b": _b("llama3_3", "llama3_3_70b", _LLAMA3_TOKENIZER, "LLAMA3"),
    "mistral-7b": _b("mistral", "mistral_7b", ("torchtune.models.mistral.mistral_tokenizer", ("path",)), "MISTRAL"),
    "qwen2-7b": _b(
        "qwen2", "qwen2_7b", ("torchtune.models.qwen2.qwen2_tokenizer", ("path", "merges_file")), "QWEN2", False
    ),
    "qwen2.5-0.5b": _b("qwen2_5", "qwen2_5_0_5b", _QWEN2_5, "QWEN2", False),
    "qwen2.5-1.5b": _b("qwen2_5", "qwen2_5_1_5b_base", _QWEN2_5, "QWEN2", False),
    "qwen2.5-3b": _b("qwen2_5", "qwen2_5_3b", _QWEN2_5, "QWEN2", False),
    "qwen2.5-7b": _b("qwen2_5", "qwen2_5_7b_base", _QWEN2_5, "QWEN2", False),
    "qwen2.5-14b": _b("qwen2_5", "qwen2_5_14b_base", _QWEN2_5, "QWEN2", False),
    "qwen2.5-32b": _b("qwen2_5", "qwen2_5_32b_base", _QWEN2_5, "QWEN2", False),
    "qwen2.5-72b": _b("qwen2_5", "qwen2_5_72b_base", _QWEN2_5, "QWEN2", False),
    "gemma-2-2b": _b("gemma2", "gemma2_2b", ("torchtune.models.gemma.gemma_tokenizer", ("path",)), "GEMMA2"),
    "gemma-2-9b": _b("gemma2", "gemma2_9b", ("torchtune.models.gemma.gemma_tokenizer", ("path",)), "GEMMA2"),
    "gemma-2-27b": _b("gemma2", "gemma2_27b", ("torchtune.models.gemma.gemma_tokenizer", ("path",)), "GEMMA2"),
    "phi-3-mini-4k": _b("phi3", "phi3_mini", ("torchtune.models.phi3.phi3_mini_tokenizer", ("path",)), "PHI3_MINI"),
    "phi-4": _b("phi4", "phi4_14b", ("torchtune.models.phi4.phi4_tokenizer", ("vocab_path", "merges_path")), "PHI4"),
}
"""Catalog model -> torchtune 0.6.1 builder (torchtune/models/<package>/__init__.py at tag v0.6.1)."""

LOSSES = {
    "chunked": {"_component_": "torchtune.modules.loss.CEWithChunkedOutputLoss"},
    "standard": {"_component_": "torch.nn.CrossEntropyLoss", "ignore_index": -100},
}
"""The recipes call the loss on [tokens, vocab] logits, or on a list of chunks for CEWithChunkedOutputLoss
(lora_finetune_single_device.py _loss_step), so torch's CrossEntropyLoss is the unchunked one."""

OPTIMIZERS = {
    "adamw": {"_component_": "torch.optim.AdamW", "fused": True, "weight_decay": 0.01, "lr": 3e-4},
    "adamw-8bit": {"_component_": "bitsandbytes.optim.PagedAdamW8bit", "lr": 3e-4},
    "sgd": {"_component_": "torch.optim.SGD", "lr": 3e-4, "momentum": 0.9},
}


def torchtune_recipe(plan: Plan) -> str:
    """The torchtune recipe a plan runs: single device, or FSDP2 on several GPUs."""
    return "lora_finetune_single_device" if plan.gpus == 1 else "lora_finetune_distributed"


def torchtune_config(plan: Plan, model: ModelSpec) -> dict[str, Any]:
    """The recipe config of a LoRA/QLoRA plan; PlannerError names why torchtune cannot run the plan."""
    builder = _builder(plan, model)
    tokenizer = {"_component_": builder.tokenizer}
    tokenizer |= {key: f"/path/to/{model.name}/{_TOKENIZER_FILES[key]}" for key in builder.tokenizer_files}
    tokenizer["max_seq_len"] = int(plan.seq_len)
    targets = ["q_proj", "k_proj", "v_proj", "output_proj"]
    config: dict[str, Any] = {
        "output_dir": f"/tmp/torchtune/{model.name}/{plan.method}",
        "tokenizer": tokenizer,
        "model": {
            "_component_": f"torchtune.models.{builder.package}.{plan.method}_{builder.name}",
            "lora_attn_modules": targets,
            "apply_lora_to_mlp": plan.lora_targets == "all-linear",
            **({"apply_lora_to_output": False} if builder.output_lora else {}),
            "lora_rank": int(plan.lora_rank),
            "lora_alpha": LORA_ALPHA_PER_RANK * int(plan.lora_rank),
            "lora_dropout": float(plan.lora_dropout),
        },
        "checkpointer": {
            "_component_": "torchtune.training.FullModelHFCheckpointer",
            "checkpoint_dir": f"/path/to/{model.name}",
            "checkpoint_files": ["model.safetensors"],
            "recipe_checkpoint": None,
            "output_dir": "${output_dir}",
            "model_type": builder.model_type,
        },
        "resume_from_checkpoint": False,
        "save_adapter_weights_only": False,
        "dataset": {"_component_": "torchtune.datasets.alpaca_cleaned_dataset", "packed": True},
        "seed": None,
        "shuffle": True,
        "batch_size": int(plan.micro_batch),
        "optimizer": dict(OPTIMIZERS[plan.optimizer]),
        "lr_scheduler": {
            "_component_": "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup",
            "num_warmup_steps": 100,
        },
        "loss": dict(LOSSES[plan.loss]),
        "epochs": 1,
        "max_steps_per_epoch": None,
        "gradient_accumulation_steps": int(plan.grad_accum),
        "clip_grad_norm": None,
        "compile": False,
        "metric_logger": {
            "_component_": "torchtune.training.metric_logging.DiskLogger",
            "log_dir": "${output_dir}/logs",
        },
        "log_every_n_steps": 1,
        "log_peak_memory_stats": True,
        "device": "cuda",
        "dtype": "fp32" if plan.precision == "fp32" else "bf16",
        "enable_activation_checkpointing": plan.checkpointing == "full",
        "enable_activation_offloading": False,
    }
    if plan.gpus > 1:
        # FULL_SHARD reshards each block after its forward; SHARD_GRAD_OP (ZeRO-2) keeps it gathered.
        config["fsdp_reshard_after_forward"] = plan.zero == 3
        config["fsdp_cpu_offload"] = False
    return config


_TOKENIZER_FILES = {
    "path": "tokenizer.model",
    "merges_file": "merges.txt",
    "vocab_path": "vocab.json",
    "merges_path": "merges.txt",
}


def _builder(plan: Plan, model: ModelSpec) -> Builder:
    if plan.method not in ("lora", "qlora"):
        raise PlannerError(f"torchtune recipe configs are written for LoRA/QLoRA plans, not --method {plan.method}")
    builder = BUILDERS.get(model.name)
    if builder is None:
        raise PlannerError(f"torchtune {TORCHTUNE_VERSION} has no LoRA builder for {model.name}")
    if plan.method == "qlora" and not builder.qlora:
        raise PlannerError(f"torchtune {TORCHTUNE_VERSION} has no QLoRA builder for {model.name}")
    if plan.engine != "fsdp":
        raise PlannerError(f"torchtune runs on one GPU or FSDP2, not {plan.engine}")
    if plan.gpus > 1 and plan.zero < 2:
        raise PlannerError("torchtune shards across GPUs with FSDP2 (no DDP)", "plan with --zero 2 or 3")
    if plan.precision not in ("pure-bf16", "fp32"):
        raise PlannerError(
            f"torchtune trains in pure bf16 or fp32, not {plan.precision} mixed precision",
            "plan with --precision pure-bf16",
        )
    if plan.gpus > plan.gpus_per_node:
        raise PlannerError("multi-node torchtune runs are not written", "plan on one node")
    if plan.optimizer not in OPTIMIZERS:
        raise PlannerError(f"no torchtune optimizer config is written for {plan.optimizer}")
    if plan.loss not in LOSSES:
        raise PlannerError(f"no torchtune loss config is written for --loss {plan.loss}")
    return builder


def torchtune_command(plan: Plan, config_path: str) -> list[str]:
    """`tune run` for the plan's recipe (torchrun underneath for the distributed one)."""
    args = ["tune", "run"]
    if plan.gpus > 1:
        args += ["--nproc_per_node", str(int(plan.gpus_per_node))]
    return [*args, torchtune_recipe(plan), "--config", config_path]


def render_torchtune_yaml(plan: Plan, config: dict[str, Any]) -> str:
    header = [
        f"# torchtune {TORCHTUNE_VERSION} {torchtune_recipe(plan)} config, written by planner launch.",
        "# Set tokenizer paths, checkpointer.checkpoint_dir and checkpoint_files to your download first.",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False)
