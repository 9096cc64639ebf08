"""The eight document layouts. Each turns an `InvoiceDoc` into PDF bytes.

table        classic invoice: letterhead left, title and header fields right, ruled item table
two_column   coloured band, vendor and header-field box side by side, gridded table, boxed totals
letter       business letter: letterhead, window address, subject, prose, simple item list
multipage    long item table over several pages with carried-forward and brought-forward sums
receipt      narrow till receipt in a monospaced font
credit_note  credit note with negative amounts that refers to an earlier invoice
service      service invoice without line items: one description and a fee
remittance   invoice with a detachable remittance slip that repeats the payment data
"""

from __future__ import annotations

import random
from collections.abc import Callable

from training.synth.document import InvoiceDoc, Line
from training.synth.labels import Wording
from training.synth.render import (
    BLACK,
    GREY,
    LIGHT,
    Sheet,
    bank_lines,
    contact_lines,
    draw_client,
    draw_footer,
    draw_lines,
    draw_pairs,
    draw_stamp,
    draw_totals,
    draw_vendor,
    meta_rows,
    name_size,
    sentence_tokens,
    tax_note,
    total_rows,
    wrap,
)

WHITE = (1, 1, 1)


def _setup(doc: InvoiceDoc, pagesize=None) -> tuple[Sheet, Wording, random.Random]:
    rng = random.Random(doc.seed)
    return Sheet(doc, pagesize), Wording(doc.style.language, rng), rng


def _title(doc: InvoiceDoc, w: Wording) -> str:
    title = w({"credit_note": "credit_note", "receipt": "receipt"}.get(doc.kind, "invoice"))
    # "Tax invoice" is what Australian and British VAT invoices are called, not others.
    if title == "TAX INVOICE" and doc.vendor.country not in ("AU", "GB"):
        return "INVOICE"
    return title


def _page_header(sheet: Sheet, doc: InvoiceDoc, w: Wording, rng: random.Random) -> None:
    """Small print at the top edge: page numbering or the vendor's web address."""
    roll = rng.random()
    if roll < 0.3:
        sheet.text(sheet.width - 40, sheet.height - 24, w("page", p=1, n=1), 7, "regular", "right", GREY)
    elif roll < 0.45 and doc.vendor.website:
        sheet.text(40, sheet.height - 24, doc.vendor.website, 7, "regular", color=GREY)


# --- item tables ------------------------------------------------------------------------------


