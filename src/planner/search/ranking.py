"""Rank the feasible plans with pandas: by the objective, with fixed tie-breakers, and mark the Pareto front.

Columns per plan are the models' outputs plus cost: dollars per hour (GPUs x price), per million tokens,
and, with --tokens, the run's hours and total dollars. Ties are broken by fewer GPUs, lower peak memory and
then every plan field in a fixed order, so identical inputs give an identical ranking.
"""

import numpy as np
import pandas as pd

from planner.search.candidates import CATEGORIES, Candidates

PLAN_COLUMNS = ("gpus", "dp", "tp", "pp", "cp", "micro_batch", "grad_accum", *CATEGORIES)


def frame(cands: Candidates, indices: np.ndarray, request, price: float | None) -> pd.DataFrame:
    """One row per candidate in `indices` with plan fields, model outputs and cost."""
    df = pd.DataFrame({"candidate": indices})
    for name in ("gpus", "dp", "tp", "pp", "cp", "micro_batch", "grad_accum"):
        df[name] = getattr(cands, name)[indices].astype(int)
    groups = cands.group[indices]
    for position, name in enumerate(CATEGORIES):
        df[name] = [cands.categories[g][position] for g in groups]
    for name in (
        "peak_gib",
        "allocated_gib",
        "host_ram_gib_per_node",
        "step_time_s",
        "tokens_per_s",
        "tokens_per_s_per_gpu",
        "mfu",
    ):
        df[name] = getattr(cands, name)[indices]
    df["usd_per_hour"] = df["gpus"] * price if price is not None else np.nan
    df["usd_per_million_tokens"] = df["usd_per_hour"] / (df["tokens_per_s"] * 3600 / 1e6)
    tokens = request.tokens
    df["hours"] = tokens / df["tokens_per_s"] / 3600 if tokens is not None else np.nan
    df["total_usd"] = df["hours"] * df["usd_per_hour"]
    return df


def sort_keys(objective: str) -> list[tuple[str, bool]]:
    """(column, ascending) pairs: the objective first, then fixed tie-breakers."""
    primary = {
        "throughput": [("tokens_per_s", False)],
        "time": [("tokens_per_s", False)],
        "cost": [("usd_per_million_tokens", True), ("tokens_per_s", False)],
    }[objective]
    return [*primary, ("gpus", True), ("peak_gib", True), *((c, True) for c in PLAN_COLUMNS)]


def pareto_front(tokens_per_s: np.ndarray, usd_per_million: np.ndarray) -> np.ndarray:
    """True where no other plan is at least as fast and at least as cheap, and better in one."""
    order = np.lexsort((usd_per_million, -tokens_per_s))  # fastest first, cheaper first among ties
    front = np.zeros(len(tokens_per_s), dtype=bool)
    best_cost = np.inf
    for i in order:
        if usd_per_million[i] < best_cost:
            front[i] = True
            best_cost = usd_per_million[i]
    return front


def rank(cands: Candidates, found: np.ndarray, request, price: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(candidate indices in ranked order, Pareto flags in the same order)."""
    if len(found) == 0:
        return found, np.zeros(0, dtype=bool)
    df = frame(cands, found, request, price)
    keys = sort_keys(request.objective)
    for column in PLAN_COLUMNS:  # booleans and strings sort reliably as strings
        if df[column].dtype == object or df[column].dtype == bool:
            df[column] = df[column].astype(str)
    df = df.sort_values([k for k, _ in keys], ascending=[a for _, a in keys], kind="mergesort")
    ordered = df["candidate"].to_numpy()
    cost = df["usd_per_million_tokens"].to_numpy()
    pareto = pareto_front(df["tokens_per_s"].to_numpy(), np.nan_to_num(cost, nan=0.0))
    return ordered, pareto
