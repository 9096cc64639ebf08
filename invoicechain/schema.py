"""The invoice field schema: the one definition used by decoding, the DB, the API and evaluation.

Values are strings so that what the model writes is exactly what is stored: dates are ISO
8601 (`YYYY-MM-DD`), amounts are plain decimal strings with a dot and no grouping
(`1234.56`), currencies ISO 4217 codes. A field the document does not state is `null`.
Field order matters: constrained decoding emits keys in this order, and training
targets are serialised in the same order by `models.prompts.dump_output`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

DECIMAL_PATTERN = r"^-?[0-9]{1,9}(\.[0-9]{1,4})?$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"

DecimalStr = Annotated[str, StringConstraints(pattern=DECIMAL_PATTERN)]
DateStr = Annotated[str, StringConstraints(pattern=DATE_PATTERN)]
CurrencyStr = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
# Free text is bounded so that a model can never run away inside one string.
Text = Annotated[str, StringConstraints(max_length=200)]
ShortText = Annotated[str, StringConstraints(max_length=60)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineItem(_Strict):
    description: Text
    quantity: DecimalStr | None = None
    unit_price: DecimalStr | None = None
    amount: DecimalStr | None = None


class BankDetails(_Strict):
    iban: ShortText | None = None
    bic: ShortText | None = None
    account_number: ShortText | None = None
    routing_number: ShortText | None = None


#: The most line items one answer holds.
MAX_LINE_ITEMS = 60
#: Tokens an extraction answer may take by default: room for MAX_LINE_ITEMS items (about 40
#: tokens each with SmolLM2's tokenizer) and every other field.
ANSWER_TOKENS = 3072


class InvoiceFields(_Strict):
    invoice_id: ShortText | None = None
    vendor_name: Text | None = None
    vendor_address: Text | None = None
    client_name: Text | None = None
    invoice_date: DateStr | None = None
    due_date: DateStr | None = None
    currency: CurrencyStr | None = None
    subtotal: DecimalStr | None = None
    discount: DecimalStr | None = None
    shipping: DecimalStr | None = None
    tax: DecimalStr | None = None
    total_amount: DecimalStr | None = None
    po_number: ShortText | None = None
    payment_terms: ShortText | None = None
    line_items: Annotated[list[LineItem], Field(max_length=MAX_LINE_ITEMS)] = []
    bank: BankDetails | None = None


#: Scalar fields in schema order (line items and bank details are compared separately).
SCALAR_FIELDS: tuple[str, ...] = tuple(
    name for name in InvoiceFields.model_fields if name not in ("line_items", "bank")
)
AMOUNT_FIELDS = ("subtotal", "discount", "shipping", "tax", "total_amount")
DATE_FIELDS = ("invoice_date", "due_date")


def to_decimal(value: str | None) -> Decimal | None:
    """Parse a schema decimal string; None for null or unparsable input."""
    if value is None:
        return None
    try:
        return Decimal(value)
    except (InvalidOperation, ValueError):
        return None


def format_amount(value: Decimal | float | int | str) -> str:
    """Canonical decimal string for an amount: two places, dot, no grouping."""
    return f"{Decimal(str(value)).quantize(Decimal('0.01'))}"
