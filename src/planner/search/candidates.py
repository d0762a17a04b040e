"""Candidate plans of a search space: every combination whose numbers fit together, evaluated in bulk.

Numeric structure (checked here with numpy, and again as CP-SAT constraints): dp = gpus / (tp pp cp) is a
whole number, the global batch splits into micro-batch x grad_accum x dp, tp divides the attention and
key/value heads and stays within a node, pp divides the layers (where none above one does: searched_pipeline_degrees),
cp divides the sequence. Which categorical
choices an engine supports (ZeRO stage, offload, checkpointing, precision, flash attention, compile, and
whether tp/pp/cp may exceed 1) is asked of `planner.plan.make_plan` itself, so the search and `estimate`
share one set of rules.
"""

import itertools
from dataclasses import dataclass

import numpy as np

from planner.catalog import ModelSpec
from planner.errors import PlanError
from planner.memory.runtime import DEFAULT_OVERHEADS
from planner.plan import PlanRequest, interleaved_split_fits, make_plan, method_fields_for
from planner.progress import track
from planner.search.bulk import BulkResult, evaluate_group, group_plan
from planner.search.space import Budget, SearchSpace

CATEGORIES = (
    "engine",
    "zero",
    "offload",
    "checkpointing",
    "precision",
    "optimizer",
    "loss",
    "flash_attention",
    "compile",
    "method",
    "flash_attention_version",
    "pp_schedule",
    "virtual_stages",
    "fp8_recipe",
    "ep",
    "tp_comm_overlap",
)
"""Categorical dimensions, in the order the CP-SAT model and the reports use."""


@dataclass(frozen=True)
class Candidates:
    """Structurally valid plans, one row each, with the models' outputs."""

    categories: list[tuple]
    """One tuple of categorical values per group (order: CATEGORIES)."""
    group: np.ndarray
    """Index into `categories` for every candidate."""
    gpus: np.ndarray
    tp: np.ndarray
    pp: np.ndarray
    cp: np.ndarray
    dp: np.ndarray
    micro_batch: np.ndarray
    grad_accum: np.ndarray
    peak_gib: np.ndarray
    required_gib: np.ndarray
    allocated_gib: np.ndarray
    host_ram_gib_per_node: np.ndarray
    step_time_s: np.ndarray
    tokens_per_s: np.ndarray
    tokens_per_s_per_gpu: np.ndarray
    mfu: np.ndarray
    allowed: list[tuple]
    """Categorical values x (tp > 1, pp > 1, cp > 1) combinations the engines support."""
    results: list[BulkResult]
    """The models' full outputs per group."""
    position: np.ndarray
    """Each candidate's index inside its group's arrays."""

    def __len__(self) -> int:
        return len(self.gpus)


def tp_limit(budget: Budget) -> int:
    """Largest tensor-parallel degree the search tries: TP stays on NVLink, inside one node or one
    multi-node NVLink domain (72 GPUs of a GB200 NVL72 rack)."""
    return int(budget.gpu.nvlink_domain(budget.gpus_per_node))


