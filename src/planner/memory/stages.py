"""Which parameters one GPU holds: the pipeline stage's share, divided by tensor parallelism.

Pipeline stage `i` of `pp` holds `L/pp` blocks; the first also holds the input embedding, the last the
final norm and LM head (and, with tied embeddings under pipelining, its own copy of the embedding, as
Megatron-LM does). Matrices are split `tp` ways, norms are replicated (Megatron's layout).

Under an even (or front-loaded) split only the first and the last stage can be the most loaded one: the
first holds the most in-flight micro-batches under 1F1B (pp of them), the most blocks (uneven splits put the
extra ones first) and the embedding; the last holds the LM head and the logits. Every interior stage holds
no more blocks than the first, fewer in-flight micro-batches and neither embedding nor head. The interleaved
split that counts the embedding and the loss as one layer each (`planner.plan.embedding_and_loss_as_layers`)
takes one block off the first and the last rank, so there the second stage (rank 1, the most blocks and the
most in-flight micro-batches after rank 0) is evaluated too, as under a split the plan states (first and last
rank block counts, Megatron's uneven pipeline), where the middle ranks can hold the most blocks. The largest
is reported.

The numeric plan fields (pp, grad_accum, ...) may be numpy arrays: the search evaluates many plans at once
with these same functions.
"""

import functools
from dataclasses import dataclass, replace
from functools import reduce

import numpy as np

from planner.architecture import (
    embedding_tensors,
    expert_tensors,
    head_tensors,
    layer_tensors,
    lora_params_per_layer,
    moe_layer_tensors,
    moe_layers,
    mtp_block_architecture,
    mtp_prelude_tensors,
    numel,
    quantized_params_per_layer,
)
from planner.catalog.models import Architecture, moe_layer_count
from planner.memory.quantization import nf4_gathered_bytes_per_param
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
    """Micro-batches' worth of this stage's activations held at once (see `in_flight_micro_batches`)."""
    trainable_params: object = None
    """Parameters that train on this rank (all of them in full fine-tuning; the LoRA adapters, or the
    last blocks under freeze); they carry gradients and optimizer states."""
    frozen_params: object = 0
    """Base parameters kept as they are (bf16) and not trained."""
    quantized_params: object = 0
    """Base weights stored in NF4 (QLoRA)."""
    largest_quantized_params: object = 0
    """The biggest NF4 weight: QLoRA dequantizes one weight at a time to bf16."""
    quantized_bytes_per_param: float = 0.0
    """Bytes of one NF4 weight in a sharded unit's all-gather: the packed weight, and its quantization constants
    where they shard with it (`nf4_gathered_bytes_per_param`; 0 without QLoRA)."""
    trained_layers: object = None
    """Blocks whose activations backward needs (all of them, except under freeze)."""
    moe_layers: object = 0
    """Of `num_layers`, the MoE blocks (the others have the dense MLP of `layer_params`)."""
    moe_layer_params: int = 0
    """One MoE block on this rank without its routed experts: attention, norms, router, shared experts."""
    local_expert_params: int = 0
    """The routed experts one MoE block keeps on this rank: num_experts / ep experts, each split over the
    expert-tensor-parallel ranks (etp; tp by default, as in Megatron)."""

    @property
    def expert_params(self):
        """Routed-expert parameters on this rank; their states shard over the expert-data-parallel group."""
        return self.moe_layers * self.local_expert_params

    @property
    def params(self):
        dense_blocks = (self.num_layers - self.moe_layers) * self.layer_params
        moe_blocks = self.moe_layers * (self.moe_layer_params + self.local_expert_params)
        return dense_blocks + moe_blocks + self.embedding_params + self.head_params

    @property
    def largest_unit_params(self):
        """The biggest group of parameters FSDP gathers at once: a block, the embedding, or norm + head."""
        block = np.maximum(
            self.layer_params, (self.moe_layers > 0) * (self.moe_layer_params + self.local_expert_params)
        )
        return np.maximum(np.maximum(block, self.embedding_params), self.head_params)


