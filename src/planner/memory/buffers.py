"""Engine buffers that are not per-parameter state: communication buckets, gathered (unsharded)
parameters under ZeRO-3/FSDP, autocast weight copies and pipeline send/receive buffers.

Sizes follow the engines' defaults as read in their source (docs/research/engine-memory-facts.md);
the launch-config writers emit the same values, so what is modelled is what is launched.
"""

import numpy as np

from planner.memory.stages import StageShard
from planner.plan import Plan

DEEPSPEED_REDUCE_BUCKET_ELEMENTS = 500_000_000
"""`reduce_bucket_size` default (runtime/zero/config.py): the gradient bucket ("ipg buffer"), allocated
in the model dtype. ZeRO-1/2 allocate it at the first gradient hook of each backward (two when
overlap_comm, which defaults to off below stage 3); ZeRO-3 keeps one for the whole run."""

DEEPSPEED_ALLGATHER_BUCKET_ELEMENTS = 500_000_000
"""`allgather_bucket_size` default (runtime/zero/config.py, ZeRO-1/2): the updated partitions are gathered
in buckets of this many elements."""

DEEPSPEED_PARAM_PERSISTENCE_THRESHOLD = 100_000
"""`stage3_param_persistence_threshold` default: ZeRO-3 keeps parameters smaller than this gathered (norm
weights, small biases); larger ones are fetched module by module."""

DEEPSPEED_MAX_LIVE_PARAMETERS = 1_000_000_000
"""`stage3_max_live_parameters` default: gathered parameters ZeRO-3 keeps alive at most."""

DEEPSPEED_MAX_REUSE_DISTANCE = 1_000_000_000
"""`stage3_max_reuse_distance` default: a gathered parameter whose next use is fewer elements away
is not released (PartitionedParameterCoordinator)."""


def compute_param_bytes(plan: Plan) -> int:
    """Bytes per element of parameters as the forward uses them (bf16 unless training in fp32)."""
    return 4 if plan.precision == "fp32" else 2


def gradient_reduce_bytes(plan: Plan) -> int:
    """Bytes per element of the data-parallel gradient reduction. Megatron reduces its fp32 main_grad
    buffer unless `--grad-reduce-in-bf16` (then the buffer itself is bf16; pure bf16 keeps bf16 main grads);
    FSDP2 reduce-scatters in MixedPrecisionPolicy.reduce_dtype, fp32 in torchtitan's default
    (`mixed_precision_reduce`), bf16 when asked; DeepSpeed reduces in the model dtype."""
    c = compute_param_bytes(plan)
    if plan.engine == "deepspeed" or plan.precision in ("fp32", "pure-bf16"):
        return c
    return 2 if plan.grad_reduce_bf16 else 4


def deepspeed_overlap_comm(plan: Plan) -> bool:
    """DeepSpeed's `overlap_comm`: the plan's choice, else the stage default (on for ZeRO-3 only)."""
    return plan.zero == 3 if plan.overlap_grad_reduce is None else plan.overlap_grad_reduce


def deepspeed_bucket_bytes(plan: Plan) -> tuple[float, float]:
    """(bytes alive always, bytes alive during backward only) of DeepSpeed's gradient buckets. ZeRO-1/2
    double the bucket with overlap_comm (one fills while the other reduces; stage_1_and_2.py)."""
    if plan.engine != "deepspeed" or plan.zero == 0:
        return 0.0, 0.0
    bucket = DEEPSPEED_REDUCE_BUCKET_ELEMENTS * compute_param_bytes(plan)
    if plan.zero == 3:
        return bucket, 0.0
    return 0.0, bucket * (2 if deepspeed_overlap_comm(plan) else 1)


def _peft_block_split(stage: StageShard):
    """(adapter, NF4, other) parameters of one block under LoRA/QLoRA."""
    adapters = stage.trainable_params / stage.num_layers
    quantized = stage.quantized_params / stage.num_layers
    return adapters, quantized, stage.layer_params - quantized


def gathered_unit_bytes(stage: StageShard, plan: Plan):
    """(bytes one all-gathered block holds, bytes all the stage's gathered units hold, parameters of the
    largest unit that get gradients).

    Full fine-tuning and freeze: every parameter in the compute dtype, and the largest unit (a block, the
    embedding, or norm + head) trains. LoRA/QLoRA: the frozen base is gathered as it is stored (bf16, or for
    QLoRA's 4-bit linears the packed NF4 bytes and their quantization constants: torchao's NF4Tensor
    all-gathers its packed data and scales, bitsandbytes' FSDP path shards the packed weight stored as bf16,
    bnb_4bit_quant_storage), and only the block's adapters get unsharded gradients."""
    c = compute_param_bytes(plan)
    if plan.method not in ("lora", "qlora"):
        return c * stage.layer_params, c * stage.params, stage.largest_unit_params
    adapters, quantized, other = _peft_block_split(stage)
    block = c * (other + adapters) + stage.quantized_bytes_per_param * quantized
    whole = stage.num_layers * block + c * (stage.embedding_params + stage.head_params)
    return block, whole, adapters


