"""Evaluate many plans at once with the memory and performance models.

Plans that share every categorical choice (engine, ZeRO stage, precision, checkpointing, offload, ...)
differ only in numbers (GPUs, tp, pp, cp, dp, micro-batch, accumulation). The models' functions are
written so that those numeric fields may be numpy arrays: one call evaluates a whole group with the very
same formulas `planner estimate` uses for a single plan (no second implementation to drift).
"""

from dataclasses import dataclass, fields

import numpy as np

from planner.catalog import GpuSpec, ModelSpec
from planner.memory.model import MemoryArrays, host_ram_gib_per_node, memory_arrays
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
    host_ram_gib_per_node: np.ndarray
    step_time_s: np.ndarray
    tokens_per_s: np.ndarray
    tokens_per_s_per_gpu: np.ndarray
    mfu: np.ndarray


def group_plan(categorical: dict, numeric: dict[str, np.ndarray]) -> Plan:
    """A Plan whose numeric fields are arrays (all of one length)."""
    return Plan(**categorical, **{k: np.asarray(v) for k, v in numeric.items()})


def evaluate_group(
    model: ModelSpec, gpu: GpuSpec, plan: Plan, overheads: RuntimeOverheads = DEFAULT_OVERHEADS
) -> BulkResult:
    """Memory and performance of every plan in an array-valued Plan."""
    size = np.shape(plan.gpus)
    memory = memory_arrays(model, plan, overheads)
    host = host_ram_gib_per_node(model, plan)
    perf = performance_terms(model, gpu, plan)

    def full(value) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=float), size).copy()

    return BulkResult(
        plan=plan,
        memory=memory,
        performance=perf,
        allocated_gib=full(memory.allocated_gib),
        peak_gib=full(memory.peak_gib),
        host_ram_gib_per_node=full(host),
        step_time_s=full(perf["step_time_s"]),
        tokens_per_s=full(perf["tokens_per_s"]),
        tokens_per_s_per_gpu=full(perf["tokens_per_s_per_gpu"]),
        mfu=full(perf["mfu"]),
    )
