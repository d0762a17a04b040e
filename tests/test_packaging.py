"""The wheel carries the user-editable catalogs, so an installed planner works without the checkout."""

import zipfile

from hatchling.builders.wheel import WheelBuilder


def test_wheel_ships_catalogs_search_spaces_and_example_script(tmp_path):
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    wheel = next(WheelBuilder(str(root)).build(directory=str(tmp_path), versions=["standard"]))
    names = zipfile.ZipFile(wheel).namelist()
    assert "planner/_data/models/llama-2-13b.yaml" in names
    assert "planner/_data/hardware/a100-80gb.yaml" in names
    assert "planner/_data/search_spaces/default.yaml" in names
    assert "planner/_data/examples/train.py" in names  # launch folders carry it as train.py
    assert "planner/_data/calibration/traced/llama-2.yaml" in names  # traced constants the memory model reads
    assert "planner/cli.py" in names


def test_catalog_falls_back_to_the_shipped_copy(tmp_path, monkeypatch):
    from planner.catalog import paths

    shipped = tmp_path / "_data"
    (shipped / "models").mkdir(parents=True)
    monkeypatch.setattr(paths, "_CHECKOUT_DIR", tmp_path / "no-checkout")
    monkeypatch.setattr(paths, "_SHIPPED_DIR", shipped)
    assert paths.data_dirs("models") == [shipped / "models"]


def test_data_dir_override(tmp_path, monkeypatch):
    from planner.catalog import paths

    (tmp_path / "models").mkdir()
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path))
    assert paths.data_dirs("models")[0] == tmp_path / "models"
