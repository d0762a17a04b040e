"""Dollars: price per GPU-hour from the hardware catalog (or the user's), per hour, per token, per run."""

from dataclasses import dataclass

from planner.catalog import GpuSpec
from planner.errors import PlanError
from planner.plan import Plan


@dataclass(frozen=True)
class CostEstimate:
    usd_per_gpu_hour: float | None
    """None when neither the catalog nor --price-per-gpu-hour gives a price."""
    price_source: str
    usd_per_hour: float | None
    usd_per_million_tokens: float | None
    tokens: float | None
    """Training tokens of the whole run, when given."""
    hours: float | None
    total_usd: float | None

    def to_dict(self) -> dict:
        def r(value: float | None, digits: int = 4) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "usd_per_gpu_hour": r(self.usd_per_gpu_hour),
            "price_source": self.price_source,
            "usd_per_hour": r(self.usd_per_hour),
            "usd_per_million_tokens": r(self.usd_per_million_tokens),
            "tokens": self.tokens,
            "hours": r(self.hours),
            "total_usd": r(self.total_usd, 2),
        }


def estimate_cost(
    gpu: GpuSpec, plan: Plan, tokens_per_s: float, tokens: float | None = None, price_per_gpu_hour: float | None = None
) -> CostEstimate:
    """Cost of running `plan` at `tokens_per_s` (whole job); `tokens` is the run's total, if known."""
    if price_per_gpu_hour is not None:
        if not price_per_gpu_hour > 0:
            raise PlanError(
                f"--price-per-gpu-hour must be positive, got {price_per_gpu_hour}", "pass dollars, e.g. 2.5"
            )
        price, source = float(price_per_gpu_hour), "--price-per-gpu-hour"
    else:
        price = gpu.price.usd_per_gpu_hour
        source = (
            gpu.price.describe()
            if price is not None
            else (f"no price for {gpu.name} in the catalog; pass --price-per-gpu-hour")
        )
    hours = tokens / tokens_per_s / 3600 if tokens is not None else None
    per_hour = price * plan.gpus if price is not None else None
    per_million = per_hour / (tokens_per_s * 3600 / 1e6) if per_hour is not None else None
    total = per_hour * hours if per_hour is not None and hours is not None else None
    return CostEstimate(price, source, per_hour, per_million, tokens, hours, total)
