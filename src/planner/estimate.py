"""One plan in, the full answer out: the resolved plan, the model and GPU, and the memory estimate.

The CLI, validation and search all go through `estimate_plan`, so a plan listed by `solve` and the
same plan fed to `estimate` give the same numbers by construction.
"""

from dataclasses import dataclass
from typing import Any

from planner import __version__
from planner.architecture import active_params, embedding_params, total_params
from planner.catalog import GpuSpec, ModelSpec
from planner.inputs import run_figures
from planner.memory import DEFAULT_SAFETY_MARGIN, MemoryEstimate, estimate_memory
from planner.memory.stages import first_and_last_stage
from planner.performance import CostEstimate, PerformanceEstimate, estimate_cost, estimate_performance
from planner.plan import Plan, PlanRequest, resolve


@dataclass(frozen=True)
class Estimate:
    model: ModelSpec
    gpu: GpuSpec
    plan: Plan
    memory: MemoryEstimate
    performance: PerformanceEstimate
    cost: CostEstimate

    def to_dict(self) -> dict[str, Any]:
        arch = self.model.architecture
        return {
            "planner_version": __version__,
            "model": {
                "name": self.model.name,
                "resolved_from": self.model.resolved_from,
                "family": self.model.family,
                "source": self.model.source,
                "params": total_params(arch),
                **({"active_params": active_params(arch)} if arch.is_moe else {}),
                "embedding_params": embedding_params(arch),
                "trainable_params": trainable_params(self.model, self.plan),
                "architecture": {k: getattr(arch, k) for k in arch.__dataclass_fields__},
            },
            "gpu": {
                "name": self.gpu.name,
                "memory_gib": self.gpu.memory_gib,
                "memory_overridden": self.gpu.memory_overridden,
                "inter_node_bandwidth_gbps_per_gpu": self.gpu.node.inter_node_bandwidth_gbps_per_gpu,
                "network_overridden": self.gpu.network_overridden,
                "gpus_per_node": self.plan.gpus_per_node,
            },
            "plan": self.plan.to_dict(),
            "memory": self.memory.to_dict(),
            "performance": self.performance.to_dict(),
            "cost": self.cost.to_dict(),
        }


def trainable_params(model: ModelSpec, plan: Plan) -> int:
    """Parameters that train: all of them in full fine-tuning, the LoRA adapters, or the last blocks under
    freeze (PEFT plans run on one pipeline stage and one tensor-parallel rank, so the stage is the model)."""
    if not plan.peft:
        return total_params(model.architecture)
    return int(first_and_last_stage(model.architecture, plan)[0].trainable_params)


def estimate_plan(
    request: PlanRequest,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
    tokens: float | None = None,
    price_per_gpu_hour: float | None = None,
) -> Estimate:
    """Resolve a request against the catalogs and run the models on it. `tokens` is the run's total
    training tokens (for hours and dollars); `price_per_gpu_hour` overrides the catalog price."""
    run_figures(safety_margin, tokens, price_per_gpu_hour)
    model, gpu, plan = resolve(request)
    return evaluate(model, gpu, plan, safety_margin, tokens, price_per_gpu_hour)


def evaluate(
    model: ModelSpec,
    gpu: GpuSpec,
    plan: Plan,
    safety_margin: float = DEFAULT_SAFETY_MARGIN,
    tokens: float | None = None,
    price_per_gpu_hour: float | None = None,
) -> Estimate:
    """Run the memory, performance and cost models on an already resolved plan."""
    memory = estimate_memory(model, gpu, plan, safety_margin)
    performance = estimate_performance(model, gpu, plan)
    cost = estimate_cost(gpu, plan, performance.tokens_per_s, tokens, price_per_gpu_hour)
    return Estimate(model, gpu, plan, memory, performance, cost)
