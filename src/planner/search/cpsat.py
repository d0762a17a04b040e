"""The CP-SAT model of the plan search (OR-Tools).

Variables: the GPU count, tp, pp, cp, micro-batch, dp and grad_accum (integers over the search space's
values), one index over the combinations of the categorical dimensions (engine, ZeRO stage, offload,
checkpointing, precision, optimizer, loss, flash attention, compile) and three booleans tp>1, pp>1, cp>1.

Constraints:
* dp * tp * pp * cp = GPUs (used <= budget) and micro_batch * grad_accum * dp = global batch
  (multiplication equalities); tp divides the heads and stays inside a node, pp divides the layers (or, where
  no degree above one does, leaves two or more blocks per stage: candidates.searched_pipeline_degrees), cp
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

The model is written straight into CP-SAT's model proto through `ortools.sat.python.cp_model_helper` (the
same proto `cp_model.CpModel` builds, variable for variable): `ortools.sat.python.cp_model` imports pandas
for its DataFrame helpers, about half a second of every `planner solve` that uses none of them.
"""

from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model_helper as cmh

from planner.search.candidates import CATEGORIES, Candidates
from planner.search.space import SearchSpace

SEED = 20241128
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class SolverStats:
    solutions: int
    wall_s: float
    status: str


class _Model:
    """The few CP-SAT model-building calls the search needs, on the raw proto: integer variables over
    explicit values or a range, products, reified bounds, allowed-assignment tables, a fixed search order."""

    def __init__(self) -> None:
        self.proto = cmh.CpModelProto()

    def int_var(self, values: list[int], name: str) -> int:
        """A variable over exactly `values` (sorted, distinct); returns its index."""
        variable = self.proto.variables.add()
        variable.name = name
        domain = []
        for value in sorted(set(values)):  # as intervals [a, b] of consecutive values
            if domain and value == domain[-1] + 1:
                domain[-1] = value
            else:
                domain += [value, value]
        variable.domain.extend(domain)
        return len(self.proto.variables) - 1

    def range_var(self, low: int, high: int, name: str) -> int:
        variable = self.proto.variables.add()
        variable.name = name
        variable.domain.extend([low, high])
        return len(self.proto.variables) - 1

    @staticmethod
    def _expr(expression, variable: int) -> None:
        expression.vars.append(variable)
        expression.coeffs.append(1)

    def product(self, target: int | None, factors: list[int], constant: int = 0) -> None:
        """variable `target` (or `constant` when target is None) = product of the factor variables."""
        prod = self.proto.constraints.add().int_prod
        if target is None:
            prod.target.offset = constant
        else:
            self._expr(prod.target, target)
        for factor in factors:
            self._expr(prod.exprs.add(), factor)

    def bound_if(self, variable: int, low: int, high: int, literal: int) -> None:
        """low <= variable <= high whenever `literal` holds (a literal is a boolean's index, or -index-1
        for its negation)."""
        constraint = self.proto.constraints.add()
        constraint.enforcement_literal.append(literal)
        constraint.linear.vars.append(variable)
        constraint.linear.coeffs.append(1)
        constraint.linear.domain.extend([low, high])

    def allowed(self, variables: list[int], rows: np.ndarray) -> None:
        """The variables' values must equal one row of `rows` (shape: rows x len(variables))."""
        table = self.proto.constraints.add().table
        table.values.extend(np.asarray(rows, dtype=np.int64).reshape(-1).tolist())
        for variable in variables:
            self._expr(table.exprs.add(), variable)

    def search_order(self, variables: list[int]) -> None:
        """Branch on the variables in this order, smallest value first."""
        strategy = self.proto.search_strategy.add()
        for variable in variables:
            self._expr(strategy.exprs.add(), variable)


class _Collector(cmh.SolutionCallback):
    def __init__(self, variables: list[int]):
        super().__init__()
        self._variables = variables
        self.rows: list[tuple[int, ...]] = []

    def OnSolutionCallback(self) -> None:  # the name OR-Tools calls
        self.rows.append(tuple(self.SolutionIntegerValue(v) for v in self._variables))


