"""Accounts-payable master data: read it from JSON and load it into the database.

The JSON shape (amounts are decimal strings, dates ISO 8601; written by the synthetic
corpus generator as `master_data.json`, and the format to use for real master data):

    {"vendors": [{"id", "name", "aliases", "address", "country", "tax_id", "currency", "iban",
                  "bic", "account_number", "routing_number", "status", "risk", "department"}],
     "purchase_orders": [{"po_number", "vendor_id", "currency", "total", "remaining", "department",
                          "status", "issued_on", "lines": [{"line_no", "description", "quantity",
                          "unit_price"}], "receipts": [{"line_no", "quantity_received", "received_on"}]}],
     "posted_invoices": [{"vendor_id", "invoice_number", "total_amount", "currency", "invoice_date"}],
     "approval_policy": {"auto_approve_limit_eur": "5000.00"},
     "fx_to_eur": {"EUR": "1", "USD": "0.92", ...}}

Loading is an upsert keyed on natural keys (vendor id, PO number, PO line number, vendor +
invoice number): loading the same data twice changes nothing. A PO's lines and goods
receipts are made to equal those in the data.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from invoicechain.db.tables import GoodsReceipt, PostedInvoice, PurchaseOrder, PurchaseOrderLine, Vendor

REQUIRED_KEYS = ("vendors", "purchase_orders", "posted_invoices")
VENDOR_COLUMNS = ("name", "aliases", "address", "country", "tax_id", "currency", "iban", "bic",
                  "account_number", "routing_number", "status", "risk", "department")


def read_master_data(path: str | Path) -> dict:
    """Master data from a JSON file (or from `master_data.json` in a corpus folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "master_data.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(f"{path} is not master data: missing {', '.join(missing)}")
    return data


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _assign(row: Any, values: dict[str, Any]) -> bool:
    """Set the values that differ; True when anything changed."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def load_master_data(session: Session, data: dict) -> dict[str, int]:
    """Upsert vendors, POs with lines and receipts, and posted invoices; rows written per table.

    The counts are rows inserted, changed or removed, so loading unchanged data returns zeros.
    The caller commits (e.g. `invoicechain.db.session.session_scope`).
    """
    counts = dict.fromkeys(("vendors", "purchase_orders", "purchase_order_lines", "goods_receipts",
                            "posted_invoices"), 0)

    vendor_ids = [v["id"] for v in data.get("vendors", [])]
    vendors = {v.id: v for v in session.exec(select(Vendor).where(Vendor.id.in_(vendor_ids)))} if vendor_ids else {}
    for record in data.get("vendors", []):
        values = {key: record.get(key) for key in VENDOR_COLUMNS}
        values["aliases"] = list(values["aliases"] or [])
        values["status"] = values["status"] or "active"
        values["risk"] = values["risk"] or "low"
        row = vendors.get(record["id"])
        if row is None:
            session.add(Vendor(id=record["id"], **values))
            counts["vendors"] += 1
        elif _assign(row, values):
            counts["vendors"] += 1
    session.flush()

    orders = data.get("purchase_orders", [])
    numbers = [po["po_number"] for po in orders]
    existing = ({po.po_number: po for po in session.exec(select(PurchaseOrder).where(PurchaseOrder.po_number.in_(numbers)))}
                if numbers else {})
    rows: dict[str, PurchaseOrder] = {}
    for record in orders:
        values = {
            "vendor_id": record["vendor_id"], "currency": record["currency"], "total": record["total"],
            "remaining": record["remaining"], "department": record.get("department"),
            "status": record.get("status") or "open", "issued_on": _day(record.get("issued_on")),
        }
        row = existing.get(record["po_number"])
        if row is None:
            row = PurchaseOrder(po_number=record["po_number"], **values)
            session.add(row)
            counts["purchase_orders"] += 1
        elif _assign(row, values):
            counts["purchase_orders"] += 1
        rows[record["po_number"]] = row
    session.flush()

    po_ids = [row.id for row in rows.values()]
    lines_by_po: dict[int, dict[int, PurchaseOrderLine]] = {}
    receipts_by_po: dict[int, list[GoodsReceipt]] = {}
    if po_ids:
        for line in session.exec(select(PurchaseOrderLine).where(PurchaseOrderLine.po_id.in_(po_ids))):
            lines_by_po.setdefault(line.po_id, {})[line.line_no] = line
        for receipt in session.exec(select(GoodsReceipt).where(GoodsReceipt.po_id.in_(po_ids))):
            receipts_by_po.setdefault(receipt.po_id, []).append(receipt)
    for record in orders:
        po = rows[record["po_number"]]
        current = lines_by_po.get(po.id, {})
        wanted = {ln["line_no"] for ln in record.get("lines", [])}
        for ln in record.get("lines", []):
            values = {"description": ln["description"], "quantity": ln["quantity"], "unit_price": ln["unit_price"]}
            row = current.get(ln["line_no"])
            if row is None:
                session.add(PurchaseOrderLine(po_id=po.id, line_no=ln["line_no"], **values))
                counts["purchase_order_lines"] += 1
            elif _assign(row, values):
                counts["purchase_order_lines"] += 1
        for line_no, row in current.items():
            if line_no not in wanted:
                session.delete(row)
                counts["purchase_order_lines"] += 1
        # Receipts have no key of their own: keep the rows that match, add and remove the rest.
        wanted_receipts = Counter(
            (r["line_no"], r["quantity_received"], _day(r.get("received_on"))) for r in record.get("receipts", [])
        )
        for row in receipts_by_po.get(po.id, []):
            key = (row.line_no, row.quantity_received, row.received_on)
            if wanted_receipts[key] > 0:
                wanted_receipts[key] -= 1
            else:
                session.delete(row)
                counts["goods_receipts"] += 1
        for (line_no, quantity, received_on), missing in wanted_receipts.items():
            for _ in range(missing):
                session.add(GoodsReceipt(po_id=po.id, line_no=line_no, quantity_received=quantity,
                                         received_on=received_on))
                counts["goods_receipts"] += 1

    posted = data.get("posted_invoices", [])
    posted_vendors = sorted({p["vendor_id"] for p in posted})
    booked = ({(p.vendor_id, p.invoice_number): p
               for p in session.exec(select(PostedInvoice).where(PostedInvoice.vendor_id.in_(posted_vendors)))}
              if posted_vendors else {})
    for record in posted:
        values = {"total_amount": record["total_amount"], "currency": record["currency"],
                  "invoice_date": _day(record.get("invoice_date"))}
        row = booked.get((record["vendor_id"], record["invoice_number"]))
        if row is None:
            row = PostedInvoice(vendor_id=record["vendor_id"], invoice_number=record["invoice_number"], **values)
            session.add(row)
            booked[(record["vendor_id"], record["invoice_number"])] = row
            counts["posted_invoices"] += 1
        elif _assign(row, values):
            counts["posted_invoices"] += 1
    session.flush()
    # The approval limits and FX rates that come with the master data apply to run_approval.
    from invoicechain.ap.approval import store_master_policy

    store_master_policy(session, data)
    return counts
