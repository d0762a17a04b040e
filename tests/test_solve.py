"""planner solve: CP-SAT finds exactly the plans exhaustive enumeration finds; output is deterministic and
agrees with planner estimate; bad input and infeasible searches exit with 2 and 3."""

import itertools
import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from planner.catalog import load_model
from planner.cli import main
from planner.errors import NoFeasiblePlanError, PlanError
from planner.estimate import estimate_plan
from planner.memory import estimate_memory
from planner.plan import PlanRequest, make_plan
from planner.search.candidates import CATEGORIES
from planner.search.ranking import pareto_front
from planner.search.solve import SolveRequest, require_feasible, solve
from planner.search.space import load_space, parse_budget

ROOT = Path(__file__).resolve().parent.parent


def _exhaustive(request: SolveRequest) -> set[tuple]:
    """Feasible plans by brute force with the scalar models: every combination of the space, validated by
    make_plan, kept when estimate_memory says it fits (plus the search's own rules: TP within a node,
    PP dividing the layers)."""
    model = load_model(request.model)
    budget = parse_budget(request.budget)
    space = load_space(request.space, budget).pinned(**request.pins)
    global_batch = round(2**20 / request.seq_len) if request.global_batch is None else request.global_batch
    found = set()
    numeric = itertools.product(space.gpus, space.tp, space.pp, space.cp, space.micro_batch)
    for (gpus, tp, pp, cp, mbs), values in itertools.product(
        list(numeric), list(itertools.product(*(getattr(space, c) for c in CATEGORIES)))
    ):
        if tp > budget.gpus_per_node or model.architecture.num_layers % pp:
            continue
        chosen = dict(zip(CATEGORIES, values, strict=True))
        plan_request = PlanRequest(
            model=request.model,
            gpu=budget.gpu.name,
            gpus=gpus,
            gpus_per_node=min(gpus, budget.gpus_per_node),
            tp=tp,
            pp=pp,
            cp=cp,
            micro_batch=mbs,
            global_batch=global_batch,
            seq_len=request.seq_len,
            **chosen,
        )
        try:
            plan = make_plan(plan_request, model, budget.gpu)
        except PlanError:
            continue
        if estimate_memory(model, budget.gpu, plan, request.safety_margin).fits:
            found.add((gpus, tp, pp, cp, mbs, *values))
    return found


def _searched(result) -> set[tuple]:
    c = result.candidates
    return {
        (int(c.gpus[i]), int(c.tp[i]), int(c.pp[i]), int(c.cp[i]), int(c.micro_batch[i]), *c.categories[c.group[i]])
        for i in result.feasible
    }


@pytest.mark.parametrize("seed", range(4))
def test_cp_sat_finds_exactly_the_exhaustively_enumerated_plans(seed):
    rng = random.Random(seed)
    model = rng.choice(["7b", "llama-3.1-8b", "llama-3.2-1b", "qwen2.5-7b"])
    budget = rng.choice(["8xA100", "2x8xH100", "4xA100-40GB", "16xL40S"])
    pins = {
        "precision": "bf16",
        "optimizer": "adamw",
        "loss": rng.choice(["standard", "chunked"]),
        "flash_attention": True,
        "compile": False,
    }
    request = SolveRequest(
        model=model, budget=budget, seq_len=rng.choice([2048, 4096]), global_batch=rng.choice([16, 32, 64]), pins=pins
    )
    result = solve(request)
    assert _searched(result) == _exhaustive(request)


def test_equivalence_with_every_dimension_open_on_a_tight_budget():
    request = SolveRequest(
        model="llama-3.2-3b", budget="4xA10G", seq_len=2048, global_batch=16, pins={"optimizer": "adamw"}
    )
    result = solve(request)
    assert _searched(result) == _exhaustive(request)


def test_listed_plans_match_planner_estimate():
    result = solve(SolveRequest(model="13b", budget="16xA100", top=3))
    from planner.search.advice import candidate_request
    from planner.search.details import plan_estimates

    estimates = plan_estimates(result, result.feasible[:5])
    for index in result.feasible[:5]:
        direct = estimate_plan(candidate_request(result, int(index)))
        listed = estimates[int(index)]
        assert listed.memory.to_dict() == direct.memory.to_dict()
        assert listed.performance.to_dict() == direct.performance.to_dict()


