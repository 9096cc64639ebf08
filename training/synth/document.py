"""The synthetic document: everything a layout prints, and the ground truth it implies.

`InvoiceDoc` holds printed values only (a missing invoice number is `None`, a mistyped PO is
the typo). `InvoiceDoc.fields()` turns it into the field schema; nothing else decides
ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from training.synth.formats import format_date, format_money, format_number, format_quantity
from training.synth.money import canonical_quantity


@dataclass
class Party:
    name: str  # as printed on this document
    address_lines: list[str]
    country: str
    tax_id: str | None = None
    phone: str | None = None
    email: str | None = None
    website: str | None = None

    @property
    def address(self) -> str:
        """The address as the field schema holds it: printed lines joined by ", "."""
        return ", ".join(self.address_lines)


@dataclass
class Line:
    description: str  # as printed on the invoice
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    unit: str = ""
    item_no: str | None = None
    po_description: str = ""  # the wording on the purchase order line
    po_unit_price: Decimal | None = None  # the ordered price (differs when the invoice overcharges)


@dataclass
class Bank:
    iban: str | None = None
    bic: str | None = None
    account_number: str | None = None
    routing_number: str | None = None
    bank_name: str | None = None

    def as_fields(self) -> dict[str, str | None]:
        return {"iban": self.iban, "bic": self.bic, "account_number": self.account_number,
                "routing_number": self.routing_number}


@dataclass
class Style:
    language: str
    number_format: str
    date_format: str
    currency_display: str  # symbol_before | symbol_after | code_before | code_after | plain
    font: str  # helvetica | times | courier
    accent: tuple[float, float, float]


@dataclass
class InvoiceDoc:
    name: str
    index: int
    seed: int  # drives rendering choices that never change a value
    layout: str
    kind: str  # invoice | credit_note | receipt
    style: Style
    vendor_id: str
    vendor: Party
    client: Party | None  # None where the document names no customer (most till receipts)
    number: str | None
    invoice_date: date
    due_date: date | None
    currency: str
    lines: list[Line]
    subtotal: Decimal
    discount: Decimal | None
    discount_rate: Decimal | None
    shipping: Decimal | None
    tax: Decimal | None
    tax_rate: Decimal
    tax_label: str
    tax_note: str | None  # reverse_charge | export
    total: Decimal | None  # as printed
    po_number: str | None  # as printed
    terms: str | None
    terms_kind: str | None
    bank: Bank | None
    customer_no: str | None = None
    contact: str | None = None
    delivery_note: str | None = None
    delivery_date: date | None = None
    reference_number: str | None = None  # credit note: the invoice it corrects
    reference_date: date | None = None
    service_text: str | None = None
    stamp: tuple[str, date] | None = None  # (label key, date)
    receipt_time: str | None = None
    card_digits: str | None = None
    registration: str | None = None  # company register line of the footer
    signatory: str | None = None
    faults: list[str] = field(default_factory=list)
    # Facts about the truth behind the print (not ground truth of the document).
    true_po: str | None = None

    # --- printing, shared by the layouts ----------------------------------------------

    def money(self, value: Decimal, with_currency: bool = False) -> str:
        display = self.style.currency_display if with_currency else "plain"
        return format_money(value, self.style.number_format, self.currency, display)

    def number_text(self, value: Decimal) -> str:
        return format_number(value, self.style.number_format)

    def qty(self, value: Decimal) -> str:
        return format_quantity(value, self.style.number_format)

    def date_text(self, day: date) -> str:
        return format_date(day, self.style.date_format, self.style.language)

    @property
    def has_po(self) -> bool:
        return self.po_number is not None

    # --- ground truth -----------------------------------------------------------------

    def fields(self) -> dict:
        """The field schema for this document, validated, in schema order."""
        from invoicechain.schema import InvoiceFields, format_amount

        def amount(v: Decimal | None) -> str | None:
            return None if v is None else format_amount(v)

        data = {
            "invoice_id": self.number,
            "vendor_name": self.vendor.name,
            "vendor_address": self.vendor.address,
            "client_name": self.client.name if self.client else None,
            "invoice_date": self.invoice_date.isoformat(),
            "due_date": self.due_date.isoformat() if self.due_date else None,
            "currency": self.currency,
            "subtotal": amount(self.subtotal),
            "discount": amount(self.discount),
            "shipping": amount(self.shipping),
            "tax": amount(self.tax),
            "total_amount": amount(self.total),
            "po_number": self.po_number,
            "payment_terms": self.terms,
            "line_items": [
                {"description": ln.description, "quantity": canonical_quantity(ln.quantity),
                 "unit_price": format_amount(ln.unit_price), "amount": format_amount(ln.amount)}
                for ln in self.lines
            ],
            "bank": self.bank.as_fields() if self.bank else None,
        }
        return InvoiceFields.model_validate(data).model_dump(mode="json")
