"""Drawing on a PDF page with reportlab, and the blocks every layout is built from.

Layouts place text so that pdfplumber reads it back intact: text on one line never overlaps
other text horizontally (it would interleave characters), long text is shrunk to its slot
rather than wrapped when it holds a value, and values sit at most 12 pt high so that layout
mode does not pad them with spaces.
"""

from __future__ import annotations

import io
import random
from decimal import Decimal

from training.synth.document import InvoiceDoc
from training.synth.formats import format_number
from training.synth.labels import Wording

FONTS = {
    "helvetica": ("Helvetica", "Helvetica-Bold", "Helvetica-Oblique"),
    "times": ("Times-Roman", "Times-Bold", "Times-Italic"),
    "courier": ("Courier", "Courier-Bold", "Courier-Oblique"),
}
A4 = (595.2756, 841.8898)
LETTER = (612.0, 792.0)
BLACK = (0, 0, 0)
GREY = (0.45, 0.45, 0.45)
LIGHT = (0.92, 0.92, 0.92)


class Sheet:
    """A reportlab canvas with the document's fonts; byte-identical output for identical input."""

    def __init__(self, doc: InvoiceDoc, pagesize: tuple[float, float] | None = None):
        from reportlab.pdfgen import canvas

        self.doc = doc
        if pagesize is None:
            pagesize = LETTER if doc.vendor.country in ("US", "CA") else A4
        self.width, self.height = pagesize
        self._buf = io.BytesIO()
        self.c = canvas.Canvas(self._buf, pagesize=pagesize, invariant=1, pageCompression=1)
        self.c.setTitle(doc.number or doc.name)
        self.c.setAuthor(doc.vendor.name)
        self.fonts = dict(zip(("regular", "bold", "italic"), FONTS[doc.style.font]))
        self.accent = doc.style.accent
        self.pages = 1

    def font(self, weight: str) -> str:
        return self.fonts[weight]

    def width_of(self, text: str, size: float, weight: str = "regular") -> float:
        from reportlab.pdfbase.pdfmetrics import stringWidth

        return stringWidth(text, self.font(weight), size)

    def fit(self, text: str, size: float, max_width: float | None, weight: str = "regular", floor: float = 5.5) -> float:
        """The largest size up to `size` at which `text` fits `max_width`."""
        if max_width is None:
            return size
        while size > floor and self.width_of(text, size, weight) > max_width:
            size -= 0.25
        return size

    def text(self, x: float, y: float, text: str, size: float = 9, weight: str = "regular", align: str = "left",
             color: tuple[float, float, float] = BLACK, max_width: float | None = None) -> None:
        if not text:
            return
        size = self.fit(text, size, max_width, weight)
        self.c.setFont(self.font(weight), size)
        self.c.setFillColorRGB(*color)
        if align == "right":
            self.c.drawRightString(x, y, text)
        elif align == "center":
            self.c.drawCentredString(x, y, text)
        else:
            self.c.drawString(x, y, text)

    def rule(self, x1: float, y1: float, x2: float, y2: float, width: float = 0.5,
             color: tuple[float, float, float] = GREY, dash: tuple[int, int] | None = None) -> None:
        self.c.setStrokeColorRGB(*color)
        self.c.setLineWidth(width)
        self.c.setDash(*dash) if dash else self.c.setDash()
        self.c.line(x1, y1, x2, y2)
        self.c.setDash()

    def rect(self, x: float, y: float, w: float, h: float, fill: tuple[float, float, float] | None = None,
             stroke: tuple[float, float, float] | None = GREY, width: float = 0.5) -> None:
        if fill:
            self.c.setFillColorRGB(*fill)
        if stroke:
            self.c.setStrokeColorRGB(*stroke)
        self.c.setLineWidth(width)
        self.c.rect(x, y, w, h, stroke=1 if stroke else 0, fill=1 if fill else 0)

    def logo(self, x: float, y: float, size: float, rng: random.Random) -> None:
        """A simple vector mark; it has no text, as most logos in PDFs are drawings."""
        self.c.setFillColorRGB(*self.accent)
        shape = rng.choice(("circle", "square", "bars"))
        if shape == "circle":
            self.c.circle(x + size / 2, y + size / 2, size / 2, stroke=0, fill=1)
        elif shape == "square":
            self.c.rect(x, y, size, size, stroke=0, fill=1)
        else:
            for k in range(3):
                self.c.rect(x + k * size / 3, y, size / 4, size * (k + 1) / 3, stroke=0, fill=1)

    def new_page(self) -> None:
        self.c.showPage()
        self.pages += 1

    def pdf(self) -> bytes:
        self.c.showPage()
        self.c.save()
        return self._buf.getvalue()


