"""tokens_per_s_per_gpu_over_efficiencies (the fitting scripts' fast path) against estimate_performance: one
broadcast evaluation over a grid of the compute-efficiency constants must give, at every point, exactly the
tokens/s of the scalar model with those constants, for every kind of plan in the validation cases."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from planner.catalog.hardware import ComputeEfficiency
from planner.performance import estimate_performance, tokens_per_s_per_gpu_over_efficiencies
from planner.validate.throughput import load_throughput_cases

ROOT = Path(__file__).resolve().parent.parent
CASE_FILES = [
    ROOT / "tests" / "data" / "throughput_cases.yaml",
    ROOT / "tests" / "data" / "external" / "throughput_cases.yaml",
    ROOT / "tests" / "data" / "moe" / "throughput_cases.yaml",
    ROOT / "tests" / "data" / "lora_throughput_cases.yaml",
]
MAX = [0.5, 0.73]
HALF_TOKENS = [0, 512, 4096]
HALF_WIDTH = [128, 1536]


def _kind(model, plan) -> tuple:
    """What decides which terms of the model a plan goes through."""
    return (
        plan.engine,
        plan.precision,
        plan.zero,
        plan.offload,
        plan.method,
        plan.checkpointing,
        plan.tp > 1,
        plan.pp > 1,
        plan.cp > 1,
        plan.sequence_parallel,
        plan.tp_comm_overlap,
        plan.compile,
        plan.pp_schedule,
        plan.first_stage_layers is not None,
        plan.mtp_layers > 0,
        model.architecture.is_moe,
    )


def _one_case_per_kind() -> list:
    seen, out = set(), []
    for path in CASE_FILES:
        for case in load_throughput_cases(path):
            model, gpu, plan = case.resolve()
            if _kind(model, plan) not in seen:
                seen.add(_kind(model, plan))
                out.append((case.id, model, gpu, plan))
    return out


CASES = _one_case_per_kind()


def test_the_cases_cover_the_model_paths():
    kinds = {_kind(model, plan) for _, model, _, plan in CASES}
    assert {k[0] for k in kinds} >= {"megatron", "fsdp", "deepspeed"}
    assert any(k[-1] for k in kinds) and any(k[1] == "fp8" for k in kinds) and any(k[4] != "full" for k in kinds)
    assert any(k[-4] == "interleaved" for k in kinds) and any(k[-3] for k in kinds) and any(k[-2] for k in kinds)


@pytest.mark.parametrize("case_id, model, gpu, plan", CASES, ids=[c[0] for c in CASES])
def test_grid_evaluation_equals_the_scalar_model_exactly(case_id, model, gpu, plan):
    grid = ComputeEfficiency(
        max=np.array(MAX)[:, None, None],
        half_tokens=np.array(HALF_TOKENS, dtype=float)[None, :, None],
        half_width=np.array(HALF_WIDTH, dtype=float)[None, None, :],
    )
    fast = tokens_per_s_per_gpu_over_efficiencies(model, gpu, plan, grid)
    assert fast.shape == (len(MAX), len(HALF_TOKENS), len(HALF_WIDTH))
    for i, value in enumerate(MAX):
        for j, half_tokens in enumerate(HALF_TOKENS):
            for k, half_width in enumerate(HALF_WIDTH):
                constants = ComputeEfficiency(max=value, half_tokens=half_tokens, half_width=half_width)
                slow = estimate_performance(model, replace(gpu, compute_efficiency=constants), plan)
                assert float(fast[i, j, k]) == slow.tokens_per_s_per_gpu, (value, half_tokens, half_width)
