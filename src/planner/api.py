"""The Python API: the same answers as the command line, as objects.

    import planner
    est = planner.estimate("7b", gpu="A100", gpus=8, zero=3, micro_batch=4, global_batch=32)
    sol = planner.solve("13b", "16xA100")
    sol.frame.head()                       # ranked plans as a pandas DataFrame
    sol.plans[0].memory.peak_gib           # the typed Estimate of rank 1
    sol.write_reports("reports/13b")       # report.md, report.json, plans.csv, report.html
    sol.launch(1, "reports/13b/launch-1", "torchrun,deepspeed")

The README's "Python API" section is run as a doctest by tests/test_api.py.

`planner solve` and `planner estimate` call these functions, so the API and the CLI give the same JSON.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from planner.errors import PlannerError
from planner.estimate import Estimate, estimate_plan
from planner.files import write_folder
from planner.memory import DEFAULT_SAFETY_MARGIN
from planner.plan import PlanRequest
from planner.search.solve import SolveRequest, SolveResult
from planner.units import parse_count

if TYPE_CHECKING:
    import pandas as pd


def estimate(
    model: str,
    *,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
    tokens: str | float | None = None,
    price_per_gpu_hour: float | None = None,
    **plan: object,
) -> Estimate:
    """Memory, speed and cost of one plan (`planner estimate`); `plan` takes the PlanRequest fields
    (gpu, gpus, tp, pp, zero, micro_batch, global_batch, seq_len, engine, ...) with the CLI's defaults."""
    request = PlanRequest(model=model, **plan)
    total = parse_count(tokens, "tokens") if tokens is not None else None
    return estimate_plan(request, safety_margin=safety_margin, tokens=total, price_per_gpu_hour=price_per_gpu_hour)


@dataclass(frozen=True)
class Solution:
    """A finished search: the ranked plans that fit, with their full estimates."""

    result: SolveResult
    estimates: dict[int, Estimate]
    """Full estimate per candidate index of every plan that fits."""

    @property
    def plans(self) -> list[Estimate]:
        """The typed estimates in rank order (rank 1 first)."""
        return [self.estimates[int(i)] for i in self.result.feasible]

    @property
    def frame(self) -> "pd.DataFrame":
        """One row per ranked plan, the columns of plans.csv (pandas is imported here, not at start-up)."""
        import pandas as pd

        from planner.report.solve import rows

        return pd.DataFrame(rows(self.result, self.estimates))

    def files(self) -> dict[str, str]:
        """The report files by name: report.md, report.json, plans.csv, report.html."""
        from planner.report.solve import render_all

        return render_all(self.result, self.estimates)[1]

    def to_json(self) -> str:
        """report.json's text (what `planner solve --format json` prints)."""
        from planner.report.solve import render_report_json

        return render_report_json(self.result, self.estimates)

    def write_reports(self, folder: str | Path, extra: dict[str, str] | None = None) -> Path:
        """Write the report files (and `extra` files) into `folder`, atomically; returns the folder."""
        return write_folder(Path(folder), {**self.files(), **(extra or {})})

    def launch_files(self, rank: int = 1, targets: str = "all"):
        """The launch folder (planner.launch.LaunchFolder) of the plan ranked `rank`."""
        from planner.launch.run import launch_folder

        if not 1 <= rank <= len(self.result.feasible):
            raise PlannerError(
                f"rank {rank} is not in this search (1..{len(self.result.feasible)})", "pick a listed rank"
            )
        return launch_folder(self.result, self.estimates, targets, rank)

    def launch(self, rank: int = 1, folder: str | Path | None = None, targets: str = "all") -> Path:
        """Write the launch configs of the plan ranked `rank` into `folder` (default launch-<rank>/)."""
        launch = self.launch_files(rank, targets)
        return write_folder(Path(folder or f"launch-{rank}"), launch.files)


def solve_request(request: SolveRequest) -> tuple[Solution, list[str]]:
    """Run a search; returns the solution (possibly with no plans) and, when nothing fits, the advice."""
    from planner.search.advice import nearest_miss_advice
    from planner.search.details import plan_estimates
    from planner.search.solve import solve as run_search

    result = run_search(request)
    if not len(result.feasible):
        return Solution(result, {}), nearest_miss_advice(result)
    return Solution(result, plan_estimates(result, result.feasible)), []


def solve(model: str, budget: str, *, tokens: str | float | None = None, **options: object) -> Solution:
    """Search the plans that fit `budget` (e.g. "16xA100") and rank them (`planner solve`). `options` are the
    SolveRequest fields (seq_len, global_batch, objective, max_cost, top, safety_margin, pins={...}, ...).
    Raises NoFeasiblePlanError, with the nearest miss's advice, when nothing fits."""
    from planner.search.solve import require_feasible

    total = parse_count(tokens, "tokens") if tokens is not None else None
    solution, advice = solve_request(SolveRequest(model=model, budget=budget, tokens=total, **options))
    if not solution.estimates:
        require_feasible(solution.result, advice)
    return solution
