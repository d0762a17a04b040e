"""Which parameters one GPU holds: the pipeline stage's share, divided by tensor parallelism.

Pipeline stage `i` of `pp` holds `L/pp` blocks; the first also holds the input embedding, the last the
final norm and LM head (and, with tied embeddings under pipelining, its own copy of the embedding, as
Megatron-LM does). Matrices are split `tp` ways, norms are replicated (Megatron's layout).

Only the first and the last stage can be the most loaded one: the first holds the most in-flight
micro-batches under 1F1B (pp of them), the most blocks (uneven splits put the extra ones first) and the
embedding; the last holds the LM head and the logits. Every interior stage holds no more blocks than the
first, fewer in-flight micro-batches and neither embedding nor head, so it never needs more memory than
the first. Both stages are evaluated and the larger is reported.

The numeric plan fields (pp, grad_accum, ...) may be numpy arrays: the search evaluates many plans at once
with these same functions.
"""

from dataclasses import dataclass
from functools import reduce

import numpy as np

from planner.architecture import embedding_tensors, head_tensors, layer_tensors, numel
from planner.catalog.models import Architecture
from planner.plan import Plan


@dataclass(frozen=True)
class StageShard:
    """The parameters of one pipeline stage on one tensor-parallel rank."""

    stage: object
    """0-based pipeline stage index (int, or array when plans are evaluated in bulk)."""
    is_first: object
    is_last: object
    num_layers: object
    layer_params: int
    """Parameters of one block on this rank."""
    embedding_params: object
    """Input embedding (+ learned positions) on this rank; 0 off the first stage."""
    head_params: object
    """Final norm + LM head on this rank; 0 off the last stage."""
    largest_tensor_params: object
    """The biggest single parameter tensor on this rank (DeepSpeed ZeRO-3 gathers module by module)."""
    in_flight_micro_batches: object
    """Micro-batches whose activations this stage holds at once under 1F1B: min(pp - stage, grad_accum)."""

    @property
    def params(self):
        return self.num_layers * self.layer_params + self.embedding_params + self.head_params

    @property
    def largest_unit_params(self):
        """The biggest group of parameters FSDP gathers at once: a block, the embedding, or norm + head."""
        return np.maximum(np.maximum(self.layer_params, self.embedding_params), self.head_params)


def layers_on_stage(num_layers: int, pp, stage):
    """Blocks on `stage`: an even split, the remainder going to the earliest stages (which also hold
    the most in-flight micro-batches, so this is the memory-conservative placement)."""
    return num_layers // pp + (stage < num_layers % pp)


def _largest(tensors, tp):
    return reduce(np.maximum, (numel([t], tp) for t in tensors))


def _shard(arch: Architecture, plan: Plan, last: bool) -> StageShard:
    pp, tp = plan.pp, plan.tp
    single = pp == 1
    stage, is_first, is_last = (pp - 1, single, True) if last else (0, True, single)
    layer_t, embedding_t = layer_tensors(arch), embedding_tensors(arch)
    # With pipelining and tied embeddings the last stage keeps its own copy of the embedding as LM head.
    shared, separate = head_tensors(arch), head_tensors(arch, separate_copy_of_tied=True)
    head = np.where(single, numel(shared, tp), numel(separate, tp))
    largest_head = np.where(single, _largest(shared, tp), _largest(separate, tp))
    largest = np.maximum(
        _largest(layer_t, tp), np.maximum(_largest(embedding_t, tp) * is_first, largest_head * is_last)
    )
    return StageShard(
        stage=stage,
        is_first=is_first,
        is_last=is_last,
        num_layers=layers_on_stage(arch.num_layers, pp, stage),
        layer_params=numel(layer_t, tp),
        embedding_params=numel(embedding_t, tp) * is_first,
        head_params=head * is_last,
        largest_tensor_params=largest,
        in_flight_micro_batches=np.minimum(pp - stage, plan.grad_accum),
    )


def first_and_last_stage(arch: Architecture, plan: Plan) -> tuple[StageShard, StageShard]:
    """The two stages that can hold the most memory (they coincide without pipelining)."""
    return _shard(arch, plan, last=False), _shard(arch, plan, last=True)
