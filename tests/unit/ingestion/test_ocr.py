"""OCR of scans and photos with the real engine (rapidocr-onnxruntime, models in the wheel): a
clear refusal for every kind of bad input (reading real pages: tests/integration/test_ocr_engine.py)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

from ingestion import ocr
from invoicechain.config import Settings

DATA = Path(__file__).resolve().parents[2] / "data" / "ocr"


def _settings(**kw) -> Settings:
    return Settings(ocr_dpi=150, **kw)


def _png(width: int, height: int, color="white") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def _blank_pdf(pages: int) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(595, 842)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _word(text, x, y, w, h=20, angle=0.0):
    c, s = math.cos(angle), math.sin(angle)
    corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    return ocr.Word(text, 0.9, [[px * c - py * s, px * s + py * c] for px, py in corners])


def test_words_become_reading_order_lines_with_column_breaks():
    words = [_word("Total", 50, 300, 60), _word("1.005,55", 400, 302, 90),
             _word("Rechnung", 50, 100, 100), _word("Nr.", 160, 101, 30), _word("42", 200, 99, 25)]
    assert ocr.group_lines(words) == ["Rechnung Nr. 42", "", "Total  1.005,55"]


def test_a_skewed_photo_still_gives_one_line_per_printed_line():
    angle = math.radians(3)  # 3 degrees: the right end of a wide line sits lower than the next line's start
    words = [_word("Summe", 50, 100, 120, angle=angle), _word("845,00", 900, 100, 120, angle=angle),
             _word("MwSt", 50, 130, 120, angle=angle), _word("160,55", 900, 130, 120, angle=angle)]
    assert ocr.group_lines(words) == ["Summe  845,00", "MwSt  160,55"]


def test_a_one_pixel_image_is_unreadable_not_a_crash():
    out = ocr.read_scan(_png(1, 1), "image/png", _settings())
    assert (out.code, out.terminal) == ("OCR_IMAGE_TOO_SMALL", "needs_ocr")
    assert "1x1 pixels" in out.message


def test_a_corrupt_image_fails_with_its_reason():
    data = _png(200, 200)
    out = ocr.read_scan(data[:40] + b"\x00garbage" * 20, "image/png", _settings())
    assert (out.code, out.terminal) == ("CORRUPT_IMAGE", "failed")
    assert "damaged" in out.message


def test_a_blank_page_is_unreadable():
    out = ocr.read_scan(_png(600, 800), "image/png", _settings())
    assert (out.code, out.terminal) == ("OCR_UNREADABLE", "needs_ocr")
    assert "no text was found" in out.message


def test_a_200_page_scan_is_refused_before_any_page_is_read():
    out = ocr.read_scan(_blank_pdf(200), "application/pdf", _settings(ocr_max_pages=20))
    assert (out.code, out.terminal, out.page_count) == ("OCR_TOO_MANY_PAGES", "needs_ocr", 200)
    assert out.pages == [] and "200 pages" in out.message and "INVOICECHAIN_OCR_MAX_PAGES" in out.message


def test_the_time_limit_stops_ocr_between_pages():
    out = ocr.read_scan(_blank_pdf(3), "application/pdf", _settings(ocr_time_limit_s=1e-6))
    assert (out.code, out.terminal) == ("OCR_TIME_LIMIT", "needs_ocr")
    assert "INVOICECHAIN_OCR_TIME_LIMIT_S" in out.message


def test_an_oversized_image_is_refused_unread():
    out = ocr.read_scan(_png(400, 400), "image/png", _settings(ocr_max_pixels=10_000))
    assert (out.code, out.terminal) == ("OCR_IMAGE_TOO_LARGE", "failed")


def test_ocr_turned_off_leaves_the_scan_for_a_person():
    out = ocr.read_scan(_png(600, 800), "image/png", _settings(ocr_enabled=False))
    assert (out.code, out.terminal) == ("OCR_DISABLED", "needs_ocr")


@pytest.mark.parametrize("data, kind", [
    (b"\x89PNG\r\n\x1a\n....", "image/png"), (b"\xff\xd8\xff\xe0....", "image/jpeg"),
    (b"II*\x00....", "image/tiff"), (b"MM\x00*....", "image/tiff"), (b"%PDF-1.7", None),
])
def test_images_are_recognised_by_their_magic_number(data, kind):
    assert ocr.sniff_image(data) == kind


def test_scripts_other_than_latin_are_named():
    assert ocr.unsupported_script("Rechnung Nr. 42 vom 31.01.2014, Summe 1.589,80 €") is None
    message = ocr.unsupported_script("Счёт-фактура № 42 от 31.01.2014. Итого к оплате: 1 589,80 руб.")
    assert message and "Cyrillic" in message and "Latin script only" in message
    assert "Cjk" in ocr.unsupported_script("发票号码 12345 开票日期 2024年7月5日 合计 1721.00")


def test_a_text_layer_without_character_map_counts_as_no_text():
    assert ocr.garbled_text_layer("(cid:1)(cid:2)(cid:3)" * 30)
    assert not ocr.garbled_text_layer("Invoice 42\nTotal 1,810.80 EUR")


def test_a_decimal_point_lost_in_a_table_row_is_put_back_only_where_one_change_balances_it():
    assert ocr.restore_lost_points("ART-61964  Travel time  h  15  119.44  179.16") == (
        "ART-61964  Travel time  h  1.5  119.44  179.16")
    assert ocr.restore_lost_points("Storch  2  12,5  25,00\nFracht  15  2,00  3,00") == (
        "Storch  2  12,5  25,00\nFracht  1,5  2,00  3,00")
    # Balanced rows, rows no single change balances, and text without amounts stay as read.
    for line in ("Storch  10  20,00  200,00", "Consulting  12  110.00  1,250.00", "PO 4500012 of 12 May 2026"):
        assert ocr.restore_lost_points(line) == line
