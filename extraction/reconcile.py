"""Arithmetic reconciliation of extracted amounts against the numbers the document prints.

An invoice's amounts obey three identities: each line's quantity x unit price = amount,
the lines' amounts add up to the subtotal, and subtotal - discount + shipping + tax =
total. When the model's answer breaks one of them
and exactly one small change, made only with numbers printed where the value belongs,
restores it, that change is applied:

* **a line item** whose quantity x unit price is not its amount (more than a cent off):
  every number printed on the item's line after its description (or on the line below,
  as receipts print it) is tried in each of the three columns. One change that balances
  the row is made; of several, only the one whose quantity, unit price and amount are
  printed in that order, left to right. A row with a null column is left alone: a line
  discount or a lump sum is not an error.
* **the subtotal**, when it is not the sum of the line items' amounts and that sum is
  printed apart from the rows themselves: it takes the sum (a page's "carried forward"
  read as the subtotal).
* **the totals**, when subtotal and total are both known and do not balance: where the
  amounts the document prints under the adjustments' own labels (`Nachlass 3 %  -32,62`,
  `Fracht  79,62`, `MwSt. 0 %  0,00`; one amount per label) balance them, discount,
  shipping and tax are read so. Otherwise a null
  discount, shipping or tax takes the one printed amount that balances them, or a value
  written under the wrong one of the three moves to the null one that balances them
  (a discount read as tax); of several such changes, the one whose amount is printed
  under a label of its field (`Shipping  7.63`, `VAT 19%  12.29`). A printed amount
  already used by another field is never taken twice, and a printed amount is never
  removed: a total that includes its tax (receipts) does not balance and stays as read.
  Only a shipping or discount that is no printed amount (a rate or a count printed without
  cents, `Net 30`; the subtotal or the total read again) is dropped, where the totals
  balance without it. The total itself is changed only where the answer's total is its
  subtotal read again and the document prints the total its labelled adjustments make;
  otherwise never: an invoice whose printed total is wrong must reach validation with it.
  A balanced answer's null adjustment printed as zero under its label becomes zero.

One more check is not arithmetic: **an invoice or PO number or payment terms** that the
document prints only under another label (a PO number that is printed only as `Invoice #:`,
a `Delivery note:`, `Account no.:` or `VAT No.:` number, terms that are a tax number), a year
read out of a date or a line item's code, becomes null (`reconcile_identifiers`). A vendor
address loses a company name before it and a phone or registration label after it
(`reconcile_address`); a name or the terms that run into another field's label end before
it (`reconcile_run_on_text`). First of all, names and numbers are held to the shapes the
grammar holds labelled values to (`reconcile_shapes`: no title word before a name, a digit
in a number).

What the document's labels say also decides: a subtotal, tax or total printed only without a
sign is positive (`reconcile_signs`); a null invoice number is the one number printed after an
invoice number's label (`reconcile_invoice_number`); an IBAN is the one printed after its label
or the one that passes its check (`reconcile_bank`); the vendor and client are the first names
under their own labels, `Verkäufer:`, `Bill to:` (`reconcile_parties`), and a vendor name that is
the end of a legal name printed whole in the header is that whole name (`reconcile_whole_name`).

Nothing happens when the answer balances, or when more than one change would balance it.
Each applied change is reported (`Reconciled`) so callers can show it and lower their
trust in the field; the extract step records them with the step's model output.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation

from invoicechain.schema import DECIMAL_PATTERN, BankDetails
from extraction.candidates import _NUMBER, _NUMERIC_DATE, _ROUNDING, FIELD_LABELS, _readings, text_before
from invoicechain.lexicon import lexicon

LEXICON = lexicon()

CENT = Decimal("0.01")
_ROW_COLUMNS = ("quantity", "unit_price", "amount")
_ADJUSTMENTS = ("discount", "shipping", "tax")


@dataclass(frozen=True)
class Reconciled:
    """One change: `field` (`shipping`, `line_items[3].quantity`) from `before` to `after`."""

    field: str
    before: str | None
    after: str | None
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def _dec(value) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _text(value: Decimal) -> str:
    """The schema's decimal string of a value (no exponent; places as printed)."""
    return f"{value:f}"


def _printed_numbers(text: str, cents_only: bool = False):
    """Each number printed in `text` (whole digit groups, never a piece of a date): where it
    starts, and its readings the schema can hold, signed as printed. `cents_only`: only
    numbers printed with two decimals, as amounts are."""
    dates = [m.span() for m in _NUMERIC_DATE.finditer(text)]
    for m in _NUMBER.finditer(text):
        if any(a < m.end() and m.start() < b for a, b in dates):
            continue
        token = m.group(0)
        if cents_only and not (len(token) > 3 and token[-3] in ".," and token[-2:].isdigit()):
            continue
        negative = text[max(0, m.start() - 2) : m.start()].rstrip().endswith(("-", "("))
        yield m.start(), [-v if negative else v for v in _readings(token) if re.match(DECIMAL_PATTERN, f"{v:f}")]


def _printed(text: str, cents_only: bool = False) -> list[Decimal]:
    """Every reading of every number printed in `text` (`_printed_numbers`)."""
    return [v for _, readings in _printed_numbers(text, cents_only) for v in readings]


def _printed_counts(text: str) -> dict[Decimal, int]:
    """How many times each amount (absolute, two decimals printed) is printed in `text`."""
    counts: dict[Decimal, int] = {}
    for value in _printed(text, cents_only=True):
        counts[abs(value)] = counts.get(abs(value), 0) + 1
    return counts


def _balanced_row(q: Decimal, p: Decimal, a: Decimal) -> bool:
    return abs(q * p - a) < CENT


def _row_numbers(text: str, grounding: dict | None) -> list[Decimal] | None:
    """Numbers printed after the item's description on its line, else on the line below
    (receipts print an item's figures under it); None when the description is not located."""
    span = (grounding or {}).get("description") or {}
    if "start" not in span:
        return None
    end = text.find("\n", span["end"])
    end = len(text) if end == -1 else end
    numbers = _printed(text[span["end"] : end])
    if not numbers and end < len(text):
        below = text.find("\n", end + 1)
        numbers = _printed(text[end + 1 : len(text) if below == -1 else below])
    return numbers