class ItemTable:
    """Column geometry of an item table, chosen once per document."""

    def __init__(self, sheet: Sheet, doc: InvoiceDoc, w: Wording, rng: random.Random, x0: float, x1: float,
                 size: float = 8.5, row_height: float = 14, grid: bool = False, zebra: bool = False):
        self.sheet, self.doc, self.w = sheet, doc, w
        self.x0, self.x1, self.size, self.row_height = x0, x1, size, row_height
        self.grid, self.zebra = grid, zebra
        self.with_pos = rng.random() < 0.35
        self.with_item_no = any(ln.item_no for ln in doc.lines) and rng.random() < 0.6
        self.with_unit = rng.random() < 0.4
        # Right-aligned number columns, then optional unit and item-number columns; the
        # description takes what is left. Every header and cell is held inside its column.
        right = x1 - 4
        self.amount_r = right
        self.price_r = right - 78
        self.qty_r = self.price_r - 74
        self.unit_x: float | None = self.qty_r - 80 if self.with_unit else None
        x = x0 + 4
        self.pos_x = x if self.with_pos else None
        x += 22 if self.with_pos else 0
        self.item_x = x if self.with_item_no else None
        x += 58 if self.with_item_no else 0
        self.desc_x = x
        self.desc_width = (self.unit_x if self.unit_x is not None else self.qty_r - 44) - 8 - self.desc_x

    def header(self, y: float) -> float:
        s, w, size = self.sheet, self.w, self.size
        top = y + self.row_height - 3.5
        if self.grid:
            s.rect(self.x0, y - 4, self.x1 - self.x0, self.row_height, fill=LIGHT, stroke=GREY)
        else:
            s.rule(self.x0, top, self.x1, top, 0.8, BLACK)
            s.rule(self.x0, y - 4, self.x1, y - 4, 0.5)
        if self.with_pos:
            s.text(self.pos_x, y, "#", size, "bold")
        if self.with_item_no:
            s.text(self.item_x, y, w("item_no"), size, "bold", max_width=54)
        s.text(self.desc_x, y, w("description"), size, "bold", max_width=self.desc_width)
        if self.with_unit:
            s.text(self.unit_x, y, w("unit"), size, "bold", max_width=32)
        s.text(self.qty_r, y, w("qty"), size, "bold", "right", max_width=40)
        s.text(self.price_r, y, w("unit_price"), size, "bold", "right", max_width=66)
        s.text(self.amount_r, y, w("amount"), size, "bold", "right", max_width=70)
        return y - self.row_height - 2

    def row(self, y: float, k: int, line: Line) -> float:
        s, doc, size = self.sheet, self.doc, self.size
        if self.zebra and k % 2:
            s.rect(self.x0, y - 4, self.x1 - self.x0, self.row_height, fill=(0.96, 0.96, 0.96), stroke=None)
        if self.grid:
            s.rule(self.x0, y - 4, self.x1, y - 4, 0.3)
        if self.with_pos:
            s.text(self.pos_x, y, str(k + 1), size)
        if self.with_item_no and line.item_no:
            s.text(self.item_x, y, line.item_no, size, max_width=54)
        s.text(self.desc_x, y, line.description, size, max_width=self.desc_width)
        if self.with_unit and line.unit:
            s.text(self.unit_x, y, line.unit, size, max_width=32)
        s.text(self.qty_r, y, doc.qty(line.quantity), size, align="right")
        s.text(self.price_r, y, doc.number_text(line.unit_price), size, align="right")
        s.text(self.amount_r, y, doc.number_text(line.amount), size, align="right")
        return y - self.row_height

    def draw(self, y: float, lines: list[Line] | None = None, start: int = 0) -> float:
        y = self.header(y)
        for k, line in enumerate(lines if lines is not None else self.doc.lines):
            y = self.row(y, start + k, line)
        if not self.grid:
            self.sheet.rule(self.x0, y + self.row_height - 4, self.x1, y + self.row_height - 4, 0.5)
        return y - 6


def _notes(sheet: Sheet, doc: InvoiceDoc, w: Wording, rng: random.Random, x: float, y: float,
           terms_printed: bool, width: float = 250) -> float:
    """Payment terms (when not in the header), tax note, and bank details."""
    lines: list[str] = []
    if doc.terms and not terms_printed:
        lines.append(f"{w('terms')}: {doc.terms}")
    note = tax_note(doc, w)
    if note:
        lines.append(note)
    y = draw_lines(sheet, x, y, lines, 8.5, 11, max_width=width)
    banks = bank_lines(doc, w, rng)
    if banks:
        y -= 4
        sheet.text(x, y, w("bank_details"), 8.5, "bold")
        y = draw_lines(sheet, x, y - 11, banks, 8.5, 11, max_width=width)
    return y


def _free_stamp(sheet: Sheet, doc: InvoiceDoc, w: Wording, y_free_top: float, x: float = 370) -> None:
    """Put the stamp in the empty band above the footer when there is room."""
    if doc.stamp and y_free_top > 120:
        draw_stamp(sheet, doc, w, x, min(y_free_top - 30, 160))


# --- layouts ----------------------------------------------------------------------------------


