"""OCR with the real engine on a real photo and a real scanned PDF: reading-order lines and
per-page confidence."""

from __future__ import annotations

from pathlib import Path

from ingestion import ocr
from invoicechain.config import Settings

DATA = Path(__file__).resolve().parents[1] / "data" / "ocr"


def _settings(**kw) -> Settings:
    return Settings(ocr_dpi=150, **kw)


def test_a_phone_photo_is_read_into_lines_with_page_confidence():
    out = ocr.read_scan((DATA / "kraxi-photo.jpg").read_bytes(), "image/jpeg", _settings())
    assert out.ok, out.message
    assert out.page_count == 1 and len(out.pages) == 1
    assert out.pages[0].confidence > 0.8 and out.pages[0].words > 30
    lines = out.text.splitlines()
    assert any("Rechnungssumme brutto" in line and "1.005,55" in line for line in lines)
    assert any("Kraxi" in line for line in lines[:3])  # the letterhead comes first
    summary = out.summary()
    assert summary["engine"] == "tesseract" and summary["confidence"] == summary["pages"][0]["confidence"]


def test_a_scanned_pdf_without_text_layer_is_read():
    out = ocr.read_scan((DATA / "inv-00000-scan.pdf").read_bytes(), "application/pdf", _settings())
    assert out.ok, out.message
    assert out.page_count == 1 and out.pages[0].confidence > 0.8
    assert "INVOICE" in out.text.upper()


def test_umlauts_are_read_as_printed():
    out = ocr.read_scan((DATA / "kraxi-photo.jpg").read_bytes(), "image/jpeg", _settings())
    assert "Beträge in EUR" in out.text and "zuzüglich 19% MwSt." in out.text


def test_without_the_language_packs_rapidocr_reads_and_says_so():
    out = ocr.read_scan((DATA / "inv-00000-scan.pdf").read_bytes(), "application/pdf",
                        _settings(ocr_languages="xx+yy"))
    assert out.ok, out.message
    assert out.summary()["engine"] == "rapidocr-onnxruntime" and "INVOICE" in out.text.upper()


def test_each_page_keeps_the_reading_whose_rows_add_up_and_whose_confidence_clears_the_floor():
    from PIL import Image

    langs = ocr.tesseract_languages(_settings().ocr_languages)
    # A clean photo: Tesseract's reading, umlauts and all.
    text, page = ocr.ocr_page(Image.open(DATA / "kraxi-photo.jpg"), 1, "tesseract", langs)
    assert page.engine == "tesseract" and "Beträge" in text
    # A photo where Tesseract misreads a row's quantity: RapidOCR's reading has more rows that add up.
    photo = Image.open(DATA / "inv-00004-photo.jpg")
    text, page = ocr.ocr_page(photo, 1, "tesseract", langs)
    assert page.engine == "rapidocr-onnxruntime" and ocr.balanced_rows(text) == 7
    # RapidOCR alone (Tesseract not chosen) reads the same.
    assert ocr.ocr_page(photo, 1, "rapidocr-onnxruntime")[1].engine == "rapidocr-onnxruntime"
