"""The performance and cost model: FLOPs, compute and communication time, throughput, dollars.

Where each part is computed:
- FLOPs per token (model and hardware): `flops`
- collectives and the link each process group lands on: `comm`
- step time, tokens/s, MFU/HFU: `model` (and tokens/s over a grid of the fitted efficiency constants, for the
  fitting scripts: `tokens_per_s_per_gpu_over_efficiencies`)
- dollars: `cost`
"""

from planner.performance.cost import CostEstimate, estimate_cost
from planner.performance.model import (
    PerformanceEstimate,
    estimate_performance,
    tokens_per_s_per_gpu_over_efficiencies,
)

__all__ = [
    "CostEstimate",
    "PerformanceEstimate",
    "estimate_cost",
    "estimate_performance",
    "tokens_per_s_per_gpu_over_efficiencies",
]
