"""Per-GPU peak memory of a plan: every term, every pipeline stage, every phase; the peak is the max.

Phases (what is alive at the moment each one peaks):

* `loss` (last pipeline stage): persistent states, gradients accumulated from earlier micro-batches,
  the saved activations of every in-flight micro-batch, the logits and cross-entropy, gathered
  parameters and buckets.
* `backward`: the same but, instead of the logits, one block being recomputed (checkpointed modes) and
  its backward workspace. Without gradient accumulation, gradients grow while activations are freed,
  so the phase takes the larger of the two ends (activations at its start, all gradients at its end).
* `optimizer_step`: states, all gradients and the step's temporaries; no activations.

allocated (torch.cuda.max_memory_allocated) = the largest phase on the most loaded stage.
reserved = allocated x (1 + allocator fragmentation) + FSDP1's side-stream blocks.
peak (nvidia-smi) = reserved + CUDA context + NCCL communicators, on a card with memory to spare.
required = the same with only the cache the allocator cannot release when the card is full
(`allocator_fragmentation_at_capacity`): a plan fits when `required` is within the usable capacity; on a
card that cannot hold the whole cache, the cache fills what is left (nvidia-smi then shows about the card).
"""

from dataclasses import dataclass, field, replace
from functools import reduce

import numpy as np

from planner.catalog import GpuSpec, ModelSpec
from planner.memory import activations as act
from planner.memory.buffers import (
    autocast_weight_copy_bytes,
    deepspeed_bucket_bytes,
    fsdp1_stream_blocks_bytes,
    gathered_parameter_bytes,
)
from planner.memory.calibration import TEXTBOOK, activation_calibration
from planner.memory.runtime import DEFAULT_OVERHEADS, RuntimeOverheads, nccl_communicators
from planner.memory.stages import (
    StageShard,
    checkpointed_blocks,
    first_and_last_stage,
    interior_stage_counts,
    second_stage,
)
from planner.memory.states import (
    StateTerm,
    deepspeed_step_cap_bytes,
    dequantized_weight_bytes,
    stage_state_bytes,
    state_layout,
)
from planner.plan import Plan
from planner.units import GIB

DEFAULT_SAFETY_MARGIN = 0.05
"""Fraction of GPU memory a plan must leave free to be called `fits`: room for what the model cannot
see (data-dependent lengths, library versions). Overridable per call."""

TERMS = (
    "weights",
    "frozen_weights",
    "quantized_weights",
    "quantization_constants",
    "adapter_weights",
    "master_weights",
    "gradients",
    "adapter_gradients",
    "unsharded_gradient_accumulators",
    "ddp_gradient_buckets",
    "optimizer_states",
    "adapter_optimizer_states",
    "fp8_weight_copies",
    "optimizer_step_temporaries",
    "activations",
    "logits_and_loss",
    "recompute_and_backward",
    "gathered_parameters",
    "dequantized_weight_buffer",
    "communication_buckets",
    "autocast_weight_copies",
    "pipeline_buffers",
    "allocator_fragmentation",
    "fsdp1_stream_blocks",
    "cuda_context",
    "nccl_communicators",
)
"""Every breakdown key, in display order. The JSON always carries all of them (zeros included)."""

