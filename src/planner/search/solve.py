"""`planner solve`: search a space of plans for a model and a GPU budget, keep those that fit, rank them.

Flow: budget + search space -> candidate plans evaluated in bulk by the memory and performance models
(planner.search.candidates) -> CP-SAT keeps every plan satisfying the structural, engine, memory and
limit constraints (planner.search.cpsat) -> ranking with pandas (planner.search.ranking).
"""

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from planner.catalog import ModelSpec, load_model
from planner.errors import NoFeasiblePlanError, PlanError
from planner.inputs import MAX_GLOBAL_BATCH, MAX_HOURS, MAX_USD, optional, quantity, run_figures, whole_number
from planner.memory import DEFAULT_SAFETY_MARGIN
from planner.memory.model import host_ram_fits, plan_fits, usable_gib
from planner.plan import check_peft_target, method_fields_for
from planner.progress import phase
from planner.search.candidates import CATEGORIES, Candidates, evaluate_candidates
from planner.search.cpsat import SolverStats, feasible_indices
from planner.search.space import Budget, SearchSpace, load_space, parse_budget

Objective = Literal["throughput", "cost", "time"]
OBJECTIVES: tuple[str, ...] = ("throughput", "cost", "time")
DEFAULT_GLOBAL_BATCH_TOKENS = 2**20
"""When the user gives no global batch: about a million tokens per step (e.g. 256 sequences of 4096)."""


@dataclass(frozen=True)
class SolveRequest:
    """What `planner solve` was asked. Pins fix a dimension of the search space (None: search it)."""

    model: str
    budget: str
    seq_len: int = 4096
    global_batch: int | None = None
    """Sequences per optimizer step."""
    global_batch_tokens: float | None = None
    """Alternative to global_batch: tokens per step (rounded to whole sequences)."""
    tokens: float | None = None
    """Training tokens of the run, for hours and dollars."""
    objective: str = "throughput"
    max_cost: float | None = None
    max_hours: float | None = None
    top: int = 10
    space: Path | None = None
    safety_margin: float = DEFAULT_SAFETY_MARGIN
    price_per_gpu_hour: float | None = None
    network_gbps_per_gpu: float | None = None
    """Override the catalog's inter-node bandwidth, GB/s per GPU one way."""
    pins: dict = field(default_factory=dict)
    gpu_types: str | None = None
    """`any` or a comma-separated list of GPU types to choose between (with `max_gpus`; see
    planner.search.choice); None: the budget names the one GPU type."""
    max_gpus: int | None = None
    """Largest GPU count per type for `gpu_types`."""
    frontier_only: bool = False
    """List only the plans no other plan beats on both speed (tokens/s) and GPU-hours per token: what a
    choice between GPU types needs (each type's best plan by any objective is among them), at a fraction
    of the enumeration time. Off for a plain solve, which lists every plan that fits."""
    method_settings: dict = field(default_factory=dict)
    """lora_rank, lora_targets, lora_dropout, trainable_layers for the PEFT methods of the space."""


@dataclass(frozen=True)
class Rejections:
    """Why candidate plans were not listed."""

    space_size: int
    structurally_valid: int
    over_memory: int
    over_host_ram: int
    over_limits: int
    nearest_misses: list[int]
    """Candidate indices with the smallest memory excess."""


@dataclass(frozen=True)
class SolveResult:
    request: SolveRequest
    model: ModelSpec
    budget: Budget
    space: SearchSpace
    global_batch: int
    usable_gib: float
    price_per_gpu_hour: float | None
    price_source: str
    candidates: Candidates
    feasible: np.ndarray
    """Indices into `candidates` of every plan that satisfies all constraints (ranked order)."""
    pareto: np.ndarray
    """Boolean per feasible plan (same order): on the throughput-vs-cost Pareto front."""
    rejections: Rejections
    solver: SolverStats
    search_s: float


def _global_batch(request: SolveRequest) -> int:
    if request.global_batch is not None and request.global_batch_tokens is not None:
        raise PlanError("give --global-batch or --global-batch-tokens, not both", "drop one of them")
    if request.global_batch is not None:
        return whole_number(request.global_batch, "--global-batch", 1, MAX_GLOBAL_BATCH)
    tokens = request.global_batch_tokens or DEFAULT_GLOBAL_BATCH_TOKENS
    tokens = quantity(tokens, "--global-batch-tokens", 0.0, MAX_GLOBAL_BATCH * request.seq_len)
    return max(1, round(tokens / request.seq_len))


