"""Plans to launch: a ranked plan of a `planner solve` report (report.json), re-estimated here."""

import json
from dataclasses import dataclass
from pathlib import Path

from planner.catalog import load_gpu, load_model
from planner.errors import PlannerError
from planner.estimate import Estimate, evaluate
from planner.launch.variants import SearchContext
from planner.plan import Plan

DEFAULT_SPACE = "search_spaces/default.yaml"


@dataclass(frozen=True)
class ReportPlan:
    estimate: Estimate
    context: SearchContext
    rank: int
    report: Path
    reported_peak_gib: float
    reported_tokens_per_s: float

    @property
    def note(self) -> str:
        return f"rank {self.rank} of {self.report}"


def parse_plan_ref(ref: str, rank: int | None) -> tuple[Path, int]:
    """`reports/x/report.json#3`, `reports/x#3` or a path plus `--rank` -> (report.json path, rank)."""
    path_text, hash_sign, fragment = ref.partition("#")
    if hash_sign and (not fragment.isdigit() or int(fragment) < 1):
        raise PlannerError(f"cannot read the plan rank in {ref!r}", "write REPORT.json#N with N >= 1")
    if rank is not None and rank < 1:
        raise PlannerError(f"--rank must be 1 or more, got {rank}", "ranks start at 1 (the best plan)")
    if fragment and rank is not None and int(fragment) != rank:
        raise PlannerError(f"{ref} names rank {fragment} but --rank is {rank}", "give the rank once")
    if fragment:
        rank = int(fragment)
    path = Path(path_text)
    if path.is_dir():
        path = path / "report.json"
    return path, rank if rank is not None else 1


def load_report_plan(ref: str, rank: int | None = None) -> ReportPlan:
    """The ranked plan `ref` names, with everything needed to translate it for other engines."""
    path, rank = parse_plan_ref(ref, rank)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlannerError(f"no solve report at {path}", "run planner solve first, or pass its report.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PlannerError(
            f"{path} is not a solve report ({error})", "pass the report.json planner solve wrote"
        ) from None
    if not isinstance(report, dict) or not {"inputs", "gpu", "plans"} <= set(report):
        raise PlannerError(f"{path} is not a planner solve report", "pass the report.json planner solve wrote")
    plans = report["plans"]
    if not 1 <= rank <= len(plans):
        raise PlannerError(f"{path} lists {len(plans)} plans, there is no rank {rank}", f"pick 1..{len(plans)}")
    entry = plans[rank - 1]
    inputs = report["inputs"]
    model = load_model(inputs["model"])
    gpu = load_gpu(report["gpu"]["name"]).with_network(inputs.get("network_gbps_per_gpu"))
    plan_fields = {k: v for k, v in entry["plan"].items() if k in Plan.__dataclass_fields__}
    plan = Plan(**plan_fields)
    own_price = inputs.get("price_source") == "--price-per-gpu-hour"
    price = inputs.get("price_per_gpu_hour") if own_price else None
    estimate = evaluate(model, gpu, plan, inputs["safety_margin"], inputs.get("tokens"), price)
    space = inputs.get("space")
    context = SearchContext(
        model_ref=inputs["model"],
        budget=inputs["budget"],
        space=None if space in (None, DEFAULT_SPACE) else space,
        safety_margin=inputs["safety_margin"],
        objective=inputs.get("objective", "throughput"),
        tokens=inputs.get("tokens"),
        price_per_gpu_hour=price,
        network_gbps_per_gpu=inputs.get("network_gbps_per_gpu"),
    )
    return ReportPlan(
        estimate,
        context,
        rank,
        path,
        entry["memory"]["peak_gib"],
        entry["performance"]["tokens_per_s"],
    )