def render_table(doc: InvoiceDoc) -> bytes:
    sheet, w, rng = _setup(doc)
    _page_header(sheet, doc, w, rng)
    top = sheet.height - 50
    x0, x1 = 45, sheet.width - 45
    with_logo = rng.random() < 0.5
    vx = x0 + (52 if with_logo else 0)
    if with_logo:
        sheet.logo(x0, top - 32, 40, rng)
    y_vendor = draw_vendor(sheet, doc, w, rng, vx, top, max_width=300 - vx)
    sheet.text(x1, top, _title(doc, w), 18, "bold", "right", sheet.accent)
    terms_in_meta = rng.random() < 0.6
    rows = meta_rows(doc, w, rng, with_terms=terms_in_meta)
    y_meta = draw_pairs(sheet, 330, x1, top - 30, rows, 8.5, 12, value_align="right", value_width=120,
                        label_width=95)
    y = min(y_vendor, y_meta) - 16
    y = draw_client(sheet, doc, w, x0, y, max_width=260) - 18
    table = ItemTable(sheet, doc, w, rng, x0, x1, zebra=rng.random() < 0.3)
    y = table.draw(y)
    y_totals = draw_totals(sheet, total_rows(doc, w, rng), 345, x1 - 4, y - 8)
    y_notes = _notes(sheet, doc, w, rng, x0, y - 8, terms_in_meta, width=270)
    y = min(y_totals, y_notes) - 12
    if rng.random() < 0.6:
        sheet.text(x0, y, w("thanks"), 8.5, "italic")
        y -= 14
    _free_stamp(sheet, doc, w, y)
    draw_footer(sheet, doc, w, rng)
    return sheet.pdf()


def render_two_column(doc: InvoiceDoc) -> bytes:
    sheet, w, rng = _setup(doc)
    x0, x1 = 40, sheet.width - 40
    band_top = sheet.height - 36
    sheet.rect(x0, band_top - 34, x1 - x0, 34, fill=sheet.accent, stroke=None)
    sheet.text(x0 + 12, band_top - 23, _title(doc, w), 16, "bold", color=WHITE)
    if doc.stamp and doc.stamp[0] == "copy":
        sheet.text(x1 - 12, band_top - 22, w("copy"), 10, "bold", "right", WHITE)
    y = band_top - 58
    y_vendor = draw_vendor(sheet, doc, w, rng, x0, y, size=11, max_width=250)
    rows = meta_rows(doc, w, rng, with_terms=True)
    box_h = 12.5 * len(rows) + 10
    sheet.rect(318, y - box_h + 14, x1 - 318, box_h, stroke=sheet.accent, width=0.8)
    y_meta = draw_pairs(sheet, 326, x1 - 8, y, rows, 8.5, 12.5, value_align="right", value_width=110,
                        label_width=100)
    y = min(y_vendor, y_meta) - 18
    y_client = draw_client(sheet, doc, w, x0, y, max_width=250)
    if rng.random() < 0.5:
        sheet.text(318, y, w("ship_to") + ":", 8.5, "bold", color=GREY)
        sheet.text(318, y - 12, doc.client.name, 9.5, "bold", max_width=x1 - 318)
        y_ship = draw_lines(sheet, 318, y - 24, doc.client.address_lines, 9, 11, max_width=x1 - 318)
        y_client = min(y_client, y_ship)
    y = y_client - 16
    table = ItemTable(sheet, doc, w, rng, x0, x1, size=8.5, row_height=15, grid=True)
    y = table.draw(y)
    y_totals = draw_totals(sheet, total_rows(doc, w, rng), 360, x1 - 6, y - 10, box=True)
    y_notes = _notes(sheet, doc, w, rng, x0, y - 10, True, width=290)
    y = min(y_totals, y_notes) - 10
    if doc.stamp and doc.stamp[0] != "copy":
        _free_stamp(sheet, doc, w, y, x=x0 + 10)
    draw_footer(sheet, doc, w, rng, with_bank=False)
    return sheet.pdf()


