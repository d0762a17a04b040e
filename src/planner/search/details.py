"""Full estimates (memory breakdown, step-time breakdown, cost) of many plans, computed in bulk.

The search evaluates the same functions as `planner estimate` on array-valued plans (one call per group of
plans that share their categorical choices); each plan's numbers are packed here into the `Estimate`
objects `estimate` prints, so a plan listed by `solve` and fed to `estimate` reports the same values.
"""

import numpy as np

from planner.estimate import Estimate
from planner.memory.model import memory_estimate_at
from planner.performance.cost import estimate_cost
from planner.performance.model import performance_estimate_at
from planner.plan import Plan
from planner.progress import track
from planner.search.bulk import NUMERIC_FIELDS


class _ScalarPlans:
    """The scalar Plans of an array-valued plan group: the shared fields read once, each numeric field turned
    into a Python list once, so that unpacking thousands of plans costs one dataclass construction each."""

    def __init__(self, array_plan: Plan) -> None:
        size = np.shape(array_plan.gpus)
        self._shared = {name: getattr(array_plan, name) for name in Plan.__dataclass_fields__}
        self._numeric = {}
        for name in NUMERIC_FIELDS:
            del self._shared[name]
            values = np.broadcast_to(np.asarray(getattr(array_plan, name)), size).tolist()
            cast = bool if name == "sequence_parallel" else int
            self._numeric[name] = [cast(v) for v in values]

    def at(self, i: int) -> Plan:
        return Plan(**self._shared, **{name: values[i] for name, values in self._numeric.items()})


def plan_estimates(result, indices: np.ndarray) -> dict[int, Estimate]:
    """Estimate of every candidate in `indices` (keyed by candidate index), from the search's bulk results."""
    cands, budget, request = result.candidates, result.budget, result.request
    gpu, model = budget.gpu, result.model
    out: dict[int, Estimate] = {}
    scalar_plans: dict[int, _ScalarPlans] = {}
    for index in track(np.asarray(indices, dtype=np.int64), "full estimates of the plans that fit"):
        group = int(cands.group[index])
        bulk = cands.results[group]
        if group not in scalar_plans:
            scalar_plans[group] = _ScalarPlans(bulk.plan)
        position = int(cands.position[index])
        single = scalar_plans[group].at(position)
        performance = performance_estimate_at(bulk.performance, position, gpu)
        host = np.asarray(bulk.host_ram_gib_per_node)
        memory = memory_estimate_at(bulk.memory, host, position, gpu, single, request.safety_margin)
        cost = estimate_cost(gpu, single, performance.tokens_per_s, request.tokens, request.price_per_gpu_hour)
        out[int(index)] = Estimate(model, gpu, single, memory, performance, cost)
    return out
