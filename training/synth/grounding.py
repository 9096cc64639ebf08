"""Does every ground-truth value appear in the document's text? The normalisation used:

* Text: runs of whitespace (spaces, newlines, the form feed between pages) count as one
  space, on both sides of the comparison; pdfplumber's layout mode pads between words.
* Strings (invoice number, vendor and client name, PO number, payment terms, line
  descriptions, BIC, account and routing numbers): appear verbatim.
* Vendor address: each of its ", "-separated parts appears (the field joins the printed
  address lines with ", "; a one-line letterhead separates them differently).
* Dates: the ISO value written in the document's date format appears (`2026-03-14` is
  found as `14.03.2026`, `03/14/2026`, `14 March 2026`, `14. März 2026`, ...); that is, the
  printed date parsed back with that format gives the ISO value.
* Amounts (subtotal, discount, shipping, tax, total, unit prices, line amounts): the value
  written in the document's number format, two decimals, thousands grouped
  (`1234.56` is found as `1,234.56`, `1.234,56` or `1 234,56`), not preceded or followed by
  another digit. A discount is stored positive and may be printed with a minus sign.
* Quantities: the canonical value with the document's decimal separator (`7.5` -> `7,5`).
* Currency: the ISO code or the currency's symbol appears (EUR/€, USD/$, GBP/£, AUD/A$,
  CAD/C$, SEK/kr).
* IBAN: stored without spaces; compared against the text with all whitespace removed
  (documents print it in groups of four or unbroken).
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from training.synth.document import Style
from training.synth.formats import CURRENCY_SYMBOLS, format_date, format_number, format_quantity

_PLAIN_FIELDS = ("invoice_id", "vendor_name", "client_name", "po_number", "payment_terms")
_AMOUNTS = ("subtotal", "discount", "shipping", "tax", "total_amount")


def _squash(text: str) -> str:
    return " ".join(text.split())


def _amount_pattern(printed: str) -> re.Pattern:
    return re.compile(r"(?<!\d)" + re.escape(printed) + r"(?!\d)")


def ungrounded(fields: dict, text: str, style: Style) -> list[str]:
    """Paths of the ground-truth values that the text does not contain (empty when all do)."""
    flat = _squash(text)
    compact = re.sub(r"\s+", "", text)
    missing: list[str] = []

    def has(value: str) -> bool:
        return _squash(value) in flat

    def has_amount(value: str) -> bool:
        printed = format_number(Decimal(value), style.number_format)
        return bool(_amount_pattern(printed).search(flat))

    for key in _PLAIN_FIELDS:
        if fields.get(key) is not None and not has(fields[key]):
            missing.append(key)
    if fields.get("vendor_address") and not all(has(part) for part in fields["vendor_address"].split(", ")):
        missing.append("vendor_address")
    for key in ("invoice_date", "due_date"):
        if fields.get(key) and not has(format_date(date.fromisoformat(fields[key]), style.date_format, style.language)):
            missing.append(key)
    currency = fields.get("currency")
    if currency and not (has(currency) or has(CURRENCY_SYMBOLS.get(currency, currency))):
        missing.append("currency")
    for key in _AMOUNTS:
        if fields.get(key) is not None and not has_amount(fields[key]):
            missing.append(key)
    for k, item in enumerate(fields.get("line_items") or []):
        if not has(item["description"]):
            missing.append(f"line_items[{k}].description")
        if item.get("quantity") is not None:
            printed = format_quantity(Decimal(item["quantity"]), style.number_format)
            if not _amount_pattern(printed).search(flat):
                missing.append(f"line_items[{k}].quantity")
        for key in ("unit_price", "amount"):
            if item.get(key) is not None and not has_amount(item[key]):
                missing.append(f"line_items[{k}].{key}")
    bank = fields.get("bank") or {}
    if bank.get("iban") and bank["iban"] not in compact:
        missing.append("bank.iban")
    for key in ("bic", "account_number", "routing_number"):
        if bank.get(key) and not has(bank[key]):
            missing.append(f"bank.{key}")
    return missing
