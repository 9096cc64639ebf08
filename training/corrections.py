"""Reviewers' corrections as training data for both adapters.

- Field corrections (`correct_fields` audit rows) become `extract` records: the
  document text in, the invoice's corrected fields out (one record per invoice, with the
  fields as they stand after every correction).
- Decision overrides (`override_decision` audit rows) become `toolchain` records: the
  step context the adapter saw when the reviewer decided (kept in the audit row) in, the
  reviewer's decision and reason codes out (the latest override per invoice and step).
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import Session, select

from invoicechain.db.tables import AuditEntry, Document, Invoice
from invoicechain.schema import InvoiceFields
from models.prompts import extract_record, toolchain_record
from invoicechain.enums import AdapterName


def correction_records(session: Session, adapter: str | None = None) -> tuple[list[dict], dict[str, int]]:
    """Training records from the audit trail, and their count per adapter."""
    entries = session.exec(
        select(AuditEntry)
        .where(AuditEntry.action.in_(["correct_fields", "override_decision"]))
        .order_by(AuditEntry.at, AuditEntry.id)
    ).all()
    extract_ids: list[str] = []
    overrides: dict[tuple[str, str], AuditEntry] = {}
    for e in entries:
        if e.action == "correct_fields" and e.invoice_id not in extract_ids:
            extract_ids.append(e.invoice_id)
        elif e.action == "override_decision" and e.step:
            overrides[(e.invoice_id, e.step)] = e  # later overrides replace earlier ones

    records: list[dict] = []
    counts = {AdapterName.EXTRACT: 0, AdapterName.TOOLCHAIN: 0}
    if adapter in (None, AdapterName.EXTRACT):
        for invoice_id in extract_ids:
            inv = session.get(Invoice, invoice_id)
            doc = session.get(Document, inv.document_id) if inv else None
            if inv is None or doc is None or not (doc.text or "").strip() or not inv.fields:
                continue
            fields = InvoiceFields.model_validate(inv.fields).model_dump(mode="json")
            records.append(extract_record(doc.text, fields))
            counts[AdapterName.EXTRACT] += 1
    if adapter in (None, AdapterName.TOOLCHAIN):
        for (_invoice_id, step), e in overrides.items():
            context = (e.before or {}).get("context")
            after = e.after or {}
            if not context or not after.get("decision"):
                continue
            records.append(toolchain_record(step, context, {"decision": after["decision"], "reasons": list(after.get("reasons") or [])}))
            counts[AdapterName.TOOLCHAIN] += 1
    return records, counts


def export_corrections(session: Session, out: Path, adapter: str | None = None) -> dict[str, int]:
    """Write the corrections as JSONL (both adapters unless `adapter` names one); counts per adapter."""
    if adapter not in (None, *AdapterName):
        raise ValueError(f"adapter must be extract or toolchain, not {adapter!r}")
    records, counts = correction_records(session, adapter)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return counts


def vendor_memories(session: Session, min_invoices: int = 10) -> dict[str, dict]:
    """A per-vendor memory (`models.vendor_memory`) for every vendor with at least
    `min_invoices` corrected invoices: vendor name -> the memory as JSON."""
    from collections import defaultdict

    from models.vendor_memory import learn

    by_vendor: dict[str, list[dict]] = defaultdict(list)
    for record in correction_records(session, AdapterName.EXTRACT)[0]:
        vendor = (record.get("output") or {}).get("vendor_name")
        if vendor:
            by_vendor[" ".join(str(vendor).split())].append(record)
    return {vendor: learn(records).as_dict() for vendor, records in sorted(by_vendor.items())
            if len(records) >= min_invoices}
