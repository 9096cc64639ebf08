"""An unknown vendor is a question: a reviewer creates the vendor from the invoice, and a
second person confirms its bank details before anything is paid (the vendor-bank-fraud
control: one person alone can never both add a bank account and release money to it).

The vendor is created in status `pending_bank_confirmation` when the invoice names bank
details; `trigger_payment` holds its payments (BANK_ACCOUNT_UNVERIFIED) until another key
owner than the one who created it confirms them.
"""

from __future__ import annotations

import secrets

from pydantic import ValidationError
from sqlmodel import Session

from invoicechain.ap.vendors import resolve_vendor
from invoicechain.db.tables import AuditEntry, Invoice, Vendor, utcnow
from invoicechain.master_data import VendorRecord
from invoicechain.enums import VendorStatus

PENDING_BANK = VendorStatus.PENDING_BANK_CONFIRMATION


class OnboardingError(ValueError):
    """A vendor creation or confirmation the rules refuse; the message says why."""


def proposed_vendor(invoice: Invoice) -> dict:
    """The vendor record the invoice's extracted fields describe (for the reviewer to check)."""
    fields = invoice.fields or {}
    bank = fields.get("bank") or {}
    return {
        "name": fields.get("vendor_name"),
        "address": fields.get("vendor_address"),
        "currency": fields.get("currency"),
        "iban": bank.get("iban"),
        "bic": bank.get("bic"),
        "account_number": bank.get("account_number"),
        "routing_number": bank.get("routing_number"),
    }


def create_vendor_from_invoice(session: Session, invoice: Invoice, actor: str, changes: dict | None = None) -> Vendor:
    """A new vendor from the invoice's vendor details (with the reviewer's `changes`).

    Refused when the invoice names no vendor or its vendor is already in the vendor master.
    The caller commits and then re-runs the invoice from validate_invoice.
    """
    values = {k: v for k, v in proposed_vendor(invoice).items() if v not in (None, "")}
    values.update({k: v for k, v in (changes or {}).items() if k != "status"})
    if not values.get("name"):
        raise OnboardingError(f"Invoice {invoice.id} names no vendor; give the vendor's name.")
    match = resolve_vendor(session, values["name"])
    if match.vendor is not None:
        raise OnboardingError(f"The vendor '{values['name']}' is already in the vendor master as {match.vendor.id} ({match.vendor.name}).")
    vendor_id = values.pop("id", None) or f"NEW-{secrets.token_hex(4).upper()}"
    if session.get(Vendor, vendor_id) is not None:
        raise OnboardingError(f"Vendor id {vendor_id} is already taken.")
    has_bank = any(values.get(k) for k in ("iban", "account_number"))
    try:
        record = VendorRecord.model_validate({**values, "id": vendor_id, "status": PENDING_BANK if has_bank else VendorStatus.ACTIVE})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise OnboardingError(f"The vendor details are not valid: {problems}.") from None
    vendor = Vendor(**record.model_dump(), proposed_by=actor, source_invoice_id=invoice.id)
    session.add(vendor)
    session.add(AuditEntry(invoice_id=invoice.id, actor=actor, action="create_vendor", step=None,
                           before=None, after={"vendor": record.model_dump(mode="json")},
                           reason="vendor created from this invoice"))
    session.flush()
    return vendor


def confirm_vendor_bank(session: Session, vendor_id: str, actor: str) -> Vendor:
    """A second person confirms a new vendor's bank details: the vendor becomes active."""
    vendor = session.get(Vendor, vendor_id)
    if vendor is None:
        raise LookupError(f"Vendor {vendor_id} does not exist.")
    if vendor.status != PENDING_BANK:
        raise OnboardingError(f"Vendor {vendor_id} is {vendor.status}; only a vendor pending bank confirmation can be confirmed.")
    if vendor.proposed_by and vendor.proposed_by == actor:
        raise OnboardingError(
            f"{actor} created vendor {vendor_id}; its bank details must be confirmed by a second person."
        )
    vendor.status = VendorStatus.ACTIVE
    vendor.bank_confirmed_by = actor
    vendor.bank_confirmed_at = utcnow()
    session.add(vendor)
    if vendor.source_invoice_id and session.get(Invoice, vendor.source_invoice_id) is not None:
        session.add(AuditEntry(invoice_id=vendor.source_invoice_id, actor=actor, action="confirm_vendor_bank",
                               before={"vendor": vendor_id, "status": PENDING_BANK},
                               after={"vendor": vendor_id, "status": VendorStatus.ACTIVE}, reason="bank details confirmed"))
    session.flush()
    return vendor


def held_invoices(session: Session, vendor: Vendor) -> list[str]:
    """Ids of the invoices held for payment whose vendor is `vendor` (to re-run after confirmation)."""
    from sqlmodel import select

    from invoicechain.decisions import InvoiceStatus

    rows = session.exec(select(Invoice).where(Invoice.status == InvoiceStatus.PAYMENT_HELD)).all()
    names: dict[str, str | None] = {}
    out = []
    for inv in rows:
        name = (inv.fields or {}).get("vendor_name")
        if name not in names:
            found = resolve_vendor(session, name).vendor if name else None
            names[name] = found.id if found else None
        if names[name] == vendor.id or inv.id == vendor.source_invoice_id:
            out.append(inv.id)
    return out
