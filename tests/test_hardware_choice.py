"""Issue 13: today's GPUs in the catalog (prices with sources, NVLink domains, extrapolated speed) and
hardware choice across GPU types in `solve`."""

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from planner.catalog import list_gpus, load_gpu
from planner.cli import main
from planner.estimate import estimate_plan
from planner.performance import comm
from planner.plan import PlanRequest
from planner.report.solve import rejected_lines
from planner.search.choice import budget_options, choose_hardware
from planner.search.details import plan_estimates
from planner.search.solve import SolveRequest, non_dominated, solve

NEW_GPUS = ("B200", "GB200", "H20", "L20", "L40", "L4", "RTX-A6000", "RTX-3090", "RTX-5090", "MI300X", "MI325X")


def test_catalog_holds_todays_gpus_with_every_number_sourced():
    names = {g.name for g in list_gpus()}
    assert set(NEW_GPUS) <= names
    for name in NEW_GPUS:
        gpu = load_gpu(name)
        assert gpu.memory_gib > 0 and gpu.hbm_bandwidth_gbps > 0 and gpu.tdp_w, name
        assert gpu.tflops["bf16"] and gpu.node.gpus_per_node >= 1 and gpu.architecture, name
        assert gpu.price.source and gpu.price.currency in ("USD", "CNY"), name
        if gpu.price.usd_per_gpu_hour is not None:
            assert gpu.price.date and gpu.price.instance, name


def test_fp4_where_the_part_has_it():
    # HGX B200 datasheet: FP4 144 PF sparse for 8 GPUs = 9 PF dense per GPU; GB200 NVL72: 1,440 PF / 72 / 2.
    assert load_gpu("B200").tflops["fp4"] == 9000.0
    assert load_gpu("GB200").tflops["fp4"] == 10000.0
    assert load_gpu("H100").tflops["fp4"] is None


def test_gb200_groups_up_to_72_stay_on_nvlink():
    gb200 = load_gpu("GB200")
    nvlink = comm.intra_node_bandwidth_gbps(gb200)
    assert nvlink == pytest.approx(1800 / 2 * comm.NVLINK_BUS_EFFICIENCY)
    # 4 GPUs per tray, but a TP group of 72 (or 8 x 9) is still one NVLink fabric.
    assert float(comm.group_bandwidth_gbps(gb200, 72, 1, 4)) == pytest.approx(nvlink)
    assert float(comm.group_bandwidth_gbps(gb200, 8, 9, 4)) == pytest.approx(nvlink)
    # A data-parallel pair of ranks 72 apart (one per rack) crosses the InfiniBand network: 50 GB/s x 0.9.
    assert float(comm.group_bandwidth_gbps(gb200, 2, 72, 4)) == pytest.approx(50 * comm.NETWORK_BUS_EFFICIENCY)
    # A node-sized domain is unchanged: on H100 (8 per node) the same pair 72 apart, and a pair 8 apart,
    # cross the network.
    h100 = load_gpu("H100")
    assert float(comm.group_bandwidth_gbps(h100, 2, 8, 8)) == pytest.approx(50 * comm.NETWORK_BUS_EFFICIENCY)


def test_gb200_plans_may_use_tensor_parallelism_across_trays():
    request = PlanRequest(model="llama-2-70b", gpu="GB200", gpus=16, tp=8, seq_len=4096, engine="megatron")
    est = estimate_plan(request)
    assert est.plan.gpus_per_node == 4 and est.performance.tokens_per_s > 0


@pytest.mark.parametrize(
    "gpu,family", [("B200", "hopper"), ("GB200", "hopper"), ("MI300X", "hopper"), ("L40", "ampere")]
)
def test_borrowed_efficiency_marks_the_speed_extrapolated(gpu, family):
    est = estimate_plan(PlanRequest(model="llama-2-7b", gpu=gpu, gpus=1, checkpointing="full", zero=0))
    assert load_gpu(gpu).speed_extrapolated_from == family
    assert any(note.startswith("speed extrapolated") for note in est.performance.notes)


@pytest.mark.parametrize("gpu", ["H100", "H20", "A100", "RTX-A6000"])
def test_own_family_fit_is_not_extrapolated(gpu):
    assert load_gpu(gpu).speed_extrapolated_from is None


def test_h800_has_a_price_and_emit_no_longer_crashes(tmp_path):
    """`planner solve --model 13b --budget 16xH800 --tokens 1B --emit all` used to raise a TypeError in the
    launch README writer (hours known, dollars unknown)."""
    args = ["solve", "--model", "13b", "--budget", "16xH800", "--tokens", "1B", "--emit", "all"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "h800")])
    assert result.exit_code == 0, result.output
    readme = (tmp_path / "h800" / "launch-1" / "README.md").read_text()
    assert "hours and $" in readme
    assert load_gpu("H800").price.usd_per_gpu_hour == 2.0


# -- hardware choice in solve ---------------------------------------------------------------------------------------


