"""Unit constants and parsing of human-written counts such as `1B` or `2.5e9`."""

import math
import re

from planner.errors import PlanError

GIB = 2**30
"""Bytes in a GiB; every memory figure the tool prints is in GiB."""

_SUFFIXES = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def to_gib(num_bytes: float) -> float:
    """Bytes -> GiB (2**30)."""
    return num_bytes / GIB


def parse_count(text: str | int | float, what: str) -> float:
    """Parse `1B`, `500M`, `2.5e9` or a plain number into a positive float.

    >>> parse_count("1B", "tokens")
    1000000000.0
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _COUNT.match(str(text))
        if not match:
            raise PlanError(f"cannot read {what} {text!r}", "write a number such as 1e9, 1B or 500M")
        value = float(match.group(1)) * _SUFFIXES[match.group(2).lower()]
    if not math.isfinite(value) or value <= 0:
        raise PlanError(f"{what} must be a positive number, got {text!r}", "pass a value above zero")
    return value
