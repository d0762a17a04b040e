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
reserved = allocated x (1 + allocator fragmentation).
peak (nvidia-smi) = reserved + CUDA context + NCCL communicators.
"""

from dataclasses import dataclass, field

from planner.catalog import GpuSpec, ModelSpec
from planner.memory import activations as act
from planner.memory.buffers import (
    autocast_weight_copy_bytes,
    deepspeed_bucket_bytes,
    gathered_parameter_bytes,
)
from planner.memory.runtime import DEFAULT_OVERHEADS, RuntimeOverheads, nccl_communicators
from planner.memory.stages import StageShard, stage_shards
from planner.memory.states import (
    StateTerm,
    deepspeed_step_cap_bytes,
    state_layout,
    state_term_bytes,
)
from planner.plan import Plan
from planner.units import GIB

DEFAULT_SAFETY_MARGIN = 0.05
"""Fraction of GPU memory a plan must leave free to be called `fits`: room for what the model cannot
see (data-dependent lengths, library versions). Overridable per call."""

TERMS = (
    "weights",
    "master_weights",
    "gradients",
    "unsharded_gradient_accumulators",
    "ddp_gradient_buckets",
    "optimizer_states",
    "fp8_weight_copies",
    "optimizer_step_temporaries",
    "activations",
    "logits_and_loss",
    "recompute_and_backward",
    "gathered_parameters",
    "communication_buckets",
    "autocast_weight_copies",
    "pipeline_buffers",
    "allocator_fragmentation",
    "cuda_context",
    "nccl_communicators",
)
"""Every breakdown key, in display order. The JSON always carries all of them (zeros included)."""

PHASES = ("loss", "backward", "optimizer_step")


@dataclass(frozen=True)
class StageMemory:
    """Allocated bytes per phase and term for one pipeline stage."""

    stage: int
    phases: dict[str, dict[str, float]]
    """phase -> term -> bytes (allocator-visible terms only)."""

    def phase_total(self, phase: str) -> float:
        return sum(self.phases[phase].values())

    @property
    def peak_phase(self) -> str:
        # Ties resolve to the earlier phase in PHASES order, so the answer is deterministic.
        return max(self.phases, key=lambda p: (self.phase_total(p), -PHASES.index(p)))

    @property
    def peak_bytes(self) -> float:
        return self.phase_total(self.peak_phase)


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory answer for one plan on one GPU type (all sizes in GiB)."""

    peak_gib: float
    """What nvidia-smi would show at the peak: reserved + CUDA context + NCCL. Must stay under capacity."""
    allocated_peak_gib: float
    """What torch.cuda.max_memory_allocated would show."""
    reserved_peak_gib: float
    """What torch.cuda.max_memory_reserved would show."""
    capacity_gib: float
    usable_gib: float
    """capacity x (1 - safety margin)."""
    safety_margin: float
    fits: bool
    peak_phase: str
    peak_stage: int
    breakdown_gib: dict[str, float]
    """term -> GiB at the peak (phase and stage above); sums to peak_gib."""
    phases_gib: dict[str, float]
    """phase -> allocated GiB on the peak stage."""
    stage_peaks_gib: list[float]
    """allocated GiB at the peak phase of every pipeline stage."""
    host_ram_gib_per_node: float
    """Host memory the offloaded states need on one node (0 without offload)."""
    host_ram_capacity_gib: float | None
    host_ram_fits: bool | None
    notes: list[str] = field(default_factory=list)

    @property
    def headroom_gib(self) -> float:
        return self.capacity_gib - self.peak_gib

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
            "peak_phase": self.peak_phase,
            "peak_stage": self.peak_stage,
            "breakdown_gib": {k: _r(v) for k, v in self.breakdown_gib.items()},
            "phases_gib": {k: _r(v) for k, v in self.phases_gib.items()},
            "stage_peaks_gib": [_r(v) for v in self.stage_peaks_gib],
            "host_ram_gib_per_node": _r(self.host_ram_gib_per_node),
            "host_ram_capacity_gib": self.host_ram_capacity_gib,
            "host_ram_fits": self.host_ram_fits,
            "notes": list(self.notes),
        }


def _r(value: float) -> float:
    return round(value, 3)


def _state_bytes(terms: list[StateTerm], stage: StageShard, plan: Plan) -> dict[str, float]:
    out: dict[str, float] = {}
    for term in terms:
        if term.offloaded:
            continue
        size = state_term_bytes(term, stage.params, plan.shard_degree)
        cap = deepspeed_step_cap_bytes(term, plan)
        out[term.name] = min(size, cap) if cap is not None else size
    return out


