"""The units money is kept in, in the view tables: exact integers of 1e-10 USD."""

from __future__ import annotations

from decimal import Decimal

UNITS_PER_USD = 10**10


BUCKET_US = 15 * 60 * 1_000_000


def to_units(amount: Decimal) -> int:
    return int(amount * UNITS_PER_USD)


def from_units(units: int) -> Decimal:
    return Decimal(units) / UNITS_PER_USD
