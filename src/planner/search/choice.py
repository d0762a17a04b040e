"""Hardware choice: which GPU type (and how many) to rent for a job.

`solve --budget 16xA100,8xH100,4xH200` or `solve --gpu-types any --max-gpus N` runs the same search as a
single-budget solve once per option, each listing only the plans no other plan of that option beats on
both speed and GPU-hours per token (every objective's winner is among them). The answer: each option's
best plan by the objective, and across options the Pareto front of run time against dollars (for a fixed
number of tokens, hours = tokens / tokens-per-s and dollars = hours x GPUs x price, so the front is the
same as tokens/s against $ per token), the objective's winner first.

An option without a price keeps its hours and leaves dollars blank with the reason; a choice by cost
skips it, and says so. An option whose search fails (no plan fits, no network for a multi-node budget)
is listed with the reason instead of stopping the others.
"""

import time
from dataclasses import dataclass, replace

import numpy as np

from planner.catalog import GpuSpec, list_gpus, load_gpu
from planner.errors import CatalogError, PlanError, PlannerError
from planner.progress import track
from planner.search.solve import SolveRequest, SolveResult, non_dominated, solve
from planner.search.space import parse_budget

ANY = "any"
MAX_OPTIONS = 64


@dataclass(frozen=True)
class Option:
    """One GPU type and count the user could rent, and what the search found for it."""

    budget: str
    """The budget text searched, e.g. `16xA100`."""
    gpu: GpuSpec
    result: SolveResult | None
    """None when the search could not run (see `skipped`)."""
    skipped: str = ""
    """Why no plan is listed for this option."""
    note: str = ""
    """What was adjusted (a budget capped at one node for a GPU whose network is not in the catalog)."""

    @property
    def best(self) -> int | None:
        """Candidate index of this option's best plan by the objective, or None."""
        return int(self.result.feasible[0]) if self.result is not None and len(self.result.feasible) else None

    @property
    def priced(self) -> bool:
        return self.result is not None and self.result.price_per_gpu_hour is not None


@dataclass(frozen=True)
class FrontPlan:
    """A plan on the cross-type Pareto front."""

    option: int
    """Index into `HardwareChoice.options`."""
    candidate: int
    """Candidate index inside that option's search."""


@dataclass(frozen=True)
class HardwareChoice:
    request: SolveRequest
    options: list[Option]
    ranking: list[int]
    """Options with a plan, best first by the objective (options without a price last under `cost`)."""
    front: list[FrontPlan]
    """The hours-vs-dollars (tokens/s vs $ per token) Pareto front across all options' plans, the
    objective's winner first, then by speed; of plans with the same GPU type, count, speed and cost only
    the best ranked is listed."""
    notes: list[str]
    search_s: float

    @property
    def winner(self) -> Option | None:
        return self.options[self.ranking[0]] if self.ranking else None


def is_multi(request: SolveRequest) -> bool:
    """True when the request asks to choose between GPU types."""
    return request.gpu_types is not None or request.max_gpus is not None or "," in (request.budget or "")


def budget_options(request: SolveRequest) -> list[tuple[str, str]]:
    """(budget text, note) per option. Raises PlanError/CatalogError on bad input (exit 2)."""
    if request.gpu_types is not None:
        if request.budget:
            raise PlanError("give --budget or --gpu-types, not both", "drop one of them")
        if request.max_gpus is None:
            raise PlanError("--gpu-types needs --max-gpus", "add --max-gpus N, e.g. --max-gpus 64")
        return [_capped(gpu, request.max_gpus) for gpu in _gpu_types(request)]
    if request.max_gpus is not None:
        raise PlanError("--max-gpus goes with --gpu-types", "add --gpu-types any, or write the count in --budget")
    entries = [entry.strip() for entry in request.budget.split(",")]
    if any(not entry for entry in entries):
        raise PlanError(f"budget list {request.budget!r} has an empty entry", "write e.g. 16xA100,8xH100,4xH200")
    if len(entries) > MAX_OPTIONS:
        raise PlanError(f"budget list has {len(entries)} entries", f"give at most {MAX_OPTIONS}")
    for entry in entries:
        parse_budget(entry)  # unknown GPU or unreadable entry: one-line error before any search
    return [(entry, "") for entry in entries]


def _gpu_types(request: SolveRequest) -> list[GpuSpec]:
    max_gpus = request.max_gpus
    if isinstance(max_gpus, bool) or not isinstance(max_gpus, int) or not 1 <= max_gpus <= 100_000:
        raise PlanError(f"--max-gpus must be a whole number from 1 to 100000, got {max_gpus!r}", "e.g. --max-gpus 64")
    text = request.gpu_types.strip()
    if text.lower() == ANY:
        gpus = [gpu for gpu in list_gpus() if gpu.price.usd_per_gpu_hour is not None]
        if not gpus:
            raise CatalogError("no GPU type of the catalog has a price", "name the types: --gpu-types A100,H100")
        return gpus
    names = [name.strip() for name in text.split(",")]
    if any(not name for name in names):
        raise PlanError(f"--gpu-types {text!r} has an empty entry", "write e.g. --gpu-types A100,H100,H200 or any")
    gpus = [load_gpu(name) for name in names]
    unique = {gpu.name: gpu for gpu in gpus}
    return list(unique.values())


