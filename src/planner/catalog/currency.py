"""Exchange rates (`hardware/currency/exchange_rates.yaml`) and the one conversion of a listed price into
US dollars. Every cost the planner prints is in dollars; a price list in another currency keeps its own
figure and currency, and the dollars come from a cited central-bank reference rate."""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from planner.catalog._yaml import read_yaml_mapping
from planner.catalog.paths import data_dirs
from planner.errors import CatalogError
from planner.inputs import one_line, quantity

RATES_FILE = Path("currency") / "exchange_rates.yaml"
"""Where the table lives inside each hardware folder (a sub-folder, so the GPU catalog does not read it)."""


@dataclass(frozen=True)
class ExchangeRate:
    """How many units of `currency` one US dollar buys, on `date`, per `source`."""

    currency: str
    per_usd: float
    source: str
    date: str

    def to_usd(self, amount: float) -> float:
        """`amount` in this currency, in US dollars: amount / (units per dollar)."""
        return amount / self.per_usd


USD = ExchangeRate("USD", 1.0, "", "")


def _rates_from_file(path: Path) -> dict[str, ExchangeRate]:
    data = read_yaml_mapping(path)
    raw = data.get("rates")
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: 'rates' must map currency codes to rates", "see hardware/README.md")
    rates = {}
    for code, entry in raw.items():
        where = f"{path}: rates.{one_line(str(code))}"
        if not isinstance(entry, dict) or not entry.get("source") or not entry.get("date"):
            raise CatalogError(f"{where} needs per_usd, source and date", "cite the reference rate and its date")
        per_usd = quantity(entry.get("per_usd"), f"{where}.per_usd", 1e-6, 1e9, error=CatalogError)
        rates[str(code).upper()] = ExchangeRate(str(code).upper(), per_usd, str(entry["source"]), str(entry["date"]))
    return rates


@cache
def _table(dirs: tuple[Path, ...]) -> dict[str, ExchangeRate]:
    rates: dict[str, ExchangeRate] = {}
    for folder in reversed(dirs):
        path = folder / RATES_FILE
        if path.is_file():
            rates.update(_rates_from_file(path))
    return rates


def exchange_rate(currency: str, where: str) -> ExchangeRate:
    """The rate for `currency` (ISO code, any case); USD is 1. `where` names the price that needs it."""
    code = one_line(str(currency)).strip().upper()
    if code == "USD":
        return USD
    rates = _table(tuple(data_dirs("hardware")))
    if code not in rates:
        known = ", ".join(sorted(["USD", *rates]))
        raise CatalogError(
            f"{where}: no exchange rate for currency '{code}' (known: {known})",
            f"add {code} with its reference rate, source and date to hardware/{RATES_FILE.as_posix()}",
        )
    return rates[code]
