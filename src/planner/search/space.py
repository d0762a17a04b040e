"""The search space (YAML in search_spaces/) and the GPU budget, turned into value lists per dimension."""

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from planner.catalog import GpuSpec, load_gpu
from planner.catalog._yaml import read_yaml_mapping
from planner.catalog.paths import data_dirs
from planner.errors import CatalogError, PlanError
from planner.inputs import one_line, quoted, whole_number
from planner.plan import (
    CHECKPOINTING,
    ENGINES,
    FLASH_ATTENTION_VERSIONS,
    FP8_RECIPES,
    LOSSES,
    METHODS,
    OFFLOADS,
    OPTIMIZERS,
    PP_SCHEDULES,
    PRECISIONS,
)

NUMERIC_DIMENSIONS = ("tp", "pp", "cp", "micro_batch")
CHOICE_DIMENSIONS = {
    "zero": (0, 1, 2, 3),
    "checkpointing": CHECKPOINTING,
    "precision": PRECISIONS,
    "offload": OFFLOADS,
    "engine": ENGINES,
    "optimizer": OPTIMIZERS,
    "loss": LOSSES,
    "flash_attention": (True, False),
    "compile": (True, False),
    "flash_attention_version": FLASH_ATTENTION_VERSIONS,
    "pp_schedule": PP_SCHEDULES,
    "virtual_stages": None,
    "method": METHODS,
    "fp8_recipe": FP8_RECIPES,
    "ep": None,
    "tp_comm_overlap": (False, True),
}
"""Dimensions whose values are chosen per group of plans; None: any whole number (NUMERIC_LIMITS)."""
OPTIONAL_DIMENSIONS = {
    "flash_attention_version": [2],
    "pp_schedule": ["1f1b"],
    "virtual_stages": [1],
    "method": ["full"],
    "fp8_recipe": ["tensorwise"],
    "ep": [1],
    "tp_comm_overlap": [False],
}
"""Dimensions a search space file may leave out, and the values they then take."""
GPU_POLICIES = ("powers_of_two", "whole_nodes")
MAX_NUMERIC_COMBINATIONS = 1_000_000
"""Largest product of the numeric dimensions' value counts (GPU counts x tp x pp x cp x micro-batch), the
grid the search builds whole (full.yaml on a 2048-GPU budget: 6,144)."""
MAX_CHOICE_COMBINATIONS = 10_000
"""Largest product of the categorical dimensions' value counts (full.yaml: 6,912). Each combination is
checked against the engines' rules and evaluated as one group: about 1.4 ms and 15 kB each, so every
dimension open (77,760) took 108 s and 1.2 GB for a single GPU count."""