def _in_printed_order(values: list[Decimal], printed: list[Decimal]) -> bool:
    """Whether quantity, unit price and amount can be read left to right off the row."""
    pos = -1
    for v in values:
        nxt = next((k for k in range(pos + 1, len(printed)) if abs(printed[k]) == abs(v)), None)
        if nxt is None:
            return False
        pos = nxt
    return True


def _lost_point_fixes(values: dict) -> list[tuple[str, Decimal]]:
    """Single changes that balance a row by putting back a decimal point into a whole number of
    two digits or more (OCR drops a small point: `1.5` read as `15`)."""
    fixes = []
    for column, v in values.items():
        if v == v.to_integral_value() and abs(v) >= 10:
            for shift in (Decimal(10), Decimal(100)):
                if _balanced_row(*{**values, column: v / shift}.values()):
                    fixes.append((column, v / shift))
    return fixes


def reconcile_rows(fields: dict, text: str, grounding: dict | None = None) -> list[Reconciled]:
    """Balance each line item (quantity x unit price = amount) with a number printed on its line."""
    changes: list[Reconciled] = []
    items = fields.get("line_items") or []
    item_grounding = (grounding or {}).get("line_items") or []
    for i, item in enumerate(items):
        values = {k: _dec(item.get(k)) for k in _ROW_COLUMNS}
        if any(v is None for v in values.values()) or _balanced_row(*values.values()):
            continue
        printed = _row_numbers(text, item_grounding[i] if i < len(item_grounding) else None)
        if not printed:
            continue
        signed = printed + [-n for n in printed]  # a credit note's sign may sit on another column
        fixes = [
            (column, n) for column in _ROW_COLUMNS for n in dict.fromkeys(signed)
            if n != values[column] and _balanced_row(*{**values, column: n}.values())
        ]
        if len(fixes) > 1:  # several single changes balance the row: keep those read left to right
            fixes = [(c, n) for c, n in fixes if _in_printed_order(list({**values, c: n}.values()), printed)]
        why = "quantity x unit price did not equal the amount; the printed number that balances the row"
        if not fixes:
            fixes = _lost_point_fixes(values)
            why = ("quantity x unit price did not equal the amount; the same digits with the decimal point "
                   "a scan lost balance the row")
        if len(fixes) != 1:
            continue  # nothing, or nothing unambiguous, balances the row: leave it as read
        column, n = fixes[0]
        after = _text(n)
        changes.append(Reconciled(f"line_items[{i}].{column}", item.get(column), after, why))
        item[column] = after
    return changes


def reconcile_subtotal(fields: dict, text: str) -> list[Reconciled]:
    """The subtotal as the sum of the line items' amounts, where it is not and the sum is printed."""
    items = fields.get("line_items") or []
    subtotal = _dec(fields.get("subtotal"))
    amounts = [_dec(item.get("amount")) for item in items]
    if not items or subtotal is None or None in amounts:
        return []
    total = sum(amounts, Decimal(0))
    counts = _printed_counts(text)
    for item in items:  # the rows' own printings are not the sum's
        for v in map(_dec, (item.get(c) for c in _ROW_COLUMNS)):
            if v is not None and counts.get(abs(v)):
                counts[abs(v)] -= 1
    if abs(total - subtotal) < CENT or counts.get(abs(total), 0) == 0:
        return []
    after = _text(total.quantize(CENT))
    change = Reconciled("subtotal", fields["subtotal"], after,
                        "not the sum of the line items' amounts; the printed amount that is")
    fields["subtotal"] = after
    return [change]


def reconcile_totals(fields: dict, text: str) -> list[Reconciled]:
    """Balance subtotal - discount + shipping + tax = total by one change to the three adjustments."""
    subtotal, total = _dec(fields.get("subtotal")), _dec(fields.get("total_amount"))
    if subtotal is None or total is None:
        return []
    parts = {k: _dec(fields.get(k)) for k in _ADJUSTMENTS}

    def balance(p: dict) -> Decimal:
        return subtotal - (p["discount"] or 0) + (p["shipping"] or 0) + (p["tax"] or 0)

    by_label = _labelled_adjustments(text, subtotal)
    changes = []
    if by_label is not None and total == subtotal and any(by_label.values()):
        # The subtotal read again as the total, where the document prints the total its labelled
        # adjustments make: that printed amount is the total.
        made = balance(by_label)
        if made != subtotal and abs(made) in {abs(v) for v in _printed(text, cents_only=True)}:
            changes.append(Reconciled("total_amount", fields["total_amount"], _text(made),
                                      "the subtotal read again; the printed amount the labelled adjustments make"))
            fields["total_amount"] = _text(made)
            total = made
    if by_label is not None and abs(balance(by_label) - total) >= CENT:
        by_label = None  # the labels do not balance the totals: no reading by them
    if abs(balance(parts) - total) < CENT:
        # Balanced already; a null adjustment that the document prints as zero under its label
        # (`VAT 0%  0.00`) is zero, not unstated.
        zeros = [k for k in _ADJUSTMENTS if parts[k] is None and by_label and by_label[k] == 0]
        more = [Reconciled(k, None, "0.00", "null, but printed as 0.00 under its label") for k in zeros]
        for change in more:
            fields[change.field] = change.after
        return changes + more
    if by_label is not None:  # the document's own labels balance the totals: read them so
        more = [Reconciled(k, fields.get(k), None if v is None else _text(v),
                           "the totals balance with the amounts printed under the adjustments' labels")
                for k, v in by_label.items() if v != parts[k]]
        more.sort(key=lambda c: c.after is not None)  # what is emptied first, as a move reads
        for change in more:
            fields[change.field] = change.after
        return changes + more
    written = [fields.get(k) for k in ("subtotal", "total_amount", *_ADJUSTMENTS)]
    written += [item.get(c) for item in fields.get("line_items") or [] for c in _ROW_COLUMNS]
    used = {abs(v) for v in map(_dec, written) if v is not None}
    printed = {abs(n): n.copy_abs() for n in _printed(text, cents_only=True) if abs(n) not in used}
    nulls = [k for k in _ADJUSTMENTS if parts[k] is None]
    options: list[tuple[str, str | None, Decimal]] = []  # (field filled, field emptied, value)
    gap = total - balance(parts)
    sign = -1 if subtotal < 0 else 1  # a credit note's amounts are all negative
    for k in nulls:
        need = -gap if k == "discount" else gap
        if need != 0 and (need > 0) == (sign > 0) and abs(need) in printed:
            options.append((k, None, printed[abs(need)] * sign))
    for src in _ADJUSTMENTS:
        if parts[src] is None:
            continue
        for dst in nulls:
            trial = {**parts, src: None, dst: parts[src]}
            if abs(balance(trial) - total) < CENT:
                options.append((dst, src, parts[src]))
    if len(options) > 1:  # of several, the one whose amount is printed under a label of its field
        options = [o for o in options if _amount_labelled(text, o[2], o[0])]
    if not options:
        options = _spurious_adjustments(parts, text, subtotal, total, balance)
    if not options:
        options = _misread_tax(parts, total, balance, printed, sign)
    if len(options) != 1:
        return []
    dst, src, value = options[0]
    if dst == src:
        changes = [Reconciled(dst, fields[dst], _text(value), "the totals only balance with this printed amount")]
    elif dst is None:
        changes = [Reconciled(src, fields[src], None, "the totals balance without it, and it is no printed amount")]
    elif src is None:
        changes = [Reconciled(dst, None, _text(value), "null, but the totals only balance with this printed amount")]
    else:
        moved = fields[src]
        changes = [Reconciled(src, moved, None, f"the value belongs to {dst}: the totals balance with it there"),
                   Reconciled(dst, None, moved, f"moved from {src}: the totals balance with it here")]
    for change in changes:
        fields[change.field] = change.after
    return changes