PHASES = ("loss", "backward", "optimizer_step")


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory answer for one plan on one GPU type (all sizes in GiB)."""

    peak_gib: float
    """What nvidia-smi would show at the peak on this card: reserved + CUDA context + NCCL, the allocator's
    cache limited by what the card has left (`peak_on_card`)."""
    allocated_peak_gib: float
    """What torch.cuda.max_memory_allocated would show."""
    reserved_peak_gib: float
    """What torch.cuda.max_memory_reserved would show."""
    capacity_gib: float
    usable_gib: float
    """capacity x (1 - safety margin)."""
    safety_margin: float
    fits: bool
    """required_gib <= usable_gib (and the offloaded states fit the host)."""
    peak_phase: str
    peak_stage: int
    breakdown_gib: dict[str, float]
    """term -> GiB at the peak (phase and stage above); sums to peak_gib."""
    phases_gib: dict[str, float]
    """phase -> allocated GiB on the peak stage."""
    stage_peaks_gib: list[float]
    """allocated GiB at the peak phase of the first, [the second,] and the last pipeline stage (one value
    without pipelining): the only stages that can be the most loaded (see planner.memory.stages)."""
    host_ram_gib_per_node: float
    """Host memory the offloaded states need on one node (0 without offload)."""
    host_ram_capacity_gib: float | None
    host_ram_fits: bool | None
    notes: list[str] = field(default_factory=list)
    activations_source: str = TEXTBOOK
    """`traced: <calibration file> ...` when the per-layer activation constant comes from a trace of the
    real model code (planner calibrate trace), else `textbook: ...` (the walk of the saved tensors)."""
    required_gib: float = 0.0
    """The least the card must hold for the step to run: allocated + the cache the allocator cannot
    release (`required_memory_gib`). What `fits` compares with the usable capacity."""

    @property
    def headroom_gib(self) -> float:
        """The fit limit (usable capacity) less what the plan needs to run (required_gib): the margin the fit
        criterion leaves, negative when the plan does not fit. The one definition of headroom: the tables,
        plans.csv and report.json all show it (the nvidia-smi view is peak_gib against capacity_gib)."""
        return self.usable_gib - self.required_gib

    def to_dict(self) -> dict:
        return {
            "peak_gib": _r(self.peak_gib),
            "allocated_peak_gib": _r(self.allocated_peak_gib),
            "reserved_peak_gib": _r(self.reserved_peak_gib),
            "capacity_gib": _r(self.capacity_gib),
            "usable_gib": _r(self.usable_gib),
            "headroom_gib": _r(self.headroom_gib),
            "safety_margin": self.safety_margin,
            "fits": self.fits,
            "required_gib": _r(self.required_gib),
            "peak_phase": self.peak_phase,
            "peak_stage": self.peak_stage,
            "breakdown_gib": {k: _r(v) for k, v in self.breakdown_gib.items()},
            "phases_gib": {k: _r(v) for k, v in self.phases_gib.items()},
            "stage_peaks_gib": [_r(v) for v in self.stage_peaks_gib],
            "host_ram_gib_per_node": _r(self.host_ram_gib_per_node),
            "host_ram_capacity_gib": self.host_ram_capacity_gib,
            "host_ram_fits": self.host_ram_fits,
            "notes": list(self.notes),
            "activations_source": self.activations_source,
        }


def _r(value: float) -> float:
    return round(value, 3)


def _state_bytes(terms: list[StateTerm], stage: StageShard, plan: Plan) -> dict[str, object]:
    out: dict[str, object] = {}
    for term in terms:
        if term.offloaded:
            continue
        size = stage_state_bytes(term, stage, plan)
        cap = deepspeed_step_cap_bytes(term, plan)
        out[term.name] = np.minimum(size, cap) if cap is not None else size
    return out


def _total(terms: dict[str, object]):
    return sum(terms.values())


def stage_phases(
    model: ModelSpec, plan: Plan, stage: StageShard, traced: float = 1.0, traced_no_recompute: float = 1.0
) -> dict[str, dict[str, object]]:
    """Allocated bytes by phase and term on one pipeline stage (values are arrays for bulk plans).
    The loss phase only exists on the last stage; elsewhere its terms are zero. `traced` scales the
    per-layer activations of the plan's checkpointing mode, `traced_no_recompute` those of the block being
    recomputed (planner.memory.calibration)."""
    arch = model.architecture
    terms = state_layout(arch, plan)
    sizes = _state_bytes(terms, stage, plan)
    lifetime = {t.name: t.lifetime for t in terms}
    persistent = {k: v for k, v in sizes.items() if lifetime[k] == "persistent"}
    grads = {k: v for k, v in sizes.items() if lifetime[k] == "gradient"}
    step = {k: v for k, v in sizes.items() if lifetime[k] == "step"}

    tokens = plan.tokens_per_micro_batch
    in_flight = stage.in_flight_micro_batches
    saved_layer = _saved_per_block(arch, plan, stage) * traced
    if plan.checkpointing_every > 1:  # the blocks between checkpointed ones keep all their activations
        kept = stage.num_layers - checkpointed_blocks(stage.num_layers, plan)
        whole = _saved_per_block(arch, replace(plan, checkpointing="none"), stage) * traced_no_recompute
        saved_layer = saved_layer * (stage.num_layers - kept) / stage.num_layers + whole * kept / stage.num_layers
    saved = in_flight * stage.trained_layers * saved_layer * tokens
    edge_tokens = stage.is_first * 1 + stage.is_last * 1  # ids on the first stage, labels on the last
    saved = saved + in_flight * act.INPUT_IDS_AND_LABELS_BYTES / 2 * edge_tokens * tokens
    saved = saved + stage.is_last * act.final_norm_bytes(arch, plan) * tokens
    mtp_depths = stage.is_last * plan.mtp_layers  # their blocks are in the stage's blocks (memory.stages)
    saved = saved + in_flight * mtp_depths * act.mtp_prelude_bytes(arch, plan) * tokens
    # The MLP's gradients are freed before the attention's backward starts, when the context-parallel buffers
    # appear: the larger of the two moments, each with the residual stream's gradients.
    attention_backward = act.residual_gradient_bytes(arch, plan) + act.context_parallel_buffer_bytes(arch, plan)
    block_backward = (
        act.recompute_bytes(arch, plan) * traced_no_recompute
        + np.maximum(act.backward_workspace_bytes(arch, plan), attention_backward)
    ) * tokens

    always_buckets, backward_buckets = deepspeed_bucket_bytes(plan)
    seam_common = {
        **persistent,
        "gathered_parameters": gathered_parameter_bytes(stage, plan),
        "dequantized_weight_buffer": dequantized_weight_bytes(stage),
        "communication_buckets": always_buckets + backward_buckets,
        "autocast_weight_copies": autocast_weight_copy_bytes(stage, plan),
        "pipeline_buffers": _pipeline_buffer_bytes(arch.hidden_size, plan, tokens),
    }
    accumulating = plan.grad_accum > 1
    accumulated = {k: v * accumulating for k, v in grads.items()}
    loss = {
        **seam_common,
        **accumulated,
        "activations": saved,
        "logits_and_loss": (act.logits_bytes(arch, plan) + mtp_depths * act.mtp_loss_bytes(arch, plan)) * tokens,
    }
    backward = {**seam_common, **accumulated, "activations": saved, "recompute_and_backward": block_backward}
    # Without accumulation, gradients grow while activations are freed during backward; when all
    # gradients outweigh the saved activations, the end of backward is the larger moment.
    grads_win = ~accumulating & (_total(grads) > saved) if grads else False
    for k, v in grads.items():
        backward[k] = np.where(grads_win, v, backward[k])
    backward["activations"] = np.where(grads_win, 0.0, saved)
    return {
        "loss": {k: v * stage.is_last for k, v in loss.items()},
        "backward": backward,
        "optimizer_step": {**persistent, **grads, **step, "communication_buckets": always_buckets},
    }


def _saved_per_block(arch, plan: Plan, stage: StageShard):
    """Per-token saved bytes of one block of the stage: a MoE model's stage mixes dense and MoE blocks,
    weighted by how many of each it holds."""
    dense = act.saved_bytes_per_layer(arch, plan)
    if not arch.is_moe:
        return dense
    share = stage.moe_layers / stage.num_layers
    return dense * (1 - share) + act.saved_bytes_per_layer(arch, plan, moe=True) * share


def _pipeline_buffer_bytes(hidden: int, plan: Plan, tokens):
    """Send and receive buffers of one micro-batch's boundary activation between pipeline stages."""
    return (plan.pp > 1) * 2 * act.residual_bytes(plan) * hidden * tokens / act.sequence_shards(plan)


