"""The reference training script (examples/train.py) that launch folders carry as train.py."""

from planner.catalog.paths import data_dirs
from planner.errors import CatalogError


def example_train_script() -> str:
    """Text of examples/train.py, from the checkout or the copy inside the installed wheel."""
    for folder in data_dirs("examples"):
        path = folder / "train.py"
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise CatalogError("examples/train.py is missing from this installation", "reinstall planner")