def searched_pipeline_degrees(num_layers: int, pps) -> list[int]:
    """The space's pipeline degrees the search tries: those that divide the blocks; where none above one does
    (DeepSeek-V3's 61 blocks), every degree leaving two or more blocks per stage, split unevenly with the
    earliest stages one block heavier (planner.memory.stages.layers_on_stage; Megatron's
    --pipeline-model-parallel-layout in the launch). Uneven degrees are left out where an even one exists,
    which keeps the search as large as it was for every model that has one."""
    even = [p for p in pps if num_layers % p == 0]
    if any(p > 1 for p in even):
        return even
    return [p for p in pps if num_layers // p >= 2]


def numeric_grid(model: ModelSpec, budget: Budget, space: SearchSpace, seq_len: int, global_batch: int) -> dict:
    """Every (gpus, tp, pp, cp, micro_batch) combination with whole dp and grad_accum (numpy arrays)."""
    arch = model.architecture
    tps = [
        t
        for t in space.tp
        if arch.num_attention_heads % t == 0 and arch.num_kv_heads % t == 0 and t <= tp_limit(budget)
    ]
    pps = searched_pipeline_degrees(arch.num_layers, space.pp)
    cps = [c for c in space.cp if seq_len % c == 0]
    grid = np.array(list(itertools.product(space.gpus, tps, pps, cps, space.micro_batch)), dtype=np.int64)
    if grid.size == 0:
        return {k: np.zeros(0, dtype=np.int64) for k in ("gpus", "tp", "pp", "cp", "micro_batch", "dp", "grad_accum")}
    gpus, tp, pp, cp, mbs = grid.T
    model_parallel = tp * pp * cp
    ok = gpus % model_parallel == 0
    dp = np.where(ok, gpus // np.maximum(model_parallel, 1), 1)
    ok &= global_batch % (mbs * dp) == 0
    ga = np.where(ok, global_batch // (mbs * dp), 1)
    keep = np.flatnonzero(ok)
    return {
        "gpus": gpus[keep],
        "tp": tp[keep],
        "pp": pp[keep],
        "cp": cp[keep],
        "micro_batch": mbs[keep],
        "dp": dp[keep],
        "grad_accum": ga[keep],
    }


def allowed_combinations(
    model: ModelSpec, budget: Budget, space: SearchSpace, seq_len: int, method_settings: dict | None = None
) -> list[tuple]:
    """Categorical x (tp>1, pp>1, cp>1) combinations `make_plan` accepts, tried on small representative
    plans (the smallest valid degree above one for each of tp, pp and cp)."""
    arch = model.architecture

    def smallest_above_one(values, ok):
        return next((v for v in sorted(values) if v > 1 and ok(v)), None)

    reps = {
        "tp": smallest_above_one(
            space.tp,
            lambda t: arch.num_attention_heads % t == 0 and arch.num_kv_heads % t == 0 and t <= tp_limit(budget),
        ),
        "pp": smallest_above_one(searched_pipeline_degrees(arch.num_layers, space.pp), lambda p: True),
        "cp": smallest_above_one(space.cp, lambda c: seq_len % c == 0),
    }
    allowed = []
    methods = {m: method_fields_for(m, method_settings or {}, arch) for m in space.method}
    for values in itertools.product(*(getattr(space, name) for name in CATEGORIES)):
        chosen = dict(zip(CATEGORIES, values, strict=True))
        if not chosen["flash_attention"] and chosen["flash_attention_version"] != space.flash_attention_version[0]:
            continue  # the version only times flash kernels: without them one version stands for all
        if (chosen["pp_schedule"] == "1f1b") != (chosen["virtual_stages"] == 1):
            continue  # 1F1B has one chunk per rank, interleaving at least two
        if chosen["precision"] != "fp8" and chosen["fp8_recipe"] != space.fp8_recipe[0]:
            continue  # the recipe only matters in fp8: one stands for all elsewhere
        if chosen["tp_comm_overlap"] and chosen["engine"] != "megatron":
            continue  # Megatron's option (make_plan refuses it elsewhere)
        fields = {**chosen, **methods[chosen["method"]]}
        for flags in itertools.product((False, True), repeat=3):
            if chosen["pp_schedule"] == "interleaved" and not flags[1]:
                continue  # interleaving splits pipeline stages: make_plan refuses it at pp 1
            degrees = {}
            for name, flag in zip(("tp", "pp", "cp"), flags, strict=True):
                if flag and reps[name] is None:
                    break
                degrees[name] = reps[name] if flag else 1
            else:
                # dp = ep: expert parallelism is carved out of the data-parallel ranks
                gpus = degrees["tp"] * degrees["pp"] * degrees["cp"] * chosen["ep"]
                request = PlanRequest(
                    model=model.name,
                    gpu=budget.gpu.name,
                    gpus=gpus,
                    gpus_per_node=min(gpus, budget.gpus_per_node),
                    micro_batch=1,
                    # one micro-batch per stage and data-parallel rank: what interleaving needs at least
                    global_batch=degrees["pp"] * chosen["ep"],
                    seq_len=seq_len,
                    **degrees,
                    **fields,
                )
                try:
                    make_plan(request, model, budget.gpu)
                except PlanError:
                    continue
                allowed.append((*values, *flags))
    return allowed


def evaluate_candidates(
    model: ModelSpec,
    budget: Budget,
    space: SearchSpace,
    seq_len: int,
    global_batch: int,
    overheads=DEFAULT_OVERHEADS,
    method_settings: dict | None = None,
) -> Candidates:
    """Enumerate and evaluate every structurally valid plan of the space. `method_settings` holds the
    LoRA rank, targets and dropout and the freeze depth (plan fields that are settings, not dimensions)."""
    grid = numeric_grid(model, budget, space, seq_len, global_batch)
    allowed = allowed_combinations(model, budget, space, seq_len, method_settings)
    flags = {name: grid[name] > 1 for name in ("tp", "pp", "cp")}
    by_category: dict[tuple, list[tuple[bool, bool, bool]]] = {}
    for row in allowed:
        by_category.setdefault(row[: len(CATEGORIES)], []).append(row[len(CATEGORIES) :])

    groups = []
    for values, flag_rows in by_category.items():
        mask = np.zeros(len(grid["gpus"]), dtype=bool)
        for tp_flag, pp_flag, cp_flag in flag_rows:
            mask |= (flags["tp"] == tp_flag) & (flags["pp"] == pp_flag) & (flags["cp"] == cp_flag)
        chosen = dict(zip(CATEGORIES, values, strict=True))
        mask &= _schedule_fits(chosen, grid, model.architecture.num_layers)
        mask &= (grid["dp"] * grid["cp"]) % chosen["ep"] == 0  # EP is carved out of dp x cp (planner.plan)
        index = np.flatnonzero(mask)
        if index.size:
            groups.append((values, index))
    _check_candidate_count(sum(index.size for _, index in groups), space)

    columns: dict[str, list[np.ndarray]] = {k: [] for k in (*grid, "group", "position", *_OUTPUTS)}
    categories, results = [], []
    for values, index in track(groups, "evaluating plan groups (memory and speed models)"):
        chosen = dict(zip(CATEGORIES, values, strict=True))
        numeric = {k: v[index] for k, v in grid.items()}
        method = method_fields_for(chosen["method"], method_settings or {}, model.architecture)
        plan = group_plan(
            {**chosen, **method, "seq_len": seq_len},
            {
                **numeric,
                "gpus_per_node": np.minimum(numeric["gpus"], budget.gpus_per_node),
                "global_batch": np.full(index.size, global_batch),
                "sequence_parallel": (numeric["tp"] > 1) & (chosen["engine"] != "deepspeed"),
            },
        )
        result = evaluate_group(model, budget.gpu, plan, overheads)
        for k, v in numeric.items():
            columns[k].append(v)
        columns["group"].append(np.full(index.size, len(categories)))
        columns["position"].append(np.arange(index.size))
        for k in _OUTPUTS:
            columns[k].append(getattr(result, k))
        categories.append(values)
        results.append(result)
    merged = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in columns.items()}
    return Candidates(categories=categories, allowed=allowed, results=results, **merged)


def _schedule_fits(chosen: dict, grid: dict, num_layers: int) -> np.ndarray:
    """The interleaved schedule's rules per plan (planner.plan._pipeline_schedule): the layers split into
    pp x V equal chunks (the embedding and the loss may count as layers) and the micro-batches per step are
    a multiple of pp."""
    if chosen["pp_schedule"] != "interleaved":
        return np.ones(len(grid["pp"]), dtype=bool)
    pp = grid["pp"]
    return interleaved_split_fits(num_layers, pp, chosen["virtual_stages"]) & (grid["grad_accum"] % pp == 0)


MAX_CANDIDATES = 500_000
"""Most structurally valid plans one search evaluates (each holds about 2.2 kB of model outputs: 377,000
took 0.84 GB); search_spaces/full.yaml for Llama-3.1-405B on 2048 GPUs has 125,640."""


def _check_candidate_count(count: int, space: SearchSpace) -> None:
    """Refuse, before the models run, a search whose valid plans would not fit in memory."""
    if count > MAX_CANDIDATES:
        raise PlanError(
            f"the search space holds {count:,} structurally valid plans, more than the {MAX_CANDIDATES:,} one "
            "search evaluates",
            f"pin or narrow its widest dimensions: {space.widest_pins()}",
        )


_OUTPUTS = tuple(f for f in BulkResult.__dataclass_fields__ if f not in ("plan", "memory", "performance"))
