"""The review desk's reading of a real PDF: each grounded value's boxes on the page cover
exactly its printed words, pages render, and only the decisions that apply are offered."""

from __future__ import annotations

import io
from pathlib import Path

import pdfplumber
import pytest

from invoicechain import desk
from invoicechain.decisions import InvoiceStatus
from invoicechain.pdf import pdf_text

ROOT = Path(__file__).resolve().parents[3]
PDF = ROOT / "samples" / "inv-00000.pdf"


def _span(text: str, value: str, nth: int = 0) -> dict:
    start = -1
    for _ in range(nth + 1):
        start = text.index(value, start + 1)
    return {"start": start, "end": start + len(value)}


def _words_in(pdf_bytes: bytes, box: dict) -> str:
    with pdfplumber.open(io.BytesIO(pdf_bytes)) as pdf:
        page = pdf.pages[box["page"] - 1]
        w, h = float(page.width), float(page.height)
        # a hair of slack: the box is the words' own extent
        crop = page.within_bbox((box["x0"] * w - 0.5, box["top"] * h - 0.5, box["x1"] * w + 0.5, box["bottom"] * h + 0.5))
        return " ".join(x["text"] for x in crop.extract_words())


def test_grounded_values_are_boxed_on_their_printed_words():
    data = PDF.read_bytes()
    text = pdf_text(data).text
    grounding = {
        "invoice_id": _span(text, "INV0003382"),
        "po_number": _span(text, "PO26-021063"),
        "vendor_name": _span(text, "Garcia, Parker and Anderson Inc."),
        # printed twice (header and footer): the footer occurrence is the one grounded here
        "client_name": None,
        "bank": {"account_number": _span(text, "1236826"), "iban": None},
    }
    footer = _span(text, "Garcia, Parker and Anderson Inc.", nth=1)
    boxes = desk.span_boxes(data, text, {**grounding, "vendor_address": footer})
    assert set(boxes) == {"invoice_id", "po_number", "vendor_name", "bank.account_number", "vendor_address"}
    assert _words_in(data, boxes["invoice_id"][0]) == "INV0003382"
    assert _words_in(data, boxes["po_number"][0]) == "PO26-021063"
    assert _words_in(data, boxes["bank.account_number"][0]) == "1236826"
    header, foot = boxes["vendor_name"][0], boxes["vendor_address"][0]
    assert _words_in(data, header) == "Garcia, Parker and Anderson Inc."
    # the n-th occurrence in the text is the n-th on the page: the footer sits lower
    assert foot["top"] > header["top"] + 0.5
    for box in boxes["invoice_id"] + boxes["vendor_name"]:
        assert 0 <= box["x0"] < box["x1"] <= 1 and 0 <= box["top"] < box["bottom"] <= 1


def test_spans_outside_the_text_or_not_printed_are_left_out():
    data = PDF.read_bytes()
    text = pdf_text(data).text
    boxes = desk.span_boxes(data, text, {"invoice_id": {"start": len(text) + 5, "end": len(text) + 9},
                                         "po_number": {"grounded": False}, "tax": None})
    assert boxes == {}


def test_page_renders_once_and_is_cached(tmp_path):
    png = desk.render_page(PDF, 1, tmp_path)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.glob("page-1-*.png"))
    with pytest.raises(desk.PageRenderError):
        desk.render_page(PDF, 99, tmp_path)


def test_only_the_decisions_that_apply_are_offered():
    reached = {"validate_invoice": "VALID", "match_po": "NO_MATCH", "run_approval": "PENDING_APPROVAL"}
    options = desk.override_options(InvoiceStatus.PENDING_APPROVAL, reached)
    # never the decision a step already has, never APPROVED past the approvers, no step not reached
    assert options == {"validate_invoice": ["INVALID"], "match_po": ["MATCHED", "PARTIAL", "NO_PO"],
                       "run_approval": ["REJECTED"]}
    assert desk.override_options(InvoiceStatus.PROCESSING, reached) == {}
    assert desk.override_options(InvoiceStatus.PAYMENT_READY, {**reached, "trigger_payment": "SCHEDULED"}) == {}
    actions = desk.allowed_actions(InvoiceStatus.PENDING_APPROVAL, {"extract": "OK", **reached})
    assert actions["approve"] and actions["reject"] and actions["correct"] and not actions["confirm"]
    done = desk.allowed_actions(InvoiceStatus.PAYMENT_READY, {"extract": "OK", **reached, "trigger_payment": "SCHEDULED"})
    assert not any(done[k] for k in ("approve", "reject", "correct", "confirm", "overrides"))
