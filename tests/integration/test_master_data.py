"""Loading accounts-payable master data into Postgres: complete, and idempotent."""

from __future__ import annotations

import copy
import json

import pytest
import typer
from sqlmodel import select
from typer.testing import CliRunner

from invoicechain.db.session import session_scope
from invoicechain.db.tables import GoodsReceipt, PostedInvoice, PurchaseOrder, PurchaseOrderLine, Vendor
from invoicechain.master_data import load_master_data, read_master_data
from cli.synth import synth
from training.synth.plan import plan_corpus

TABLES = (Vendor, PurchaseOrder, PurchaseOrderLine, GoodsReceipt, PostedInvoice)


def _snapshot(settings) -> dict[str, list[dict]]:
    with session_scope(settings) as session:
        return {
            t.__name__: sorted((row.model_dump() for row in session.exec(select(t))), key=lambda r: str(r["id"]))
            for t in TABLES
        }


def test_load_master_data_is_complete_and_idempotent(settings, tmp_path):
    data = plan_corpus(40, 99).master_data
    path = tmp_path / "master_data.json"
    path.write_text(json.dumps(data))
    assert read_master_data(path) == data
    assert read_master_data(tmp_path) == data

    with session_scope(settings) as session:
        first = load_master_data(session, data)
    assert first == {
        "vendors": len(data["vendors"]),
        "purchase_orders": len(data["purchase_orders"]),
        "purchase_order_lines": sum(len(p["lines"]) for p in data["purchase_orders"]),
        "goods_receipts": sum(len(p["receipts"]) for p in data["purchase_orders"]),
        "posted_invoices": len(data["posted_invoices"]),
    }
    loaded = _snapshot(settings)
    vendor = next(v for v in loaded["Vendor"] if v["id"] == data["vendors"][0]["id"])
    assert vendor["aliases"] == data["vendors"][0]["aliases"] and vendor["iban"] == data["vendors"][0]["iban"]

    with session_scope(settings) as session:
        second = load_master_data(session, data)
    assert set(second.values()) == {0}
    assert _snapshot(settings) == loaded

    changed = copy.deepcopy(data)
    changed["vendors"][0]["status"] = "on_hold"
    po = next(p for p in changed["purchase_orders"] if p["receipts"])
    po["remaining"] = "1.00"
    dropped = po["receipts"].pop()
    changed["posted_invoices"].append({"vendor_id": changed["vendors"][0]["id"], "invoice_number": "X-1",
                                       "total_amount": "10.00", "currency": "EUR", "invoice_date": "2026-01-02"})
    with session_scope(settings) as session:
        third = load_master_data(session, changed)
    assert third == {"vendors": 1, "purchase_orders": 1, "purchase_order_lines": 0, "goods_receipts": 1,
                     "posted_invoices": 1}
    with session_scope(settings) as session:
        row = session.exec(select(PurchaseOrder).where(PurchaseOrder.po_number == po["po_number"])).one()
        assert row.remaining == "1.00"
        receipts = session.exec(select(GoodsReceipt).where(GoodsReceipt.po_id == row.id)).all()
        assert len(receipts) == len(po["receipts"])
        assert session.get(Vendor, changed["vendors"][0]["id"]).status == "on_hold"
    assert dropped["line_no"] in {ln["line_no"] for ln in po["lines"]}


def test_read_master_data_rejects_other_json(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"vendors": []}))
    with pytest.raises(ValueError, match="purchase_orders"):
        read_master_data(tmp_path / "other.json")


def test_synth_command_writes_a_corpus_and_loads_its_master_data(settings, tmp_path):
    app = typer.Typer()
    app.command("synth")(synth)

    @app.callback()
    def main() -> None:
        """Invoice tools."""

    out = tmp_path / "corpus"
    args = ["synth", "--n", "5", "--seed", "4", "--out", str(out), "--fault-rate", "0.2", "--load-master-data",
            "--layout", "table", "--layout", "remittance"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(p.read_text()) for p in sorted(out.glob("inv-*.json"))]
    assert len(records) == 5 and {r["layout"] for r in records} == {"table", "remittance"}
    assert sum(len(r["faults"]) for r in records) == 1
    data = read_master_data(out)
    with session_scope(settings) as session:
        assert len(session.exec(select(Vendor)).all()) == len(data["vendors"])
        numbers = {p.po_number for p in session.exec(select(PurchaseOrder))}
    assert numbers == {p["po_number"] for p in data["purchase_orders"]}
    assert "master data rows written" in result.output