NUMERIC_PIN_LIMITS = {
    "tp": 4096,
    "pp": 4096,
    "cp": 4096,
    "micro_batch": 10_000_000,
    "virtual_stages": 4096,
    "ep": 4096,
}
"""Largest value of each numeric pin (the bounds make_plan applies to a single plan)."""


def _check_request(request: SolveRequest) -> None:
    if request.objective not in OBJECTIVES:
        raise PlanError(f"--objective must be one of {', '.join(OBJECTIVES)}", "pick one")
    whole_number(request.seq_len, "--seq-len", 1, 16 * 1024 * 1024)
    if (request.max_cost is not None or request.max_hours is not None) and request.tokens is None:
        raise PlanError("--max-cost and --max-hours need the run's size", "add --tokens, e.g. --tokens 10B")
    run_figures(request.safety_margin, request.tokens, request.price_per_gpu_hour)
    optional(quantity, request.max_cost, "--max-cost", 0.0, MAX_USD)
    optional(quantity, request.max_hours, "--max-hours", 0.0, MAX_HOURS)
    whole_number(request.top, "--top", 1, 1_000_000)
    for name, limit in NUMERIC_PIN_LIMITS.items():
        pinned = request.pins.get(name)
        for value in pinned if isinstance(pinned, tuple) else (pinned,):
            optional(whole_number, value, f"--{name.replace('_', '-')}", 1, limit)


def _check_flash_attention_versions(space: SearchSpace, budget: Budget) -> None:
    """A FlashAttention version the GPU cannot run is the user's stack, not a search dimension: say so
    rather than report that no plan is structurally valid."""
    runs = budget.gpu.flash_attention_versions()
    if True in space.flash_attention and not set(space.flash_attention_version) & set(runs):
        versions = ", ".join(str(v) for v in space.flash_attention_version)
        raise PlanError(
            f"FlashAttention-{versions} does not run on {budget.gpu.name}", f"use --flash-attention-version {runs[-1]}"
        )


def _price(budget: Budget, request: SolveRequest) -> tuple[float | None, str]:
    if request.price_per_gpu_hour is not None:
        return float(request.price_per_gpu_hour), "--price-per-gpu-hour"
    price = budget.gpu.price
    if price.usd_per_gpu_hour is None:
        return None, f"no price for {budget.gpu.name} in the catalog (pass --price-per-gpu-hour)"
    return price.usd_per_gpu_hour, price.describe()


