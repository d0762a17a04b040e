"""Rank the feasible plans: by the objective, with fixed tie-breakers, and mark the Pareto front.

Columns per plan are the models' outputs plus cost: dollars per hour (GPUs x price), per million tokens,
and, with --tokens, the run's hours and total dollars. Ties are broken by fewer GPUs, lower peak memory and
then every plan field in a fixed order, so identical inputs give an identical ranking.

The sort is one stable lexicographic sort (numpy) over integer codes, one code column per sort key: numbers
compare as numbers (a missing value, NaN or None, last whichever the direction), booleans and text as their
text (`False` < `True`), so a plan field added to CATEGORIES sorts without code here. It needs no pandas,
whose import alone cost half a second of every `planner solve`.
"""

import numpy as np

from planner.search.candidates import CATEGORIES, Candidates

PLAN_COLUMNS = ("gpus", "dp", "tp", "pp", "cp", "micro_batch", "grad_accum", *CATEGORIES)


def frame(cands: Candidates, indices: np.ndarray, request, price: float | None) -> dict[str, np.ndarray]:
    """One array entry per candidate in `indices`: plan fields, model outputs and cost, by column name.
    Categorical fields are given per group (`_group_values`), not repeated per plan."""
    columns: dict[str, np.ndarray] = {"candidate": np.asarray(indices, dtype=np.int64)}
    for name in ("gpus", "dp", "tp", "pp", "cp", "micro_batch", "grad_accum"):
        columns[name] = getattr(cands, name)[indices].astype(np.int64)
    for name in (
        "peak_gib",
        "allocated_gib",
        "host_ram_gib_per_node",
        "step_time_s",
        "tokens_per_s",
        "tokens_per_s_per_gpu",
        "mfu",
    ):
        columns[name] = np.asarray(getattr(cands, name)[indices], dtype=float)
    columns["usd_per_hour"] = columns["gpus"] * price if price is not None else np.full(len(indices), np.nan)
    columns["usd_per_million_tokens"] = columns["usd_per_hour"] / (columns["tokens_per_s"] * 3600 / 1e6)
    tokens = request.tokens
    columns["hours"] = tokens / columns["tokens_per_s"] / 3600 if tokens is not None else np.full(len(indices), np.nan)
    columns["total_usd"] = columns["hours"] * columns["usd_per_hour"]
    return columns


def sort_keys(objective: str) -> list[tuple[str, bool]]:
    """(column, ascending) pairs: the objective first, then fixed tie-breakers."""
    primary = {
        "throughput": [("tokens_per_s", False)],
        "time": [("tokens_per_s", False)],
        "cost": [("usd_per_million_tokens", True), ("tokens_per_s", False)],
    }[objective]
    return [*primary, ("gpus", True), ("peak_gib", True), *((c, True) for c in PLAN_COLUMNS)]


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float | np.floating) and np.isnan(value))


def _codes_of_values(values: list) -> np.ndarray:
    """Ascending order codes of a list of field values (equal values, equal codes): as numbers, missing ones
    last, when every value is a number or missing; else all by their text."""
    numbers = all(_is_number(v) or _missing(v) for v in values)
    if not numbers:  # text, booleans or a mix: compared as text, None as "None"
        order = sorted({str(v) for v in values})
        position = {k: i for i, k in enumerate(order)}
        return np.array([position[str(v)] for v in values], dtype=np.int64)
    order = sorted({float(v) for v in values if not _missing(v)})
    position = {k: i for i, k in enumerate(order)}
    return np.array([len(order) if _missing(v) else position[float(v)] for v in values], dtype=np.int64)


def _codes(values: np.ndarray, ascending: bool) -> np.ndarray:
    """Integer codes that sort a numeric column in the wanted direction, NaN last either way."""
    values = np.asarray(values, dtype=float)
    missing = np.isnan(values)
    unique, inverse = np.unique(np.where(missing, 0.0, values), return_inverse=True)
    codes = inverse.astype(np.int64) if ascending else (len(unique) - 1 - inverse).astype(np.int64)
    return np.where(missing, len(unique), codes)


def sort_order(columns: dict[str, np.ndarray], cands: Candidates, objective: str) -> np.ndarray:
    """Positions (into the columns' arrays) in ranked order: a stable lexicographic sort over the keys."""
    groups = cands.group[columns["candidate"]]
    keys = []
    for name, ascending in sort_keys(objective):
        if name in CATEGORIES:
            position = CATEGORIES.index(name)
            per_group = _codes_of_values([values[position] for values in cands.categories])
            keys.append(per_group[groups] if len(per_group) else np.zeros(len(groups), dtype=np.int64))
        else:
            keys.append(_codes(columns[name], ascending))
    return np.lexsort(keys[::-1])


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
    columns = frame(cands, found, request, price)
    order = sort_order(columns, cands, request.objective)
    ordered = columns["candidate"][order]
    cost = columns["usd_per_million_tokens"][order]
    pareto = pareto_front(columns["tokens_per_s"][order], np.nan_to_num(cost, nan=0.0))
    return ordered, pareto
