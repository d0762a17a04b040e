"""How many plans per second the memory + performance models evaluate.

    python benchmarks/estimate_speed.py

Prints plans/s for the scalar path (one `evaluate` call per plan: memory, performance and cost) over a
mix of layouts. The search scores every feasible plan with these models.
"""

import platform
import time

from planner.catalog import load_gpu, load_model
from planner.estimate import evaluate
from planner.plan import PlanRequest, make_plan


def _plans():
    model, gpu = load_model("llama-2-13b"), load_gpu("A100-80GB")
    plans = []
    for engine, zero in (("deepspeed", 0), ("deepspeed", 3), ("fsdp", 3), ("megatron", 1)):
        for tp in (1, 2, 4):
            for micro_batch in (1, 2, 4):
                for checkpointing in ("none", "full"):
                    if engine == "deepspeed" and zero == 3 and tp > 1:
                        continue
                    request = PlanRequest(
                        model="llama-2-13b",
                        gpus=16,
                        tp=tp,
                        zero=zero,
                        engine=engine,
                        micro_batch=micro_batch,
                        global_batch=64 * micro_batch,
                        checkpointing=checkpointing,
                        seq_len=4096,
                    )
                    plans.append(make_plan(request, model, gpu))
    return model, gpu, plans


def main() -> None:
    model, gpu, plans = _plans()
    repeats = 50
    start = time.perf_counter()
    for _ in range(repeats):
        for plan in plans:
            evaluate(model, gpu, plan)
    elapsed = time.perf_counter() - start
    count = repeats * len(plans)
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(
        f"scalar: {count} plans in {elapsed:.2f} s = {count / elapsed:,.0f} plans/s "
        f"({elapsed / count * 1e6:.0f} us per plan: memory + performance + cost)"
    )


if __name__ == "__main__":
    main()
