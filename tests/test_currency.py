"""Issue 13: GPU prices listed in another currency. The catalog keeps the list's own figure and currency;
dollars come from the cited reference rate in hardware/currency/exchange_rates.yaml, and every output that
shows those dollars says they were converted and from what."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.catalog import load_gpu
from planner.catalog.currency import exchange_rate
from planner.cli import main
from planner.errors import CatalogError
from planner.estimate import estimate_plan
from planner.plan import PlanRequest

# CFETS central parity of 2025-11-27 (Xinhua): 100 USD = 707.79 CNY.
CNY_PER_USD = 7.0779


def test_the_rate_table_is_cited():
    rate = exchange_rate("cny", "test")
    assert rate.per_usd == CNY_PER_USD and rate.date == "2025-11-27" and "central parity" in rate.source
    assert exchange_rate("USD", "test").to_usd(2.5) == 2.5


@pytest.mark.parametrize("gpu,listed", [("H20", 7.5), ("A800", 5.15)])
def test_cny_list_prices_become_dollars_at_the_reference_rate(gpu, listed):
    price = load_gpu(gpu).price
    assert price.currency == "CNY" and price.listed_per_gpu_hour == listed and price.converted
    assert price.usd_per_gpu_hour == pytest.approx(listed / CNY_PER_USD, rel=1e-12)  # 7.5 CNY = $1.0596
    assert price.source and price.date and price.instance
    assert f"converted from {listed:.2f} CNY/GPU-hour at 7.0779 CNY per USD" in price.describe()


def test_usd_list_is_not_converted():
    price = load_gpu("H100").price
    assert not price.converted and price.conversion() == "" and price.listed_per_gpu_hour == 6.88
    assert "converted" not in price.describe()


def test_estimate_cost_says_it_was_converted():
    est = estimate_plan(PlanRequest(model="llama-3.2-1b", gpu="H20", gpus=8, seq_len=2048), tokens=1e9)
    assert est.cost.usd_per_gpu_hour == pytest.approx(7.5 / CNY_PER_USD)
    assert est.cost.usd_per_hour == pytest.approx(8 * 7.5 / CNY_PER_USD)
    assert "converted from 7.50 CNY/GPU-hour at 7.0779 CNY per USD" in est.cost.price_source
    assert "2025-11-27" in est.cost.price_source


def test_solve_reports_say_the_price_was_converted(tmp_path):
    out = tmp_path / "r"
    args = ["solve", "--model", "7b", "--budget", "8xH20,8xH100", "--seq-len", "2048", "--tokens", "1B"]
    result = CliRunner().invoke(main, [*args, "--global-batch", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "H20: price converted from 7.50 CNY/GPU-hour at 7.0779 CNY per USD" in result.output
    rows = {r["gpu_type"]: r for r in json.loads((out / "report.json").read_text())["best_per_gpu_type"]}
    assert "converted from 7.50 CNY" in rows["H20"]["price_source"]
    assert "converted" not in rows["H100-80GB"]["price_source"]


def _gpu_file(tmp_path: Path, price: str) -> Path:
    text = (Path(__file__).parents[1] / "hardware" / "h20.yaml").read_text()
    head, _, rest = text.partition("price:\n")
    tail = rest[rest.index("tdp_w:") :]
    path = tmp_path / "gpu.yaml"
    path.write_text(f"{head}price:\n{price}{tail}")
    return path


@pytest.mark.parametrize(
    "price,message",
    [
        ("  per_gpu_hour: 3\n  currency: EUR\n", "no exchange rate for currency 'EUR' (known: CNY, USD)"),
        ("  usd_per_gpu_hour: 1\n  currency: CNY\n", "listed in CNY, so give price.per_gpu_hour in CNY"),
        ("  per_gpu_hour: 1\n  currency: USD\n", "a USD price goes in price.usd_per_gpu_hour"),
    ],
)
def test_bad_currency_in_a_gpu_file_is_a_catalog_error(tmp_path, price, message):
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_gpu(str(_gpu_file(tmp_path, price)))
    result = CliRunner().invoke(main, ["estimate", "--model", "7b", "--gpu", str(_gpu_file(tmp_path, price))])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and message in result.output
