"""Where a plan's processes run: nodes and processes per node, as every launcher needs them."""

from dataclasses import dataclass

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