def _stage_memory(model: ModelSpec, plan: Plan, stage: StageShard) -> StageMemory:
    arch = model.architecture
    terms = state_layout(arch, plan)
    sizes = _state_bytes(terms, stage, plan)
    lifetime = {t.name: t.lifetime for t in terms}
    persistent = {k: v for k, v in sizes.items() if lifetime[k] == "persistent"}
    grads = {k: v for k, v in sizes.items() if lifetime[k] == "gradient"}
    step = {k: v for k, v in sizes.items() if lifetime[k] == "step"}

    tokens = plan.tokens_per_micro_batch
    in_flight = stage.in_flight_micro_batches
    saved = in_flight * stage.num_layers * act.saved_bytes_per_layer(arch, plan) * tokens
    edge_tokens = int(stage.is_first) + int(stage.is_last)  # ids on the first stage, labels on the last
    saved += in_flight * act.INPUT_IDS_AND_LABELS_BYTES / 2 * edge_tokens * tokens
    if stage.is_last:
        saved += act.final_norm_bytes(arch, plan) * tokens
    block_backward = (
        act.recompute_bytes(arch, plan)
        + act.backward_workspace_bytes(arch, plan)
        + act.context_parallel_buffer_bytes(arch, plan)
    ) * tokens
    logits = act.logits_bytes(arch, plan) * tokens if stage.is_last else 0.0

    always_buckets, backward_buckets = deepspeed_bucket_bytes(plan)
    seam_common = {
        **persistent,
        "gathered_parameters": gathered_parameter_bytes(stage, plan),
        "communication_buckets": always_buckets + backward_buckets,
        "autocast_weight_copies": autocast_weight_copy_bytes(stage, plan),
        "pipeline_buffers": _pipeline_buffer_bytes(arch.hidden_size, plan, tokens),
    }
    accumulated = grads if plan.grad_accum > 1 else {}
    phases: dict[str, dict[str, float]] = {}
    if stage.is_last:
        phases["loss"] = {**seam_common, **accumulated, "activations": saved, "logits_and_loss": logits}
    backward = {**seam_common, **accumulated, "activations": saved, "recompute_and_backward": block_backward}
    if plan.grad_accum == 1 and sum(grads.values()) > saved:
        # Gradients outgrow the freed activations by the end of backward: that end is the larger one.
        backward = {**seam_common, **grads, "recompute_and_backward": block_backward}
    phases["backward"] = backward
    phases["optimizer_step"] = {**persistent, **grads, **step, "communication_buckets": always_buckets}
    return StageMemory(stage.stage, phases)


def _pipeline_buffer_bytes(hidden: int, plan: Plan, tokens: int) -> float:
    """Send and receive buffers of one micro-batch's boundary activation between pipeline stages."""
    if plan.pp == 1:
        return 0.0
    sp_divisor = plan.tp if plan.sequence_parallel else 1
    return 2 * act.residual_bytes(plan) * hidden * tokens / sp_divisor


def _host_offload_bytes(model: ModelSpec, plan: Plan, stage: StageShard) -> float:
    total = 0.0
    for term in state_layout(model.architecture, plan):
        if term.offloaded:
            total += state_term_bytes(term, stage.params, plan.shard_degree)
    return total


def estimate_memory(
    model: ModelSpec,
    gpu: GpuSpec,
    plan: Plan,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
    overheads: RuntimeOverheads = DEFAULT_OVERHEADS,
) -> MemoryEstimate:
    """Per-GPU peak memory of `plan` for `model` on `gpu`, with the term breakdown at the peak."""
    stages = stage_shards(model.architecture, plan)
    per_stage = [_stage_memory(model, plan, s) for s in stages]
    # The most loaded stage; ties go to the earliest stage.
    heaviest = max(per_stage, key=lambda m: (m.peak_bytes, -m.stage))
    phase = heaviest.peak_phase
    allocated = heaviest.peak_bytes
    fragmentation = allocated * overheads.allocator_fragmentation
    nccl_gib = sum(nccl_communicators(plan, overheads).values())
    breakdown = {term: 0.0 for term in TERMS}
    for term, size in heaviest.phases[phase].items():
        breakdown[term] += size / GIB
    breakdown["allocator_fragmentation"] = fragmentation / GIB
    breakdown["cuda_context"] = overheads.cuda_context_gib
    breakdown["nccl_communicators"] = nccl_gib
    allocated_gib = allocated / GIB
    reserved_gib = allocated_gib + fragmentation / GIB
    peak_gib = reserved_gib + overheads.cuda_context_gib + nccl_gib
    usable = gpu.memory_gib * (1 - safety_margin)

    host_per_gpu = max(_host_offload_bytes(model, plan, s) for s in stages)
    host_per_node = host_per_gpu * plan.gpus_per_node / GIB
    host_capacity = gpu.node.host_ram_gib
    host_fits = None if plan.offload == "none" or host_capacity is None else host_per_node <= host_capacity
    return MemoryEstimate(
        peak_gib=peak_gib,
        allocated_peak_gib=allocated_gib,
        reserved_peak_gib=reserved_gib,
        capacity_gib=gpu.memory_gib,
        usable_gib=usable,
        safety_margin=safety_margin,
        fits=peak_gib <= usable and host_fits is not False,
        peak_phase=phase,
        peak_stage=heaviest.stage,
        breakdown_gib=breakdown,
        phases_gib={p: heaviest.phase_total(p) / GIB for p in heaviest.phases},
        stage_peaks_gib=[m.peak_bytes / GIB for m in per_stage],
        host_ram_gib_per_node=host_per_node,
        host_ram_capacity_gib=host_capacity,
        host_ram_fits=host_fits,
    )
