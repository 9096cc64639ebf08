"""The extract step on the real Postgres: each change the reconciliation rules make is stored
on the step run with its reason code, and the invoice keeps the mended fields."""

from __future__ import annotations

from extraction.grounding import ground_fields

TWO_COLUMN = """ACME Supplies Ltd
Invoice 4711
Description  Qty  Price  Amount
Laptop bag 14in  4  25.99  103.96
HDMI cable 5m  8  12.50  100.00
Net amount  203.96
Bank details  Freight  20,15
Bank: UniCredit  VAT 0%  0,00
IBAN: IT28 I750 0068 1221 0232 4933 366  TOTAL  EUR 224,11
"""


def fields(**kw) -> dict:
    base = {
        "subtotal": "203.96", "discount": None, "shipping": None, "tax": "0.00", "total_amount": "224.11",
        "line_items": [
            {"description": "Laptop bag 14in", "quantity": "4", "unit_price": "25.99", "amount": "103.96"},
            {"description": "HDMI cable 5m", "quantity": "8", "unit_price": "12.50", "amount": "100.00"},
        ],
    }
    base.update(kw)
    return base


def test_the_extract_step_records_each_change_with_its_reason(settings):
    from sqlmodel import select

    from ingestion import documents
    from invoicechain.db.session import session_scope
    from invoicechain.db.tables import Invoice, StepRun
    from invoicechain.decisions import Step
    from models.runtime import ExtractionResult, ModelRuntime

    sub = documents.submit_document(TWO_COLUMN.encode(), "two-column.txt", "text/plain", settings=settings)
    invoice_id = sub.invoice.id
    assert documents.run_ingest(invoice_id, settings).proceed
    text = documents.extraction_inputs([invoice_id], settings)[invoice_id]
    f = fields(invoice_id="4711", po_number="4711")  # the invoice number read as the PO number too
    merged = {"fields": f, "grounding": ground_fields(f, text), "confidence": {"subtotal": 0.9, "total_amount": 0.9}}
    changes = ModelRuntime._reconcile(merged, text)
    result = ExtractionResult(fields=f, confidence=merged["confidence"], grounding=merged["grounding"],
                              adapter_version="extract:1", model_ms=1.0,
                              reconciled=[c.as_dict() for c in changes])
    assert documents.save_extraction(invoice_id, result, t0=0.0, settings=settings).proceed
    with session_scope(settings) as session:
        run = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == Step.EXTRACT)).one()
        assert [r["code"] for r in run.reasons] == ["RECONCILED_AMOUNT", "RECONCILED_IDENTIFIER"]
        assert "shipping: null -> 20.15" in run.reasons[0]["message"]
        assert "po_number: 4711 -> null (printed only as invoice_id)" in run.reasons[1]["message"]
        assert run.model_output["reconciled"] == [c.as_dict() for c in changes]
        saved = session.get(Invoice, invoice_id).fields
        assert (saved["shipping"], saved["invoice_id"], saved["po_number"]) == ("20.15", "4711", None)