def layers_on_stage(num_layers: int, pp, stage):
    """Blocks on `stage`: an even split, the remainder going to the earliest stages (which also hold
    the most in-flight micro-batches, so this is the memory-conservative placement)."""
    return num_layers // pp + (stage < num_layers % pp)


def stated_split(num_layers: int, plan: Plan) -> tuple | None:
    """(first rank, each middle rank, last rank) blocks of the split the plan states (first_stage_layers,
    last_stage_layers); None under the planner's own split."""
    if plan.first_stage_layers is None:
        return None
    first, last = plan.first_stage_layers, plan.last_stage_layers
    middle = np.where(plan.pp > 2, (num_layers - first - last) // np.maximum(plan.pp - 2, 1), 0)
    return first, middle, last


def stage_blocks(num_layers: int, plan: Plan, stage):
    """Blocks on pipeline rank `stage`: the sizes of its model chunks stage, stage + pp, ..., one per virtual
    stage (`model_chunk_blocks`), so the plan's stated split, the front-loaded split (`layers_on_stage`, which
    V chunks of an even split add up to: rank r's chunks hold V b + q + (r < s) blocks when L = pp V b + q pp + s)
    and the embedding- and loss-aware interleaved split, where the first and the last rank hold one block fewer,
    all come from the one chunk map. Arrays allowed (the virtual stages may differ from plan to plan)."""
    virtual = np.asarray(plan.virtual_stages)
    total = 0
    for v in range(int(virtual.max())):
        size = model_chunk_blocks(num_layers, plan, v * plan.pp + stage)[1]
        total = total + size * (v < virtual)
    return total


def _chunk_split(num_layers: int, plan: Plan) -> tuple:
    """(b, first_lighter_by, last_lighter_by, remainder) of the plan's pp x V model chunks: every chunk holds b
    blocks, the first `remainder` one more, the first chunk (rank 0's, with the embedding) `first_lighter_by`
    fewer and the last (the last rank's, with the loss) `last_lighter_by` fewer. Under a stated split the middle
    ranks' blocks split into V chunks of b and the first and last rank's chunks take the difference (Megatron-Core's
    --decoder-first/last-pipeline-num-layers with a virtual pipeline; plan._check_stated_chunks); under the
    embedding- and loss-aware interleaved split b = (L + 2) / (pp V) and both ends hold one fewer; otherwise the
    blocks split evenly, the earliest chunks taking the remainder (which only 1F1B leaves, see `layers_on_stage`).
    Arrays allowed, except that a stated split is one plan's."""
    split = stated_split(num_layers, plan)
    if split is not None:
        first, middle, last = split
        b = middle // plan.virtual_stages
        return b, plan.virtual_stages * b - first, plan.virtual_stages * b - last, 0
    chunks = plan.pp * plan.virtual_stages
    aware = embedding_and_loss_split(num_layers, plan)
    b = np.where(aware, (num_layers + 2) // chunks, num_layers // chunks)
    return b, 1 * aware, 1 * aware, np.where(aware, 0, num_layers % chunks)


def model_chunk_blocks(num_layers: int, plan: Plan, chunk) -> tuple:
    """(blocks before model chunk `chunk`, blocks in it), chunks in Megatron's order (virtual stage-major: chunk c
    is virtual stage c // pp of rank c % pp; core/transformer/transformer_block.py, get_transformer_layer_offset),
    for the plan's split (`_chunk_split`). Without interleaving the chunks are the ranks. Arrays allowed."""
    b, first_lighter, last_lighter, remainder = _chunk_split(num_layers, plan)
    last_chunk = plan.pp * plan.virtual_stages - 1
    before = chunk * b + np.minimum(chunk, remainder) - first_lighter * (chunk > 0)
    size = b + (chunk < remainder) - first_lighter * (chunk == 0) - last_lighter * (chunk == last_chunk)
    return before, size


def rank_moe_blocks(arch: Architecture, plan: Plan, rank):
    """MoE blocks pipeline rank `rank` holds (without the MTP depths): chunk by chunk, since under interleaving
    the rank holds model chunks rank, rank + pp, rank + 2 pp, ... (`model_chunk_blocks`), not one run of blocks.
    DeepSeek-V3 (61 blocks, 3 dense first) stated 7/6 over pp 8 with V 4 (chunks of 1, the first chunk 7 - 3 x 2
    = 1 block): rank 0 holds blocks 0, 16-17, 32-33, 48-49, 1 dense and 6 MoE. Arrays allowed."""
    virtual = np.asarray(plan.virtual_stages)
    total = 0
    for v in range(int(virtual.max())):
        before, size = model_chunk_blocks(arch.num_layers, plan, v * plan.pp + rank)
        moe = moe_layer_count(arch, before + size) - moe_layer_count(arch, before)
        total = total + moe * (v < virtual)
    return total


def stage_moe_blocks(arch: Architecture, plan: Plan, stage):
    """MoE blocks of the first (0), the last (pp - 1) or the middle position (any other stage): the first and
    the last rank's own (`rank_moe_blocks`); the middle position stands for every rank between them, which hold
    as many blocks as rank 1 (`stage_blocks`) but, under interleaving, not as many MoE blocks (in the H100
    DeepSeek-V3 layout above rank 1 holds 2 of the dense first blocks, ranks 2-6 none): the most any of them
    holds. Arrays allowed."""
    own = rank_moe_blocks(arch, plan, stage)
    pp = np.asarray(plan.pp)
    middle = 0 * own
    for rank in range(1, int(pp.max()) - 1):
        middle = np.maximum(middle, rank_moe_blocks(arch, plan, rank) * (rank <= pp - 2))
    return np.where((stage == 0) | (stage == pp - 1), own, middle)


def checkpointed_blocks(num_layers_on_stage, plan: Plan):
    """Blocks of a stage that full checkpointing recomputes: all of them, or with `checkpointing_every` N
    every N-th (torchtitan 0.1-0.2's selective layer mode counts a rank's blocks and wraps those whose count
    is a multiple of N: floor(blocks / N))."""
    if plan.checkpointing != "full":
        return 0 * num_layers_on_stage
    return num_layers_on_stage // plan.checkpointing_every


def checkpointed_fraction(num_layers: int, plan: Plan):
    """Share of the first (most loaded) stage's blocks that are checkpointed, for the recompute work."""
    blocks = np.maximum(stage_blocks(num_layers, plan, 0), 1)
    return checkpointed_blocks(blocks, plan) / blocks


def in_flight_micro_batches(plan: Plan, stage):
    """Micro-batches whose activations (of all the stage's blocks) a pipeline rank holds at its peak.

    1F1B: rank r runs pp - r - 1 warm-up forwards and one more before its first backward, so it holds
    min(pp - r, m) micro-batches (Narayanan et al. 2021, Sec. 2.2; m = grad_accum).
    Interleaved with V chunks per rank: Megatron-LM's schedule (core pipeline_parallel/schedules.py,
    get_num_warmup_microbatches) runs 2 (pp - r - 1) + (V - 1) pp warm-up chunk-forwards, plus one in the
    steady state; each chunk holds 1/V of the rank's blocks, so rank 0 holds pp + (pp - 1)/V micro-batches'
    worth, the factor 1 + (pp - 1)/(pp V) of Megatron's theoretical_memory_usage.py (Korthikanti et al.
    2022, Sec. 4.2.3). With m x V chunk-forwards in a step at most m micro-batches' worth exist."""
    one_f_one_b = np.minimum(plan.pp - stage, plan.grad_accum)
    if plan.pp_schedule != "interleaved":
        return one_f_one_b
    v = plan.virtual_stages
    chunks = 2 * (plan.pp - stage - 1) + (v - 1) * plan.pp + 1
    return np.minimum(chunks / v, plan.grad_accum)


def embedding_and_loss_split(num_layers: int, plan: Plan):
    """Whether the plan's interleaved split counts the embedding and the loss as one layer each (the blocks
    alone do not split into pp x V equal chunks, the blocks + 2 do; planner.plan.embedding_and_loss_as_layers,
    which the Megatron and torchtitan writers follow). Arrays allowed."""
    if plan.pp_schedule != "interleaved" or plan.first_stage_layers is not None:
        return np.zeros_like(plan.pp, dtype=bool)
    chunks = plan.pp * plan.virtual_stages
    return (plan.virtual_stages > 1) & (num_layers % chunks != 0) & ((num_layers + 2) % chunks == 0)


def interleaved_live_block_micro_batches(
    pp: int, virtual: int, micro_batches: int, rank: int, blocks_per_chunk: int, light_chunk: int, lighter_by: int = 1
) -> int:
    """Largest number of (block, micro-batch) activation sets pipeline rank `rank` holds at once under
    Megatron-Core's interleaved 1F1B, when each of its `virtual` model chunks holds `blocks_per_chunk` blocks
    except `light_chunk` (-1: none), which holds `lighter_by` fewer (the first chunk of rank 0, which also holds
    the embedding, and the last chunk of the last rank, which also holds the output layer and the loss: one
    fewer under the embedding- and loss-aware split, the stated difference under a stated split).

    The forward order is Megatron's schedule table (core/pipeline_parallel/schedules.py, get_schedule_table:
    groups of microbatch_group_size_per_vp_stage micro-batches, default pp, each run through chunk 0, then
    chunk 1, ...); the backward order is the same with the chunks reversed. get_pp_rank_microbatches runs
    2 (pp - rank - 1) + (V - 1) x group warm-up forwards, then alternates one forward and one backward. The
    Llama 3 paper (arXiv 2407.21783, Sec. 3.3.2) describes the same tunable group size N; Megatron accepts
    pp <= N <= M, and the memory is least at N = pp, the value taken here."""
    group = pp
    order = []
    for start in range(0, micro_batches, group):
        size = min(group, micro_batches - start)
        order += [chunk for chunk in range(virtual) for _ in range(size)]

    def blocks(chunk: int) -> int:
        return blocks_per_chunk - lighter_by * (chunk == light_chunk)

    forward = [blocks(chunk) for chunk in order]
    backward = [blocks(virtual - 1 - chunk) for chunk in order]
    warm_up = min(2 * (pp - rank - 1) + (virtual - 1) * group, len(order))
    live = peak = sum(forward[:warm_up])
    for step in range(len(order) - warm_up):
        live += forward[warm_up + step]
        peak = max(peak, live)
        live -= backward[step]
    return peak


_cached_live_blocks = functools.lru_cache(maxsize=4096)(interleaved_live_block_micro_batches)


def _live_block_micro_batches(
    where, pp, virtual: int, micro_batches, rank, blocks_per_chunk, light_chunk: int, lighter_by: int = 1
):
    """`interleaved_live_block_micro_batches` over array-valued plan fields, walked once per distinct
    (pp, micro-batches) pair (the rank and the chunk size follow from pp) and only where `where` holds
    (elsewhere 0)."""
    where, pp, micro_batches, rank, blocks_per_chunk = np.broadcast_arrays(
        where, pp, micro_batches, rank, blocks_per_chunk
    )
    out = np.zeros(where.shape, dtype=float)
    chosen = np.flatnonzero(where)
    if chosen.size == 0:
        return out
    key = pp.ravel()[chosen].astype(np.int64) * (1 << 32) + micro_batches.ravel()[chosen].astype(np.int64)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    rows = chosen[first]
    values = np.array(
        [
            _cached_live_blocks(
                int(pp.flat[i]),
                virtual,
                int(micro_batches.flat[i]),
                int(rank.flat[i]),
                int(blocks_per_chunk.flat[i]),
                light_chunk,
                lighter_by,
            )
            for i in rows
        ],
        dtype=float,
    )
    out.flat[chosen] = values[inverse.ravel()]
    return out


def _largest(tensors, tp):
    return reduce(np.maximum, (numel([t], tp) for t in tensors))


def _blocks_and_in_flight(arch: Architecture, plan: Plan, position: str, stage):
    """(blocks on the stage, micro-batches' worth of them live at once) for the first, second (`interior`)
    or last stage: the front-loaded split (`layers_on_stage`, `in_flight_micro_batches`), or the embedding-
    and loss-aware interleaved split, where every chunk holds b = (L + 2) / (pp V) blocks except the first
    chunk of rank 0 and the last chunk of the last rank, which hold b - 1
    (`interleaved_live_block_micro_batches`)."""
    blocks = stage_blocks(arch.num_layers, plan, stage)
    in_flight = in_flight_micro_batches(plan, stage)
    split = stated_split(arch.num_layers, plan)
    if split is not None and plan.pp_schedule == "interleaved":
        return blocks, _stated_interleaved_in_flight(arch.num_layers, plan, position, stage, blocks)
    aware = embedding_and_loss_split(arch.num_layers, plan)
    if not np.any(aware):
        return blocks, in_flight
    v = plan.virtual_stages
    per_chunk = np.maximum(_chunk_split(arch.num_layers, plan)[0], 1)
    light = {"first": 0, "interior": -1, "last": v - 1}[position]
    aware_blocks = v * per_chunk - (light >= 0)
    live = _live_block_micro_batches(aware, plan.pp, v, plan.grad_accum, stage, per_chunk, light)
    return np.where(aware, aware_blocks, blocks), np.where(aware, live / aware_blocks, in_flight)


def _stated_interleaved_in_flight(num_layers: int, plan: Plan, position: str, stage, blocks):
    """Micro-batches' worth of a rank's blocks live at once under a stated interleaved split: every chunk holds
    the middle ranks' chunk size b except the first chunk of rank 0 and the last chunk of the last rank, which
    hold the rank's stated blocks less (V - 1) b (`_chunk_split`, `interleaved_live_block_micro_batches`)."""
    chunk, first_lighter, last_lighter, _ = (int(n) for n in _chunk_split(num_layers, plan))
    v = plan.virtual_stages
    light, lighter_by = {"first": (0, first_lighter), "interior": (-1, 0), "last": (v - 1, last_lighter)}[position]
    live = _live_block_micro_batches(True, plan.pp, v, plan.grad_accum, stage, chunk, light, lighter_by)
    return live / np.maximum(blocks, 1)


def _shard(arch: Architecture, plan: Plan, position: str) -> StageShard:
    pp, tp = plan.pp, plan.tp
    single = pp == 1
    stage, is_first, is_last = {
        "first": (0, True, single),
        "interior": (np.minimum(1, pp - 1), False, False),
        "last": (pp - 1, single, True),
    }[position]
    layer_t, embedding_t = layer_tensors(arch), embedding_tensors(arch)
    # With pipelining and tied embeddings the last stage keeps its own copy of the embedding as LM head.
    shared, separate = head_tensors(arch), head_tensors(arch, separate_copy_of_tied=True)
    head = np.where(single, numel(shared, tp), numel(separate, tp))
    largest_head = np.where(single, _largest(shared, tp), _largest(separate, tp))
    largest = np.maximum(
        _largest(layer_t, tp), np.maximum(_largest(embedding_t, tp) * is_first, largest_head * is_last)
    )
    num_layers, in_flight = _blocks_and_in_flight(arch, plan, position, stage)
    if arch.is_moe:
        moe = stage_moe_blocks(arch, plan, stage)
        local_experts, etp = arch.num_experts // plan.ep, plan.expert_tp
        fused_expert = local_experts * sum(
            t.numel for t in expert_tensors(arch) if t.is_matrix and "down" not in t.name
        )
        # The experts of a block are one fused tensor in transformers 5 (gate_up_proj) and torchtitan.
        largest = np.maximum(largest, np.maximum(_largest(moe_layer_tensors(arch), tp), -(-fused_expert // etp)))
        moe_fields = {
            "moe_layers": moe,
            "moe_layer_params": numel(moe_layer_tensors(arch), tp),
            "local_expert_params": local_experts * numel(expert_tensors(arch), etp),
        }
    else:
        moe_fields = {}
    num_layers, head, moe_fields = _with_mtp(arch, plan, is_last, num_layers, head, moe_fields)
    shard = StageShard(
        stage=stage,
        is_first=is_first,
        is_last=is_last,
        num_layers=num_layers,
        layer_params=numel(layer_t, tp),
        embedding_params=numel(embedding_t, tp) * is_first,
        head_params=head * is_last,
        largest_tensor_params=largest,
        in_flight_micro_batches=in_flight,
        **moe_fields,
    )
    return _with_method(arch, plan, shard)


def _with_mtp(arch: Architecture, plan: Plan, is_last, num_layers, head, moe_fields: dict):
    """The last stage with the plan's multi-token-prediction depths (Megatron-Core places them on the last
    pipeline stage, multi_token_prediction.mtp_on_this_rank): each depth's transformer block counts as one more
    block of the stage (a MoE block for DeepSeek-V3, planner.architecture.mtp_block_architecture), its norms and
    eh_proj join the head, and under pipelining the stage holds its own copy of the embedding, which the depths
    look the shifted tokens up in (GPTModel builds the embedding where `pre_process or mtp_process`)."""
    depths = plan.mtp_layers * is_last
    if not plan.mtp_layers:
        return num_layers, head, moe_fields
    tp = plan.tp
    embedding_copy = np.where(plan.pp > 1, numel(embedding_tensors(arch), tp), 0)
    head = head + depths * numel(mtp_prelude_tensors(arch), tp) + (depths > 0) * embedding_copy
    if moe_fields:
        moe_fields = {
            **moe_fields,
            "moe_layers": moe_fields["moe_layers"] + depths * moe_layers(mtp_block_architecture(arch)),
        }
    return num_layers + depths, head, moe_fields


def _with_method(arch: Architecture, plan: Plan, shard: StageShard) -> StageShard:
    """Split the stage's parameters into trained, frozen and quantized ones for the plan's method (PEFT
    plans run without tensor or pipeline parallelism, so the stage is the whole model)."""
    if plan.method == "full":
        return replace(shard, trainable_params=shard.params, trained_layers=shard.num_layers)
    if plan.method == "freeze":
        trained = np.minimum(plan.trainable_layers, shard.num_layers)
        trainable = trained * shard.layer_params
        return replace(
            shard, trainable_params=trainable, frozen_params=shard.params - trainable, trained_layers=trained
        )
    adapters = shard.num_layers * lora_params_per_layer(arch, plan.lora_rank, plan.lora_targets)
    if plan.method == "lora":
        return replace(shard, trainable_params=adapters, frozen_params=shard.params, trained_layers=shard.num_layers)
    quantized = shard.num_layers * quantized_params_per_layer(arch)
    largest = max(t.numel for t in layer_tensors(arch) if t.is_matrix)
    return replace(
        shard,
        trainable_params=adapters,
        frozen_params=shard.params - quantized,
        quantized_params=quantized,
        largest_quantized_params=largest,
        quantized_bytes_per_param=nf4_gathered_bytes_per_param(arch, plan),
        trained_layers=shard.num_layers,
    )


def first_and_last_stage(arch: Architecture, plan: Plan) -> tuple[StageShard, StageShard]:
    """The first and the last stage (they coincide without pipelining)."""
    return _shard(arch, plan, "first"), _shard(arch, plan, "last")


def second_stage(arch: Architecture, plan: Plan) -> StageShard | None:
    """Rank 1, which can hold the most memory under the embedding- and loss-aware interleaved split (see the
    module notes) or a stated split whose middle ranks hold more blocks than the first; None when no plan of
    `plan` uses either."""
    if plan.first_stage_layers is None and not np.any(embedding_and_loss_split(arch.num_layers, plan)):
        return None
    return _shard(arch, plan, "interior")


def interior_stage_counts(arch: Architecture, plan: Plan):
    """Where the second stage is a stage of its own that can outweigh the first and the last: the aware or a
    stated split with more than two stages. Arrays allowed."""
    stated = plan.first_stage_layers is not None
    return (stated | embedding_and_loss_split(arch.num_layers, plan)) & (plan.pp > 2)