#: Labels of the totals block's adjustments (English, German, French, Dutch, Spanish,
#: Italian), and of the lines around them, by field.
_AMOUNT_LABELS = {"shipping": "|".join(LEXICON.fragments("shipping")), "tax": "|".join(LEXICON.fragments("tax")),
                  "discount": "|".join(LEXICON.fragments("discount")), "other": "|".join(LEXICON.fragments("amount"))}
_AMOUNT_LABEL = re.compile("|".join(f"(?P<{k}>(?<![^\\W\\d_])(?:{rx})(?![^\\W\\d_]))" for k, rx in _AMOUNT_LABELS.items()),
                           re.IGNORECASE)


def _misread_tax(parts: dict, total: Decimal, balance, printed: dict, sign: int) -> list:
    """A tax read from another printed amount (a line's, a rate's base): the one printed amount,
    used by no other field, that balances the totals in its place (`(field, field, value)`)."""
    if parts["tax"] is None:
        return []
    need = total - balance({**parts, "tax": None})
    if need != 0 and (need > 0) == (sign > 0) and abs(need) in printed:
        return [("tax", "tax", printed[abs(need)] * sign)]
    return []


def _amount_labelled(text: str, value: Decimal, field: str) -> bool:
    """Whether `value` is printed somewhere with a label of `field` the nearest label before
    it on its line (`VAT 19%  12.29`, `Shipping  7.63`)."""
    for m in _NUMBER.finditer(text):
        if abs(value) not in {abs(v) for v in _readings(m.group(0))}:
            continue
        labels = list(_AMOUNT_LABEL.finditer(text_before(text, m.start())))
        if labels and labels[-1].lastgroup == field:
            return True
    return False


def _labelled_adjustments(text: str, subtotal: Decimal) -> dict | None:
    """Discount, shipping and tax as the document labels them: the one amount (two decimals)
    printed with each field's label the nearest before it on its line (`Nachlass 3 %
    -32,62`, `Fracht  79,62`, `MwSt. 0 %  0,00`), None for a field it prints no amount for;
    a discount positive (negative on a credit note), shipping and tax with their printed
    sign. None where a label has two different amounts, or no label any."""
    found: dict[str, set[Decimal]] = {k: set() for k in _ADJUSTMENTS}
    for start, readings in _printed_numbers(text, cents_only=True):
        before = text_before(text, start)
        labels = list(_AMOUNT_LABEL.finditer(before))
        if not labels or labels[-1].lastgroup not in found or _amount_follows(text, start):
            continue
        if _WITHOUT.search(before[: labels[-1].start()]):
            continue  # `Rechnungssumme ohne USt.  380,00`: an amount without the adjustment
        if len(set(readings)) != 1:
            return None
        found[labels[-1].lastgroup] |= set(readings)
    if any(len(v) > 1 for v in found.values()) or not any(found.values()):
        return None
    sign = -1 if subtotal < 0 else 1
    out = {k: (next(iter(v)) if v else None) for k, v in found.items()}
    if out["discount"] is not None:
        out["discount"] = abs(out["discount"]) * sign
    return out


#: A word right before an adjustment's label that says the amount is without it (`ohne USt.`, `excl. VAT`).
_WITHOUT = re.compile(r"(?i)(?<![^\W\d_])" + LEXICON.label("without") + r"\s*$")


def _amount_follows(text: str, start: int) -> bool:
    """Whether another amount (two decimals) follows the number at `start` on its line before
    the next amount label: a row such as `VAT 19% on 804.35  152.83` or `Umsatzsteuer  8,41
    7  0,59` prints the base first and the label's own amount last."""
    end = text.find("\n", start)
    rest = text[start : len(text) if end == -1 else end]
    rest = rest[len(_NUMBER.match(rest).group(0)) if _NUMBER.match(rest) else 0 :]
    label = _AMOUNT_LABEL.search(rest)
    return bool(_printed(rest[: label.start()] if label else rest, cents_only=True))


def _spurious_adjustments(parts, text, subtotal, total, balance) -> list:
    """An adjustment without which the totals balance, where it is no amount the document
    prints as one: printed only without cents (a rate, a count: `20`), or the subtotal's or
    the total's own value read again."""
    amounts = {abs(v) for v in _printed(text, cents_only=True)}
    options = []
    for src in ("shipping", "discount"):
        value = parts[src]
        if value is None or value == 0 or abs(balance({**parts, src: None}) - total) >= CENT:
            continue
        if abs(value) not in amounts or abs(value) in (abs(subtotal), abs(total)):
            options.append((None, src, value))
    return options


