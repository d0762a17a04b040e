"""Which parameters one GPU holds: the pipeline stage's share, divided by tensor parallelism.

Pipeline stage `i` of `pp` holds `L/pp` blocks; the first also holds the input embedding, the last the
final norm and LM head (and, with tied embeddings under pipelining, its own copy of the embedding, as
Megatron-LM does). Matrices are split `tp` ways, norms are replicated (Megatron's layout). Every stage
is evaluated and the most loaded one is reported, since that rank is the one that runs out of memory.
"""

from dataclasses import dataclass

from planner.architecture import embedding_tensors, head_tensors, layer_tensors, numel
from planner.catalog.models import Architecture
from planner.plan import Plan


@dataclass(frozen=True)
class StageShard:
    """The parameters of one pipeline stage on one tensor-parallel rank."""

    stage: int
    """0-based pipeline stage index."""
    is_first: bool
    is_last: bool
    num_layers: int
    layer_params: int
    """Parameters of one block on this rank."""
    embedding_params: int
    """Input embedding (+ learned positions) on this rank; 0 off the first stage."""
    head_params: int
    """Final norm + LM head on this rank; 0 off the last stage."""
    largest_tensor_params: int
    """The biggest single parameter tensor on this rank (DeepSpeed ZeRO-3 gathers module by module)."""
    in_flight_micro_batches: int
    """Micro-batches whose activations this stage holds at once under 1F1B: min(pp - stage, grad_accum)."""

    @property
    def params(self) -> int:
        return self.num_layers * self.layer_params + self.embedding_params + self.head_params

    @property
    def largest_unit_params(self) -> int:
        """The biggest group of parameters FSDP gathers at once: a block, the embedding, or norm + head."""
        return max(self.layer_params, self.embedding_params, self.head_params)


def layers_on_stage(num_layers: int, pp: int, stage: int) -> int:
    """Blocks on `stage`: an even split, the remainder going to the earliest stages (which also hold
    the most in-flight micro-batches, so this is the memory-conservative placement)."""
    return num_layers // pp + (1 if stage < num_layers % pp else 0)


def stage_shards(arch: Architecture, plan: Plan) -> list[StageShard]:
    """One StageShard per pipeline stage (a single one without pipelining)."""
    layer_t = layer_tensors(arch)
    embedding_t = embedding_tensors(arch)
    head_t = head_tensors(arch, separate_copy_of_tied=plan.pp > 1)
    shards = []
    for stage in range(plan.pp):
        first, last = stage == 0, stage == plan.pp - 1
        held = (*layer_t, *(embedding_t if first else ()), *(head_t if last else ()))
        shards.append(
            StageShard(
                stage=stage,
                is_first=first,
                is_last=last,
                num_layers=layers_on_stage(arch.num_layers, plan.pp, stage),
                layer_params=numel(layer_t, plan.tp),
                embedding_params=numel(embedding_t, plan.tp) if first else 0,
                head_params=numel(head_t, plan.tp) if last else 0,
                largest_tensor_params=max(numel([t], plan.tp) for t in held),
                in_flight_micro_batches=min(plan.pp - stage, plan.grad_accum),
            )
        )
    return shards