def non_dominated(speed: np.ndarray, cost: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Boolean mask of the eligible entries no other eligible entry beats: none is at least as fast and
    at least as cheap and better in one. Ties (equal speed and cost) are all kept."""
    keep = np.zeros(len(speed), dtype=bool)
    index = np.flatnonzero(eligible)
    if index.size == 0:
        return keep
    order = index[np.lexsort((cost[index], -speed[index]))]  # fastest first, cheapest first among equals
    cheapest_faster = np.inf  # the lowest cost among strictly faster entries
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and speed[order[end]] == speed[order[start]]:
            end += 1
        group = order[start:end]
        group_min = cost[group].min()
        if group_min < cheapest_faster:
            keep[group[cost[group] == group_min]] = True
        cheapest_faster = min(cheapest_faster, group_min)
        start = end
    return keep


def expert_parallel_degrees(space: SearchSpace, model) -> SearchSpace:
    """The EP degrees worth searching: the space's values that divide the model's expert count (whether they
    also fit a plan's dp x cp is checked per plan); a dense model has only EP 1, so its search, and its
    counts of combinations, are those of a space without the dimension."""
    arch = model.architecture
    if not arch.is_moe:
        if space.ep != (1,) and len(space.ep) == 1:
            raise PlanError(f"--ep applies to Mixture-of-Experts models; {model.name} is dense", "drop --ep")
        return replace(space, ep=(1,))
    values = tuple(e for e in space.ep if arch.num_experts % e == 0)
    if not values:
        raise PlanError(
            f"no EP degree of the search space ({', '.join(map(str, space.ep))}) divides the {arch.num_experts} "
            f"experts of {model.name}",
            "add 1 or a divisor of the expert count to ep",
        )
    return replace(space, ep=values)


def solve(request: SolveRequest) -> SolveResult:
    """Run the search; raises NoFeasiblePlanError (exit code 3) when nothing fits."""
    start = time.perf_counter()
    _check_request(request)
    model = load_model(request.model)
    budget = parse_budget(request.budget)
    budget = replace(budget, gpu=budget.gpu.with_network(request.network_gbps_per_gpu))
    space = expert_parallel_degrees(load_space(request.space, budget).pinned(**request.pins), model)
    space.check_size()
    _check_flash_attention_versions(space, budget)
    if space.pp_schedule == ("interleaved",) and max(space.virtual_stages) < 2:
        raise PlanError("the interleaved schedule needs 2 or more chunks per rank", "add --virtual-stages, e.g. 2")
    global_batch = _global_batch(request)
    for method in space.method:  # bad LoRA/freeze settings are the user's error, not an empty search
        method_fields_for(method, request.method_settings, model.architecture)
    if set(space.method) <= {"lora", "qlora"}:  # asked for PEFT only: a model PEFT cannot wrap is an error
        check_peft_target(space.method[0], model)
    cands = evaluate_candidates(
        model, budget, space, request.seq_len, global_batch, method_settings=request.method_settings
    )
    price, price_source = _price(budget, request)

    offloading = np.array([cands.categories[g][CATEGORIES.index("offload")] != "none" for g in cands.group], dtype=bool)
    # Host RAM is a hard limit like GPU memory (see rejected_lines for how each is reported)
    fits_host = host_ram_fits(offloading, cands.host_ram_gib_per_node, budget.gpu.node.host_ram_gib)
    fits_gpu = plan_fits(cands.required_gib, budget.gpu.memory_gib, request.safety_margin, True)
    fits = fits_gpu & fits_host
    usable = usable_gib(budget.gpu.memory_gib, request.safety_margin)
    within = None
    if request.tokens is not None and (request.max_cost is not None or request.max_hours is not None):
        hours = request.tokens / cands.tokens_per_s / 3600
        within = np.ones(len(cands), dtype=bool)
        if request.max_hours is not None:
            within &= hours <= request.max_hours
        if request.max_cost is not None:
            if price is None:
                raise PlanError(f"--max-cost needs a price for {budget.gpu.name}", "pass --price-per-gpu-hour")
            within &= hours * cands.gpus * price <= request.max_cost
    table = within
    if request.frontier_only:
        candidates_left = fits if within is None else fits & within
        table = non_dominated(cands.tokens_per_s, cands.gpus / cands.tokens_per_s, candidates_left)
    with phase("CP-SAT: enumerating the plans that fit"):
        found, stats = feasible_indices(cands, space, global_batch, budget.gpus, fits, table)

    excess = np.where(fits_gpu, np.inf, cands.required_gib - usable)
    misses = [int(i) for i in np.argsort(excess, kind="stable")[:3] if np.isfinite(excess[i])]
    rejections = Rejections(
        space_size=space.size(),
        structurally_valid=len(cands),
        over_memory=int((~fits_gpu).sum()),
        over_host_ram=int((fits_gpu & ~fits_host).sum()),
        over_limits=int((fits & ~within).sum()) if within is not None else 0,
        nearest_misses=misses,
    )
    from planner.search.ranking import rank  # pandas is imported only when there is something to rank

    ordered, pareto = rank(cands, found, request, price)
    return SolveResult(
        request,
        model,
        budget,
        space,
        global_batch,
        usable,
        price,
        price_source,
        cands,
        ordered,
        pareto,
        rejections,
        stats,
        time.perf_counter() - start,
    )


def require_feasible(result: SolveResult, advice: list[str]) -> None:
    """Raise NoFeasiblePlanError (exit code 3) when the search found nothing, with the best advice."""
    if len(result.feasible):
        return
    if not result.rejections.structurally_valid:
        raise NoFeasiblePlanError(
            "no plan of the search space is structurally valid (degrees do not divide the "
            "GPUs, the global batch or the model)",
            "widen the search space or change the batch",
        )
    raise NoFeasiblePlanError(
        f"no plan fits {result.budget.gpu.name} memory ({result.usable_gib:.1f} usable GiB)",
        advice[0] if advice else "add GPUs",
    )
