"""Where a plan's processes run: nodes and processes per node, as every launcher needs them."""

from dataclasses import dataclass
from typing import Any

from planner.catalog import ModelSpec
from planner.errors import PlannerError
from planner.plan import Plan

DEFAULT_MASTER_PORT = 29500
"""torchrun's and DeepSpeed's default rendezvous port."""

HF_DECODER_LAYER = {
    "llama": "LlamaDecoderLayer",
    "mistral": "MistralDecoderLayer",
    "qwen2": "Qwen2DecoderLayer",
    "mpt": "MptBlock",
    "gpt2": "GPT2Block",
    "gpt_neox": "GPTNeoXLayer",
}
"""The transformers class of one block per model_type: the unit FSDP wraps and checkpointing recomputes."""


@dataclass(frozen=True)
class NodeLayout:
    nodes: int
    procs_per_node: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


def node_layout(plan: Plan) -> NodeLayout:
    """Nodes and processes per node; launchers start the same number of processes on every node."""
    nodes = plan.nodes
    if plan.gpus % nodes:
        raise PlannerError(
            f"{plan.gpus} GPUs do not split evenly over {nodes} nodes of {plan.gpus_per_node}",
            "use a GPU count that is a multiple of the node size",
        )
    return NodeLayout(nodes, plan.gpus // nodes)


def require_whole_layer_checkpointing(plan: Plan) -> None:
    """Hugging Face model code recomputes whole decoder layers or nothing (no selective mode)."""
    if plan.checkpointing == "selective":
        raise PlannerError(
            "Hugging Face models checkpoint whole layers only", "planner launch translates selective to full"
        )


def hf_fsdp2_settings(plan: Plan, model: ModelSpec) -> dict[str, Any]:
    """FSDP settings (the plan's FSDP version) for Hugging Face model code, as Accelerate's FSDP plugin and
    the Trainer's fsdp_config name them without the `fsdp_` prefix. ZeRO-3 = reshard after forward (FSDP1:
    FULL_SHARD), ZeRO-2 = keep the gathered parameters until backward (SHARD_GRAD_OP); checkpointing is
    per decoder layer (HF models have no selective mode);
    offload moves parameters, gradients and optimizer together."""
    if plan.engine != "fsdp" or plan.zero not in (2, 3) or plan.tp * plan.pp * plan.cp > 1:
        raise PlannerError(
            f"Hugging Face FSDP runs data-parallel ZeRO-2/3 FSDP plans, got {plan.engine} ZeRO-{plan.zero} "
            f"tp{plan.tp} pp{plan.pp} cp{plan.cp}",
            "planner launch writes these files for the plan's HF-FSDP variant",
        )
    require_whole_layer_checkpointing(plan)
    # FSDP1 names its sharding strategy where FSDP2 takes a bool (Accelerate's FullyShardedDataParallelPlugin).
    fsdp1_strategy = "full_shard" if plan.zero == 3 else "shard_grad_op"
    settings: dict[str, Any] = {
        "version": plan.fsdp_version,
        "reshard_after_forward": plan.zero == 3 if plan.fsdp_version == 2 else fsdp1_strategy,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": HF_DECODER_LAYER.get(model.hf_model_type or ""),
        "cpu_offload": plan.offload == "optimizer+params",
        "activation_checkpointing": plan.checkpointing == "full",
        "state_dict_type": "SHARDED_STATE_DICT",
        "cpu_ram_efficient_loading": True,
    }
    return {k: v for k, v in settings.items() if v is not None}