def _host_offload_bytes(model: ModelSpec, plan: Plan, stage: StageShard):
    total = 0.0
    for term in state_layout(model.architecture, plan):
        if term.offloaded:
            total = total + stage_state_bytes(term, stage, plan)
    return total


@dataclass(frozen=True)
class MemoryArrays:
    """The memory model's answer for one plan or many (array-valued plan fields), before rounding."""

    allocated_gib: object
    reserved_gib: object
    peak_gib: object
    peak_stage: object
    """0 or pp - 1."""
    peak_phase: object
    """Index into PHASES."""
    breakdown_gib: dict[str, object]
    """term -> GiB at the peak stage and phase (every key of TERMS)."""
    phases_gib: dict[str, object]
    """phase -> allocated GiB on the peak stage (NaN where the phase does not exist there)."""
    stage_peaks_gib: tuple[object, ...]
    """allocated GiB at the peak phase of each evaluated stage (`evaluated_stages`: first, [second,] last);
    NaN where a plan does not count the second stage."""
    activations_source: str = TEXTBOOK
    """Where the per-layer activation constant comes from: a trace of the real code, or the walk."""
    required_gib: object = 0.0
    """allocated + the cache that cannot be released + CUDA context + NCCL (`required_memory_gib`)."""


def required_memory_gib(allocated_gib, plan: Plan, overheads: RuntimeOverheads = DEFAULT_OVERHEADS):
    """GiB the card must hold for the step to run: the allocated peak, the allocator cache that cannot be
    released at the cap (`RuntimeOverheads.allocator_fragmentation_at_capacity`), the CUDA context and the
    NCCL buffers. Under pressure the caching allocator first waits for the events of blocks freed with
    record_stream, then frees every cached block not split by a live tensor, and retries (c10
    CUDACachingAllocator release_cached_blocks: synchronize_and_free_events, release_blocks), so FSDP1's
    side-stream blocks, like the rest of the cache, are given back and are not required."""
    nccl = sum(nccl_communicators(plan, overheads).values())
    unreleasable = allocated_gib * overheads.allocator_fragmentation_at_capacity
    return allocated_gib + unreleasable + overheads.cuda_context_gib + nccl


