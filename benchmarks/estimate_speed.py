"""How many plans per second the memory + performance models evaluate.

    python benchmarks/estimate_speed.py

Prints plans/s for the scalar path (one `evaluate` call per plan: memory, performance and cost) over a
mix of layouts, and for the batched path the search uses (the same functions on array-valued plans: one
call per group of plans sharing their categorical choices).
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


def batched() -> tuple[int, float]:
    """Every candidate of Llama-3.1-405B on 2048 H100s over the full search space, evaluated in bulk."""
    from pathlib import Path

    from planner.search.candidates import evaluate_candidates
    from planner.search.space import load_space, parse_budget

    model, budget = load_model("llama-3.1-405b"), parse_budget("2048xH100")
    space = load_space(Path(__file__).resolve().parent.parent / "search_spaces" / "full.yaml", budget)
    evaluate_candidates(model, budget, space, 8192, 2048)  # warm up
    start = time.perf_counter()
    cands = evaluate_candidates(model, budget, space, 8192, 2048)
    return len(cands), time.perf_counter() - start


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
    count, elapsed = batched()
    print(
        f"batched: {count:,} plans in {elapsed:.2f} s = {count / elapsed:,.0f} plans/s "
        "(memory + performance, including enumerating the candidates)"
    )


if __name__ == "__main__":
    main()
