"""E-invoices through the pipeline on real Postgres: a standalone XML is read without the
model, a Factur-X PDF's XML wins over the page reading, and a disagreement is a finding."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from sqlmodel import select

from invoicechain import pipeline
from ingestion import documents
from invoicechain.db.session import session_scope
from invoicechain.db.tables import Document, Invoice, StepRun
from invoicechain.decisions import Decision, Step
from models.runtime import ExtractionResult

DATA = Path(__file__).resolve().parents[1] / "data" / "einvoice"
EXPECTED = json.loads((DATA / "expected.json").read_text(encoding="utf-8"))


def _extract_step(settings, invoice_id):
    with session_scope(settings) as s:
        return s.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == Step.EXTRACT)).one()


def test_standalone_xml_is_read_without_the_model(settings):
    name = "EN16931_Einfach.ubl.xml"
    sub = documents.submit_document((DATA / name).read_bytes(), name, "application/xml", settings=settings)
    assert sub.document.content_type == "application/xml"
    assert documents.run_ingest(sub.invoice.id, settings).decision == Decision.OK
    # No text goes to the model: the extraction is stored from the XML directly.
    assert documents.extraction_inputs([sub.invoice.id], settings) == {}
    replay = pipeline.extraction_replay(sub.invoice.id, settings)
    assert replay is not None and replay.proceed
    with session_scope(settings) as s:
        inv = s.get(Invoice, sub.invoice.id)
        assert inv.fields == EXPECTED[name]["fields"]
        assert set(inv.confidence.values()) == {1.0}
        assert all(g == {"source": "xml"} for g in inv.grounding.values())
        assert "Lieferant GmbH" in s.get(Document, inv.document_id).text
    run = _extract_step(settings, sub.invoice.id)
    assert run.mode == "xml" and run.model_output["source"] == "xml"


def _page_reading(fields: dict) -> ExtractionResult:
    return ExtractionResult(fields=fields, confidence={k: 0.9 for k in fields}, grounding={},
                            adapter_version=None, model_ms=1.0)


def test_factur_x_pdf_xml_wins_and_a_differing_page_is_a_finding(settings):
    name = "EN16931_Rabatte.pdf"
    sub = documents.submit_document((DATA / name).read_bytes(), name, "application/pdf", settings=settings)
    assert documents.run_ingest(sub.invoice.id, settings).decision == Decision.OK
    todo = documents.extraction_inputs([sub.invoice.id], settings)
    assert "Kunstrasen" in todo[sub.invoice.id]  # the model still reads the visible page
    xml_fields = EXPECTED[name]["fields"]
    page = copy.deepcopy(xml_fields)
    page["total_amount"], page["invoice_id"] = "251.07", None  # misread total; invoice number missed
    documents.save_extraction(sub.invoice.id, _page_reading(page), t0=0.0, settings=settings)
    with session_scope(settings) as s:
        inv = s.get(Invoice, sub.invoice.id)
        assert inv.fields == xml_fields
        assert inv.confidence["total_amount"] == 1.0
    run = _extract_step(settings, sub.invoice.id)
    assert [r["code"] for r in run.reasons] == ["EINVOICE_MISMATCH"]
    assert run.reasons[0]["fields"] == ["total_amount"]
    assert run.model_output["einvoice_mismatches"] == [{"field": "total_amount", "xml": "215.07", "page": "251.07"}]
    assert run.model_output["page"]["fields"]["total_amount"] == "251.07"

    from invoicechain.ap.review_routing import review_reasons

    with session_scope(settings) as s:
        found = review_reasons(s, s.get(Invoice, sub.invoice.id), settings)
    assert [r["code"] for r in found] == ["EINVOICE_MISMATCH"] and found[0]["fields"] == ["total_amount"]


def test_agreeing_page_is_no_finding(settings):
    name = "EN16931_Einfach.pdf"
    sub = documents.submit_document((DATA / name).read_bytes(), name, "application/pdf", settings=settings)
    documents.run_ingest(sub.invoice.id, settings)
    documents.extraction_inputs([sub.invoice.id], settings)
    page = copy.deepcopy(EXPECTED[name]["fields"])
    page["subtotal"] = "473"  # printed without decimals: the same amount
    documents.save_extraction(sub.invoice.id, _page_reading(page), t0=0.0, settings=settings)
    run = _extract_step(settings, sub.invoice.id)
    assert run.reasons == [] and "einvoice_mismatches" not in run.model_output


def test_hostile_xml_upload_ends_failed_with_a_reason(settings):
    evil = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    sub = documents.submit_document(evil, "evil.xml", "application/xml", settings=settings)
    result = documents.run_ingest(sub.invoice.id, settings)
    assert result.decision == Decision.FAILED and not result.proceed
    with session_scope(settings) as s:
        inv = s.get(Invoice, sub.invoice.id)
        assert inv.status == "failed" and "document type" in inv.error