def render_letter(doc: InvoiceDoc) -> bytes:
    sheet, w, rng = _setup(doc)
    _page_header(sheet, doc, w, rng)
    cx = sheet.width / 2
    top = sheet.height - 48
    x0, x1 = 62, sheet.width - 55
    sheet.text(cx, top, doc.vendor.name, name_size(doc, 12), "bold", "center", sheet.accent, x1 - x0)
    sheet.text(cx, top - 14, " · ".join(doc.vendor.address_lines), 8.5, "regular", "center", max_width=x1 - x0)
    sheet.text(cx, top - 25, " · ".join(contact_lines(doc, w, rng)[:3]), 7.5, "regular", "center", GREY, x1 - x0)
    sheet.rule(x0, top - 32, x1, top - 32, 0.6, sheet.accent)
    # Return address line above the window of the envelope.
    y = top - 78
    sheet.text(x0, y, f"{doc.vendor.name} · {doc.vendor.address_lines[0]}", 6, "regular", color=GREY,
               max_width=230)
    y_client = draw_client(sheet, doc, w, x0, y - 14, label=False, max_width=230)
    rows = meta_rows(doc, w, rng, with_terms=False)
    y_meta = draw_pairs(sheet, 350, x1, y - 14, rows, 8.5, 12, value_align="right", label_weight="regular",
                        value_width=100, label_width=90)
    y = min(y_client, y_meta) - 22
    subject = f"{_title(doc, w)} {doc.number}" if doc.number else _title(doc, w)
    sheet.text(x0, y, subject, 11, "bold")
    y -= 24
    sheet.text(x0, y, w("dear"), 10)
    y -= 16
    width = x1 - x0
    intro = w("letter_intro_po") if doc.po_number else w("letter_intro")
    for line in wrap(sheet, sentence_tokens(intro, po=doc.po_number or ""), width, 10):
        sheet.text(x0, y, line, 10)
        y -= 13
    y -= 8
    table = ItemTable(sheet, doc, w, rng, x0, x1, size=9, row_height=14)
    y = table.draw(y)
    y = draw_totals(sheet, total_rows(doc, w, rng), x1 - 210, x1 - 4, y - 6) - 8
    paragraphs = []
    if doc.total is not None:
        amount = doc.money(doc.total, True)
        if doc.due_date:
            paragraphs.append(sentence_tokens(w("letter_pay"), amount=amount, due=doc.date_text(doc.due_date)))
        else:
            paragraphs.append(sentence_tokens(w("letter_pay_nodue"), amount=amount))
    note = tax_note(doc, w)
    if note:
        paragraphs.append(note.split())
    for tokens in paragraphs:
        for line in wrap(sheet, tokens, width, 10):
            sheet.text(x0, y, line, 10)
            y -= 13
        y -= 5
    if doc.terms:
        sheet.text(x0, y, f"{w('terms')}: {doc.terms}", 10)
        y -= 16
    banks = bank_lines(doc, w, rng)
    if banks:
        sheet.text(x0, y, " · ".join(banks), 9, max_width=width)
        y -= 22
    sheet.text(x0, y, w("regards"), 10)
    y -= 30
    sheet.text(x0, y, doc.signatory or w("signature"), 10, "italic")
    _free_stamp(sheet, doc, w, y - 10)
    draw_footer(sheet, doc, w, rng)
    return sheet.pdf()