def peak_on_card(peak_gib, required_gib, capacity_gib):
    """(nvidia-smi peak, GiB of allocator cache it gives up) on a card of `capacity_gib`: the cache grows
    into free memory, so a run whose cache would not fit shows about the whole card (the allocator
    flushes and retries at the cap), never less than what it requires."""
    shown = np.minimum(peak_gib, np.maximum(required_gib, capacity_gib))
    return shown, peak_gib - shown


def card_view_gib(
    allocated_gib, stream_blocks_gib, plan: Plan, capacity_gib: float, overheads: RuntimeOverheads = DEFAULT_OVERHEADS
):
    """(reserved, nvidia-smi peak, required) GiB on a card of `capacity_gib` for an allocated peak under
    `overheads`: `runtime_view`'s reserved and peak less the cache the allocator gives up at the cap
    (`peak_on_card`). The allocated peak does not depend on the runtime constants, so the constant fits
    (scripts/fit_memory_overheads.py, scripts/loso.py) evaluate it once per case and call this per point."""
    _, _, reserved, peak = runtime_view(allocated_gib, plan, overheads, stream_blocks_gib)
    required = required_memory_gib(allocated_gib, plan, overheads)
    reserved_shown, peak_shown, _ = reserved_and_peak_on_card(reserved, peak, required, capacity_gib)
    return reserved_shown, peak_shown, required


def reserved_and_peak_on_card(reserved_gib, peak_gib, required_gib, capacity_gib):
    """(reserved, nvidia-smi peak, cache given up) GiB on the card: the cache the allocator gives up at the
    cap (`peak_on_card`) leaves both the nvidia-smi view and torch's reserved figure."""
    shown, given_up = peak_on_card(peak_gib, required_gib, capacity_gib)
    return reserved_gib - given_up, shown, given_up


def runtime_view(
    allocated_gib, plan: Plan, overheads: RuntimeOverheads = DEFAULT_OVERHEADS, stream_blocks_gib: object = 0.0
):
    """(fragmentation, NCCL, reserved, peak) GiB for an allocated peak: reserved = allocated x (1 + the
    allocator's fragmentation) + blocks cached for FSDP1's side streams (`fsdp1_stream_blocks_bytes`); the
    nvidia-smi peak adds the CUDA context and NCCL buffers."""
    fragmentation = allocated_gib * overheads.allocator_fragmentation
    nccl = sum(nccl_communicators(plan, overheads).values())
    reserved = allocated_gib + fragmentation + stream_blocks_gib
    return fragmentation, nccl, reserved, reserved + overheads.cuda_context_gib + nccl


def evaluated_stages(arch, plan: Plan) -> list[tuple[StageShard, object]]:
    """(stage, whether it counts) for every stage that can hold the most memory: the first, the second where
    the embedding- and loss-aware interleaved split makes it the fullest (planner.memory.stages), the last."""
    first, last = first_and_last_stage(arch, plan)
    second = second_stage(arch, plan)
    if second is None:
        return [(first, True), (last, True)]
    return [(first, True), (second, interior_stage_counts(arch, plan)), (last, True)]