def wrap(sheet: Sheet, tokens: list[str], max_width: float, size: float, weight: str = "regular") -> list[str]:
    """Greedy word wrap; each token (a word, or a value that must stay on one line) is atomic."""
    lines: list[str] = []
    current = ""
    for token in tokens:
        candidate = f"{current} {token}" if current else token
        if current and sheet.width_of(candidate, size, weight) > max_width:
            lines.append(current)
            current = token
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def sentence_tokens(template: str, **values: str) -> list[str]:
    """Split a sentence into words, keeping each filled-in value as one token."""
    tokens: list[str] = []
    for word in template.split():
        placeholder = next((k for k in values if "{" + k + "}" in word), None)
        if placeholder:
            prefix, _, suffix = word.partition("{" + placeholder + "}")
            tokens.append(prefix + values[placeholder] + suffix)
        else:
            tokens.append(word)
    return tokens


# --- what the blocks say ------------------------------------------------------------------


def iban_text(iban: str, rng: random.Random) -> str:
    if rng.random() < 0.7:
        return " ".join(iban[k:k + 4] for k in range(0, len(iban), 4))
    return iban


def percent(doc: InvoiceDoc, rate: Decimal) -> str:
    places = 0 if rate == rate.to_integral_value() else len(str(rate.normalize()).split(".")[1])
    number = format_number(rate, doc.style.number_format, places=places, grouping=False)
    space = " " if doc.style.language in ("de", "fr") else ""
    return f"{number}{space}%"


def meta_rows(doc: InvoiceDoc, w: Wording, rng: random.Random, with_terms: bool = True) -> list[tuple[str, str]]:
    """Label/value pairs of the document header, in a document-specific order."""
    number_key = {"credit_note": "credit_no", "receipt": "receipt_no"}.get(doc.kind, "invoice_no")
    rows: list[tuple[str, str]] = []
    if doc.number:
        rows.append((w(number_key), doc.number))
    rows.append((w("date"), doc.date_text(doc.invoice_date)))
    extra: list[tuple[str, str]] = []
    if doc.due_date:
        extra.append((w("due"), doc.date_text(doc.due_date)))
    if doc.po_number:
        extra.append((w("po"), doc.po_number))
    if doc.customer_no:
        extra.append((w("customer_no"), doc.customer_no))
    if doc.delivery_note:
        extra.append((w("delivery_note"), doc.delivery_note))
    if doc.delivery_date and rng.random() < 0.5:
        extra.append((w("delivery_date"), doc.date_text(doc.delivery_date)))
    if with_terms and doc.terms:
        extra.append((w("terms"), doc.terms))
    if doc.contact:
        extra.append((w("contact"), doc.contact))
    if rng.random() < 0.5:
        rng.shuffle(extra)
    return rows + extra


def total_rows(doc: InvoiceDoc, w: Wording, rng: random.Random) -> list[tuple[str, str, bool]]:
    """(label, printed amount, emphasised) rows of the totals block."""
    # The currency shows with the total; without a printed total it goes with the subtotal.
    with_currency = doc.total is None or rng.random() < 0.3
    rows: list[tuple[str, str, bool]] = [(w("subtotal"), doc.money(doc.subtotal, with_currency), False)]
    if doc.discount is not None:
        label = f"{w('discount')} {percent(doc, doc.discount_rate)}" if doc.discount_rate else w("discount")
        rows.append((label, doc.money(-doc.discount), False))
    if doc.shipping is not None:
        rows.append((w("shipping"), doc.money(doc.shipping), False))
    if doc.tax is not None:
        rows.append((f"{doc.tax_label} {percent(doc, doc.tax_rate)}", doc.money(doc.tax), False))
    if doc.total is not None:
        rows.append((w("total"), doc.money(doc.total, True), True))
    return rows


def bank_lines(doc: InvoiceDoc, w: Wording, rng: random.Random) -> list[str]:
    bank = doc.bank
    if bank is None:
        return []
    lines = []
    if bank.bank_name and rng.random() < 0.8:
        lines.append(f"{w('bank')}: {bank.bank_name}")
    if bank.iban:
        lines.append(f"IBAN: {iban_text(bank.iban, rng)}")
    if bank.bic:
        lines.append(f"{w('bic')}: {bank.bic}")
    if bank.routing_number:
        key = {"GB": "routing_gb", "AU": "routing_au", "CA": "routing_ca"}.get(doc.vendor.country, "routing_us")
        lines.append(f"{w(key)}: {bank.routing_number}")
    if bank.account_number:
        lines.append(f"{w('account')}: {bank.account_number}")
    return lines


def tax_note(doc: InvoiceDoc, w: Wording) -> str | None:
    if doc.tax_note == "reverse_charge":
        return w("reverse_charge")
    if doc.tax_note == "export":
        return w("export")
    return None


def tax_id_label(doc: InvoiceDoc, w: Wording) -> str:
    return {"US": "EIN", "AU": "ABN", "CA": "GST/HST No."}.get(doc.vendor.country) or w("vat_no")


def contact_lines(doc: InvoiceDoc, w: Wording, rng: random.Random) -> list[str]:
    v = doc.vendor
    lines = []
    if v.phone:
        lines.append(f"{w('tel')} {v.phone}")
    if v.email and rng.random() < 0.8:
        lines.append(f"{w('email')}: {v.email}")
    if v.website and rng.random() < 0.5:
        lines.append(v.website)
    if v.tax_id and rng.random() < 0.7:
        lines.append(f"{tax_id_label(doc, w)}: {v.tax_id}")
    return lines