#: Labels of the document numbers an invoice prints, by kind (English, German, French,
#: Dutch, Spanish, Italian), each matched right before the number it labels.
_NUMBER_LABELS = {
    "invoice_id": "|".join(LEXICON.fragments("invoice_id")),
    "po_number": FIELD_LABELS["po_number"],
    "customer": "|".join(LEXICON.fragments("customer_number")),
    "delivery": "|".join(LEXICON.fragments("delivery_note")),
    "tax_id": "|".join(LEXICON.fragments("tax_id")),
}
_NUMBER_LABELS["payment_terms"] = FIELD_LABELS["payment_terms"]
_LABEL_BEFORE = {kind: re.compile(rf"(?i)(?<![^\W\d_])(?:{rx})\s*[:.#]?\s*$") for kind, rx in _NUMBER_LABELS.items()}


def _labels_of(value: str, text: str) -> list[str | None]:
    """The label kind printed right before each occurrence of `value` in `text` (None where
    none is known); `date` where the occurrence is part of a date, `line item` where it
    starts a line item's row (an item code: the words before the row's quantity, unit price
    and amount)."""
    from extraction.candidates import _date_spans, balanced_readings

    kinds = []
    for m in re.finditer(rf"(?<![\w/-]){re.escape(value)}(?![\w/-])", text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        line_end = text.find("\n", m.end())
        line = text[line_start : line_end if line_end >= 0 else len(text)]
        if any(a <= m.start() - line_start and m.end() - line_start <= b for a, b in _date_spans(line)):
            kinds.append("date")
            continue
        if any(m.end() - line_start <= first for _, first in balanced_readings(line)):
            kinds.append("line item")
            continue
        before = text_before(text, m.start())
        kinds.append(next((kind for kind, rx in _LABEL_BEFORE.items() if rx.search(before)), None))
    return kinds


def reconcile_identifiers(fields: dict, text: str) -> list[Reconciled]:
    """An invoice number, PO number or payment terms that the document prints only as
    something else (under another label: `Invoice #:` for a PO number, `Delivery note:`,
    `Account no.:`, `VAT No.:`, `Terms:`), only as part of a date or only as a line item's
    code is no such value: it becomes null; so does a bank account number printed only as
    a tax, invoice or PO number, or as a date. A value
    printed anywhere without a known label, or under its own, is kept."""
    changes = []
    bank = fields.get("bank") if isinstance(fields.get("bank"), dict) else {}
    # (field, where it is held, the label kind that is its own: `Account no.` may be a bank account)
    for name, holder, own in (("po_number", fields, "po_number"), ("invoice_id", fields, "invoice_id"),
                              ("payment_terms", fields, "payment_terms"), ("bank.account_number", bank, "customer")):
        key = name.rsplit(".", 1)[-1]
        value = holder.get(key)
        if not isinstance(value, str) or not value.strip():
            continue
        kinds = _labels_of(value, text)
        if kinds and all(k is not None and k != own for k in kinds):
            holder[key] = None
            changes.append(Reconciled(name, value, None, f"printed only as {', '.join(sorted(set(kinds)))}"))
    return changes


#: Where an address ends: a contact or registration label after it (`TEL: 03-9133 4364`,
#: `Fax`, `GST Reg No`).
_ADDRESS_END = re.compile(r"(?i)[\s,.;:-]*(?<![^\W\d_])" + LEXICON.label("contact") + r"(?![^\W\d_]).*$")
#: A company name printed before its address: its legal form, then perhaps its registration
#: number (`TK DIVISION KITCHEN SDN BHD 1202152-P 19-1, JALAN ...`).
_COMPANY_HEAD = re.compile(
    r"(?i)^.{0,80}?(?<![^\W\d_])(?:" + "|".join(LEXICON.company_head_forms) + r")\.?"
    r"(?:\s*" + LEXICON.label("registration_number") + r")?[\s,.;:-]+")


#: A registration number that starts an address, and the fewest digits that tell it from a
#: house number (`123-A`).
_REGISTRATION_HEAD = re.compile(r"(?i)^" + LEXICON.label("registration_number") + r"[\s,.;:-]+")
REGISTRATION_DIGITS = 5


def reconcile_address(fields: dict, text: str) -> list[Reconciled]:
    """The vendor's address without what is printed around it: a company name (the vendor's
    own, or one ending in a legal form and a registration number) or a registration number
    alone before it, a phone, fax or registration label and what follows after it."""
    value = fields.get("vendor_address")
    if not isinstance(value, str) or not value.strip():
        return []
    out = value
    name = fields.get("vendor_name")
    if isinstance(name, str) and name.strip() and out.startswith(name) and len(out) > len(name):
        out = out[len(name):].lstrip(" ,.;:-")
    m = _COMPANY_HEAD.match(out)
    if m and re.search(r"\d", out[m.end():]):
        out = out[m.end():]
    # a company's registration number printed on the line above the address (`1202152-P, 19-1, JALAN`)
    m = _REGISTRATION_HEAD.match(out)
    if m and len(re.findall(r"\d", m.group(0))) >= REGISTRATION_DIGITS and re.search(r"\d", out[m.end():]):
        out = out[m.end():]
    m = _ADDRESS_END.search(out)
    # only after a whole address: its head holds a number and two words (a street and a place)
    if m and re.search(r"\d", out[: m.start()]) and len(re.findall(r"[^\W\d_]{3,}", out[: m.start()])) >= 2:
        out = out[: m.start()].rstrip(" ,;:-")
    if out == value or not re.search(r"[^\W\d_]{2}", out):
        return []
    fields["vendor_address"] = out
    return [Reconciled("vendor_address", value, out, "a company name, a contact or a registration label taken off")]


#: Labels of other fields that a name or the payment terms may run into where the PDF's text
#: joins two columns with one space (`Guérin SAS Numéro de facture`, `Direct bij ontvangst
#: Subtotaal`): an invoice or document number's label, a subtotal's, a due date's, each at
#: the value's end or before a number.
_FOREIGN_LABEL = re.compile(
    r"(?i)(?<![^\W\d_])(?:(?:" + _NUMBER_LABELS["invoice_id"] + "|" + _NUMBER_LABELS["customer"]
    + r")\s*(?:[:#]|[:.#]?\s*[0-9])"  # a number's label: before its number, or ending in a colon
    r"|(?:" + _NUMBER_LABELS["tax_id"] + r")\s*[:.#]?\s*[A-Z]{0,3}\s?[0-9]"  # a tax number's, before it
    r"|" + LEXICON.label("contact_field") + r"\s*[:.]"  # a contact's
    r"|" + LEXICON.label("invoice_number") + r"\s*[:.#]?\s*$"
    r"|" + LEXICON.label("subtotal") + r"\s*[:.#]?\s*(?:$|[0-9]))")


def reconcile_run_on_text(fields: dict, text: str) -> list[Reconciled]:
    """A vendor or client name, or payment terms, that runs into another field's label (an
    invoice, customer or tax number's, a contact's, a subtotal's, a due date's) ends before
    it; one that starts with it (`Base imponible`, `Payment due: 2026-10-02` as the terms,
    `N° TVA intracom. FR32775594349` as the client) is no such value and becomes null, and
    so does a PO or invoice number that starts with one (`Zahlbar bis: 2026-07-31`)."""
    changes = []
    for name in ("vendor_name", "client_name", "payment_terms", "po_number", "invoice_id"):
        value = fields.get(name)
        if not isinstance(value, str) or not (m := _FOREIGN_LABEL.search(value)):
            continue
        if name in ("po_number", "invoice_id") and m.start() > 0:
            continue  # a number is only dropped when it is another field's label and value
        head = value[: m.start()].rstrip(" ,;:-·")
        after = head if re.search(r"[^\W\d_]{2}", head) else None
        fields[name] = after
        changes.append(Reconciled(name, value, after, "ran into another field's label"))
    return changes


#: A name that ends in its legal form and then the company's registration number
#: (`MOONLIGHT CAKE HOUSE SDN BHD 862725-U`): the name is what comes before the number.
_REGISTERED_NAME = re.compile(r"(?i)^(.*?(?<![^\W\d_])" + LEXICON.legal_form() + r")[\s,.]*"
                              + LEXICON.label("registration_number") + r"\s*$")

#: A name that ends in its legal form and goes on after a separator with something else, its
#: address or a tagline (`Au bon moulin SARL - 1242 chemin de l'olive`, `ACME Ltd, London`):
#: the name is what comes before the separator.
_NAME_THEN_MORE = re.compile(r"(?i)^(.*?[^\W\d_].*?(?<![^\W\d_])" + LEXICON.legal_form()
                             + r")(?![^\W\d_])\.?(?:\s*[,;|·]|\s+[-–]|\s+\()\s*\S.*$")

_LEGAL_FORM_IN = re.compile(r"(?i)(?<![^\W\d_])" + LEXICON.legal_form() + r"(?![^\W\d_])")


#: A number sign glued before an identifier's first character (`N°F-2024…`, `Nr.4711`).
_NUMBER_SIGN = re.compile(r"(?i)(?:" + LEXICON.label("number_sign") + r")\s*(?=[^\W_])")


def _name_only(value: str) -> str:
    """A name without what follows its legal form after a separator (`_NAME_THEN_MORE`)."""
    m = _NAME_THEN_MORE.match(value)
    return m.group(1) if m and not _LEGAL_FORM_IN.search(value[m.end(1):]) else value


def _without_number_sign(value: str) -> str:
    """An identifier without a number sign glued before it (`N°F-2024…` → `F-2024…`)."""
    m = _NUMBER_SIGN.match(value)
    return value[m.end():] if m and re.search(r"\d", value[m.end():]) else value


def reconcile_shapes(fields: dict, text: str) -> list[Reconciled]:
    """The shapes the grammar holds labelled values to (`extraction.grammar._SHAPES`), for every
    value: a vendor or client name loses a leading title or stamp word (`COPY ANDERSSON
    OFFICE SUPPLIES HB`), a registration number after its legal form (`KT WONG TRADING
    (001904043-H)`) and whatever follows its legal form after a separator (`Au bon moulin
    SARL - 1242 chemin de l'olive`), and is null without two letters in a row (`Z = 0% 4.00`, `KOPIE`);
    an invoice or PO number loses a number sign glued before it (`N°F-20240000014`); an
    invoice, PO or bank account number without a digit (`RECHNUNG`) is null."""
    from extraction.grammar import TITLE_START

    changes = []
    for name in ("vendor_name", "client_name"):
        value = fields.get(name)
        if not isinstance(value, str):
            continue
        after = value
        while m := TITLE_START.match(after):
            after = after[m.end():]
        if m := _REGISTERED_NAME.match(after):
            after = m.group(1)
        else:
            after = _name_only(after)  # (`XYZ TRADING (M) SDN BHD` ends in its legal form: kept)
        after = after if re.search(r"[^\W\d_]{2}", after) else None
        if after != value:
            fields[name] = after
            changes.append(Reconciled(name, value, after,
                                      "a title or stamp word, a registration number or what follows the legal form, or no name"))
    bank = fields.get("bank") if isinstance(fields.get("bank"), dict) else {}
    for name, holder in (("invoice_id", fields), ("po_number", fields), ("bank.account_number", bank)):
        key = name.rsplit(".", 1)[-1]
        value = holder.get(key)
        bare = _without_number_sign(value) if key != "account_number" and isinstance(value, str) else value
        if bare != value:
            holder[key] = bare
            changes.append(Reconciled(name, value, bare, "a number sign before the number"))
        elif isinstance(value, str) and not re.search(r"\d", value):
            holder[key] = None
            changes.append(Reconciled(name, value, None, "a number without a digit"))
    return changes


def reconcile_signs(fields: dict, text: str) -> list[Reconciled]:
    """A subtotal, tax or total written negative where the document prints that amount only
    without a sign (no minus before or after it, no brackets) is positive: the grammar offers
    both signs of every printed number, a credit note's minus is printed."""
    signed = {v for _, readings in _printed_numbers(text) for v in readings}
    signed |= {-v for v in _printed(text) if text and _minus_after(text, v)}
    changes = []
    for name in ("subtotal", "tax", "total_amount"):
        value = _dec(fields.get(name))
        if value is None or value >= 0 or value in signed or -value not in signed:
            continue
        after = _text(-value)
        changes.append(Reconciled(name, fields[name], after, "printed without a sign"))
        fields[name] = after
    return changes


def _minus_after(text: str, value: Decimal) -> bool:
    """Whether `value` is printed somewhere with a trailing minus (`12.00-`)."""
    for m in _NUMBER.finditer(text):
        if text[m.end() : m.end() + 1] == "-" and value in _readings(m.group(0)):
            return True
    return False


#: A line that is no party's name: it holds a digit (a street and house number, a postcode
#: and town, a customer number).
_ADDRESS_LINE = re.compile(r"\d")


_SALUTATION = re.compile(r"(?i)" + LEXICON.label("salutation"))


def _flat(value: str) -> str:
    return " ".join(value.split()).casefold()


_SENDER_SPLIT = re.compile(LEXICON.label("sender_separator"))
_SENDER_PLACE = re.compile(LEXICON.label("sender_place"))
#: A sender line's separators other than a comma: no name holds them.
_SENDER_MARK = re.compile(LEXICON.label("sender_mark"))
#: How many first lines may hold the sender's line, and how many lines below it the recipient.
SENDER_LINES, RECIPIENT_LINES = 15, 6


def _party_name(cell: str) -> bool:
    """Whether a cell can be a party's name: letters, no digit, no mail or web address, no label,
    no title or stamp word first (`TAX INVOICE`)."""
    from extraction.grammar import TITLE_START

    return (bool(re.search(r"[^\W\d_]{2}", cell)) and not _ADDRESS_LINE.search(cell)
            and not re.search(r"@|www\.|https?:|:", cell) and not TITLE_START.match(cell))


def sender_line(text: str) -> tuple[str, str | None] | None:
    """The sender's line printed small above the recipient's address (`Kraxi GmbH · Flugzeugallee
    17 · 12345 Papierfeld`): three pieces or more, the first a name and a later one a postcode and
    town, in the first SENDER_LINES lines. Its first piece (the sender's name) and the first line
    within RECIPIENT_LINES below it that can be a name (the recipient's), each a line's first cell."""
    lines = text.splitlines()
    for k, line in enumerate(lines[:SENDER_LINES]):
        cell = re.split(r" {2,}", line.strip())[0]
        pieces = [piece.strip() for piece in _SENDER_SPLIT.split(cell) if piece.strip()]
        if len(pieces) < 3 or not _party_name(pieces[0]) or not any(map(_SENDER_PLACE.search, pieces[1:])):
            continue
        below = (re.split(r" {2,}", ln.strip())[0] for ln in lines[k + 1 : k + 1 + RECIPIENT_LINES])
        recipient = next((c for c in below if _party_name(c) and len(_SENDER_SPLIT.split(c)) < 3), None)
        return pieces[0], recipient
    return None


def reconcile_parties(fields: dict, text: str) -> list[Reconciled]:
    """The vendor and the client as the document labels them: where it prints a seller's label
    (`Verkäufer:`, `Seller:`, `Fournisseur :`) or a customer's (`Bill to:`, `Käufer:`) with the
    party's lines under it, the party's name is the first of those lines that holds no digit
    (the lines after it are its address; a salutation alone, `Herrn`, joins the line below it).
    A name the model read from that block is kept unless it holds a digit (`Pappelallee 15`) or
    is a salutation alone; a name from anywhere else takes the labelled one.
    Without such labels, where the document prints a sender's line above the recipient's address
    (`sender_line`), a vendor name that holds an address (a postcode and town, the line's `|`
    or `·` separators) is the line's first piece, and the client is the first name under that
    line."""
    from extraction.candidates import labelled_text

    changes, labelled = [], set()
    for name in ("vendor_name", "client_name"):
        if name not in fields:
            continue
        block = labelled_text(text, name)
        # a cell with a digit is an address line, unless it holds a legal form (`Muster GmbH Werk 2`)
        names = [_name_only(v) for v in block
                 if (not _ADDRESS_LINE.search(v) or _LEGAL_FORM_IN.search(v)) and re.search(r"[^\W\d_]{2}", v)]
        if not names:
            continue
        if len(names) > 1 and _SALUTATION.fullmatch(names[0]):  # `Herrn` above `Max Mustermann`
            names[0] = f"{names[0]} {names[1]}"
        labelled.add(name)
        value = fields.get(name)
        if (isinstance(value, str) and _flat(value) in {_flat(v) for v in block} and not _ADDRESS_LINE.search(value)
                and not _SALUTATION.fullmatch(value.strip())):
            continue
        changes.append(Reconciled(name, value, names[0], "the first name under the party's own label"))
        fields[name] = names[0]
    sender = sender_line(text)
    if sender is None:
        return changes
    vendor, recipient = sender
    value = fields.get("vendor_name")
    if ("vendor_name" in fields and "vendor_name" not in labelled and isinstance(value, str)
            and (_SENDER_MARK.search(value) or _SENDER_PLACE.search(value)) and _flat(vendor) != _flat(value)):
        changes.append(Reconciled("vendor_name", value, vendor, "an address, not a name; the sender line's name"))
        fields["vendor_name"] = vendor
    value = fields.get("client_name")
    if ("client_name" in fields and "client_name" not in labelled and recipient
            and _flat(recipient) != _flat(value or "") and _flat(recipient) != _flat(fields.get("vendor_name") or "")):
        changes.append(Reconciled("client_name", value, recipient, "the first name under the sender's line"))
        fields["client_name"] = recipient
    return changes


def reconcile_whole_name(fields: dict, text: str) -> list[Reconciled]:
    """A vendor name ending in its legal form that is the end of a cell of the document's first
    HEADER_LINES lines (`KITCHEN SDN BHD` of `TK DIVISION KITCHEN SDN BHD`) is that whole cell,
    where exactly one cell so ends and what it holds before the name is words, not a label
    (`OWN BY: CHEF LEE SDN BHD` keeps `CHEF LEE SDN BHD`)."""
    from extraction.candidates import _NAME_IN_LEGAL_FORM, _TRAILING_REGISTRATION, HEADER_LINES, labelled_text
    from extraction.grammar import TITLE_START

    value = fields.get("vendor_name")
    if not isinstance(value, str) or not _NAME_IN_LEGAL_FORM.search(value.strip()):
        return []
    flat = " ".join(value.split())
    wholes = {c for line in (text or "").splitlines()[:HEADER_LINES]
              for c in (_TRAILING_REGISTRATION.sub("", " ".join(cell.split())) for cell in re.split(r" {2,}", line.strip()))
              if c.endswith(" " + flat) and re.fullmatch(r"[^\W\d_][^\W_]*(?:[ &.'-]+[^\W_]+)*", c[: -len(flat) - 1])}
    if len(wholes) != 1:
        return []
    after = wholes.pop()
    if TITLE_START.match(after) or labelled_text(text, "vendor_name"):
        return []  # a title or stamp word before the name (`COPY`, `Firma`); a vendor label: `reconcile_parties` decides
    fields["vendor_name"] = after
    return [Reconciled("vendor_name", value, after, "the end of a name printed whole in the header")]


_IBAN_LABEL = re.compile(r"(?i)(?<![^\W\d_])" + LEXICON.label("iban") + r"\s*[:.\uff1a]?\s*$")  # a scan's colon may be full-width


def reconcile_bank(fields: dict, text: str) -> list[Reconciled]:
    """The IBAN: one that fails the ISO 13616 check where the document prints exactly one that
    passes it (a creditor identifier, `DE63ZZZ00000015422`, has an IBAN's outline) becomes that
    one; a null IBAN where the document prints exactly one IBAN right after an `IBAN` label
    (its whole printed run, passing the check or not) becomes that one."""
    from stdnum import iban

    from extraction.candidates import _IBAN_START, iban_candidates

    if "bank" not in fields:
        return []
    bank = fields["bank"] if isinstance(fields["bank"], dict) else BankDetails().model_dump()
    value = bank.get("iban")
    after = None
    if isinstance(value, str) and value.strip() and not iban.is_valid(value):
        valid = [c for c in iban_candidates(text) if iban.is_valid(c)]
        after = valid[0] if len(valid) == 1 else None
    elif not value:
        labelled = set()
        for m in _IBAN_START.finditer(text):
            if _IBAN_LABEL.search(text_before(text, m.start())):
                end = text.find("\n", m.start())
                runs = [c for c in iban_candidates(text[m.start() : len(text) if end == -1 else end])
                        if c.startswith(m.group(0))]
                if runs:
                    labelled.add(max(runs, key=len))
        after = labelled.pop() if len(labelled) == 1 else None
    if after is None or after == value:
        return []
    bank["iban"] = after
    fields["bank"] = bank
    return [Reconciled("bank.iban", value, after, "the IBAN the document prints (after its label, or the valid one)")]


#: An invoice number's label starting a cell (a line, or after a gap of two spaces: not `Relates to
#: invoice INV-1`, a credit note's reference), and the number after it.
_INVOICE_LABEL = re.compile(r"(?im)(?:^|(?<= {2}))[ \t]*(?:" + _NUMBER_LABELS["invoice_id"]
                            + r")(?![^\W\d_])\s*[:.#]?\s*(?P<value>[^\s:]*\d[^\s:]*)")


def reconcile_invoice_number(fields: dict, text: str) -> list[Reconciled]:
    """The invoice number where the document prints exactly one number right after an invoice
    number's label (`Rechnungsnummer: R0005532486`, `Invoice  FA-2017-0008`, `Handelsrechnung
    Nr. 471102`; not a date, two digits at least): a null invoice number, or one that is printed
    after no such label (a register number, `HRB Nr. 372876`), becomes that number."""
    if "invoice_id" not in fields:
        return []
    value = fields["invoice_id"]
    found = {_without_number_sign(m.group("value").rstrip(".,;")) for m in _INVOICE_LABEL.finditer(text)}
    found = {v for v in found if not _NUMERIC_DATE.fullmatch(v) and len(re.findall(r"\d", v)) >= 2}
    if len(found) != 1 or (isinstance(value, str) and value.strip() in found):
        return []
    after = found.pop()
    fields["invoice_id"] = after
    reason = "null" if not value else "printed after no invoice number's label"
    return [Reconciled("invoice_id", value, after, f"{reason}; the number printed after the invoice number's label")]


_CHANGE_LABEL = re.compile(r"(?i)(?<![^\W\d_])" + LEXICON.label("change_given") + r"(?![^\W\d_])")
#: The largest rounding adjustment (cash totals are rounded to 5 or 10 cents).
MAX_ROUNDING = Decimal("0.10")
ROUNDED_TO = Decimal("0.05")


def _rounded_totals(total: Decimal, tax: Decimal | None, counts: dict[Decimal, int]) -> set[Decimal]:
    """Printed totals (`counts`: `_printed_counts`) the answer's total, or it plus its tax where
    that sum is printed, makes with one printed rounding adjustment, each a multiple of 5 cents."""
    bases = {total} | ({total + tax} if tax and abs(total + tax) in counts else set())
    roundings = {v for v in counts if CENT <= v < MAX_ROUNDING}
    return {c for base in bases for r in roundings for c in (base + r, base - r)
            if c > 0 and c in counts and c % ROUNDED_TO == 0}


def reconcile_receipt_total(fields: dict, text: str) -> list[Reconciled]:
    """The amount a receipt asks for, where the answer's total is another amount beside it:
    - **before rounding**: a total that is no multiple of 5 cents, on a document with a
      rounding label, becomes the one printed multiple of 5 cents that it (or it plus the
      tax) makes with one printed adjustment under 10 cents (`127.37`, `ROUNDING ADJ -0.02`,
      `127.35`);
    - **the cash handed over**: a whole-unit total printed once, on a document with a change
      label, becomes the one amount printed more often than it whose difference to it is
      printed too (`50.00` tendered, `21.85` change: `28.15`)."""
    total = _dec(fields.get("total_amount"))
    if total is None or total <= 0:
        return []
    counts = _printed_counts(text)
    found: set[Decimal] = set()
    reason = ""
    if total % ROUNDED_TO != 0 and _ROUNDING.search(text):
        found = _rounded_totals(total, _dec(fields.get("tax")), counts)
        reason = "the amount before rounding; the printed total the rounding adjustment makes"
    if not found and total % 1 == 0 and counts.get(total) == 1 and _CHANGE_LABEL.search(text):
        found = {x for x, n in counts.items()
                 if 0 < x < total and n >= 2 and (total - x) in counts and total - x != x}
        reason = "the cash handed over; the printed total that it less the printed change makes"
    if len(found) != 1:
        return []
    after = _text(found.pop())
    before = fields["total_amount"]
    fields["total_amount"] = after
    return [Reconciled("total_amount", before, after, reason)]


#: A net total's label starting the cell an amount is printed after (`Positionssumme  180,76`).
_NET_TOTAL = re.compile(r"(?i)^[\s:]*" + LEXICON.label("net_total") + r"(?![^\W\d_])[\s:.]*(?:[A-Z]{3}|[€$£])?[\s:]*$")


def reconcile_net_total(fields: dict, text: str) -> list[Reconciled]:
    """The subtotal where the document prints exactly one amount (two decimals) right after a net
    total's label that starts its cell (`Positionssumme  180,76`, `Net total  2,076.76 €`,
    `Nettobetrag: 496,00 €`): a subtotal that is no such amount (a rate, a tax, the total read
    again) becomes that one."""
    from extraction.candidates import _label_cell

    if "subtotal" not in fields:
        return []
    value = _dec(fields["subtotal"])
    found: set[Decimal] = set()
    for start, readings in _printed_numbers(text, cents_only=True):
        line_start = text.rfind("\n", 0, start) + 1
        before = text[line_start:start]
        cell = _label_cell(before)
        label = before[before.rfind(cell):] if cell else ""
        if label and _NET_TOTAL.match(label) and not _printed(label, cents_only=True):
            found.update(readings)
    if len(found) != 1 or (value is not None and value in found):
        return []
    after = _text(found.pop())
    change = Reconciled("subtotal", fields["subtotal"], after, "the one amount printed after a net total's label")
    fields["subtotal"] = after
    return [change]


def reconcile_gross_tax(fields: dict, text: str) -> list[Reconciled]:
    """A null tax where the totals do not balance without it (allowances and charges the answer
    does not hold): the one amount printed under a tax label (`Steuerbetrag in EUR  76,67`) that,
    taken from the total, leaves a printed amount (the net, `403,55`) larger than itself."""
    total = _dec(fields.get("total_amount"))
    if "tax" not in fields or fields["tax"] is not None or total is None or total <= 0:
        return []
    if _dec(fields.get("subtotal")) == total:
        return []  # balanced without a tax: none is charged
    amounts = {abs(v) for v in _printed(text, cents_only=True)}
    found = {abs(v) for v in amounts if 0 < v < total - v and (total - v) in amounts and _amount_labelled(text, v, "tax")}
    if len(found) != 1:
        return []
    after = _text(found.pop())
    fields["tax"] = after
    return [Reconciled("tax", None, after, "null; the amount printed under a tax label that the total is the net plus")]


def reconcile_currency(fields: dict, text: str) -> list[Reconciled]:
    """A null currency where the document prints no currency code or sign at all (a scan's text
    may lose the `€`) and every IBAN it prints that passes the ISO 13616 check is kept in the
    euro area (`places.euro_area`): EUR."""
    from stdnum import iban

    from extraction.candidates import currency_candidates, iban_candidates

    if "currency" not in fields or fields["currency"] or currency_candidates(text):
        return []
    countries = {c[:2] for c in iban_candidates(text) if iban.is_valid(c)}
    if not countries or not countries <= set(LEXICON.places.get("euro_area") or ()):
        return []
    fields["currency"] = "EUR"
    return [Reconciled("currency", None, "EUR", "null, no currency printed; the account is in the euro area")]


@dataclass(frozen=True)
class ReconciliationRule:
    """One named reconciliation step: `run(fields, text, grounding)` changes `fields` in place
    and returns the changes it made."""

    name: str
    run: Callable[[dict, str, dict | None], list[Reconciled]]


#: The reconciliation steps, in the order they run (each sees the fields as the ones before
#: it left them).
RECONCILIATION_RULES: tuple[ReconciliationRule, ...] = (
    ReconciliationRule("shapes", lambda f, t, g: reconcile_shapes(f, t)),
    ReconciliationRule("signs", lambda f, t, g: reconcile_signs(f, t)),
    ReconciliationRule("rows", reconcile_rows),
    ReconciliationRule("net_total", lambda f, t, g: reconcile_net_total(f, t)),
    ReconciliationRule("subtotal", lambda f, t, g: reconcile_subtotal(f, t)),
    ReconciliationRule("receipt_total", lambda f, t, g: reconcile_receipt_total(f, t)),
    ReconciliationRule("totals", lambda f, t, g: reconcile_totals(f, t)),
    ReconciliationRule("gross_tax", lambda f, t, g: reconcile_gross_tax(f, t)),
    ReconciliationRule("identifiers", lambda f, t, g: reconcile_identifiers(f, t)),
    ReconciliationRule("invoice_number", lambda f, t, g: reconcile_invoice_number(f, t)),
    ReconciliationRule("bank", lambda f, t, g: reconcile_bank(f, t)),
    ReconciliationRule("currency", lambda f, t, g: reconcile_currency(f, t)),
    ReconciliationRule("address", lambda f, t, g: reconcile_address(f, t)),
    ReconciliationRule("run_on_text", lambda f, t, g: reconcile_run_on_text(f, t)),
    ReconciliationRule("parties", lambda f, t, g: reconcile_parties(f, t)),
    ReconciliationRule("whole_name", lambda f, t, g: reconcile_whole_name(f, t)),
)


def run_rules(fields: dict, text: str, grounding: dict | None = None,
              rules: tuple[ReconciliationRule, ...] = RECONCILIATION_RULES) -> list[tuple[str, list[Reconciled]]]:
    """Apply `rules` to `fields` in place, in order: each rule's name and the changes it made."""
    return [(rule.name, rule.run(fields, text, grounding)) for rule in rules]


def reconcile(fields: dict, text: str, grounding: dict | None = None) -> list[Reconciled]:
    """Apply the reconciliations (`RECONCILIATION_RULES`) to `fields` in place; the changes made, in order."""
    return [change for _, changes in run_rules(fields, text, grounding) for change in changes]


def undo(fields: dict, changes: list[dict]) -> dict:
    """A copy of `fields` as decoded: `changes` (as `Reconciled.as_dict()`) taken back."""
    out = copy.deepcopy(fields)
    for change in reversed(changes):
        m = re.fullmatch(r"line_items\[(\d+)\]\.(\w+)", change["field"])
        if m:
            out["line_items"][int(m.group(1))][m.group(2)] = change["before"]
        elif "." in change["field"]:  # `bank.account_number`
            top, key = change["field"].split(".", 1)
            out[top][key] = change["before"]
        else:
            out[change["field"]] = change["before"]
    return out
