"""Speed of `planner solve` against an exhaustive numpy enumeration of the same models.

    python benchmarks/solve_speed.py

Cases: (a) Llama-2-13B on 16 x A100 (default space), (b) Llama-2-70B on 64 x H100 (default space, TP/PP),
(c) Llama-3.1-405B on 2048 x H100 over every dimension (search_spaces/full.yaml); and (d) the hardware
choice `planner solve --model 13b --gpu-types any --max-gpus 64 --tokens 10B` over every priced GPU type
(target: under 5 s end to end, issue 13).

"numpy" enumerates the space with numpy, evaluates every structurally valid plan with the bulk models
and keeps those that fit; "CP-SAT" is the search `solve` runs: the same evaluation, then the CP-SAT model
enumerating every plan that satisfies its constraints (both must find the same plans); "solve" adds the
ranking; "end-to-end" runs the `planner solve` command (start-up, search, ranking, full estimates of every
listed plan, the reports) in a fresh process RUNS times and prints the median wall time and the median CPU
time (user + system of the child process): on a machine shared with other jobs the wall time measures the
load as much as the program, the CPU time is what the run costs (and its wall time on an idle core).

    python benchmarks/solve_speed.py [RUNS]     # default 5
"""

import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from planner.catalog import load_model
from planner.search.candidates import evaluate_candidates
from planner.search.cpsat import feasible_indices
from planner.search.solve import SolveRequest, solve
from planner.search.space import load_space, parse_budget

ROOT = Path(__file__).resolve().parent.parent
CASES = [
    ("(a) 13b on 16xA100", SolveRequest(model="13b", budget="16xA100")),
    ("(b) 70b on 64xH100", SolveRequest(model="70b", budget="64xH100")),
    (
        "(c) 405b on 2048xH100, all dimensions",
        SolveRequest(
            model="llama-3.1-405b",
            budget="2048xH100",
            seq_len=8192,
            global_batch=2048,
            space=ROOT / "search_spaces" / "full.yaml",
        ),
    ),
]


def _search(request: SolveRequest, with_cp_sat: bool) -> tuple[float, int]:
    start = time.perf_counter()
    model, budget = load_model(request.model), parse_budget(request.budget)
    space = load_space(request.space, budget)
    global_batch = request.global_batch or round(2**20 / request.seq_len)
    cands = evaluate_candidates(model, budget, space, request.seq_len, global_batch)
    offloading = np.array([cands.categories[g][2] != "none" for g in cands.group], dtype=bool)
    fits = (cands.peak_gib <= budget.gpu.memory_gib * (1 - request.safety_margin)) & (
        ~offloading | (cands.host_ram_gib_per_node <= (budget.gpu.node.host_ram_gib or -np.inf))
    )
    if with_cp_sat:
        found, _ = feasible_indices(cands, space, global_batch, budget.gpus, fits)
        return time.perf_counter() - start, len(found)
    return time.perf_counter() - start, int(fits.sum())


RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_runs(args: list[str]) -> tuple[float, float]:
    """(median wall s, median CPU s) of RUNS fresh `planner solve` processes with these arguments."""
    wall, cpu = [], []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            start, start_cpu = time.perf_counter(), _children_cpu_s()
            subprocess.run([*args, "--out", tmp + "/r"], check=True, capture_output=True, env=os.environ.copy())
            wall.append(time.perf_counter() - start)
            cpu.append(_children_cpu_s() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def end_to_end(request: SolveRequest) -> tuple[float, float]:
    """(median wall s, median CPU s) of the `planner solve` command for `request`."""
    args = [
        sys.executable,
        "-m",
        "planner.cli",
        "solve",
        "--model",
        request.model,
        "--budget",
        request.budget,
        "--seq-len",
        str(request.seq_len),
    ]
    if request.global_batch:
        args += ["--global-batch", str(request.global_batch)]
    if request.space:
        args += ["--space", str(request.space)]
    return _timed_runs(args)


CHOICE_ARGS = ["--model", "13b", "--gpu-types", "any", "--max-gpus", "64", "--tokens", "10B"]


def hardware_choice_end_to_end(*extra: str) -> tuple[float, float]:
    """(median wall s, median CPU s) of `planner solve --model 13b --gpu-types any --max-gpus 64 --tokens 10B`
    in a fresh process (with `extra` arguments, e.g. --format json). The hardware choice writes report.md,
    report.json and plans.csv; no report.html."""
    return _timed_runs([sys.executable, "-m", "planner.cli", "solve", *CHOICE_ARGS, *extra])


def main() -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average at the start: {os.getloadavg()[0]:.1f}; end to end: median of {RUNS} runs")
    print(
        f"{'case':40s} {'space':>10s} {'valid':>8s} {'fit':>6s} {'numpy s':>8s} {'CP-SAT s':>9s} "
        f"{'ratio':>6s} {'solve s':>8s} {'e2e wall s':>11s} {'e2e CPU s':>10s}"
    )
    for label, request in CASES:
        _search(request, False)  # warm caches
        base_s, base_fit = _search(request, False)
        cp_s, cp_fit = _search(request, True)
        assert cp_fit == base_fit, "CP-SAT and enumeration disagree"
        start = time.perf_counter()
        result = solve(request)
        solve_s = time.perf_counter() - start
        wall, cpu = end_to_end(request)
        print(
            f"{label:40s} {result.rejections.space_size:>10,d} {result.rejections.structurally_valid:>8,d} "
            f"{len(result.feasible):>6,d} {base_s:>8.2f} {cp_s:>9.2f} {cp_s / base_s:>6.2f} {solve_s:>8.2f} "
            f"{wall:>11.2f} {cpu:>10.2f}"
        )
    from planner.catalog import list_gpus

    priced = sum(1 for gpu in list_gpus() if gpu.price.usd_per_gpu_hour is not None)
    blank = " " * 62
    for label, extra in (
        (f"(d) 13b, --gpu-types any ({priced} types) --max-gpus 64", ()),
        ("(d) the same, --format json", ("--format", "json")),
    ):
        wall, cpu = hardware_choice_end_to_end(*extra)
        print(f"{label:40s} {blank} {wall:>11.2f} {cpu:>10.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
