"""Leave-one-source-out (LOSO) scoring of the fitted constants (issue 10): how well do the models predict a
source whose rows took no part in the fit?

Throughput. The pool is every scored case of tests/data/throughput_cases.yaml (from ../shared/data),
tests/data/external/throughput_cases.yaml (public rows kept outside it) and
tests/data/moe/throughput_cases.yaml (Mixture-of-Experts runs; their Blackwell rows belong to no fitted family
and keep the stored constants). The only fitted throughput numbers are each GPU family's three
compute-efficiency constants (scripts/fit_throughput.py: same families, grids and objective, median + mean
|error|). For each source S: refit the families S has rows in on the pool without S, then predict S
("left-out"); "in-sample" predicts S with the fit on the whole pool; "stored" uses the constants in
hardware/*.yaml. The search is fit_throughput.py's own: its whole grid (61 x 11 x 10 points per family), so the
left-out fit depends on nothing the source took part in. `--coordinate` runs the earlier cyclic coordinate
search instead (each constant in turn over its grid, the others fixed, until none changes), which starts from the
stored constants and can stop in a local optimum next to them: those were fitted on tests/data/throughput_cases.yaml,
most of whose sources it scores, so its left-out column leaned towards in-sample (on the pool of 2026-12-03 it
kept the stored A100 constants where the full grid moves them, and scored DGX Cloud 18.6% left out against 13.1%).
Both take seconds: each case's tokens/s is evaluated once over the whole grid
(planner.performance.tokens_per_s_per_gpu_over_efficiencies: one broadcast run of the model, the terms that do
not depend on the constants computed once), and the searches look the objective up in that table
(ObjectiveTable, FIT_THROUGHPUT.fit_family; the same numbers, bit for bit, as running the model per grid point).

Memory. The same with scripts/fit_memory_overheads.py's two runtime constants (allocator fragmentation,
NCCL GiB per communicator; exhaustive grid, fewest unsafe cases first) over tests/data/memory_cases.yaml and
tests/data/moe/memory_cases.yaml, a source being the repository or site a case cites.

LoRA (issue 12). The memory constants are global, so the pool is the memory cases above plus the LoRA/QLoRA cases of
tests/data/lora_memory_cases.yaml; each LoRA source is left out of the fit in turn and predicted, and only the
LoRA rows are scored (a source cited by both files is left out whole; its dense rows are the `memory` table).

    python scripts/loso.py [throughput|memory|lora|both] [--coordinate] [--markdown]

Per source it prints: rows, median |error| with the stored, in-sample and left-out constants, and the
Spearman rank correlation of the left-out predictions within the source (>= 5 rows). Each table takes seconds
(throughput about 15 s on the shared 2-core machine, 7 s of CPU; memory 15 s, LoRA 11 s).
"""

