"""The boundary: every file and value a user hands the tool is read and checked here, once.

Files (search spaces, model and GPU YAML, config.json, validation cases, measured CSVs, report.json) are
read as UTF-8 text of bounded size and parsed with the parsers' own limits (nesting depth, digits of an
integer) turned into one-line `CatalogError`s that name the file. Values are checked by type and range:
whole numbers are integers, quantities are finite, counts are positive and below a stated ceiling, names
are one line. Nothing here knows about models or plans; the catalogs and the CLI call these helpers.
"""

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from planner.errors import CatalogError, PlanError, PlannerError

MAX_INPUT_FILE_BYTES = 64 * 2**20
"""Largest input file read (64 MiB): the biggest real inputs (a validation CSV, a report.json of a
full search) are a few MiB; anything larger is not one of ours."""
MAX_NAME_CHARS = 1024
"""Longest model/GPU name or path accepted on the command line (Linux PATH_MAX is 4096 bytes)."""
MAX_NESTING = 64
"""Deepest nesting of mappings and lists accepted in a YAML or JSON input (ours need 4)."""

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it (ten times faster), else the pure-Python one."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Control characters, including those str.splitlines breaks at (NEL, the Unicode line and paragraph
separators): never quoted raw in a one-line message."""


def one_line(text: str, limit: int = 300) -> str:
    """`text` with line breaks and other control characters escaped, cut to `limit` characters: what an
    error message may quote of a user's input."""
    flat = _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def quoted(value: Any) -> str:
    """A user's value for an error message: repr, one line, bounded."""
    return one_line(repr(value), 120)


# -- files ------------------------------------------------------------------------------------------------