# --- drawing blocks -------------------------------------------------------------------------


def name_size(doc: InvoiceDoc, preferred: float) -> float:
    # Capitals are wide: at large sizes layout mode would pad between the words.
    return min(preferred, 10.5) if doc.vendor.name.isupper() else preferred


def draw_lines(sheet: Sheet, x: float, y: float, lines: list[str], size: float = 9, leading: float = 11.5,
               weight: str = "regular", align: str = "left", max_width: float | None = None,
               color: tuple[float, float, float] = BLACK) -> float:
    for line in lines:
        sheet.text(x, y, line, size, weight, align, color, max_width)
        y -= leading
    return y


def draw_pairs(sheet: Sheet, x_label: float, x_value: float, y: float, rows: list[tuple[str, str]],
               size: float = 9, leading: float = 12.5, value_align: str = "left", label_weight: str = "bold",
               value_width: float | None = None, label_width: float | None = None) -> float:
    for label, value in rows:
        sheet.text(x_label, y, f"{label}:" if not label.endswith(":") else label, size, label_weight,
                   max_width=label_width)
        sheet.text(x_value, y, value, size, "regular", value_align, max_width=value_width)
        y -= leading
    return y


def draw_totals(sheet: Sheet, rows: list[tuple[str, str, bool]], x_label: float, x_right: float, y: float,
                size: float = 9, leading: float = 13, box: bool = False) -> float:
    if box and rows:
        height = leading * len(rows) + 6
        sheet.rect(x_label - 6, y - height + leading - 2, x_right - x_label + 12, height, fill=LIGHT, stroke=None)
    for label, value, strong in rows:
        if strong:
            sheet.rule(x_label, y + leading - 3, x_right, y + leading - 3, 0.7, BLACK)
        weight = "bold" if strong else "regular"
        sheet.text(x_label, y, label, size, weight, max_width=x_right - x_label - sheet.width_of(value, size, weight) - 12)
        sheet.text(x_right, y, value, size, weight, "right")
        y -= leading
    return y


def draw_client(sheet: Sheet, doc: InvoiceDoc, w: Wording, x: float, y: float, size: float = 9,
                label: bool = True, max_width: float = 240) -> float:
    if label:
        sheet.text(x, y, w("bill_to") + ":", size - 0.5, "bold", color=GREY)
        y -= 12
    sheet.text(x, y, doc.client.name, size + 0.5, "bold", max_width=max_width)
    y -= 12
    return draw_lines(sheet, x, y, doc.client.address_lines, size, 11, max_width=max_width)


def draw_vendor(sheet: Sheet, doc: InvoiceDoc, w: Wording, rng: random.Random, x: float, y: float,
                align: str = "left", size: float = 12, max_width: float = 260, contacts: bool = True) -> float:
    sheet.text(x, y, doc.vendor.name, name_size(doc, size), "bold", align, sheet.accent, max_width)
    y -= 14
    y = draw_lines(sheet, x, y, doc.vendor.address_lines, 9, 11, align=align, max_width=max_width)
    if contacts:
        y = draw_lines(sheet, x, y, contact_lines(doc, w, rng), 8, 10, align=align, max_width=max_width, color=GREY)
    return y


def draw_stamp(sheet: Sheet, doc: InvoiceDoc, w: Wording, x: float, y: float) -> None:
    """An office stamp (received / entered / copy) in a box: noise with a date that is no field."""
    if not doc.stamp:
        return
    key, day = doc.stamp
    color = (0.75, 0.1, 0.1) if key != "entered" else (0.1, 0.25, 0.7)
    label = w({"received": "received", "entered": "entered", "copy": "copy"}[key])
    sheet.rect(x, y - 16, 120, 34, stroke=color, width=1.4)
    sheet.text(x + 60, y + 4, label, 10, "bold", "center", color)
    if key != "copy":
        sheet.text(x + 60, y - 9, f"{day.day:02d} {day.strftime('%b').upper()} {day.year}", 9, "bold", "center", color)


def draw_footer(sheet: Sheet, doc: InvoiceDoc, w: Wording, rng: random.Random, with_bank: bool = False) -> None:
    v = doc.vendor
    parts = [v.name, " · ".join(v.address_lines)]
    lines = [" · ".join(parts)]
    second = [doc.registration] if doc.registration else []
    if v.tax_id:
        second.append(f"{tax_id_label(doc, w)} {v.tax_id}")
    if v.website:
        second.append(v.website)
    lines.append(" · ".join(second))
    if with_bank and doc.bank:
        lines.append(" · ".join(bank_lines(doc, w, random.Random(doc.seed))))
    y = 28 + 9 * (len(lines) - 1)
    sheet.rule(40, y + 11, sheet.width - 40, y + 11, 0.4)
    for line in lines:
        sheet.text(sheet.width / 2, y, line, 6.5, "regular", "center", GREY, sheet.width - 80)
        y -= 9