def _solve_cli(tmp_path, *args):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["solve", *args, "--out", str(out)])
    return result, out


def test_non_dominated_keeps_ties_and_drops_beaten_plans():
    speed = np.array([10.0, 10.0, 8.0, 12.0, 9.0, 12.0])
    cost = np.array([1.0, 1.0, 0.5, 2.0, 1.5, 2.5])
    keep = non_dominated(speed, cost, np.array([True, True, True, True, True, False]))
    # 4 (9 tokens/s at 1.5) is beaten by 0 and 1; 5 is not eligible; equal plans 0 and 1 both stay.
    assert keep.tolist() == [True, True, True, True, False, False]


def test_multi_type_solve_gives_the_same_plans_as_each_type_alone():
    request = SolveRequest(model="7b", budget="16xA100,8xH100,4xH200", seq_len=2048, global_batch=32, tokens=1e9)
    choice = choose_hardware(request)
    assert [o.budget for o in choice.options] == ["16xA100", "8xH100", "4xH200"]
    for option in choice.options:
        alone = solve(SolveRequest(model="7b", budget=option.budget, seq_len=2048, global_batch=32, tokens=1e9))
        mine, theirs = option.result, alone
        a = plan_estimates(mine, [option.best])[option.best]
        b = plan_estimates(theirs, [int(theirs.feasible[0])])[int(theirs.feasible[0])]
        assert a.plan == b.plan and a.performance.tokens_per_s == b.performance.tokens_per_s
        assert a.memory.peak_gib == b.memory.peak_gib and a.cost.total_usd == b.cost.total_usd
        # Every plan the full search lists is matched or beaten by one of the frontier plans.
        c = theirs.candidates
        speed, gpu_hours = c.tokens_per_s[theirs.feasible], c.gpus[theirs.feasible] / c.tokens_per_s[theirs.feasible]
        front = (
            mine.candidates.tokens_per_s[mine.feasible],
            mine.candidates.gpus[mine.feasible] / mine.candidates.tokens_per_s[mine.feasible],
        )
        for s, g in zip(speed, gpu_hours, strict=True):
            assert np.any((front[0] >= s) & (front[1] <= g * (1 + 1e-12)))


def test_cross_type_front_is_undominated_and_winner_first():
    request = SolveRequest(model="7b", budget="16xA100,8xH100,4xH200", seq_len=2048, global_batch=32, tokens=1e9)
    for objective in ("throughput", "cost"):
        choice = choose_hardware(replace(request, objective=objective))
        points = []
        for plan in choice.front:
            option = choice.options[plan.option]
            c, price = option.result.candidates, option.result.price_per_gpu_hour
            points.append(
                (
                    float(c.tokens_per_s[plan.candidate]),
                    float(c.gpus[plan.candidate]) * price / float(c.tokens_per_s[plan.candidate]),
                )
            )
        for i, (s, k) in enumerate(points):
            assert not any(s2 >= s and k2 <= k and (s2, k2) != (s, k) for j, (s2, k2) in enumerate(points) if j != i)
        winner = points[0]
        if objective == "throughput":
            assert winner[0] == max(p[0] for p in points)
        else:
            assert winner[1] == min(p[1] for p in points)
        assert choice.options[choice.front[0].option] is choice.winner or objective == "throughput"