def render_multipage(doc: InvoiceDoc) -> bytes:
    sheet, w, rng = _setup(doc)
    x0, x1 = 45, sheet.width - 45
    first, rest = rng.randint(11, 14), rng.randint(16, 20)
    chunks = [doc.lines[:first]]
    k = first
    while k < len(doc.lines):
        chunks.append(doc.lines[k:k + rest])
        k += rest
    pages = len(chunks)
    top = sheet.height - 50
    terms_in_meta = rng.random() < 0.5
    table = ItemTable(sheet, doc, w, rng, x0, x1, size=8.5, row_height=14, zebra=rng.random() < 0.4)
    running = None
    start = 0
    for page, chunk in enumerate(chunks, start=1):
        if page == 1:
            y_vendor = draw_vendor(sheet, doc, w, rng, x0, top, max_width=270)
            sheet.text(x1, top, _title(doc, w), 18, "bold", "right", sheet.accent)
            rows = meta_rows(doc, w, rng, with_terms=terms_in_meta)
            y_meta = draw_pairs(sheet, 330, x1, top - 30, rows, 8.5, 12, value_align="right", value_width=120,
                                label_width=95)
            y = draw_client(sheet, doc, w, x0, min(y_vendor, y_meta) - 16, max_width=260) - 18
        else:
            sheet.new_page()
            head = f"{doc.vendor.name} · {_title(doc, w)} {doc.number or ''}".strip()
            sheet.text(x0, top, head, 9, "bold", max_width=x1 - x0 - 90)
            y = top - 30
            sheet.text(x0 + 4, y, w("brought", p=page - 1), 8.5, "italic")
            sheet.text(x1 - 4, y, doc.number_text(running), 8.5, "italic", "right")
            y -= 20
        sheet.text(x1, sheet.height - 30, w("page", p=page, n=pages), 7.5, "regular", "right", GREY)
        y = table.draw(y, chunk, start)
        start += len(chunk)
        running = sum((ln.amount for ln in doc.lines[:start]), start=0)
        if page < pages:
            sheet.text(x0 + 4, y - 4, w("carried"), 8.5, "italic")
            sheet.text(x1 - 4, y - 4, doc.number_text(running), 8.5, "italic", "right")
            draw_footer(sheet, doc, w, random.Random(doc.seed + page))
    y_totals = draw_totals(sheet, total_rows(doc, w, rng), 345, x1 - 4, y - 8)
    y_notes = _notes(sheet, doc, w, rng, x0, y - 8, terms_in_meta, width=270)
    _free_stamp(sheet, doc, w, min(y_totals, y_notes) - 10)
    draw_footer(sheet, doc, w, random.Random(doc.seed))
    return sheet.pdf()


def render_receipt(doc: InvoiceDoc) -> bytes:
    rng = random.Random(doc.seed)
    w = Wording(doc.style.language, rng)
    size, leading, width = 8, 10.5, 226.8
    rows: list[tuple[str, str, str]] = []  # (left, right, weight); right empty = centred

    def centre(text: str, weight: str = "regular") -> None:
        rows.append(("", text, weight + ":c"))

    def pair(left: str, right: str, weight: str = "regular") -> None:
        rows.append((left, right, weight))

    rule = "-" * 34
    centre(doc.vendor.name, "bold")
    for line in doc.vendor.address_lines:
        centre(line)
    if doc.vendor.phone:
        centre(f"{w('tel')} {doc.vendor.phone}")
    if doc.vendor.tax_id:
        centre(f"{'ABN' if doc.vendor.country == 'AU' else w('vat_no')} {doc.vendor.tax_id}")
    centre(rule)
    centre(_title(doc, w), "bold")
    if doc.number:
        pair(w("receipt_no"), doc.number)
    pair(doc.date_text(doc.invoice_date), doc.receipt_time or "")
    if doc.client:
        pair(w("bill_to"), "")
        pair(f"  {doc.client.name}", "")
    if rng.random() < 0.6:
        pair(w("cashier"), str(rng.randint(1, 12)))
    centre(rule)
    for line in doc.lines:
        pair(line.description, "")
        pair(f"  {doc.qty(line.quantity)} x {doc.number_text(line.unit_price)}", doc.number_text(line.amount))
    centre(rule)
    subtotal_label = w("subtotal").upper() + ("" if doc.total is not None else f" {doc.currency}")
    pair(subtotal_label, doc.number_text(doc.subtotal))
    if doc.tax is not None:
        pair(f"{doc.tax_label} {doc.tax_rate.normalize():f}%", doc.number_text(doc.tax))
    if doc.total is not None:
        pair(f"{w('total').upper()} {doc.currency}", doc.number_text(doc.total), "bold")
    pair(w("card"), f"****{doc.card_digits}")
    centre(rule)
    centre(w("thanks"))
    height = 40 + leading * len(rows)
    sheet = Sheet(doc, (width, height))
    sheet.fonts = {"regular": "Courier", "bold": "Courier-Bold", "italic": "Courier-Oblique"}
    y = height - 22
    for left, right, weight in rows:
        if weight.endswith(":c"):
            sheet.text(width / 2, y, right, size, weight[:-2], "center", max_width=width - 16)
        else:
            right_w = sheet.width_of(right, size, weight) if right else 0
            sheet.text(8, y, left, size, weight, max_width=width - 24 - right_w)
            if right:
                sheet.text(width - 8, y, right, size, weight, "right")
        y -= leading
    return sheet.pdf()