def gathered_parameter_bytes(stage: StageShard, plan: Plan) -> float:
    """Unsharded parameters (and their unsharded gradients) alive around the forward/backward seam.

    DeepSpeed ZeRO-3: at the forward-to-backward turn the last blocks' parameters are reused within
    `stage3_max_reuse_distance` (their next use comes back after about twice their own size), so half
    that distance plus the largest module stays gathered, capped by `stage3_max_live_parameters`; the
    largest module's full-size gradient exists before it is reduced (DeepSpeed's own estimator counts
    4 bytes x largest layer for parameter and gradient; none under LoRA/QLoRA, whose frozen base has no
    gradient).
    FSDP FULL_SHARD (FSDP2 semantics): the unit being processed (unsharded params, gradients of what trains
    in it, and the fp32 reduce-scatter input held until the next unit's backward) plus the prefetched block
    with its all-gather buffer. torchtitan wraps every block, the embedding, and norm + LM head.
    FSDP SHARD_GRAD_OP: every unit of the stage stays unsharded from forward to backward, plus one
    unit's gradients and reduce buffer. Parameter offload gathers the same units from host memory.
    Gathered sizes under LoRA/QLoRA: `gathered_unit_bytes`."""
    c = compute_param_bytes(plan)
    reduce_bytes = gradient_reduce_bytes(plan)
    block, whole, trained_unit = gathered_unit_bytes(stage, plan)
    peft = plan.method in ("lora", "qlora")
    if plan.engine == "deepspeed" and plan.zero == 3:
        kept = np.minimum(
            np.minimum(DEEPSPEED_MAX_LIVE_PARAMETERS, DEEPSPEED_MAX_REUSE_DISTANCE / 2 + stage.largest_tensor_params),
            stage.params,
        )
        gradient = 0.0 if peft else c * stage.largest_tensor_params
        return whole / stage.params * kept + gradient
    if plan.engine != "fsdp" or plan.zero < 2:
        return 0.0
    edge_units = c * np.maximum(stage.embedding_params, stage.head_params)
    working_unit = np.maximum(block, edge_units) + trained_unit * (c + reduce_bytes)
    if plan.zero == 3:
        return working_unit + 2 * block
    return whole + trained_unit * (c + reduce_bytes)


def autocast_weight_copy_bytes(stage: StageShard, plan: Plan) -> float:
    """torch.autocast casts fp32 weights to bf16 once per forward and keeps the copies for backward
    (2 bytes per parameter between forward and backward; measured +2.2 GiB at 1.07B parameters,
    ../shared/notes/memory-model.md §3). Applies to DDP with autocast (FSDP engine, ZeRO-0)."""
    if plan.engine == "fsdp" and plan.zero == 0 and plan.precision in ("bf16", "fp16", "fp8"):
        return 2.0 * stage.trainable_params
    return 0.0


FSDP1_MAX_INFLIGHT_ALL_GATHERS = 2
"""FSDP1's rate limiter (`limit_all_gathers=True`, the default in PyTorch and Accelerate): the CPU issues at
most two all-gathers ahead of the compute stream (torch/distributed/fsdp/_limiter_utils.py, _FreeEventQueue)."""


def fsdp1_stream_blocks_bytes(stage: StageShard, plan: Plan):
    """Memory PyTorch reserves under FSDP1 beyond what is allocated at the peak (a reserved-only term).

    FSDP1 gathers each FlatParameter on its unshard stream and reduce-scatters gradients on its
    post-backward stream; when it frees them it calls record_stream (flat_param.py
    `_free_unsharded_flat_param`; _runtime_utils.py for the padded unsharded gradient), so the caching
    allocator keeps each block out of reuse until the compute stream has passed it, and blocks allocated by
    a side stream stay in that stream's pool, unavailable to the compute stream's activations. At the peak
    those pools hold the gathered units the rate limiter lets run ahead (two, in the compute dtype) and one
    unit's padded unsharded gradient with its reduced shard (reduce dtype). FSDP2 allocates its all-gather
    and reduce-scatter buffers without record_stream and reuses them (torchtitan docs/fsdp.md: lower peak
    than FSDP1), so the term is 0 there, and for the other engines."""
    if plan.engine != "fsdp" or plan.zero < 2 or plan.fsdp_version != 1:
        return 0.0 * stage.largest_unit_params
    if plan.method in ("lora", "qlora"):
        # The frozen base is gathered as stored (`gathered_unit_bytes`: QLoRA's packed 4-bit weights, not bf16);
        # gradients exist only for the adapters, which the Trainer wraps as units of their own (PEFT's
        # fsdp_auto_wrap_policy, applied by the Hugging Face Trainer to every PeftModel under FSDP), so a frozen
        # unit reduces nothing.
        block, _, adapters = gathered_unit_bytes(stage, plan)
        unit_bytes = np.maximum(
            block, compute_param_bytes(plan) * np.maximum(stage.embedding_params, stage.head_params)
        )
        return FSDP1_MAX_INFLIGHT_ALL_GATHERS * unit_bytes + gradient_reduce_bytes(plan) * adapters * (
            1 + 1 / plan.shard_degree
        )
    unit = stage.largest_unit_params
    gathered = FSDP1_MAX_INFLIGHT_ALL_GATHERS * compute_param_bytes(plan) * unit
    return gathered + gradient_reduce_bytes(plan) * unit * (1 + 1 / plan.shard_degree)
