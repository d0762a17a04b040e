"""Fit the memory model's global runtime constants on the measured cases, reproducibly.

Searches a grid of allocator fragmentation and NCCL-per-communicator values, each restricted to the
range its public sources allow (see planner.memory.runtime.RuntimeOverheads), and keeps the pair with
the fewest unsafe cases (predicted fits, really OOM), then the lowest mean absolute error: on the dense
cases some pair has none, so that is the lowest mean among the pairs with no unsafe case; a pool holding a
case no pair in range makes safe (scripts/loso.py lora) still gets a fit. The mean
is used rather than the median because the median alone can be lowered by moving cases that sit near
it while the tails grow. Ties go to the smaller constants. The CUDA context stays at its sourced value.
Prints the result; `planner.memory.runtime` stores it.

    python scripts/fit_memory_overheads.py [tests/data/memory_cases.yaml]
"""

import statistics
import sys
from dataclasses import replace
from pathlib import Path

from planner.memory import DEFAULT_SAFETY_MARGIN
from planner.memory.model import card_view_gib, host_ram_gib_per_node, memory_arrays, memory_estimate_at, plan_fits
from planner.memory.runtime import DEFAULT_OVERHEADS, RuntimeOverheads
from planner.validate.memory import comparable_gib, load_memory_cases

FRAGMENTATION_GRID = [round(0.01 * i, 2) for i in range(0, 31)]
"""0-30%: the steady-state range reported for LLM training (the 2.1x RL-trainer case is an outlier)."""
NCCL_GRID = [round(0.64 + 0.02 * i, 2) for i in range(0, 44)]
"""0.64-1.50 GiB per communicator: NVIDIA/nccl #964 (688 MiB) to #864 (1.6 GB)."""


def resolve_case(case) -> tuple:
    """(case, (model, gpu, plan), (allocated GiB, FSDP1 stream blocks GiB, host RAM fits)): what the runtime
    constants do not change, evaluated once per case."""
    model, gpu, plan = case.resolve()
    arrays = memory_arrays(model, plan)
    # estimate_memory's own path from these arrays, for the host-RAM verdict (no second memory_arrays run)
    memory = memory_estimate_at(arrays, host_ram_gib_per_node(model, plan), None, gpu, plan, DEFAULT_SAFETY_MARGIN)
    stream_blocks = float(arrays.breakdown_gib["fsdp1_stream_blocks"])
    return case, (model, gpu, plan), (float(arrays.allocated_gib), stream_blocks, memory.host_ram_fits)


def prediction(item, overheads: RuntimeOverheads) -> tuple[float, bool]:
    """(prediction comparable with the case's metric, predicted to fit) under `overheads`."""
    case, (_, gpu, plan), (allocated, stream_blocks, host_fits) = item
    reserved, peak, required = card_view_gib(allocated, stream_blocks, plan, gpu.memory_gib, overheads)
    fits = bool(plan_fits(float(required), gpu.memory_gib, DEFAULT_SAFETY_MARGIN, host_fits is not False))
    return comparable_gib(case.measured.metric, allocated, float(reserved), float(peak)), fits


def evaluate(resolved, overheads: RuntimeOverheads) -> tuple[float, float, int]:
    """(median |error| %, mean |error| %, unsafe count) of all cases under `overheads`."""
    errors, unsafe = [], 0
    for item in resolved:
        predicted, fits = prediction(item, overheads)
        measured = item[0].measured
        if measured.outcome == "oom":
            unsafe += fits
            continue
        errors.append(abs(predicted - measured.peak_gib) / measured.peak_gib * 100)
    return statistics.median(errors), statistics.fmean(errors), unsafe


def resolve_cases(cases_path: Path) -> list:
    """`resolve_case` of every case in the file."""
    return [resolve_case(case) for case in load_memory_cases(cases_path)]


def fit(cases_path: Path) -> tuple[RuntimeOverheads, tuple[float, float, int]]:
    return fit_resolved(resolve_cases(cases_path))


def fit_resolved(resolved: list) -> tuple[RuntimeOverheads, tuple[float, float, int]]:
    """The grid search of `fit` on already resolved cases (scripts/loso.py fits subsets)."""
    best = None
    for fragmentation in FRAGMENTATION_GRID:
        for nccl in NCCL_GRID:
            overheads = replace(DEFAULT_OVERHEADS, allocator_fragmentation=fragmentation, nccl_gib_per_group=nccl)
            median, mean, unsafe = evaluate(resolved, overheads)
            key = (unsafe, round(mean, 6), fragmentation, nccl)
            if best is None or key < best[0]:
                best = (key, overheads, (median, mean, unsafe))
    return best[1], best[2]


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/memory_cases.yaml")
    overheads, (median, mean, unsafe) = fit(path)
    current = evaluate(resolve_cases(path), DEFAULT_OVERHEADS)
    print(
        f"fitted: allocator_fragmentation={overheads.allocator_fragmentation}, "
        f"nccl_gib_per_group={overheads.nccl_gib_per_group}"
    )
    print(f"  median |error| {median:.2f}%, mean |error| {mean:.2f}%, unsafe {unsafe}")
    print(
        f"stored: allocator_fragmentation={DEFAULT_OVERHEADS.allocator_fragmentation}, "
        f"nccl_gib_per_group={DEFAULT_OVERHEADS.nccl_gib_per_group}"
    )
    print(f"  median |error| {current[0]:.2f}%, mean |error| {current[1]:.2f}%, unsafe {current[2]}")


if __name__ == "__main__":
    main()