def read_text(path: Path, what: str = "file") -> str:
    """The UTF-8 text of `path`; a missing, unreadable, oversized or non-UTF-8 file is a CatalogError."""
    shown = one_line(str(path))
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_INPUT_FILE_BYTES + 1)
    except FileNotFoundError:
        raise CatalogError(f"cannot read {what} {shown}: it does not exist", "check the path") from None
    except IsADirectoryError:
        raise CatalogError(f"{what} {shown} is a folder, not a file", "pass the file inside it") from None
    except OSError as exc:
        raise CatalogError(f"cannot read {what} {shown}: {exc.strerror or exc}", "check the path") from None
    if len(data) > MAX_INPUT_FILE_BYTES:
        raise CatalogError(
            f"{what} {shown} is larger than {MAX_INPUT_FILE_BYTES // 2**20} MiB", "pass the file planner expects"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(
            f"{what} {shown} is not UTF-8 text (byte {exc.start})", "save it as UTF-8 or pass the right file"
        ) from None


def _check_tree(data: Any, where: str) -> None:
    """Mapping keys are strings and nesting is at most MAX_NESTING deep. Iterative, and each node once
    (YAML aliases share nodes), so neither a deep, a self-referencing nor an alias-bomb document can
    exhaust the stack or the clock."""
    stack = [(data, 0)]
    seen: set[int] = set()
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        if depth >= MAX_NESTING:
            raise CatalogError(f"{where} nests deeper than {MAX_NESTING} levels", "flatten it")
        if isinstance(node, dict):
            for key in node:
                if not isinstance(key, str):
                    raise CatalogError(
                        f"{where}: key {quoted(key)} is not a name", "write keys as names (e.g. `tp:`), not numbers"
                    )
            children = node.values()
        else:
            children = node
        stack.extend((child, depth + 1) for child in children)


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text (safe loader); syntax errors and parser limits become one-line CatalogErrors."""
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = one_line(getattr(exc, "problem", None) or "syntax error", 80)
        raise CatalogError(f"{where} is not valid YAML{at}: {problem}", "fix the file's syntax") from None
    except RecursionError:
        raise CatalogError(f"{where} nests too deeply to read", "flatten it") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise CatalogError(f"{where} holds a value that cannot be read ({one_line(exc, 80)})", "fix it") from None
    _check_tree(data, where)
    return data


def read_yaml_mapping(path: Path, what: str = "file") -> dict[str, Any]:
    """Load one YAML file that must hold a mapping (keys are names)."""
    shown = one_line(str(path))
    data = parse_yaml(read_text(path, what), shown)
    if not isinstance(data, dict):
        raise CatalogError(f"{shown} must hold a mapping of keys to values", "see the other files beside it")
    return data


def read_json_mapping(path: Path, what: str = "file", fix: str = "pass the right file") -> dict[str, Any]:
    """Load one JSON file that must hold an object; syntax errors and parser limits are CatalogErrors."""
    shown = one_line(str(path))
    text = read_text(path, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{shown} is not valid JSON (line {exc.lineno}: {exc.msg})", fix) from None
    except RecursionError:
        raise CatalogError(f"{shown} nests too deeply to read", fix) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise CatalogError(f"{shown} holds a value that cannot be read ({one_line(exc, 80)})", fix) from None
    if not isinstance(data, dict):
        raise CatalogError(f"{shown} must hold a JSON object", fix)
    _check_tree(data, shown)
    return data


# -- values -----------------------------------------------------------------------------------------------


def whole_number(value: Any, name: str, low: int = 1, high: int = 2**31, error: type[PlannerError] = PlanError) -> int:
    """`value` as an int in [low, high]: an int, or a float with no fraction; never a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{name} must be a whole number, got {quoted(value)}", "pass an integer")
    if isinstance(value, float) and not value.is_integer():
        raise error(f"{name} must be a whole number, got {quoted(value)}", "pass an integer")
    if not low <= value <= high:
        raise error(f"{name} must be between {low:,} and {high:,}, got {quoted(value)}", "pass a value in that range")
    return int(value)


def quantity(
    value: Any,
    name: str,
    low: float = 0.0,
    high: float = 1e15,
    low_open: bool = True,
    error: type[PlannerError] = PlanError,
) -> float:
    """`value` as a finite float in (low, high] (or [low, high] with low_open=False); never a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{name} must be a number, got {quoted(value)}", "pass a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    above = number > low if low_open else number >= low
    if not (math.isfinite(number) and above and number <= high):
        bracket = "(" if low_open else "["
        raise error(f"{name} must be a finite number in {bracket}{low:g}, {high:g}], got {quoted(value)}", "fix it")
    return number


def text(value: Any, name: str, error: type[PlannerError] = PlanError, limit: int = MAX_NAME_CHARS) -> str:
    """A one-line, non-empty name of at most `limit` characters."""
    if not isinstance(value, str):
        raise error(f"{name} must be a name, got {quoted(value)}", "write it as text")
    if not value.strip() or _CONTROL.search(value) or len(value) > limit:
        raise error(
            f"{name} must be one line of 1 to {limit} characters, got {quoted(value)}", "pass a catalog name or a path"
        )
    return value


def optional(check, value: Any, *args, **kwargs) -> Any:
    """`check(value, ...)` unless value is None."""
    return None if value is None else check(value, *args, **kwargs)


# -- run-wide figures shared by estimate, solve and launch --------------------------------------------------

MAX_TRAINING_TOKENS = 1e16
"""Largest --tokens accepted: about 700 times the 15T tokens of the largest public pre-training runs."""
MAX_USD = 1e12
"""Largest dollar figure accepted (a price per GPU-hour or a --max-cost)."""
MAX_HOURS = 1e7
"""Largest --max-hours accepted (over a thousand years)."""
MAX_GLOBAL_BATCH = 10**10
"""Largest global batch, in sequences (make_plan's ceiling)."""


def run_figures(safety_margin: Any, tokens: Any, price_per_gpu_hour: Any) -> None:
    """The safety margin is a fraction in [0, 0.5]; tokens and price, when given, finite and positive."""
    quantity(safety_margin, "--safety-margin", 0.0, 0.5, low_open=False)
    optional(quantity, tokens, "--tokens", 0.0, MAX_TRAINING_TOKENS)
    optional(quantity, price_per_gpu_hour, "--price-per-gpu-hour", 0.0, MAX_USD)