def memory_arrays(model: ModelSpec, plan: Plan, overheads: RuntimeOverheads = DEFAULT_OVERHEADS) -> MemoryArrays:
    """Evaluate every phase on the first and the last stage and pick the largest (ties: earlier stage, then
    earlier phase). Works on scalar and on array-valued plans alike."""
    arch = model.architecture
    stages = evaluated_stages(arch, plan)
    calibration = activation_calibration(model, plan)
    no_recompute = activation_calibration(model, replace(plan, checkpointing="none")).ratio
    slots = []  # (stage index, phase index, terms, valid)
    for stage, counts in stages:
        stage_terms = stage_phases(model, plan, stage, calibration.ratio, no_recompute)
        for index, (phase, terms) in enumerate(stage_terms.items()):
            valid = stage.is_last & counts if phase == "loss" else counts
            slots.append((stage.stage, index, terms, valid))
    totals = np.stack(
        [np.where(valid, _total(terms), -np.inf) * np.ones_like(plan.gpus, dtype=float) for _, _, terms, valid in slots]
    )
    choice = np.argmax(totals, axis=0)
    allocated = np.take_along_axis(totals, choice[None], axis=0)[0]

    def pick(values):
        return np.take_along_axis(
            np.stack([v * np.ones_like(plan.gpus, dtype=float) for v in values]), choice[None], axis=0
        )[0]

    breakdown = {term: pick([terms.get(term, 0.0) for _, _, terms, _ in slots]) / GIB for term in TERMS}
    allocated_gib = allocated / GIB
    stream_blocks_gib = reduce(np.maximum, (fsdp1_stream_blocks_bytes(s, plan) for s, _ in stages)) / GIB
    fragmentation_gib, nccl_gib, reserved_gib, peak_gib = runtime_view(
        allocated_gib, plan, overheads, stream_blocks_gib
    )
    breakdown["allocator_fragmentation"] = fragmentation_gib
    breakdown["fsdp1_stream_blocks"] = stream_blocks_gib * np.ones_like(allocated)
    breakdown["cuda_context"] = overheads.cuda_context_gib * np.ones_like(allocated)
    breakdown["nccl_communicators"] = nccl_gib * np.ones_like(allocated)
    required_gib = required_memory_gib(allocated_gib, plan, overheads)
    stage_index = pick([stage for stage, _, _, _ in slots])
    peak_slot = choice // len(PHASES)  # which evaluated stage holds the peak
    by_stage = totals.reshape(len(stages), len(PHASES), *totals.shape[1:])
    phases = {}
    for index, phase in enumerate(PHASES):
        on_peak_stage = np.take_along_axis(by_stage[:, index], peak_slot[None], axis=0)[0]
        phases[phase] = np.where(np.isfinite(on_peak_stage), on_peak_stage / GIB, np.nan)
    stage_peaks = by_stage.max(axis=1) / GIB
    stage_peaks = np.where(np.isfinite(stage_peaks), stage_peaks, np.nan)
    return MemoryArrays(
        allocated_gib=allocated_gib,
        reserved_gib=reserved_gib,
        peak_gib=peak_gib,
        peak_stage=stage_index,
        peak_phase=choice % len(PHASES),
        breakdown_gib=breakdown,
        phases_gib=phases,
        stage_peaks_gib=tuple(stage_peaks),
        activations_source=calibration.label,
        required_gib=required_gib,
    )


def peak_memory_gib(model: ModelSpec, plan: Plan, overheads: RuntimeOverheads = DEFAULT_OVERHEADS):
    """(allocated, peak) GiB of the most loaded stage and phase; works on array-valued plans (bulk search)."""
    arrays = memory_arrays(model, plan, overheads)
    return arrays.allocated_gib, arrays.peak_gib


def host_ram_gib_per_node(model: ModelSpec, plan: Plan):
    """Host memory the offloaded states of one node's GPUs need (0 without offload)."""
    stages = [stage for stage, _ in evaluated_stages(model.architecture, plan)]
    per_gpu = reduce(np.maximum, (_host_offload_bytes(model, plan, s) for s in stages))
    return per_gpu * plan.gpus_per_node / GIB


