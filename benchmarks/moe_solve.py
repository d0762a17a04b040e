"""End-to-end time of `planner solve` for two Mixture-of-Experts searches (issue 14: each under 5 s).

    python benchmarks/moe_solve.py

Cases: Qwen3-30B-A3B on 2 nodes of 8 H100 and DeepSeek-V3 on 256 H100, the default search space with its
expert-parallel dimension. Each runs the `planner solve` command in a fresh process (start-up, search,
ranking, full estimates of the listed plans, the reports) three times; the best and the median wall time
are printed with the top plans of the last run and the search's own timing line.
"""

import os
import platform
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


def run_case(args: list[str]) -> tuple[list[float], str]:
    times, output = [], ""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "planner", "solve", *args, "--top", "5", "--out", out]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(
                    f"planner solve {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}"
                )
            output = done.stdout
    return times, output


def main() -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for name, args in CASES:
        times, output = run_case(args)
        print(f"\n== {name}: end to end best {min(times):.2f} s, median {statistics.median(times):.2f} s")
        table = [line for line in output.splitlines() if line.startswith((" #", "1", " 2", " 3", " 4", " 5"))]
        print("\n".join(table))


if __name__ == "__main__":
    main()
