from pathlib import Path

import pytest

from planner.catalog import load_gpu, load_model
from planner.plan import PlanRequest, make_plan

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


def plan_for(model: str = "llama-2-7b", gpu: str = "A100-80GB", **kwargs):
    """(model spec, gpu spec, plan) for a request; kwargs are PlanRequest fields."""
    m, g = load_model(model), load_gpu(gpu)
    return m, g, make_plan(PlanRequest(model=model, gpu=gpu, **kwargs), m, g)