def test_ranking_is_by_throughput_and_deterministic(tmp_path):
    args = ["solve", "--model", "7b", "--budget", "8xA100", "--global-batch", "64", "--seq-len", "2048"]
    first = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    second = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b")])
    assert first.exit_code == 0, first.output
    assert first.output.replace(str(tmp_path / "a"), "X") == second.output.replace(str(tmp_path / "b"), "X")
    for name in ("report.md", "report.json", "plans.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    plans = json.loads((tmp_path / "a" / "report.json").read_text())["plans"]
    speeds = [p["performance"]["tokens_per_s"] for p in plans]
    assert speeds == sorted(speeds, reverse=True)
    assert all(p["memory"]["fits"] for p in plans)


def test_cost_objective_orders_by_dollars_per_token():
    result = solve(SolveRequest(model="7b", budget="8xA100", global_batch=64, seq_len=2048, objective="cost"))
    c = result.candidates
    per_million = c.gpus[result.feasible] / c.tokens_per_s[result.feasible]
    assert np.all(np.diff(per_million) >= -1e-12)


@pytest.mark.parametrize("objective", ["throughput", "cost"])
def test_ranking_is_the_lexicographic_order_of_its_keys(objective):
    """The numpy ranking equals Python's sort of each plan's key tuple: the objective, fewer GPUs, lower peak,
    then every plan field (booleans and text compared as text, as the ranking documents)."""
    from planner.search.ranking import PLAN_COLUMNS, sort_keys

    result = solve(SolveRequest(model="7b", budget="16xA100", objective=objective, tokens=1e9))
    c, price = result.candidates, result.price_per_gpu_hour

    def value(i, name):
        if name in CATEGORIES:
            raw = c.categories[c.group[i]][CATEGORIES.index(name)]
            return str(raw) if isinstance(raw, bool | str) else raw
        if name == "usd_per_million_tokens":
            return c.gpus[i] * price / (c.tokens_per_s[i] * 3600 / 1e6)
        return getattr(c, name)[i]

    keys = sort_keys(objective)
    assert [k for k, _ in keys][-len(PLAN_COLUMNS) :] == list(PLAN_COLUMNS)

    def key(i):
        return tuple(value(i, name) if ascending else -value(i, name) for name, ascending in keys)

    assert len(result.feasible) > 100
    assert [int(i) for i in result.feasible] == sorted((int(i) for i in result.feasible), key=key)


def test_pins_restrict_the_space():
    result = solve(SolveRequest(model="13b", budget="16xA100", pins={"zero": 3, "engine": "deepspeed"}))
    assert {result.candidates.categories[g][:2] for g in result.candidates.group[result.feasible]} == {("deepspeed", 3)}


def test_pareto_front_by_hand():
    # plan 0: fastest but expensive; 1: slower and cheaper; 2: dominated by 1; 3: cheapest.
    front = pareto_front(np.array([100.0, 80.0, 70.0, 50.0]), np.array([5.0, 3.0, 4.0, 1.0]))
    assert front.tolist() == [True, True, False, True]


@pytest.mark.parametrize(
    "text,gpus,per_node,name",
    [
        ("16xA100", 16, 8, "A100-80GB"),
        ("2x8xH100", 16, 8, "H100-80GB"),
        ("64xH100-80GB", 64, 8, "H100-80GB"),
        ("4 x L40S", 4, 4, "L40S"),
    ],
)
def test_budget_parsing(text, gpus, per_node, name):
    budget = parse_budget(text)
    assert (budget.gpus, budget.gpus_per_node, budget.gpu.name) == (gpus, per_node, name)


@pytest.mark.parametrize("text", ["sixteen A100", "16x", "0xA100", "16xZ999"])
def test_malformed_budget(text):
    with pytest.raises((PlanError, Exception)) as info:
        parse_budget(text)
    assert "budget" in str(info.value) or "unknown GPU" in str(info.value)


def test_nothing_fits_exits_3_with_nearest_miss(tmp_path):
    result = CliRunner().invoke(main, ["solve", "--model", "405b", "--budget", "2xA100", "--out", str(tmp_path / "r")])
    assert result.exit_code == 3
    assert "no plan fits A100-80GB memory" in result.output
    assert "Nearest misses" in result.output
    assert not (tmp_path / "r").exists()


def test_nothing_fits_names_a_fix():
    result = solve(
        SolveRequest(
            model="7b",
            budget="1xA100",
            global_batch=8,
            seq_len=4096,
            pins={"checkpointing": "none", "zero": 0, "offload": "none", "engine": "deepspeed"},
        )
    )
    from planner.search.advice import nearest_miss_advice

    advice = nearest_miss_advice(result)
    with pytest.raises(NoFeasiblePlanError) as info:
        require_feasible(result, advice)
    assert info.value.exit_code == 3
    assert any("ZeRO-3" in a or "GPUs" in a or "offload" in a for a in advice)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--budget", "lots"], "cannot read budget"),
        (["--budget", "16xA100", "--max-hours", "5"], "need the run's size"),
        (["--budget", "16xA100", "--global-batch", "4", "--global-batch-tokens", "1M"], "not both"),
        (["--budget", "16xA100", "--space", "/no/such.yaml"], "cannot read"),
    ],
)
def test_solve_bad_input_exits_2(args, message):
    result = CliRunner().invoke(main, ["solve", "--model", "13b", *args])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_broken_search_space(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("gpus: powers_of_two\ntp: [1, 3.5]\n")
    result = CliRunner().invoke(main, ["solve", "--model", "13b", "--budget", "16xA100", "--space", str(space)])
    assert result.exit_code == 2 and "space.yaml" in result.output


def test_limits_drop_slow_plans():
    base = SolveRequest(model="7b", budget="8xA100", global_batch=64, seq_len=2048, tokens=1e9)
    everything = solve(base)
    hours = 1e9 / everything.candidates.tokens_per_s[everything.feasible] / 3600
    limit = float(np.median(hours))
    limited = solve(replace(base, max_hours=limit))
    assert 0 < len(limited.feasible) < len(everything.feasible)
    assert limited.rejections.over_limits == len(everything.feasible) - len(limited.feasible)


def test_flash_attention_version_pin_reaches_every_listed_plan():
    # FlashAttention-3 on H100 runs the attention at GEMM speed (hardware/h100-80gb.yaml: v3 = 1 against v2 = 0.47):
    # the same plans fit (memory does not depend on the version) and each one is faster.
    base = SolveRequest(model="7b", budget="8xH100", global_batch=64, seq_len=8192)
    v2, v3 = solve(base), solve(replace(base, pins={"flash_attention_version": 3}))
    version = 5 + CATEGORIES.index("flash_attention_version")  # after gpus, tp, pp, cp, micro_batch
    assert _searched(v2) == {(*row[:version], 2, *row[version + 1 :]) for row in _searched(v3)}
    assert {row[version] for row in _searched(v3)} == {3}
    assert v3.candidates.tokens_per_s[v3.feasible[0]] > v2.candidates.tokens_per_s[v2.feasible[0]]


def test_flash_attention_3_pin_on_a100_is_one_line_exit_2():
    args = ["solve", "--model", "7b", "--budget", "8xA100", "--flash-attention-version", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "FlashAttention-3 does not run on A100-80GB" in result.output
    assert "Traceback" not in result.output


def test_network_override_speeds_up_cross_node_plans_only():
    # 25 GB/s per GPU (8 x 200 Gb/s HDR per node) against the catalog's 6.25 (p4de): plans within one node do
    # not change, plans across two nodes get faster or stay the same, and the report records the override.
    base = SolveRequest(model="13b", budget="16xA100", global_batch=256, seq_len=4096)
    slow, fast = solve(base), solve(replace(base, network_gbps_per_gpu=25.0))
    assert fast.budget.gpu.network_overridden and not slow.budget.gpu.network_overridden
    one_node = slow.candidates.gpus <= 8
    assert np.array_equal(slow.candidates.tokens_per_s[one_node], fast.candidates.tokens_per_s[one_node])
    assert np.all(fast.candidates.tokens_per_s >= slow.candidates.tokens_per_s)
    assert np.any(fast.candidates.tokens_per_s > slow.candidates.tokens_per_s * 1.2)


def test_flash_attention_versions_do_not_duplicate_plans_without_flash_attention(tmp_path):
    # The version only times flash kernels, so with flash attention off the space's versions give one plan.
    space = tmp_path / "space.yaml"
    text = (ROOT / "search_spaces" / "default.yaml").read_text()
    text = text.replace("flash_attention: [true]", "flash_attention: [true, false]")
    space.write_text(text.replace("flash_attention_version: [2]", "flash_attention_version: [2, 3]"))
    result = solve(SolveRequest(model="llama-3.1-8b", budget="8xH100", seq_len=2048, global_batch=64, space=space))
    rows = _searched(result)
    position = CATEGORIES.index("flash_attention")
    version = 5 + CATEGORIES.index("flash_attention_version")
    without_flash = [row[:version] + row[version + 1 :] for row in rows if not row[5 + position]]
    assert without_flash and len(without_flash) == len(set(without_flash))
    assert {row[version] for row in rows if not row[5 + position]} == {2}
    assert {row[version] for row in rows if row[5 + position]} == {2, 3}