def _at(value, index: int | None) -> float:
    array = np.asarray(value, dtype=float)
    return float(array if array.ndim == 0 or index is None else array[index])


def usable_gib(capacity_gib: float, safety_margin: float) -> float:
    """What a plan may use of a card: capacity x (1 - safety margin)."""
    return capacity_gib * (1 - safety_margin)


def host_ram_fits(offloading, host_gib, host_capacity_gib):
    """Whether offloaded states fit the node's host RAM (arrays allowed): always without offload; a node whose
    RAM is not known cannot be shown to hold them, so offload plans on it do not fit."""
    if host_capacity_gib is None:
        return np.logical_not(offloading)
    return np.logical_or(np.logical_not(offloading), np.asarray(host_gib) <= host_capacity_gib)


def plan_fits(required_gib, capacity_gib: float, safety_margin: float, host_fits):
    """The hard constraint (arrays allowed): the required memory within the usable part of the card, and the
    offloaded states within the host RAM. The one rule estimate, solve and the fit script share."""
    return np.logical_and(np.asarray(required_gib) <= usable_gib(capacity_gib, safety_margin), host_fits)


def memory_estimate_at(
    arrays: MemoryArrays, host_gib, index: int | None, gpu: GpuSpec, plan: Plan, safety_margin: float
) -> MemoryEstimate:
    """The MemoryEstimate of one plan out of `memory_arrays` results (index None for a scalar plan)."""
    required = _at(arrays.required_gib, index)
    reserved, peak, cache_given_up = (
        float(v)
        for v in reserved_and_peak_on_card(
            _at(arrays.reserved_gib, index), _at(arrays.peak_gib, index), required, gpu.memory_gib
        )
    )
    breakdown = {k: _at(v, index) for k, v in arrays.breakdown_gib.items()}
    # What the allocator gives back at the cap: FSDP1's side-stream blocks (once their events complete), then
    # the rest of its cache down to the part it cannot release.
    from_blocks = min(cache_given_up, breakdown["fsdp1_stream_blocks"])
    breakdown["fsdp1_stream_blocks"] -= from_blocks
    breakdown["allocator_fragmentation"] -= cache_given_up - from_blocks
    host = _at(host_gib, index)
    capacity = gpu.node.host_ram_gib
    offloading = plan.offload != "none"
    host_fits = bool(host_ram_fits(offloading, host, capacity)) if offloading else None  # None: nothing offloaded
    phases = {k: _at(v, index) for k, v in arrays.phases_gib.items()}
    stage_peaks = [_at(v, index) for v in arrays.stage_peaks_gib]
    stage_peaks = [v for v in stage_peaks if not np.isnan(v)]
    return MemoryEstimate(
        peak_gib=peak,
        allocated_peak_gib=_at(arrays.allocated_gib, index),
        reserved_peak_gib=reserved,
        capacity_gib=gpu.memory_gib,
        usable_gib=usable_gib(gpu.memory_gib, safety_margin),
        safety_margin=safety_margin,
        fits=bool(plan_fits(required, gpu.memory_gib, safety_margin, host_fits is not False)),
        peak_phase=PHASES[int(_at(arrays.peak_phase, index))],
        peak_stage=int(_at(arrays.peak_stage, index)),
        breakdown_gib=breakdown,
        phases_gib={k: v for k, v in phases.items() if not np.isnan(v)},
        stage_peaks_gib=stage_peaks[:1] if plan.pp == 1 else stage_peaks,
        host_ram_gib_per_node=host,
        host_ram_capacity_gib=capacity,
        host_ram_fits=host_fits,
        activations_source=arrays.activations_source,
        required_gib=required,
    )


def estimate_memory(
    model: ModelSpec,
    gpu: GpuSpec,
    plan: Plan,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
    overheads: RuntimeOverheads = DEFAULT_OVERHEADS,
) -> MemoryEstimate:
    """Per-GPU peak memory of `plan` for `model` on `gpu`, with the term breakdown at the peak."""
    arrays = memory_arrays(model, plan, overheads)
    return memory_estimate_at(arrays, host_ram_gib_per_node(model, plan), None, gpu, plan, safety_margin)
