"""Reading catalog YAML with errors that name the file and the fix."""

from pathlib import Path
from typing import Any

from planner import inputs
from planner.errors import CatalogError


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Load one YAML file that must hold a mapping; every failure is a one-line CatalogError
    (see planner.inputs, the boundary all input files are read through)."""
    return inputs.read_yaml_mapping(Path(path))


def require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    """Return data[key], checking presence and type, with an error naming the file and key."""
    if key not in data:
        raise CatalogError(f"{path}: missing key '{key}'", "add it (see the other catalog files)")
    value = data[key]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise CatalogError(f"{path}: '{key}' must be a number, got {inputs.quoted(value)}", "fix the value")
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise CatalogError(f"{path}: '{key}' must be {want}, got {inputs.quoted(value)}", "fix the value")
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
