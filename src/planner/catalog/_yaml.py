"""Reading catalog YAML with errors that name the file and the fix."""

from pathlib import Path
from typing import Any

import yaml

from planner.errors import CatalogError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it (ten times faster), else the pure-Python one."""


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Load one YAML file that must hold a mapping; broken YAML becomes a one-line CatalogError."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CatalogError(f"{path} is not valid YAML{where}", "fix the file's syntax") from None
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror}", "check the path") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path} must hold a mapping of keys to values", "see the other files beside it")
    return data


def require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    """Return data[key], checking presence and type, with an error naming the file and key."""
    if key not in data:
        raise CatalogError(f"{path}: missing key '{key}'", "add it (see the other catalog files)")
    value = data[key]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise CatalogError(f"{path}: '{key}' must be a number, got {value!r}", "fix the value")
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise CatalogError(f"{path}: '{key}' must be {want}, got {value!r}", "fix the value")
    return value


def suggestions(text: str, catalog: dict, cutoff: float) -> list[str]:
    """Up to three canonical names close to `text` (keys are lower-case names and aliases)."""
    import difflib

    close = difflib.get_close_matches(text.lower(), list(catalog), n=6, cutoff=cutoff)
    names: list[str] = []
    for key in close:
        name = catalog[key].name
        if name not in names:
            names.append(name)
    return names[:3]
