"""Accelerate config YAML (`accelerate launch --config_file ...`) for DeepSpeed and for FSDP2 (Accelerate 1.x).

Accelerate rejects unknown top-level keys but copies nested ones blindly (a misspelt `fsdp_versoin`
silently falls back to FSDP1), so the nested keys written here are exactly the `accelerate launch`
option names; the engine tests compare them with the installed parser. With `deepspeed_config_file`,
Accelerate refuses the fields the file already sets (zero stage, accumulation, clipping, offload,
mixed precision), so the DeepSpeed variant holds only the file and the launcher settings.
Format facts and traps: ../shared/notes/launch-configs.md section B.2.
"""

from typing import Any

import yaml

from planner.catalog import ModelSpec
from planner.launch.layout import DEFAULT_MASTER_PORT, hf_fsdp2_settings, node_layout
from planner.plan import Plan

MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no", "pure-bf16": "no"}
"""Accelerate's FSDP `mixed_precision` per plan precision. pure-bf16: "no", with the model loaded in bf16 by the
script, so weights, gradients and optimizer states stay bf16; "bf16" would make Accelerate upcast every
trainable parameter to fp32 before sharding (see planner.launch.trainer.trainer_bf16)."""


def accelerate_deepspeed_config(plan: Plan, ds_config_path: str = "ds_config.json") -> dict[str, Any]:
    """Accelerate YAML for DeepSpeed: the plan's DeepSpeed JSON plus where and how to launch."""
    deepspeed: dict[str, Any] = {"deepspeed_config_file": ds_config_path}
    if plan.zero == 3:
        deepspeed["zero3_init_flag"] = True  # build the model already partitioned, never whole on one GPU
    if node_layout(plan).nodes > 1:
        # `standard` starts one torchrun per node (no ssh/pdsh); run the command on every node.
        deepspeed["deepspeed_multinode_launcher"] = "standard"
    return _cluster(plan, "DEEPSPEED") | {"deepspeed_config": deepspeed}


def accelerate_fsdp_config(plan: Plan, model: ModelSpec) -> dict[str, Any]:
    """Accelerate YAML for FSDP, version as predicted (`fsdp_`-prefixed launcher options; offload is
    `fsdp_offload_params`)."""
    fsdp = {
        ("fsdp_offload_params" if key == "cpu_offload" else f"fsdp_{key}"): value
        for key, value in hf_fsdp2_settings(plan, model).items()
    }
    if plan.fsdp_version == 1:
        # Accelerate's FSDP1 plugin reads the strategy from fsdp_sharding_strategy (default FULL_SHARD) before
        # it looks at fsdp_reshard_after_forward, so both say the same.
        fsdp["fsdp_sharding_strategy"] = fsdp["fsdp_reshard_after_forward"]
    return _cluster(plan, "FSDP", MIXED_PRECISION[plan.precision]) | {"fsdp_config": fsdp}


def _cluster(plan: Plan, distributed_type: str, mixed_precision: str | None = None) -> dict[str, Any]:
    layout = node_layout(plan)
    config: dict[str, Any] = {"compute_environment": "LOCAL_MACHINE", "distributed_type": distributed_type}
    if mixed_precision is not None:
        config["mixed_precision"] = mixed_precision
    config.update(num_machines=layout.nodes, num_processes=layout.world_size, machine_rank=0)
    if layout.nodes > 1:
        config.update(main_process_ip="MAIN_NODE_ADDRESS", main_process_port=DEFAULT_MASTER_PORT)
        config.update(rdzv_backend="static", same_network=True)
    config.update(use_cpu=False)
    return config


def render_accelerate_yaml(config: dict[str, Any], title: str) -> str:
    """The YAML with a header that explains the per-node placeholders."""
    lines = [f"# {title}", "# Written by planner launch; `accelerate launch --config_file THIS_FILE your_script.py`."]
    if config["num_machines"] > 1:
        lines += [
            "# num_processes counts all machines. On each node pass its rank and the main node's address:",
            "#   --machine_rank $NODE_RANK --main_process_ip $MASTER_ADDR (or edit machine_rank/main_process_ip).",
        ]
    return "\n".join(lines) + "\n" + yaml.safe_dump(config, sort_keys=False)


def accelerate_command(plan: Plan, config_path: str) -> list[str]:
    args = ["accelerate", "launch", "--config_file", config_path]
    if node_layout(plan).nodes > 1:
        args += ["--machine_rank", "${NODE_RANK}", "--main_process_ip", "${MASTER_ADDR}"]
        args += ["--main_process_port", f"${{MASTER_PORT:-{DEFAULT_MASTER_PORT}}}"]
    return [*args, "${TRAIN_SCRIPT}"]
