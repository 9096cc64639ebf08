"""Payment batches out of the system: ISO 20022 pain.001 credit transfers and CSV.

EUR batches are written as SEPA pain.001.001.03 with `sepaxml`, which validates the file
against the schema before it is written. SEPA carries euros only, so a batch in another
currency is written as CSV alone (for the bank's own upload format or a treasury
system); so are EUR payments to a vendor without an IBAN, which SEPA cannot address, and
credit notes (negative amounts), which are offset rather than paid.
Exporting a batch marks it `exported`; later payments of its currency open a new batch.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from sqlmodel import Session, select

from invoicechain.config import Settings
from invoicechain.db.tables import Payment, PaymentBatch, Vendor, utcnow
from invoicechain.enums import PaymentBatchStatus

CSV_COLUMNS = (
    "payment_id", "batch_id", "invoice_id", "reference", "vendor_id", "creditor_name", "iban", "bic",
    "account_number", "routing_number", "amount", "discount", "currency", "pay_on",
)


@dataclass
class BatchExport:
    """Files written for one batch, and why a format was left out."""

    batch_id: int
    currency: str
    payments: int
    total: str
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ExportError(RuntimeError):
    """A batch that cannot be written in the asked format."""


def batches_to_export(session: Session, batch_id: int | None = None) -> list[PaymentBatch]:
    """The batch asked for, or every open batch that holds payments."""
    if batch_id is not None:
        batch = session.get(PaymentBatch, batch_id)
        if batch is None:
            raise ExportError(f"There is no payment batch {batch_id}.")
        return [batch]
    batches = session.exec(select(PaymentBatch).where(PaymentBatch.status == PaymentBatchStatus.OPEN).order_by(PaymentBatch.id)).all()
    return [b for b in batches if session.exec(select(Payment.id).where(Payment.batch_id == b.id)).first() is not None]


def _payments(session: Session, batch: PaymentBatch) -> list[Payment]:
    return list(session.exec(select(Payment).where(Payment.batch_id == batch.id).order_by(Payment.id)).all())


def write_csv(session: Session, batch: PaymentBatch, path: Path) -> Path:
    """The batch's payments as CSV (one row per payment)."""
    vendors = {v.id: v for v in session.exec(select(Vendor)).all()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for p in _payments(session, batch):
            v = vendors.get(p.vendor_id or "")
            writer.writerow([
                p.id, batch.id, p.invoice_id, p.reference, p.vendor_id or "", p.creditor_name, p.iban or "", p.bic or "",
                (v.account_number if v else "") or "", (v.routing_number if v else "") or "",
                p.amount, p.discount, p.currency, p.pay_on.isoformat(),
            ])
    return path


def pain001_xml(session: Session, batch: PaymentBatch, settings: Settings) -> tuple[bytes | None, list[Payment]]:
    """SEPA credit-transfer XML (pain.001.001.03) for a EUR batch, schema-validated, and the payments
    left out of it; None instead of XML when no payment of the batch can go into a SEPA file."""
    from sepaxml import SepaTransfer

    if batch.currency != "EUR":
        raise ExportError(f"Batch {batch.id} is in {batch.currency}; SEPA pain.001 carries EUR only.")
    if not settings.payer_iban:
        raise ExportError("Set INVOICECHAIN_PAYER_IBAN (and INVOICECHAIN_PAYER_BIC) to write pain.001: the debtor account is required.")
    config = {"name": settings.payer_name, "IBAN": settings.payer_iban.replace(" ", ""), "batch": True, "currency": "EUR"}
    if settings.payer_bic:
        config["BIC"] = settings.payer_bic
    transfer = SepaTransfer(config, clean=True)
    skipped: list[Payment] = []
    added = 0
    for p in _payments(session, batch):
        # SEPA transfers carry positive amounts to an IBAN; credits to offset stay in the CSV.
        if not p.iban or Decimal(p.amount) <= 0:
            skipped.append(p)
            continue
        payment = {
            "name": p.creditor_name,
            "IBAN": p.iban.replace(" ", ""),
            "amount": int((Decimal(p.amount) * 100).to_integral_value()),
            "execution_date": p.pay_on if isinstance(p.pay_on, dt.date) else dt.date.fromisoformat(str(p.pay_on)),
            "description": f"Invoice {p.reference}"[:140],
            "endtoend_id": f"IC{p.id}"[:35],
        }
        if p.bic:
            payment["BIC"] = p.bic
        transfer.add_payment(payment)
        added += 1
    if not added:
        return None, skipped
    return transfer.export(validate=True, pretty_print=True), skipped


def export_batch(session: Session, batch: PaymentBatch, out_dir: Path, settings: Settings, fmt: str = "both") -> BatchExport:
    """Write one batch as pain.001 XML and/or CSV into `out_dir` and mark it exported."""
    if fmt not in ("xml", "csv", "both"):
        raise ValueError(f"format must be xml, csv or both, not {fmt!r}")
    # Lock the batch row: a payment being added concurrently waits, then opens a new batch.
    session.exec(select(PaymentBatch).where(PaymentBatch.id == batch.id).with_for_update()).first()
    payments = _payments(session, batch)
    total = sum((Decimal(p.amount) for p in payments), Decimal("0"))
    result = BatchExport(batch.id, batch.currency, len(payments), f"{total:.2f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"payment-batch-{batch.id}-{batch.currency}"
    if fmt in ("xml", "both"):
        if batch.currency != "EUR":
            note = f"No pain.001 for batch {batch.id}: it is in {batch.currency} and SEPA carries EUR only; CSV written instead."
            if fmt == "xml":
                fmt = "csv"
            result.notes.append(note)
        else:
            xml, skipped = pain001_xml(session, batch, settings)
            if xml is not None:
                path = out_dir / f"{stem}.pain001.xml"
                path.write_bytes(xml)
                result.files.append(path)
            if skipped:
                refs = ", ".join(p.reference for p in skipped)
                result.notes.append(
                    f"{len(skipped)} payment(s) without an IBAN or with a credit to offset are in the CSV only: {refs}."
                )
                if fmt == "xml":
                    fmt = "both"
    if fmt in ("csv", "both"):
        result.files.append(write_csv(session, batch, out_dir / f"{stem}.csv"))
    if batch.status != PaymentBatchStatus.EXPORTED:
        batch.status = PaymentBatchStatus.EXPORTED
        batch.exported_at = utcnow()
        session.add(batch)
    session.flush()
    return result


def export_payments(session: Session, out_dir: Path, settings: Settings, *, batch_id: int | None = None, fmt: str = "both") -> list[BatchExport]:
    """Export the given batch, or every open batch with payments."""
    return [export_batch(session, b, out_dir, settings, fmt) for b in batches_to_export(session, batch_id)]
