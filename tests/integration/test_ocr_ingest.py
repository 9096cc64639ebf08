"""The ingest step on real Postgres reads scans and photos with OCR and stores per-page
confidence; bad images, oversized scans and unsupported scripts end in a terminal state with
one clear reason."""

from __future__ import annotations

import io
from pathlib import Path

from ingestion import documents
from invoicechain.db.session import session_scope
from invoicechain.db.tables import Document, Invoice, StepRun
from invoicechain.decisions import Decision, Step

DATA = Path(__file__).resolve().parents[1] / "data" / "ocr"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _ingest(settings, data: bytes, name: str, declared: str | None = None):
    sub = documents.submit_document(data, name, declared, settings=settings)
    result = documents.run_ingest(sub.invoice.id, settings)
    with session_scope(settings) as s:
        inv = s.get(Invoice, sub.invoice.id)
        doc = s.get(Document, inv.document_id)
        run = s.query(StepRun).filter_by(invoice_id=inv.id, step=Step.INGEST).one()
        s.expunge_all()
    return result, inv, doc, run


def test_a_phone_photo_is_read_and_its_confidence_stored(settings):
    result, inv, doc, run = _ingest(settings, (DATA / "kraxi-photo.jpg").read_bytes(), "kraxi.jpg", "image/jpeg")
    assert result.decision == Decision.OK and result.proceed
    assert doc.content_type == "image/jpeg" and doc.path.endswith(".jpg")
    assert "Rechnungssumme brutto" in doc.text and doc.page_count == 1
    assert doc.ocr["engine"] == "tesseract" and doc.ocr["pages"][0]["confidence"] > 0.8
    assert run.reasons[0]["code"] == "OCR"
    assert inv.status == "processing"
    # what the document says about itself, detected from the OCR text and stored on the invoice
    assert (inv.document_type, inv.paid, inv.language) == ("invoice", False, "de")


def test_a_scanned_pdf_is_read_instead_of_ending_needs_ocr(settings):
    result, inv, doc, _ = _ingest(settings, (DATA / "inv-00000-scan.pdf").read_bytes(), "scan.pdf", "application/pdf")
    assert result.decision == Decision.OK
    assert doc.content_type == "application/pdf" and doc.ocr["confidence"] > 0.8
    assert "INVOICE" in doc.text.upper()


def _png(w, h) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), "white").save(buf, "PNG")
    return buf.getvalue()


def test_a_one_pixel_image_ends_needs_ocr_with_its_reason(settings):
    result, inv, doc, run = _ingest(settings, _png(1, 1), "dot.png")
    assert result.decision == Decision.NEEDS_OCR and not result.proceed
    assert inv.status == "needs_ocr" and "too small" in inv.error
    assert run.reasons[0]["code"] == "OCR_IMAGE_TOO_SMALL" and doc.ocr["code"] == "OCR_IMAGE_TOO_SMALL"


def test_a_corrupt_image_fails_with_its_reason(settings):
    data = _png(300, 300)
    result, inv, _, run = _ingest(settings, data[:60] + b"\x13" * 500, "broken.png", "image/png")
    assert result.decision == Decision.FAILED
    assert inv.status == "failed" and "damaged" in inv.error and run.reasons[0]["code"] == "CORRUPT_IMAGE"


def test_a_200_page_scan_stops_at_the_page_limit(settings):
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(200):
        writer.add_blank_page(595, 842)
    buf = io.BytesIO()
    writer.write(buf)
    result, inv, doc, _ = _ingest(settings, buf.getvalue(), "big-scan.pdf", "application/pdf")
    assert result.decision == Decision.NEEDS_OCR
    assert inv.status == "needs_ocr" and "200 pages" in inv.error and doc.page_count == 200


def test_a_pdf_in_an_unsupported_script_fails_with_its_reason(settings):
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(TTFont("DejaVu", FONT))
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.setFont("DejaVu", 12)
    for i, line in enumerate(["ООО «Ромашка»", "Счёт на оплату № 42 от 31 января 2024 г.",
                              "Покупатель: ИП Иванов", "Итого к оплате: 1 589,80 руб."]):
        c.drawString(72, 760 - 20 * i, line)
    c.save()
    result, inv, _, run = _ingest(settings, buf.getvalue(), "schet.pdf", "application/pdf")
    assert result.decision == Decision.FAILED
    assert inv.status == "failed" and "Cyrillic" in inv.error and run.reasons[0]["code"] == "UNSUPPORTED_SCRIPT"


def test_the_api_shows_what_the_document_says_about_itself_and_its_ocr(settings, redis_url, monkeypatch, auth_headers):
    """A photo submitted over HTTP and ingested: `GET /v1/invoices/{id}` shows its type, paid
    indication, language and the OCR summary (engine, per-page and lowest confidence)."""
    from fastapi.testclient import TestClient

    from invoicechain import config
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    from api.main import create_app

    try:
        with TestClient(create_app(), raise_server_exceptions=False, headers=auth_headers) as client:
            photo = (DATA / "kraxi-photo.jpg").read_bytes()
            r = client.post("/v1/invoices", files={"file": ("kraxi.jpg", photo, "image/jpeg")})
            assert r.status_code == 202, r.text
            invoice_id = r.json()["id"]
            assert documents.run_ingest(invoice_id, settings).decision == Decision.OK
            got = client.get(f"/v1/invoices/{invoice_id}")
            assert got.status_code == 200, got.text
            body = got.json()
    finally:
        config.get_settings.cache_clear()
    assert (body["document_type"], body["paid"], body["language"]) == ("invoice", False, "de")
    ocr = body["document"]["ocr"]
    assert ocr["engine"] == "tesseract" and ocr["confidence"] > 0.8
    assert len(ocr["pages"]) == 1 and ocr["pages"][0]["confidence"] >= ocr["confidence"]
