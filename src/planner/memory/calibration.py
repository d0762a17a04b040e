"""Traced constants (calibration/traced/<family>.yaml, written by `planner calibrate trace`) as the
memory model uses them, and the label that tells the user which constants were traced.

A trace runs transformers' own code for a model of the family on fake tensors and counts what one block
keeps per token, for the `hf` and `autocast` implementation families and for no and full checkpointing.
The memory model multiplies its walk of the saved tensors (planner.memory.activations) by traced/walk for
that implementation family and mode, so a difference the walk misses is carried into every plan of the
family (any TP degree, micro-batch or sequence length, since both scale alike). Modes and families that
were not traced (Megatron's TransformerEngine layers, selective recomputation, torch.compile) keep the
walk, labelled `textbook`. No file means no calibration.
"""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from planner.catalog._yaml import read_yaml_mapping
from planner.catalog.models import ModelSpec
from planner.catalog.paths import data_dirs
from planner.errors import CatalogError
from planner.memory.activations import implementation_family
from planner.plan import Plan

TRACED_FOLDER = "traced"
TEXTBOOK = "textbook: walk of the saved tensors (planner/memory/activations.py)"


@dataclass(frozen=True)
class ActivationCalibration:
    ratio: float
    """Traced / walk bytes per token per layer (1.0 when textbook)."""
    label: str
    """What the output says about where the activation constant comes from."""


@cache
def _family_record(family: str) -> tuple[dict, Path] | None:
    for folder in data_dirs("calibration"):
        path = folder / TRACED_FOLDER / f"{family}.yaml"
        if path.is_file():
            return read_yaml_mapping(path), path
    return None


def _ratio(record: dict, path: Path, implementation: str, mode: str) -> float | None:
    entry = (record.get("activations") or {}).get(implementation, {}).get(mode)
    if entry is None:
        return None
    ratio = entry.get("ratio")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.5 <= ratio <= 2.0:
        raise CatalogError(
            f"{path}: activations.{implementation}.{mode}.ratio must be a number between 0.5 and 2, got {ratio!r}",
            "re-run planner calibrate trace",
        )
    return float(ratio)


def activation_calibration(model: ModelSpec, plan: Plan) -> ActivationCalibration:
    """The traced correction of the per-layer activation walk for this model's family and plan."""
    implementation = implementation_family(plan)
    traceable = (
        implementation in ("hf", "autocast")
        and plan.checkpointing in ("none", "full")
        and not plan.compile
        and plan.method == "full"
    )
    found = _family_record(model.family) if traceable else None
    if found is None:
        return ActivationCalibration(1.0, TEXTBOOK)
    record, path = found
    ratio = _ratio(record, path, implementation, plan.checkpointing)
    if ratio is None:
        return ActivationCalibration(1.0, TEXTBOOK)
    traced = record.get("traced_with") or {}
    label = (
        f"traced: calibration/{TRACED_FOLDER}/{path.name} ({record.get('model')}, transformers "
        f"{traced.get('transformers', '?')}; {implementation}, checkpointing {plan.checkpointing}: "
        f"x{ratio:.5f} of the walk)"
    )
    return ActivationCalibration(ratio, label)


def clear_cache() -> None:
    """Forget the files read (tests that write calibration files call this)."""
    _family_record.cache_clear()