def _capped(gpu: GpuSpec, max_gpus: int) -> tuple[str, str]:
    """The budget searched for `gpu`: up to `max_gpus`, within one node when the catalog has no network."""
    per_node = gpu.node.gpus_per_node
    if gpu.node.inter_node_bandwidth_gbps_per_gpu is None and max_gpus > per_node:
        note = f"one node ({per_node} GPUs): the catalog has no network between {gpu.name} nodes"
        return f"{per_node}x{gpu.name}", note
    return f"{max_gpus}x{gpu.name}", ""


def choose_hardware(request: SolveRequest) -> HardwareChoice:
    """Search every option and compare them."""
    start = time.perf_counter()
    if request.price_per_gpu_hour is not None:
        raise PlanError(
            "--price-per-gpu-hour sets one price, but this search compares GPU types",
            "search one GPU type, or rely on the catalog's prices",
        )
    options = []
    for budget, note in track(list(budget_options(request)), "GPU types"):
        single = replace(request, budget=budget, gpu_types=None, max_gpus=None, frontier_only=True)
        gpu = parse_budget(budget).gpu
        try:
            result = solve(single)
        except PlannerError as error:
            options.append(Option(budget, gpu, None, skipped=error.message, note=note))
            continue
        skipped = "" if len(result.feasible) else _nothing_fits(result)
        options.append(Option(budget, gpu, result, skipped=skipped, note=note))
    notes = []
    ranking = _rank_options(options, request.objective, notes)
    front = _front(options, request.objective)
    return HardwareChoice(request, options, ranking, front, notes, time.perf_counter() - start)


def _nothing_fits(result: SolveResult) -> str:
    if not result.rejections.structurally_valid:
        return "no plan of the search space is structurally valid"
    line = f"no plan fits {result.usable_gib:.1f} usable GiB per GPU"
    if result.rejections.over_host_ram:
        ram = result.budget.gpu.node.host_ram_gib
        host = f"the node's {ram:.0f} GiB host RAM" if ram is not None else "host RAM, which has no catalog figure"
        line += f" without offloading more than {host}"
    return line


def _metrics(option: Option, index: int) -> tuple[float, float]:
    """(tokens/s, $ per million tokens; NaN without a price) of one plan of an option."""
    c, price = option.result.candidates, option.result.price_per_gpu_hour
    tokens_per_s = float(c.tokens_per_s[index])
    if price is None:
        return tokens_per_s, float("nan")
    return tokens_per_s, float(c.gpus[index]) * price / (tokens_per_s * 3600 / 1e6)


def _sort_key(objective: str, tokens_per_s: float, usd_per_million: float, gpus: int, name: str) -> tuple:
    """The single-type ranking's order (planner.search.ranking.sort_keys) applied across options: cost
    first for `cost`, else speed; then fewer GPUs; then the GPU name for a stable order."""
    if objective == "cost":
        return (np.isnan(usd_per_million), usd_per_million, -tokens_per_s, gpus, name)
    return (-tokens_per_s, gpus, name)


def _rank_options(options: list[Option], objective: str, notes: list[str]) -> list[int]:
    ranked = [i for i, option in enumerate(options) if option.best is not None]
    if objective == "cost":
        unpriced = [options[i].gpu.name for i in ranked if not options[i].priced]
        if unpriced:
            notes.append(
                f"by cost: {', '.join(unpriced)} skipped (no price in the catalog); their hours are listed, "
                "their dollars left blank"
            )

    def key(i: int) -> tuple:
        option = options[i]
        speed, usd = _metrics(option, option.best)
        return _sort_key(objective, speed, usd, int(option.result.candidates.gpus[option.best]), option.gpu.name)

    return sorted(ranked, key=key)


def _front(options: list[Option], objective: str) -> list[FrontPlan]:
    """Pareto front of tokens/s against $ per million tokens over every listed plan of every priced option."""
    plans, speed, cost, seen = [], [], [], set()
    for i, option in enumerate(options):
        if option.result is None or not option.priced:
            continue
        for index in option.result.feasible:  # ranked order: of equal plans the first is the best ranked
            tokens_per_s, usd = _metrics(option, int(index))
            gpus = int(option.result.candidates.gpus[index])
            if (i, gpus, tokens_per_s, usd) in seen:
                continue  # same GPUs, speed and cost (e.g. ZeRO-2 vs ZeRO-3 with nothing to gather): one row
            seen.add((i, gpus, tokens_per_s, usd))
            plans.append(FrontPlan(i, int(index)))
            speed.append(tokens_per_s)
            cost.append(usd)
    if not plans:
        return []
    keep = non_dominated(np.array(speed), np.array(cost), np.ones(len(plans), dtype=bool))
    chosen = [k for k in np.flatnonzero(keep)]

    def key(k: int) -> tuple:
        plan = plans[k]
        option = options[plan.option]
        gpus = int(option.result.candidates.gpus[plan.candidate])
        return _sort_key(objective, speed[k], cost[k], gpus, option.gpu.name)

    winner = min(chosen, key=key)
    rest = sorted(
        (k for k in chosen if k != winner), key=lambda k: (-speed[k], cost[k], options[plans[k].option].gpu.name)
    )
    return [plans[k] for k in [winner, *rest]]