@dataclass(frozen=True)
class Budget:
    """How many GPUs of which kind the user can get. The search may use fewer."""

    gpus: int
    gpu: GpuSpec
    gpus_per_node: int
    text: str

    @property
    def nodes(self) -> int:
        return -(-self.gpus // self.gpus_per_node)


_BUDGET = re.compile(r"^\s*(?:([0-9]{1,9})\s*[xX*]\s*)?([0-9]{1,9})\s*[xX*]\s*([A-Za-z0-9][A-Za-z0-9._-]{0,199})\s*$")


def parse_budget(text: str) -> Budget:
    """`16xA100` (16 GPUs), `2x8xH100` (2 nodes of 8), `64xH100-80GB`."""
    match = _BUDGET.match(text) if isinstance(text, str) else None
    if not match:
        raise PlanError(f"cannot read budget {quoted(text)}", "write GPUsxGPU (16xA100) or NODESxGPUSxGPU (2x8xH100)")
    nodes, count, name = match.groups()
    gpu = load_gpu(name)
    count = int(count)
    if count < 1 or (nodes is not None and int(nodes) < 1):
        raise PlanError(f"budget {quoted(text)} has no GPUs", "use a positive count, e.g. 16xA100")
    if nodes is not None:
        per_node, total = count, int(nodes) * count
    else:
        per_node, total = min(count, gpu.node.gpus_per_node), count
    if total > 1_000_000:
        raise PlanError(f"budget {quoted(text)} is beyond what this tool models", "use at most 1,000,000 GPUs")
    return Budget(gpus=total, gpu=gpu, gpus_per_node=per_node, text=text.strip())


@dataclass(frozen=True)
class SearchSpace:
    """Values each dimension may take. Every field is a tuple of allowed values."""

    gpus: tuple[int, ...]
    """GPU counts (at most the budget)."""
    tp: tuple[int, ...]
    pp: tuple[int, ...]
    cp: tuple[int, ...]
    micro_batch: tuple[int, ...]
    zero: tuple[int, ...]
    checkpointing: tuple[str, ...]
    precision: tuple[str, ...]
    offload: tuple[str, ...]
    engine: tuple[str, ...]
    optimizer: tuple[str, ...]
    loss: tuple[str, ...]
    flash_attention: tuple[bool, ...]
    compile: tuple[bool, ...]
    flash_attention_version: tuple[int, ...] = (2,)
    """Which FlashAttention generation the user's stack runs (a property of the software, usually pinned)."""
    pp_schedule: tuple[str, ...] = ("1f1b",)
    virtual_stages: tuple[int, ...] = (1,)
    """Model chunks per pipeline rank tried with the interleaved schedule (1 goes with 1f1b)."""
    method: tuple[str, ...] = ("full",)
    """Fine-tuning methods (full, lora, qlora, freeze); the default space keeps full fine-tuning only."""
    fp8_recipe: tuple[str, ...] = ("tensorwise",)
    """fp8 scaling recipes tried for fp8 plans (a property of the user's stack, usually pinned)."""
    ep: tuple[int, ...] = (1,)
    """Expert-parallel degrees (MoE models; the search keeps the divisors of the expert count, and 1 for a
    dense model)."""
    tp_comm_overlap: tuple[bool, ...] = (False,)
    """Megatron's TP communication overlap (userbuffers), tried on Megatron plans with tp > 1."""
    source: str = ""

    def pinned(self, **pins: Any) -> "SearchSpace":
        """A copy with the given dimensions fixed to one value, or narrowed to the values of a tuple
        (None leaves a dimension open). Values outside the space's own list are allowed: a pin is
        what the user asked for."""
        changes = {k: tuple(v) if isinstance(v, tuple) else (v,) for k, v in pins.items() if v is not None}
        return replace(self, **changes)

    def size(self) -> int:
        n = 1
        for name in ("gpus", *NUMERIC_DIMENSIONS, *CHOICE_DIMENSIONS):
            n *= len(getattr(self, name))
        return n

    def widest_pins(self, dimensions: tuple[str, ...] | None = None) -> str:
        """The three dimensions with the most values, as the flags (or space-file edit) that pin them."""
        names = dimensions or ("gpus", *NUMERIC_DIMENSIONS, *CHOICE_DIMENSIONS)
        widest = sorted(((len(getattr(self, n)), n) for n in names), key=lambda item: -item[0])
        return ", ".join(
            (f"gpus: [..] in {self.source}" if name == "gpus" else f"--{name.replace('_', '-')}") + f" ({n} values)"
            for n, name in widest[:3]
            if n > 1
        )

    def check_size(self) -> None:
        """Refuse, before any work, a space larger than the search takes (MAX_NUMERIC_COMBINATIONS of the
        numeric dimensions, whose grid is built whole, MAX_CHOICE_COMBINATIONS of the categorical ones, whose
        every combination is checked and evaluated as its own group); the error names the size and the pins
        that shrink it most. planner.search.candidates bounds the structurally valid plans as well."""
        self._refuse_over(
            ("gpus", *NUMERIC_DIMENSIONS), MAX_NUMERIC_COMBINATIONS, "GPU counts and degrees", "dimensions"
        )
        self._refuse_over(tuple(CHOICE_DIMENSIONS), MAX_CHOICE_COMBINATIONS, "its categorical choices", "choices")

    def _refuse_over(self, names: tuple[str, ...], limit: int, what: str, pins: str) -> None:
        """PlanError when the product of the named dimensions' sizes exceeds `limit`."""
        size = 1
        for name in names:
            size *= len(getattr(self, name))
        if size > limit:
            raise PlanError(
                f"the search space has {size:,} combinations of {what}, more than the {limit:,} one search takes",
                f"pin or narrow its widest {pins}: {self.widest_pins(names)}",
            )


def gpu_counts(policy: Any, budget: Budget) -> tuple[int, ...]:
    """GPU counts the search tries, from the space's `gpus` entry and the budget."""
    if isinstance(policy, list):
        counts = {c for c in policy if isinstance(c, int) and not isinstance(c, bool) and 0 < c <= budget.gpus}
    elif policy == "powers_of_two":
        counts = {2**k for k in range(0, 21) if 2**k <= budget.gpus} | {budget.gpus}
    elif policy == "whole_nodes":
        per_node = budget.gpus_per_node
        counts = {2**k for k in range(0, 21) if 2**k <= min(per_node, budget.gpus)}
        counts |= set(range(per_node, budget.gpus + 1, per_node)) | {budget.gpus}
    else:
        raise CatalogError(
            f"search space: gpus must be {' or '.join(GPU_POLICIES)} or a list, got {quoted(policy)}",
            "fix the search space file",
        )
    if not counts:
        raise CatalogError("search space: no GPU count fits the budget", "list counts up to the budget")
    return tuple(sorted(counts))


NUMERIC_LIMITS = {"tp": 4096, "pp": 4096, "cp": 4096, "micro_batch": 10_000_000, "virtual_stages": 4096, "ep": 4096}
"""Largest value of each numeric dimension (the bounds make_plan applies to one plan)."""


def _values(data: dict, key: str, path: Path, allowed: tuple | None) -> tuple:
    raw = data.get(key)
    if raw is None:
        raise CatalogError(f"{path}: missing '{key}'", "list its allowed values (see search_spaces/default.yaml)")
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise CatalogError(f"{path}: '{key}' lists no values", "give at least one")
    for value in values:
        if allowed is not None and (type(value) is not type(allowed[0]) or value not in allowed):
            raise CatalogError(f"{path}: '{key}' has {quoted(value)}", f"allowed: {', '.join(map(str, allowed))}")
        if allowed is None:
            whole_number(value, f"{path}: '{key}' values", 1, NUMERIC_LIMITS[key], CatalogError)
            if not isinstance(value, int):
                raise CatalogError(f"{path}: '{key}' values must be integers, got {quoted(value)}", "fix it")
    return tuple(sorted(set(values), key=str)) if allowed is not None else tuple(sorted(set(values)))


def default_space_path() -> Path:
    for folder in data_dirs("search_spaces"):
        path = folder / "default.yaml"
        if path.is_file():
            return path
    raise CatalogError("no search_spaces/default.yaml found", "reinstall planner or pass --space FILE")


def load_space(path: Path | None, budget: Budget) -> SearchSpace:
    """Read a search space YAML (default: search_spaces/default.yaml) for `budget`."""
    source = one_line(str(path)) if path is not None else "search_spaces/default.yaml"
    path = path or default_space_path()
    data = {**OPTIONAL_DIMENSIONS, **read_yaml_mapping(Path(path))}
    unknown = set(data) - {"gpus", *NUMERIC_DIMENSIONS, *CHOICE_DIMENSIONS}
    if unknown:
        keys = one_line(", ".join(sorted(unknown)), 120)
        raise CatalogError(f"{one_line(str(path))}: unknown key(s) {keys}", "see search_spaces/default.yaml")
    return SearchSpace(
        gpus=gpu_counts(data.get("gpus", "powers_of_two"), budget),
        **{k: _values(data, k, path, None) for k in NUMERIC_DIMENSIONS},
        **{k: _values(data, k, path, allowed) for k, allowed in CHOICE_DIMENSIONS.items()},
        source=source,
    )