import importlib.util
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from planner.catalog.hardware import ComputeEfficiency
from planner.memory.runtime import DEFAULT_OVERHEADS, RuntimeOverheads
from planner.performance import estimate_performance
from planner.validate.memory import load_memory_cases
from planner.validate.throughput import MIN_CASES_FOR_RANKING, load_throughput_cases, spearman

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT_CASES = [
    ROOT / "tests" / "data" / "throughput_cases.yaml",
    ROOT / "tests" / "data" / "external" / "throughput_cases.yaml",
    ROOT / "tests" / "data" / "moe" / "throughput_cases.yaml",
]
MEMORY_CASES = [ROOT / "tests" / "data" / "memory_cases.yaml", ROOT / "tests" / "data" / "moe" / "memory_cases.yaml"]
LORA_MEMORY_CASES = [ROOT / "tests" / "data" / "lora_memory_cases.yaml"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIT_THROUGHPUT = _script("fit_throughput")
FIT_MEMORY = _script("fit_memory_overheads")
FAMILY_OF = {gpu: family for family, gpus in FIT_THROUGHPUT.FAMILIES.items() for gpu in gpus}
GRIDS = (
    ("max", FIT_THROUGHPUT.MAX_GRID),
    ("half_tokens", FIT_THROUGHPUT.HALF_TOKENS_GRID),
    ("half_width", FIT_THROUGHPUT.HALF_WIDTH_GRID),
)


@dataclass(frozen=True)
class SourceScore:
    source: str
    rows: int
    stored_pct: float
    in_sample_pct: float
    left_out_pct: float
    spearman: float | None
    """Of the left-out predictions within the source; None below MIN_CASES_FOR_RANKING rows."""


# ---------------------------------------------------------------- throughput


@dataclass(frozen=True)
class Item:
    """A resolved throughput case: (case, model, gpu, plan) as fit_throughput.py uses them, plus its family."""

    case: object
    model: object
    gpu: object
    plan: object

    @property
    def family(self) -> str | None:
        return FAMILY_OF.get(self.gpu.name)

    @property
    def source(self) -> str:
        return self.case.source_id

    def as_fit_case(self) -> tuple:
        return self.case, self.model, self.gpu, self.plan

    @cached_property
    def grid_predictions(self) -> np.ndarray:
        """tokens/s per GPU at every point of fit_throughput.py's grid, computed once and shared by every fit
        the item takes part in (FIT_THROUGHPUT.grid_predictions)."""
        return FIT_THROUGHPUT.grid_predictions([self.as_fit_case()])[0]


def throughput_items(paths: list[Path] = THROUGHPUT_CASES) -> list[Item]:
    return [Item(case, *case.resolve()) for path in paths for case in load_throughput_cases(path)]


def stored_constants(items: list[Item]) -> dict[str, ComputeEfficiency]:
    return {item.family: item.gpu.compute_efficiency for item in items if item.family}


def _objective(items: list[Item], params: ComputeEfficiency) -> float:
    return FIT_THROUGHPUT.objective([i.as_fit_case() for i in items], params)


class ObjectiveTable:
    """fit_throughput.py's objective of `items` at every point of the grids, each axis extended by `start`'s
    own value (so every point a coordinate search from `start` visits is in it): the predictions come from
    one broadcast evaluation per item (FIT_THROUGHPUT.grid_predictions), the objective from the same error
    and summary functions as FIT_THROUGHPUT.objective, so `objective(params)` equals
    `_objective(items, params)` exactly, in a fraction of the time."""

    def __init__(self, items: list[Item], start: ComputeEfficiency) -> None:
        self.cases = [i.as_fit_case() for i in items]
        axes = tuple(
            [*grid, getattr(start, field)] if getattr(start, field) not in grid else list(grid) for field, grid in GRIDS
        )
        self.index = tuple({value: k for k, value in enumerate(axis)} for axis in axes)
        self.predicted = FIT_THROUGHPUT.grid_predictions(self.cases, axes)

    def objective(self, params: ComputeEfficiency) -> float:
        at = tuple(index[getattr(params, field)] for index, (field, _) in zip(self.index, GRIDS, strict=True))
        errors = FIT_THROUGHPUT.percent_errors(self.cases, self.predicted[(slice(None), *at)]).tolist()
        median, mean = FIT_THROUGHPUT.summary(errors)
        return round(median + mean, 6)


def coordinate_fit(items: list[Item], start: ComputeEfficiency) -> ComputeEfficiency:
    """Cyclic coordinate search on fit_throughput.py's grids and objective: each constant in turn takes its
    best grid value with the others fixed, until a full cycle changes nothing (ties: smaller values)."""
    table = ObjectiveTable(items, start)

    def key(params: ComputeEfficiency) -> tuple:
        return table.objective(params), params.max, params.half_tokens, params.half_width

    best, best_key = start, key(start)
    changed = True
    while changed:
        changed = False
        for field, grid in GRIDS:
            for value in grid:
                candidate = replace(best, **{field: value})
                candidate_key = key(candidate)
                if candidate_key < best_key:
                    best, best_key, changed = candidate, candidate_key, True
    return best


def exhaustive_fit(items: list[Item], start: ComputeEfficiency) -> ComputeEfficiency:
    predicted = np.stack([i.grid_predictions for i in items])
    params, _ = FIT_THROUGHPUT.fit_family([i.as_fit_case() for i in items], predicted)
    return replace(start, max=params.max, half_tokens=params.half_tokens, half_width=params.half_width)


def fit_families(items: list[Item], start: dict[str, ComputeEfficiency], families: set[str], search=exhaustive_fit):
    """Constants per family: refit `families` on `items`, keep `start` for the others."""
    out = dict(start)
    for family in sorted(families):
        members = [i for i in items if i.family == family]
        if members:
            out[family] = search(members, start[family])
    return out


def predict(item: Item, constants: dict[str, ComputeEfficiency]) -> float:
    gpu = replace(item.gpu, compute_efficiency=constants[item.family]) if item.family else item.gpu
    return estimate_performance(item.model, gpu, item.plan).tokens_per_s_per_gpu


def _abs_errors(items: list[Item], constants: dict) -> list[float]:
    return [abs(predict(i, constants) / i.case.measured.tokens_per_s_per_gpu - 1) * 100 for i in items]


def loso_throughput(items: list[Item], search=exhaustive_fit, log=lambda _: None) -> list[SourceScore]:
    stored = stored_constants(items)
    families = {i.family for i in items if i.family}
    in_sample = fit_families(items, stored, families, search)
    log(f"in-sample fit: {_describe(in_sample)}")
    by_source: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_source[item.source].append(item)
    scores = []
    for source, members in sorted(by_source.items()):
        rest = [i for i in items if i.source != source]
        left_out = fit_families(rest, stored, {i.family for i in members if i.family}, search)
        predicted = [predict(i, left_out) for i in members]
        measured = [i.case.measured.tokens_per_s_per_gpu for i in members]
        scores.append(
            SourceScore(
                source,
                len(members),
                statistics.median(_abs_errors(members, stored)),
                statistics.median(_abs_errors(members, in_sample)),
                statistics.median(abs(p / m - 1) * 100 for p, m in zip(predicted, measured, strict=True)),
                spearman(predicted, measured) if len(members) >= MIN_CASES_FOR_RANKING else None,
            )
        )
        log(f"{source}: left-out fit {_describe({f: left_out[f] for f in {i.family for i in members if i.family}})}")
    return scores


def _describe(constants: dict[str, ComputeEfficiency]) -> str:
    return ", ".join(
        f"{f} max={c.max} half_tokens={c.half_tokens} half_width={c.half_width}" for f, c in sorted(constants.items())
    )


# ---------------------------------------------------------------- memory


def memory_source(case) -> str:
    """The repository or site a memory case cites (its `source` up to the first space; `github:owner/repo` is
    written `github.com/owner/repo`, so a repository cited both ways is one source)."""
    head = case.source.split(" ")[0] or case.id
    return "github.com/" + head.removeprefix("github:") if head.startswith("github:") else head


def memory_items(paths: list[Path] = MEMORY_CASES) -> list:
    """Every case, resolved as fit_memory_overheads.py resolves them (`resolve_case`)."""
    return [FIT_MEMORY.resolve_case(case) for path in paths for case in load_memory_cases(path)]


def memory_prediction(item, overheads: RuntimeOverheads) -> tuple[float, bool]:
    """(prediction comparable with the case's metric, predicted to fit) under `overheads`."""
    return FIT_MEMORY.prediction(item, overheads)


def _memory_errors(items: list, overheads: RuntimeOverheads) -> list[float]:
    out = []
    for item in items:
        measured = item[0].measured
        if measured.outcome != "oom":
            out.append(abs(memory_prediction(item, overheads)[0] / measured.peak_gib - 1) * 100)
    return out


def loso_memory(items: list, log=lambda _: None, scored: set[str] | None = None) -> list[SourceScore]:
    """Per source: median |error| with the stored constants, those fitted on every item, and those fitted
    without the source (all of its items). `scored`: the case ids to score (all by default); sources with
    none of them are skipped."""
    in_sample, _ = FIT_MEMORY.fit_resolved(items)
    log(f"in-sample fit: fragmentation {in_sample.allocator_fragmentation}, NCCL {in_sample.nccl_gib_per_group} GiB")
    by_source: dict[str, list] = defaultdict(list)
    for item in items:
        by_source[memory_source(item[0])].append(item)
    scores = []
    for source, everything in sorted(by_source.items()):
        members = [i for i in everything if scored is None or i[0].id in scored]
        if not members:
            continue
        left_out, _ = FIT_MEMORY.fit_resolved([i for i in items if memory_source(i[0]) != source])
        log(
            f"{source}: left-out fit fragmentation {left_out.allocator_fragmentation}, "
            f"NCCL {left_out.nccl_gib_per_group}"
        )
        fitting = [i for i in members if i[0].measured.outcome != "oom"]
        if not fitting:
            continue
        predicted = [memory_prediction(i, left_out)[0] for i in fitting]
        measured = [i[0].measured.peak_gib for i in fitting]
        scores.append(
            SourceScore(
                source,
                len(members),
                statistics.median(_memory_errors(members, DEFAULT_OVERHEADS)),
                statistics.median(_memory_errors(members, in_sample)),
                statistics.median(_memory_errors(members, left_out)),
                spearman(predicted, measured) if len(fitting) >= MIN_CASES_FOR_RANKING else None,
            )
        )
    return scores


# ---------------------------------------------------------------- output


def render(title: str, scores: list[SourceScore], markdown: bool) -> str:
    def fmt(score: SourceScore) -> list[str]:
        rho = "" if score.spearman is None else f"{score.spearman:.2f}"
        return [
            score.source,
            str(score.rows),
            f"{score.stored_pct:.1f}%",
            f"{score.in_sample_pct:.1f}%",
            f"{score.left_out_pct:.1f}%",
            rho,
        ]

    head = ["source", "rows", "stored", "in-sample", "left-out", "Spearman (left-out)"]
    lines = [title]
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|"]
        lines += ["| " + " | ".join(fmt(s)) + " |" for s in scores]
    else:
        width = max(len(s.source) for s in [SourceScore(head[0], 0, 0, 0, 0, None), *scores])
        lines += [f"{head[0]:{width}s} {head[1]:>5s} {head[2]:>8s} {head[3]:>10s} {head[4]:>9s} {head[5]:>20s}"]
        lines += [f"{r[0]:{width}s} {r[1]:>5s} {r[2]:>8s} {r[3]:>10s} {r[4]:>9s} {r[5]:>20s}" for r in map(fmt, scores)]
    return "\n".join(lines)


def main() -> None:
    args = sys.argv[1:]
    which = next((a for a in args if not a.startswith("--")), "both")
    markdown = "--markdown" in args

    def log(message: str) -> None:
        print(f"  {message}", file=sys.stderr)

    if which in ("throughput", "both"):
        search = coordinate_fit if "--coordinate" in args else exhaustive_fit  # --exhaustive: the default
        scores = loso_throughput(throughput_items(), search, log)
        print(render("Throughput: median |error| of tokens/s per GPU", scores, markdown))
    if which in ("memory", "both"):
        print(
            render(
                "Memory: median |error| of peak GiB (metric as measured)", loso_memory(memory_items(), log), markdown
            )
        )
    if which in ("lora", "both"):
        lora = memory_items(LORA_MEMORY_CASES)
        scores = loso_memory(memory_items() + lora, log, scored={i[0].id for i in lora})
        print(render("LoRA/QLoRA memory: median |error| of peak GiB (metric as measured)", scores, markdown))


if __name__ == "__main__":
    main()
