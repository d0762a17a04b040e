"""Where the data folders (models/, hardware/, search_spaces/, examples/, calibration/) are read from.

Order: the folder named by the environment variable `PLANNER_DATA_DIR` (holding any of the three
sub-folders), then the source checkout (an editable install reads the YAML the user edits), then the
copy shipped inside the installed wheel (`planner/_data/`).
"""

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_CHECKOUT_DIR = _PACKAGE_DIR.parent.parent
_SHIPPED_DIR = _PACKAGE_DIR / "_data"


def data_dirs(kind: str) -> list[Path]:
    """Existing folders that hold catalog files of `kind` (`models`, `hardware`, `search_spaces`),
    highest priority first. A name defined in an earlier folder shadows the same name later."""
    candidates = []
    override = os.environ.get("PLANNER_DATA_DIR")
    if override:
        candidates.append(Path(override) / kind)
    candidates += [_CHECKOUT_DIR / kind, _SHIPPED_DIR / kind]
    seen: list[Path] = []
    for folder in candidates:
        if folder.is_dir() and folder.resolve() not in [s.resolve() for s in seen]:
            seen.append(folder)
    return seen
