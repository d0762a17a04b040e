"""Plans to launch: a ranked plan of a `planner solve` report (report.json), re-estimated here."""

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from planner import inputs
from planner.catalog import load_gpu, load_model
from planner.errors import PlannerError
from planner.estimate import Estimate, evaluate
from planner.inputs import one_line, quoted, run_figures
from planner.launch.variants import SearchContext
from planner.plan import Plan, PlanRequest, make_plan
from planner.search.solve import OBJECTIVES

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


_RANK = re.compile(r"[0-9]{1,9}")


def parse_plan_ref(ref: str, rank: int | None) -> tuple[Path, int]:
    """`reports/x/report.json#3`, `reports/x#3` or a path plus `--rank` -> (report.json path, rank)."""
    ref = inputs.text(ref, "PLAN", limit=4000)
    path_text, hash_sign, fragment = ref.partition("#")
    if hash_sign and (not _RANK.fullmatch(fragment) or int(fragment) < 1):
        raise PlannerError(f"cannot read the plan rank in {quoted(ref)}", "write REPORT.json#N with N >= 1")
    if rank is not None and rank < 1:
        raise PlannerError(f"--rank must be 1 or more, got {rank}", "ranks start at 1 (the best plan)")
    if fragment and rank is not None and int(fragment) != rank:
        raise PlannerError(f"{one_line(ref)} names rank {fragment} but --rank is {rank}", "give the rank once")
    if fragment:
        rank = int(fragment)
    path = Path(path_text)
    try:
        if path.is_dir():
            path = path / "report.json"
        exists = path.is_file()
    except (OSError, ValueError):  # a name the file system refuses (too long, NUL)
        exists = False
    if not exists:
        raise PlannerError(
            f"no solve report at {one_line(str(path))}", "run planner solve first, or pass its report.json"
        )
    return path, rank if rank is not None else 1


def _field(data: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """data[key] of a report section, of the type planner solve writes."""
    value = data.get(key) if isinstance(data, dict) else None
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise PlannerError(
            f"{where}: '{key}' is missing or not what planner solve writes ({quoted(value)})",
            "pass the report.json planner solve wrote, or run the search again",
        )
    return value


def _report_plan(entry: Any, where: str, model, gpu) -> Plan:
    """The ranked plan, checked by the same rules as `planner estimate` (make_plan re-derives dp and
    grad_accum), so an edited report cannot reach the models with a plan that cannot exist."""
    raw = _field({"plan": entry.get("plan") if isinstance(entry, dict) else None}, "plan", dict, where)
    request_fields = {f.name for f in fields(PlanRequest)} - {"model", "gpu", "gpu_memory_gib", "network_gbps_per_gpu"}
    keys = {k: v for k, v in raw.items() if k in request_fields and v is not None}
    try:
        return make_plan(PlanRequest(model=model.name, gpu=gpu.name, **keys), model, gpu)
    except PlannerError as exc:
        raise PlannerError(f"{where}: {exc.problem}", "pass the report.json planner solve wrote") from None


def load_report_plan(ref: str, rank: int | None = None) -> ReportPlan:
    """The ranked plan `ref` names, with everything needed to translate it for other engines."""
    path, rank = parse_plan_ref(ref, rank)
    shown = one_line(str(path))
    report = inputs.read_json_mapping(path, "solve report", "pass the report.json planner solve wrote")
    if not {"inputs", "gpu", "plans"} <= set(report):
        raise PlannerError(f"{shown} is not a planner solve report", "pass the report.json planner solve wrote")
    plans = _field(report, "plans", list, shown)
    if not 1 <= rank <= len(plans):
        raise PlannerError(f"{shown} lists {len(plans)} plans, there is no rank {rank}", f"pick 1..{len(plans)}")
    entry = plans[rank - 1]
    where = f"{shown} plan {rank}"
    inputs_ = _field(report, "inputs", dict, shown)
    model_ref = _field(inputs_, "model", str, f"{shown} inputs")
    budget = _field(inputs_, "budget", str, f"{shown} inputs")
    margin = _field(inputs_, "safety_margin", (int, float), f"{shown} inputs")
    tokens = inputs_.get("tokens")
    network = inputs_.get("network_gbps_per_gpu")
    own_price = inputs_.get("price_source") == "--price-per-gpu-hour"
    price = inputs_.get("price_per_gpu_hour") if own_price else None
    run_figures(margin, tokens, price)
    model = load_model(model_ref)
    gpu = load_gpu(_field(_field(report, "gpu", dict, shown), "name", str, f"{shown} gpu")).with_network(network)
    plan = _report_plan(entry, where, model, gpu)
    reported_peak = _field(_field(entry, "memory", dict, where), "peak_gib", (int, float), where)
    reported_speed = _field(_field(entry, "performance", dict, where), "tokens_per_s", (int, float), where)
    estimate = evaluate(model, gpu, plan, margin, tokens, price)
    space = inputs_.get("space")
    if space is not None and not isinstance(space, str):
        raise PlannerError(f"{shown} inputs: 'space' must be a path, got {quoted(space)}", "pass the solve report")
    objective = inputs_.get("objective", "throughput")
    if objective not in OBJECTIVES:
        raise PlannerError(f"{shown} inputs: unknown objective {quoted(objective)}", f"use {', '.join(OBJECTIVES)}")
    context = SearchContext(
        model_ref=model_ref,
        budget=budget,
        space=None if space in (None, DEFAULT_SPACE) else space,
        safety_margin=margin,
        objective=objective,
        tokens=tokens,
        price_per_gpu_hour=price,
        network_gbps_per_gpu=network,
    )
    return ReportPlan(estimate, context, rank, path, float(reported_peak), float(reported_speed))