def _parameters() -> "cmh.SatParameters":
    parameters = cmh.SatParameters()
    parameters.enumerate_all_solutions = True
    parameters.num_workers = 1
    parameters.random_seed = SEED
    # Presolve, probing, in-processing and LP relaxations only slow enumeration down here (every solution is
    # wanted and there is no objective to bound); the search follows the key variables in order. None of
    # these settings changes which solutions exist.
    parameters.cp_model_presolve = False
    parameters.linearization_level = 0
    parameters.search_branching = cmh.SatParameters.FIXED_SEARCH
    parameters.cp_model_probing_level = 0
    parameters.use_sat_inprocessing = False
    return parameters


def _keys(cands: Candidates) -> np.ndarray:
    """The values of the key variables (group, tp, pp, cp, micro_batch, dp) of every candidate, one row each."""
    return np.column_stack(
        [np.asarray(getattr(cands, name), dtype=np.int64) for name in ("group", "tp", "pp", "cp", "micro_batch", "dp")]
    ).reshape(-1, 6)


def feasible_indices(
    cands: Candidates,
    space: SearchSpace,
    global_batch: int,
    budget_gpus: int,
    fits: np.ndarray,
    within_limits: np.ndarray | None = None,
) -> tuple[np.ndarray, SolverStats]:
    """Indices (into `cands`) of every plan satisfying all constraints, found by CP-SAT enumeration."""
    m = _Model()
    gpus = m.int_var([int(v) for v in space.gpus], "gpus")
    numeric = {}
    for name in ("tp", "pp", "cp", "micro_batch"):
        values = [int(v) for v in np.unique(getattr(cands, name))] or [1]
        numeric[name] = m.int_var(values, name)
    dp = m.range_var(1, budget_gpus, "dp")
    grad_accum = m.range_var(1, global_batch, "grad_accum")
    tp_pp = m.range_var(1, budget_gpus, "tp_pp")
    model_parallel = m.range_var(1, budget_gpus, "tp_pp_cp")
    m.product(tp_pp, [numeric["tp"], numeric["pp"]])
    m.product(model_parallel, [tp_pp, numeric["cp"]])
    m.product(gpus, [model_parallel, dp])
    per_step = m.range_var(1, global_batch, "micro_batch_dp")
    m.product(per_step, [numeric["micro_batch"], dp])
    m.product(None, [per_step, grad_accum], constant=global_batch)

    # The categorical choices enter as one index over the groups of candidates (each group one combination
    # of engine, ZeRO stage, offload, checkpointing, precision, optimizer, loss, flash attention, compile).
    groups = list(cands.categories)
    groups += sorted({row[: len(CATEGORIES)] for row in cands.allowed} - set(groups), key=str)
    group = m.range_var(0, max(len(groups) - 1, 0), "categorical_choice")
    flags = []
    for name in ("tp", "pp", "cp"):
        flag = m.range_var(0, 1, f"{name}_gt_1")
        m.bound_if(numeric[name], 2, INT64_MAX, flag)
        m.bound_if(numeric[name], INT64_MIN, 1, -flag - 1)
        flags.append(flag)
    position = {values: i for i, values in enumerate(groups)}
    supported = [(position[row[: len(CATEGORIES)]], *(int(f) for f in row[len(CATEGORIES) :])) for row in cands.allowed]
    m.allowed([group, *flags], np.array(supported, dtype=np.int64).reshape(-1, 4))
    key_vars = [group, numeric["tp"], numeric["pp"], numeric["cp"], numeric["micro_batch"], dp]

    # Memory (and limits): the key variables must equal one row of the table of fitting tuples.
    allowed = fits if within_limits is None else fits & within_limits
    rows = np.flatnonzero(allowed)
    keys = _keys(cands)[rows]
    m.allowed(key_vars, keys)
    m.search_order(key_vars)

    solver = cmh.SolveWrapper()
    solver.set_parameters(_parameters())
    collector = _Collector(key_vars)
    solver.add_solution_callback(collector)
    response = solver.solve(m.proto)
    solver.clear_solution_callback(collector)

    lookup = dict(zip(map(tuple, keys.tolist()), rows.tolist(), strict=True))
    found = np.array(sorted(lookup[row] for row in set(collector.rows)), dtype=np.int64)
    return found, SolverStats(len(collector.rows), response.wall_time, response.status.name)
