"""Money for the synthetic corpus: fixed exchange rates, the approval limit and rounding.

The rates are fixed so that the corpus is reproducible; they are exported in
`master_data.json` as `fx_to_eur` so that the accounts-payable rules convert with the
same numbers the generator used when it kept clean invoices under the approval limit.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

#: EUR value of one unit of each currency the corpus uses.
FX_TO_EUR: dict[str, Decimal] = {
    "EUR": Decimal("1"),
    "USD": Decimal("0.92"),
    "GBP": Decimal("1.17"),
    "AUD": Decimal("0.61"),
    "CAD": Decimal("0.68"),
    "SEK": Decimal("0.087"),
}
#: Invoices up to this total (converted to EUR) are approved without a person.
AUTO_APPROVE_LIMIT_EUR = Decimal("5000.00")
#: Clean invoices stay below this, well clear of the limit.
CLEAN_CEILING_EUR = Decimal("4500.00")
#: Invoices labelled approval_above_threshold are at least this large.
OVER_LIMIT_FLOOR_EUR = Decimal("6000.00")

CENT = Decimal("0.01")


def cents(value: Decimal | int | str) -> Decimal:
    """Round half up to whole cents."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def to_eur(amount: Decimal, currency: str) -> Decimal:
    """Convert with the corpus's fixed rates."""
    return cents(amount * FX_TO_EUR[currency])


def from_eur(amount_eur: Decimal, currency: str) -> Decimal:
    return cents(amount_eur / FX_TO_EUR[currency])


def canonical_quantity(quantity: Decimal) -> str:
    """Schema string for a quantity: no trailing zeros, no exponent (`3`, `7.5`, `-2`)."""
    text = f"{quantity.normalize():f}"
    return text


def fx_table() -> dict[str, str]:
    """The rates as decimal strings, the form stored in master data."""
    return {code: str(rate) for code, rate in FX_TO_EUR.items()}