def test_missing_price_gives_blank_dollars_and_cost_choice_skips_it(tmp_path):
    result, out = _solve_cli(
        tmp_path,
        "--model",
        "7b",
        "--budget",
        "8xH100-96GB,8xH100",
        "--seq-len",
        "2048",
        "--global-batch",
        "32",
        "--tokens",
        "1B",
        "--objective",
        "cost",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = {row["gpu_type"]: row for row in report["best_per_gpu_type"]}
    assert rows["H100-80GB"]["rank"] == 1 and rows["H100-80GB"]["total_usd"] > 0
    assert rows["H100-96GB"]["total_usd"] is None and rows["H100-96GB"]["hours"] > 0
    assert any("H100-96GB skipped (no price" in note for note in report["notes"])
    assert "H100-96GB: dollars blank, no price for H100-96GB" in result.output
    assert {row["gpu_type"] for row in report["pareto_front"]} == {"H100-80GB"}


def test_reports_carry_the_gpu_type(tmp_path):
    result, out = _solve_cli(
        tmp_path,
        "--model",
        "7b",
        "--budget",
        "16xA100,8xH100",
        "--seq-len",
        "2048",
        "--global-batch",
        "32",
        "--tokens",
        "1B",
        "--emit",
        "torchrun",
    )
    assert result.exit_code == 0, result.output
    header = (out / "plans.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["list", "rank", "pareto", "gpu_type"]
    assert "| gpu_type |" in (out / "report.md").read_text()
    winner = json.loads((out / "report.json").read_text())["best_per_gpu_type"][0]["gpu_type"]
    assert f"x {winner}" in (out / "launch-1" / "README.md").read_text()
    single, out1 = _solve_cli(tmp_path / "one", "--model", "7b", "--budget", "8xA100", "--seq-len", "2048")
    assert single.exit_code == 0 and (out1 / "plans.csv").read_text().split(",")[2] == "gpu_type"


def test_gpu_types_any_searches_every_priced_type():
    request = SolveRequest(model="llama-3.2-1b", budget="", gpu_types="any", max_gpus=2, seq_len=2048, global_batch=8)
    options = budget_options(request)
    priced = sorted(g.name for g in list_gpus() if g.price.usd_per_gpu_hour is not None)
    assert sorted(b.split("x", 1)[1] for b, _ in options) == priced
    assert "H100-96GB" not in priced and "L20" not in priced and "B200" in priced
    # A GPU type without a network in the catalog is searched within one node.
    assert dict(options)["1xRTX-4090"].startswith("one node")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--budget", "16xA100,8xH1000"], "unknown GPU 'H1000'"),
        (["--budget", "16xA100,,8xH100"], "has an empty entry"),
        (["--gpu-types", "any", "--max-gpus", "0"], "--max-gpus must be a whole number from 1"),
        (["--gpu-types", "A100,,H100", "--max-gpus", "8"], "has an empty entry"),
        (["--gpu-types", "A100,H1000", "--max-gpus", "8"], "unknown GPU 'H1000'"),
        (["--gpu-types", "any"], "--gpu-types needs --max-gpus"),
        (["--budget", "8xA100", "--max-gpus", "8"], "--max-gpus goes with --gpu-types"),
        (["--budget", "8xA100", "--gpu-types", "any", "--max-gpus", "8"], "not both"),
        (["--gpu-types", "any", "--max-gpus", "8", "--price-per-gpu-hour", "2"], "compares GPU types"),
        ([], "solve needs --budget"),
    ],
)
def test_bad_hardware_choice_input_is_one_line_exit_2(tmp_path, args, message):
    result, _ = _solve_cli(tmp_path, "--model", "7b", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_every_gpu_has_a_sourced_host_ram_or_says_offload_is_off():
    for gpu in list_gpus():
        if gpu.node.host_ram_gib is None:
            assert "no offload plans" in gpu.notes, gpu.name
        else:
            assert gpu.node.host_ram_gib > 0 and gpu.node.example, gpu.name


def _without_host_ram(name: str):
    gpu = load_gpu(name)
    return replace(gpu, node=replace(gpu.node, host_ram_gib=None))


def test_offload_without_a_host_ram_figure_does_not_fit():
    """Offloaded states must fit the node's host RAM like the states on the GPU must fit its memory; a node
    whose RAM is unknown cannot be shown to hold them, so the plan does not fit (it used to pass unchecked:
    a 2xH800 full-offload plan was offered while H800 had no host RAM figure)."""
    from planner.catalog import load_model
    from planner.memory.model import estimate_memory

    request = PlanRequest(model="13b", gpu="A100", gpus=2, zero=3, offload="optimizer+params", seq_len=2048)
    est = estimate_plan(request)
    model = load_model("13b")
    known = estimate_memory(model, load_gpu("A100"), est.plan)
    assert known.host_ram_fits and known.fits
    assert known.host_ram_capacity_gib == load_gpu("A100").node.host_ram_gib
    unknown = estimate_memory(model, _without_host_ram("A100"), est.plan)
    assert unknown.host_ram_fits is False and not unknown.fits
    assert unknown.peak_gib == known.peak_gib  # only the host side changed
    no_offload = estimate_plan(replace(request, zero=3, offload="none", gpus=8))
    assert estimate_memory(model, _without_host_ram("A100"), no_offload.plan).host_ram_fits is None


def test_search_rejects_offload_plans_where_host_ram_is_unknown(monkeypatch):
    import planner.search.solve as solve_module
    from planner.search.space import parse_budget

    request = SolveRequest(model="13b", budget="2xA100", seq_len=2048, global_batch=32)
    with_ram = solve(request)
    offloads = [i for i in with_ram.feasible if _offload(with_ram, i) != "none"]
    assert offloads, "2xA100 fits 13B only with offload to its 1152 GiB host"

    def budget_without_ram(text):
        budget = parse_budget(text)
        return replace(budget, gpu=replace(budget.gpu, node=replace(budget.gpu.node, host_ram_gib=None)))

    monkeypatch.setattr(solve_module, "parse_budget", budget_without_ram)
    without = solve(request)
    assert all(_offload(without, i) == "none" for i in without.feasible)
    assert without.rejections.over_host_ram >= len(offloads)
    lines = rejected_lines(without, lambda i: str(i))
    assert any("offload to host RAM, which A100-80GB has no figure for" in line for line in lines)


def _offload(result, index):
    from planner.search.candidates import CATEGORIES

    return result.candidates.categories[result.candidates.group[index]][CATEGORIES.index("offload")]
