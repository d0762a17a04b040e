"""End-to-end time of `planner solve` for two Mixture-of-Experts searches (issue 14: each under 5 s).

    python benchmarks/moe_solve.py

Cases: Qwen3-30B-A3B on 2 nodes of 8 H100 and DeepSeek-V3 on 256 H100, the default search space with its
expert-parallel dimension. Each runs the `planner solve` command in a fresh process (start-up, search,
ranking, full estimates of the listed plans, the reports) three times; the best and the median wall time
and the median CPU time (user + system of the child: what the wall time is on an idle machine) are printed
with the top plans of the last run.
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

ROOT = Path(__file__).resolve().parent.parent
CASES = [
    ("qwen3-30b-a3b on 2x8xH100", ["--model", "qwen3-30b-a3b", "--budget", "2x8xH100"]),
    ("deepseek-v3 on 256xH100", ["--model", "deepseek-v3", "--budget", "256xH100"]),
]
RUNS = 3


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_case(args: list[str]) -> tuple[list[float], list[float], str]:
    """Wall seconds, CPU seconds (user + system: the wall time on an idle machine) and the last output."""
    times, cpu, output = [], [], ""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "planner.cli", "solve", *args, "--top", "5", "--out", out + "/r"]
            start, start_cpu = time.perf_counter(), _children_cpu_s()
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            times.append(time.perf_counter() - start)
            cpu.append(_children_cpu_s() - start_cpu)
            if done.returncode != 0:
                raise SystemExit(
                    f"planner solve {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}"
                )
            output = done.stdout
    return times, cpu, output


def main() -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for name, args in CASES:
        times, cpu, output = run_case(args)
        print(
            f"\n== {name}: end to end best {min(times):.2f} s, median {statistics.median(times):.2f} s wall; "
            f"CPU (user + system) median {statistics.median(cpu):.2f} s"
        )
        table = [line for line in output.splitlines() if line.startswith((" #", "1", " 2", " 3", " 4", " 5"))]
        print("\n".join(table))


if __name__ == "__main__":
    main()
