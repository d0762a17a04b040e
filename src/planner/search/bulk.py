"""Evaluate many plans at once with the memory and performance models.

Plans that share every categorical choice (engine, ZeRO stage, precision, checkpointing, offload, ...)
differ only in numbers (GPUs, tp, pp, cp, dp, micro-batch, accumulation). The models' functions are
written so that those numeric fields may be numpy arrays: one call evaluates a whole group with the very
same formulas `planner estimate` uses for a single plan (no second implementation to drift).
"""

from dataclasses import dataclass, fields

import numpy as np

from planner.catalog import GpuSpec, ModelSpec
from planner.memory.model import MemoryArrays, host_ram_gib_per_node, memory_arrays, peak_on_card
from planner.memory.runtime import DEFAULT_OVERHEADS, RuntimeOverheads
from planner.performance.model import performance_terms
from planner.plan import Plan

NUMERIC_FIELDS = (
    "gpus",
    "gpus_per_node",
    "tp",
    "pp",
    "cp",
    "dp",
    "micro_batch",
    "grad_accum",
    "global_batch",
    "sequence_parallel",
)
"""Plan fields that vary inside a group (arrays); every other field is one value per group."""

CATEGORICAL_FIELDS = tuple(f.name for f in fields(Plan) if f.name not in NUMERIC_FIELDS)


@dataclass(frozen=True)
class BulkResult:
    """Model outputs for a group of plans, one array entry per plan (plus the models' full outputs, which
    `planner.search.details` turns into per-plan estimates without evaluating again)."""

    plan: Plan
    memory: MemoryArrays
    performance: dict
    allocated_gib: np.ndarray
    peak_gib: np.ndarray
    """nvidia-smi peak on this GPU type (planner.memory.model.peak_on_card)."""
    required_gib: np.ndarray
    """What the card must hold; a plan fits when it is within the usable capacity."""
    host_ram_gib_per_node: np.ndarray
    step_time_s: np.ndarray
    tokens_per_s: np.ndarray
    tokens_per_s_per_gpu: np.ndarray
    mfu: np.ndarray


def group_plan(categorical: dict, numeric: dict[str, np.ndarray]) -> Plan:
    """A Plan whose numeric fields are arrays (all of one length)."""
    return Plan(**categorical, **{k: np.asarray(v) for k, v in numeric.items()})


_MEMORY_CACHE: dict = {}
_MEMORY_CACHE_ENTRIES = 2048
"""The memory model does not depend on the GPU type (capacity only decides what fits), so a search over
several GPU types with the same plan grid computes each group's memory once."""


def _plan_key(model: ModelSpec, plan: Plan, overheads: RuntimeOverheads) -> tuple:
    values = []
    for f in fields(Plan):
        value = getattr(plan, f.name)
        if isinstance(value, np.ndarray):
            value = (value.dtype.str, value.shape, value.tobytes())
        values.append(value)
    return (model.architecture, overheads, tuple(values))


def _gpu_independent_memory(model: ModelSpec, plan: Plan, overheads: RuntimeOverheads) -> tuple[MemoryArrays, object]:
    """(memory arrays, host RAM per node) of an array-valued plan, computed once per distinct plan group."""
    try:
        key = _plan_key(model, plan, overheads)
        hash(key)
    except TypeError:  # a field that cannot be a key: compute without the cache
        return memory_arrays(model, plan, overheads), host_ram_gib_per_node(model, plan)
    if key not in _MEMORY_CACHE:
        if len(_MEMORY_CACHE) >= _MEMORY_CACHE_ENTRIES:
            _MEMORY_CACHE.clear()
        _MEMORY_CACHE[key] = (memory_arrays(model, plan, overheads), host_ram_gib_per_node(model, plan))
    return _MEMORY_CACHE[key]


def evaluate_group(
    model: ModelSpec, gpu: GpuSpec, plan: Plan, overheads: RuntimeOverheads = DEFAULT_OVERHEADS
) -> BulkResult:
    """Memory and performance of every plan in an array-valued Plan."""
    size = np.shape(plan.gpus)
    memory, host = _gpu_independent_memory(model, plan, overheads)
    perf = performance_terms(model, gpu, plan)

    def full(value) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=float), size).copy()

    return BulkResult(
        plan=plan,
        memory=memory,
        performance=perf,
        allocated_gib=full(memory.allocated_gib),
        peak_gib=full(peak_on_card(memory.peak_gib, memory.required_gib, gpu.memory_gib)[0]),
        required_gib=full(memory.required_gib),
        host_ram_gib_per_node=full(host),
        step_time_s=full(perf["step_time_s"]),
        tokens_per_s=full(perf["tokens_per_s"]),
        tokens_per_s_per_gpu=full(perf["tokens_per_s_per_gpu"]),
        mfu=full(perf["mfu"]),
    )
