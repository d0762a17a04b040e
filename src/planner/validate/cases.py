"""Reading validation case files: a mapping of case id -> case whose keys are `planner estimate` flag
names without dashes, plus `measured`, `source` and `notes`. Model paths are read relative to the file.

Besides `cases:`, a file may hold `pending:` cases, written with plan keys that `PlanRequest` does not have
yet (e.g. a pipeline schedule another branch is adding). A pending case is read as soon as every one of its
keys is a `PlanRequest` field, so landing the field enables it without editing the data. Likewise a case's
`later:` mapping holds keys that refine it (e.g. the gradient-reduce dtype) and is applied key by key once
`PlanRequest` knows them. A pending case's `waits_for:` lists conditions other than fields (e.g. an uneven
pipeline split no plan can state yet); it stays pending until that line is removed. `pending_fields` says
what each pending case still waits for.
"""

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from planner.catalog._yaml import read_yaml_mapping
from planner.errors import CatalogError, PlannerError
from planner.inputs import one_line
from planner.plan import PlanRequest, resolve

M = TypeVar("M")
_META_KEYS = {"source", "notes", "measured", "later", "waits_for"}


@dataclass(frozen=True)
class Case(Generic[M]):
    id: str
    request: PlanRequest
    measured: M
    source: str = ""
    notes: str = ""
    file: str = ""
    """The cases file the case was read from (named in errors)."""

    def resolve(self):
        """(model, gpu, plan) of the case; errors name the file and the case."""
        try:
            return resolve(self.request)
        except PlannerError as exc:
            where = f"{self.file}: case {self.id}" if self.file else f"case {self.id}"
            raise type(exc)(f"{where}: {exc.problem}", exc.fix) from None

    @property
    def source_id(self) -> str:
        """The data source a case comes from: its id up to the last '-<row>' (e.g. flagperf-402)."""
        head, _, tail = self.id.rpartition("-")
        return head if head and tail.isdigit() else self.id


def _plan_fields() -> set[str]:
    return {f.name for f in fields(PlanRequest)}


def _section(data: dict, name: str, path: Path) -> dict:
    section = data.get(name) or {}
    if not isinstance(section, dict):
        raise CatalogError(f"{path}: `{name}:` must be a mapping of id -> case", "fix it")
    return section


def pending_fields(path: Path) -> dict[str, list[str]]:
    """Per pending case of a cases file: the plan keys `PlanRequest` does not know yet, then its `waits_for`
    conditions (empty: it is scored)."""
    known = _plan_fields()
    out = {}
    for case_id, raw in _section(read_yaml_mapping(path), "pending", path).items():
        keys = set(raw) - _META_KEYS if isinstance(raw, dict) else set()
        waits = raw.get("waits_for") or [] if isinstance(raw, dict) else []
        if not isinstance(waits, list):
            raise CatalogError(f"{path}: pending case {case_id}: `waits_for:` must be a list of conditions", "fix it")
        out[str(case_id)] = sorted(keys - known) + [str(w) for w in waits]
    return out


def load_cases(path: Path, parse_measured: Callable[[Any, str, Path], M]) -> list[Case[M]]:
    """Read a cases file, turning each entry into a PlanRequest and a parsed measurement: every `cases:`
    entry, and every `pending:` entry whose keys are all plan fields by now."""
    data = read_yaml_mapping(path)
    cases = data.get("cases")
    if not isinstance(cases, dict) or not cases:
        raise CatalogError(f"{path}: expected a non-empty `cases:` mapping of id -> case", "see the docs")
    known = _plan_fields()
    waiting = pending_fields(path)
    ready = {cid: raw for cid, raw in _section(data, "pending", path).items() if not waiting[str(cid)]}
    out = []
    for case_id, raw in {**cases, **ready}.items():
        if not isinstance(raw, dict):
            raise CatalogError(f"{path}: case {case_id} must be a mapping", "fix it")
        plan_keys = {k: v for k, v in raw.items() if k not in _META_KEYS}
        later = raw.get("later") or {}
        if not isinstance(later, dict):
            raise CatalogError(f"{path}: case {case_id}: `later:` must be a mapping of plan keys", "fix it")
        plan_keys.update({k: v for k, v in later.items() if k in known})
        model = plan_keys.get("model")
        if isinstance(model, str) and model.endswith((".yaml", ".yml", ".json")):
            plan_keys["model"] = str((path.parent / model).resolve())
        try:
            request = PlanRequest.from_mapping(plan_keys)
        except PlannerError as exc:
            raise CatalogError(f"{path}: case {case_id}: {exc.message}") from None
        measured = parse_measured(raw.get("measured"), str(case_id), path)
        source, notes = str(raw.get("source", "")), str(raw.get("notes", ""))
        out.append(Case(str(case_id), request, measured, source, notes, one_line(str(path))))
    return out
