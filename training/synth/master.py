"""Accounts-payable master data consistent with the corpus: vendors, POs, receipts, ledger.

The JSON shape written to `master_data.json` (amounts are decimal strings, dates ISO):

    {"vendors": [{"id", "name", "aliases", "address", "country", "tax_id", "currency", "iban",
                  "bic", "account_number", "routing_number", "status", "risk", "department"}],
     "purchase_orders": [{"po_number", "vendor_id", "currency", "total", "remaining", "department",
                          "status", "issued_on", "lines": [{"line_no", "description", "quantity",
                          "unit_price"}], "receipts": [{"line_no", "quantity_received", "received_on"}]}],
     "posted_invoices": [{"vendor_id", "invoice_number", "total_amount", "currency", "invoice_date"}],
     "approval_policy": {"auto_approve_limit_eur": "5000.00"},
     "fx_to_eur": {"EUR": "1", "USD": "0.92", ...}}
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from invoicechain.schema import format_amount
from training.synth.money import AUTO_APPROVE_LIMIT_EUR, canonical_quantity, fx_table
from training.synth.parties import VendorRecord
from invoicechain.enums import PurchaseOrderStatus


@dataclass(frozen=True)
class OrderLine:
    description: str
    quantity: Decimal
    unit_price: Decimal
    received: Decimal  # total quantity received against the line


class MasterDataBuilder:
    def __init__(self) -> None:
        self.vendors: dict[str, VendorRecord] = {}
        self.purchase_orders: list[dict] = []
        self.posted_invoices: list[dict] = []

    def add_vendor(self, vendor: VendorRecord) -> None:
        self.vendors[vendor.id] = vendor

    def add_posted(self, vendor_id: str, number: str, total: Decimal, currency: str, day: date) -> None:
        self.posted_invoices.append({
            "vendor_id": vendor_id, "invoice_number": number, "total_amount": format_amount(total),
            "currency": currency, "invoice_date": day.isoformat(),
        })

    def add_purchase_order(
        self,
        po_number: str,
        vendor: VendorRecord,
        currency: str,
        issued_on: date,
        last_receipt_on: date,
        lines: list[OrderLine],
        remaining: Decimal,
        rng: random.Random,
        total: Decimal | None = None,
    ) -> dict:
        """Record a PO with its lines and the goods receipts that add up to each line's `received`."""
        step = 10 if po_number[:2] == "45" else 1
        span = max(1, (last_receipt_on - issued_on).days)
        po_lines, receipts = [], []
        for k, line in enumerate(lines):
            line_no = (k + 1) * step
            po_lines.append({
                "line_no": line_no,
                "description": line.description,
                "quantity": canonical_quantity(line.quantity),
                "unit_price": format_amount(line.unit_price),
            })
            received = line.received
            if received <= 0:
                continue
            # Some deliveries arrive in two parts.
            if received >= 2 and received == received.to_integral_value() and rng.random() < 0.25:
                first = Decimal(rng.randint(1, int(received) - 1))
                parts = [first, received - first]
            else:
                parts = [received]
            for part, offset in zip(parts, sorted(rng.randint(1, span) for _ in parts)):
                receipts.append({
                    "line_no": line_no,
                    "quantity_received": canonical_quantity(part),
                    "received_on": (issued_on + timedelta(days=offset)).isoformat(),
                })
        po = {
            "po_number": po_number,
            "vendor_id": vendor.id,
            "currency": currency,
            "total": format_amount(total if total is not None else remaining),
            "remaining": format_amount(remaining),
            "department": vendor.department,
            "status": PurchaseOrderStatus.OPEN,
            "issued_on": issued_on.isoformat(),
            "lines": po_lines,
            "receipts": receipts,
        }
        self.purchase_orders.append(po)
        return po

    def to_dict(self) -> dict:
        return {
            "vendors": [v.master_record() for v in sorted(self.vendors.values(), key=lambda v: v.id)],
            "purchase_orders": sorted(self.purchase_orders, key=lambda p: p["po_number"]),
            "posted_invoices": sorted(self.posted_invoices, key=lambda p: (p["vendor_id"], p["invoice_number"])),
            "approval_policy": {"auto_approve_limit_eur": format_amount(AUTO_APPROVE_LIMIT_EUR)},
            "fx_to_eur": fx_table(),
        }


def headroom(gross: Decimal, rng: random.Random) -> Decimal:
    """A PO balance that covers `gross` with up to 15 % to spare, in whole currency units."""
    return Decimal(math.ceil(gross * Decimal(str(round(1 + rng.uniform(0.0, 0.15), 4)))))
