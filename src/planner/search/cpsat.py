"""The CP-SAT model of the plan search (OR-Tools).

Variables: the GPU count, tp, pp, cp, micro-batch, dp and grad_accum (integers over the search space's
values), one index over the combinations of the categorical dimensions (engine, ZeRO stage, offload,
checkpointing, precision, optimizer, loss, flash attention, compile) and three booleans tp>1, pp>1, cp>1.

Constraints:
* dp * tp * pp * cp = GPUs (used <= budget) and micro_batch * grad_accum * dp = global batch
  (multiplication equalities); tp divides the heads and stays inside a node, pp divides the layers, cp
  divides the sequence (domains);
* engine support: the (categorical values, tp>1, pp>1, cp>1) tuple is one `planner.plan.make_plan`
  accepts (allowed-assignments table);
* memory: the (categorical values, tp, pp, cp, micro_batch, dp) tuple is one whose peak per GPU, computed
  by the memory model, is within the usable capacity and whose offloaded states fit the node's host RAM
  (an allowed-assignments table of those tuples). The memory model depends
  on exactly these values (the GPU count and grad_accum follow from them), so the table is the model
  itself evaluated on every tuple the other constraints admit: the constraint is exact, not an
  approximation of the model;
* optional cost and time limits: the table keeps only tuples within them.

All solutions are enumerated with one worker and a fixed seed, then ranked outside the solver, so the
output does not depend on the enumeration order.
"""

from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from planner.search.candidates import CATEGORIES, Candidates
from planner.search.space import SearchSpace

SEED = 20241128


@dataclass(frozen=True)
class SolverStats:
    solutions: int
    wall_s: float
    status: str


class _Collector(cp_model.CpSolverSolutionCallback):
    def __init__(self, variables):
        super().__init__()
        self._variables = variables
        self.rows: list[tuple[int, ...]] = []

    def on_solution_callback(self) -> None:
        self.rows.append(tuple(self.Value(v) for v in self._variables))


def feasible_indices(
    cands: Candidates,
    space: SearchSpace,
    global_batch: int,
    budget_gpus: int,
    fits: np.ndarray,
    within_limits: np.ndarray | None = None,
) -> tuple[np.ndarray, SolverStats]:
    """Indices (into `cands`) of every plan satisfying all constraints, found by CP-SAT enumeration."""
    m = cp_model.CpModel()
    gpus = m.NewIntVarFromDomain(cp_model.Domain.FromValues(list(space.gpus)), "gpus")
    numeric = {}
    for name in ("tp", "pp", "cp", "micro_batch"):
        values = [int(v) for v in np.unique(getattr(cands, name))] or [1]
        numeric[name] = m.NewIntVarFromDomain(cp_model.Domain.FromValues(values), name)
    dp = m.NewIntVar(1, budget_gpus, "dp")
    grad_accum = m.NewIntVar(1, global_batch, "grad_accum")
    tp_pp = m.NewIntVar(1, budget_gpus, "tp_pp")
    model_parallel = m.NewIntVar(1, budget_gpus, "tp_pp_cp")
    m.AddMultiplicationEquality(tp_pp, [numeric["tp"], numeric["pp"]])
    m.AddMultiplicationEquality(model_parallel, [tp_pp, numeric["cp"]])
    m.AddMultiplicationEquality(gpus, [model_parallel, dp])
    per_step = m.NewIntVar(1, global_batch, "micro_batch_dp")
    m.AddMultiplicationEquality(per_step, [numeric["micro_batch"], dp])
    m.AddMultiplicationEquality(global_batch, [per_step, grad_accum])

    # The categorical choices enter as one index over the groups of candidates (each group one combination
    # of engine, ZeRO stage, offload, checkpointing, precision, optimizer, loss, flash attention, compile).
    groups = list(cands.categories)
    groups += sorted({row[: len(CATEGORIES)] for row in cands.allowed} - set(groups), key=str)
    group = m.NewIntVar(0, max(len(groups) - 1, 0), "categorical_choice")
    flags = []
    for name in ("tp", "pp", "cp"):
        flag = m.NewBoolVar(f"{name}_gt_1")
        m.Add(numeric[name] >= 2).OnlyEnforceIf(flag)
        m.Add(numeric[name] <= 1).OnlyEnforceIf(flag.Not())
        flags.append(flag)
    position = {values: i for i, values in enumerate(groups)}
    supported = [(position[row[: len(CATEGORIES)]], *(int(f) for f in row[len(CATEGORIES) :])) for row in cands.allowed]
    m.AddAllowedAssignments([group, *flags], supported)
    key_vars = [group, numeric["tp"], numeric["pp"], numeric["cp"], numeric["micro_batch"], dp]

    def key(i: int) -> tuple[int, ...]:
        """The values of `key_vars` for candidate i."""
        c = cands
        return (int(c.group[i]), int(c.tp[i]), int(c.pp[i]), int(c.cp[i]), int(c.micro_batch[i]), int(c.dp[i]))

    def table(mask: np.ndarray) -> list[tuple[int, ...]]:
        return [key(i) for i in np.flatnonzero(mask)]

    # Memory (and limits): the key variables must equal one row of the table of fitting tuples.
    allowed = fits if within_limits is None else fits & within_limits
    m.AddAllowedAssignments(key_vars, table(allowed))
    m.AddDecisionStrategy(key_vars, cp_model.CHOOSE_FIRST, cp_model.SELECT_MIN_VALUE)

    solver = cp_model.CpSolver()
    solver.parameters.enumerate_all_solutions = True
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = SEED
    # Presolve, probing, in-processing and LP relaxations only slow enumeration down here (every solution is
    # wanted and there is no objective to bound); the search follows the key variables in order. None of
    # these settings changes which solutions exist.
    solver.parameters.cp_model_presolve = False
    solver.parameters.linearization_level = 0
    solver.parameters.search_branching = cp_model.FIXED_SEARCH
    solver.parameters.cp_model_probing_level = 0
    solver.parameters.use_sat_inprocessing = False
    collector = _Collector(key_vars)
    status = solver.Solve(m, collector)

    lookup = {key(i): i for i in np.flatnonzero(allowed)}
    found = np.array(sorted(lookup[row] for row in set(collector.rows)), dtype=np.int64)
    return found, SolverStats(len(collector.rows), solver.WallTime(), solver.StatusName(status))