def render_credit_note(doc: InvoiceDoc) -> bytes:
    sheet, w, rng = _setup(doc)
    _page_header(sheet, doc, w, rng)
    x0, x1 = 45, sheet.width - 45
    top = sheet.height - 50
    y_vendor = draw_vendor(sheet, doc, w, rng, x1, top, align="right", size=11, max_width=250)
    title = _title(doc, w)
    sheet.rect(x0, top - 30, sheet.width_of(title, 14, "bold") + 20, 28, fill=sheet.accent, stroke=None)
    sheet.text(x0 + 10, top - 21, title, 14, "bold", color=WHITE)
    y_client = draw_client(sheet, doc, w, x0, top - 60, max_width=250)
    y = min(y_vendor, y_client) - 18
    rows = meta_rows(doc, w, rng, with_terms=False)
    y = draw_pairs(sheet, x0, x0 + 120, y, rows, 9, 12.5, value_width=200, label_width=112)
    if doc.reference_number and doc.reference_date:
        y -= 6
        sheet.text(x0, y, w("refers", num=doc.reference_number, date=doc.date_text(doc.reference_date)), 9,
                   max_width=x1 - x0)
        y -= 13
    sheet.text(x0, y, f"{w('reason')}: {w('credit_reason')}", 9)
    y -= 24
    table = ItemTable(sheet, doc, w, rng, x0, x1, size=8.5, row_height=14)
    y = table.draw(y)
    y = draw_totals(sheet, total_rows(doc, w, rng), 345, x1 - 4, y - 8) - 10
    note = tax_note(doc, w)
    if note:
        sheet.text(x0, y, note, 8.5, max_width=x1 - x0)
        y -= 13
    sheet.text(x0, y, w("credit_offset"), 8.5, "italic")
    _free_stamp(sheet, doc, w, y - 10)
    draw_footer(sheet, doc, w, rng)
    return sheet.pdf()


def render_service(doc: InvoiceDoc) -> bytes:
    sheet, w, rng = _setup(doc)
    _page_header(sheet, doc, w, rng)
    x0, x1 = 50, sheet.width - 50
    top = sheet.height - 55
    y_vendor = draw_vendor(sheet, doc, w, rng, x1, top, align="right", size=11.5, max_width=240)
    sheet.text(x0, top, _title(doc, w), 17, "bold", color=sheet.accent)
    y_client = draw_client(sheet, doc, w, x0, top - 40, max_width=240)
    y = min(y_vendor, y_client) - 18
    rows = meta_rows(doc, w, rng, with_terms=rng.random() < 0.5)
    terms_in_meta = any(label == w("terms") for label, _ in rows)
    y = draw_pairs(sheet, x0, x0 + 125, y, rows, 9, 12.5, value_width=200, label_width=118) - 14
    sheet.rule(x0, y + 8, x1, y + 8, 0.6)
    sheet.text(x0, y - 6, w("service_intro"), 9.5, "bold")
    y -= 22
    fee_y = y
    for line in wrap(sheet, (doc.service_text or "").split(), 300, 9.5):
        sheet.text(x0, y, line, 9.5)
        y -= 12.5
    sheet.text(x1, fee_y, doc.number_text(doc.subtotal), 9.5, "regular", "right")
    sheet.text(x1 - 95, fee_y, w("fee"), 9.5, "regular", "right", GREY, max_width=80)
    sheet.rule(x0, y + 2, x1, y + 2, 0.6)
    y = draw_totals(sheet, total_rows(doc, w, rng), x1 - 200, x1, y - 14) - 6
    y = _notes(sheet, doc, w, rng, x0, y, terms_in_meta, width=x1 - x0) - 8
    sheet.text(x0, y, w("quote_no"), 8, "italic", color=GREY)
    _free_stamp(sheet, doc, w, y - 10)
    draw_footer(sheet, doc, w, rng)
    return sheet.pdf()


