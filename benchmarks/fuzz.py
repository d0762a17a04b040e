"""Fuzz every command and input kind with 20,000+ generated inputs and print the figures per category.

    python benchmarks/fuzz.py                  # the full run (about 21,000 inputs)
    python benchmarks/fuzz.py --scale 0.05     # a quick look

The inputs and the promise checked are those of tests/fuzzing.py (also run, bounded, by tests/test_fuzz.py):
no traceback, exit codes 0/2/3 only, one-line errors, no NaN/inf/negative quantity in any output. Fixed
seed per category, so two runs generate the same inputs.
"""

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzzing import CATEGORIES, check

INPUTS = {
    "estimate-flags": 4000,
    "config-json": 3000,
    "gpu-yaml": 2500,
    "model-yaml": 1500,
    "raw-bytes": 2000,
    "cases-yaml": 2000,
    "measured-csv": 2000,
    "launch-ref": 1000,
    "report-json": 1500,
    "solve-flags": 800,
    "space-yaml": 800,
}
"""Inputs per category: the whole-search categories (solve, space) cost about 0.3 s each, the rest ms."""


KEEP: Path | None = None
"""Folder to write each failing attempt to (argv.json, problem.txt and its input files), or None."""


def _keep(attempt, problem: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "argv.json").write_text(json.dumps(list(attempt.argv)))
    (folder / "problem.txt").write_text(problem)
    for name, body in attempt.files.items():
        (folder / "files" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "files" / name).write_bytes(body)


def run_category(name: str, count: int) -> tuple[Counter, list[str], float]:
    outcomes: Counter = Counter()
    failures: list[str] = []

    @seed(11)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(CATEGORIES[name]())
    def one(attempt):
        code, problem = check(attempt)
        outcomes[f"exit {code}"] += 1
        if problem:
            failures.append(f"{problem}\n      {attempt!r}"[:1200])
            if KEEP is not None:
                _keep(attempt, problem, KEEP / f"{name}-{len(failures)}")

    start = time.perf_counter()
    one()
    return outcomes, failures, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every category's input count")
    parser.add_argument("--only", default=None, help="comma-separated categories")
    parser.add_argument("--keep", type=Path, default=None, help="write failing inputs into this folder")
    args = parser.parse_args()
    global KEEP
    KEEP = args.keep
    names = args.only.split(",") if args.only else list(INPUTS)
    total, failed = 0, 0
    print(f"{'category':16s} {'inputs':>7s} {'exit 0':>7s} {'exit 2':>7s} {'exit 3':>7s} {'failures':>8s} {'s':>7s}")
    for name in names:
        count = max(1, round(INPUTS[name] * args.scale))
        outcomes, failures, seconds = run_category(name, count)
        n = sum(outcomes.values())
        total, failed = total + n, failed + len(failures)
        codes = " ".join(f"{outcomes[f'exit {c}']:7d}" for c in (0, 2, 3))
        print(f"{name:16s} {n:7d} {codes} {len(failures):8d} {seconds:7.1f}", flush=True)
        for failure in failures[:10]:
            print(f"    {failure}")
    print(f"{'total':16s} {total:7d} {'':23s} {failed:8d}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