def render_remittance(doc: InvoiceDoc) -> bytes:
    sheet, w, rng = _setup(doc)
    _page_header(sheet, doc, w, rng)
    x0, x1 = 45, sheet.width - 45
    top = sheet.height - 45
    y_vendor = draw_vendor(sheet, doc, w, rng, x0, top, size=11, max_width=260, contacts=rng.random() < 0.5)
    sheet.text(x1, top, _title(doc, w), 16, "bold", "right", sheet.accent)
    rows = meta_rows(doc, w, rng, with_terms=True)
    y_meta = draw_pairs(sheet, 330, x1, top - 26, rows, 8.5, 11.5, value_align="right", value_width=120,
                        label_width=95)
    y = draw_client(sheet, doc, w, x0, min(y_vendor, y_meta) - 12, max_width=260) - 14
    table = ItemTable(sheet, doc, w, rng, x0, x1, size=8, row_height=12.5)
    y = table.draw(y)
    y_totals = draw_totals(sheet, total_rows(doc, w, rng), 345, x1 - 4, y - 6, size=8.5, leading=12)
    y_notes = _notes(sheet, doc, w, rng, x0, y - 6, True, width=270)
    # The slip below the cut line repeats what the payer needs.
    cut = min(230, min(y_totals, y_notes) - 16)
    sheet.rule(20, cut, sheet.width - 20, cut, 0.8, GREY, dash=(4, 3))
    sheet.text(x0, cut - 10, w("remittance_note"), 7, "italic", color=GREY)
    y = cut - 30
    sheet.text(x0, y, w("remittance"), 11, "bold", color=sheet.accent)
    y -= 18
    sheet.text(x0, y, w("pay_to") + ":", 8.5, "bold", color=GREY)
    sheet.text(x0, y - 12, doc.vendor.name, 9, "bold", max_width=240)
    draw_lines(sheet, x0, y - 24, doc.vendor.address_lines, 8.5, 10.5, max_width=240)
    slip: list[tuple[str, str]] = []
    if doc.customer_no:
        slip.append((w("customer_no"), doc.customer_no))
    if doc.number:
        slip.append((w("invoice_no"), doc.number))
    slip.append((w("date"), doc.date_text(doc.invoice_date)))
    if doc.due_date:
        slip.append((w("due"), doc.date_text(doc.due_date)))
    if doc.total is not None:
        slip.append((w("amount_due"), doc.money(doc.total, True)))
    slip.append((w("amount_enclosed"), "________________"))
    draw_pairs(sheet, 320, x1, y, slip, 8.5, 13, value_align="right", value_width=120, label_width=110)
    draw_footer(sheet, doc, w, rng)
    return sheet.pdf()


RENDERERS: dict[str, Callable[[InvoiceDoc], bytes]] = {
    "table": render_table,
    "two_column": render_two_column,
    "letter": render_letter,
    "multipage": render_multipage,
    "receipt": render_receipt,
    "credit_note": render_credit_note,
    "service": render_service,
    "remittance": render_remittance,
}


def render(doc: InvoiceDoc) -> bytes:
    """The PDF of a planned document."""
    return RENDERERS[doc.layout](doc)
