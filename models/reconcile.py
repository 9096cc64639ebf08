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

Nothing happens when the answer balances, or when more than one change would balance it.
Each applied change is reported (`Reconciled`) so callers can show it and lower their
trust in the field; the extract step records them with the step's model output.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation

from invoicechain.schema import DECIMAL_PATTERN
from models.candidates import _NUMBER, _NUMERIC_DATE, FIELD_LABELS, _readings, text_before

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
        if len(fixes) != 1:
            continue  # nothing, or nothing unambiguous, balances the row: leave it as read
        column, n = fixes[0]
        after = _text(n)
        changes.append(Reconciled(
            f"line_items[{i}].{column}", item.get(column), after,
            "quantity x unit price did not equal the amount; the printed number that balances the row",
        ))
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
    if len(options) != 1:
        return []
    dst, src, value = options[0]
    if dst is None:
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
_AMOUNT_LABELS = {
    "shipping": r"shipping|freight|delivery|carriage|postage|handling|s\s*&\s*h|versand(?:kosten)?|fracht|porto|verpackung"
                r"|frais\s*de\s*(?:port|livraison|transport)|transport|verzend(?:kosten|ing)|(?:gastos\s*de\s*)?env[íi]o"
                r"|portes|(?:spese\s*di\s*)?spedizione|trasporto",
    "tax": r"(?:sales\s*)?tax|vat|gst|hst|pst|mwst\.?|ust\.?|umsatzsteuer|mehrwertsteuer|tva|btw|iva|igic",
    "discount": r"discount|rebate|rabatt|nachlass|skonto|remise|escompte|korting|descuento|sconto",
    "other": r"(?:sub)?total|net|amount|summe|gesamt|betrag|zwischensumme|montant|totaal|subtotaal|importe|totale"
             r"|imponibile|imponible|suma|brutto|netto|ttc|ht|payer|betalen|balance|due",
}
_AMOUNT_LABEL = re.compile("|".join(f"(?P<{k}>(?<![^\\W\\d_])(?:{rx})(?![^\\W\\d_]))" for k, rx in _AMOUNT_LABELS.items()),
                           re.IGNORECASE)


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
        labels = list(_AMOUNT_LABEL.finditer(text_before(text, start)))
        if not labels or labels[-1].lastgroup not in found:
            continue
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
    "invoice_id": r"invoice(?:\s*(?:no\.?|number|nr\.?|#|id))?|inv\.?\s*(?:no\.?|#)|rechnungs?[\s-]*(?:nr\.?|nummer)"
                  r"|rechnung|(?:n[°º.]*\s*de\s*)?facture(?:\s*n[°º])?|num[ée]ro\s*de\s*facture|factuur(?:nummer|nr\.?)?"
                  r"|(?:n\.?[°º]\s*de\s*)?factura(?:\s*n\.?[°º])?|n[úu]mero\s*de\s*factura|fattura(?:\s*n\.?)?"
                  r"|numero\s*fattura",
    "po_number": FIELD_LABELS["po_number"],
    "customer": r"customer\s*(?:no\.?|number|id|#)|account\s*(?:no\.?|number|#)|acct\.?\s*(?:no\.?|#)?"
                r"|kunden(?:nummer|-nr\.?)|konto(?:nummer|-nr\.?)|n[°º]\s*(?:client|de\s*compte)|code\s*client"
                r"|klantnummer|rekeningnummer|n\.?[°º]\s*de\s*(?:cliente|cuenta)|codice\s*cliente|conto\s*n\.?",
    "delivery": r"delivery\s*note|packing\s*slip|lieferschein|bon\s*de\s*livraison|pakbon|albar[áa]n|ddt",
    "tax_id": r"vat(?:\s*reg(?:istration)?\.?)?\s*(?:no\.?|number|id|#)|tax\s*(?:id|no\.?|number|reg(?:istration)?\.?\s*no\.?)"
              r"|tin|ein|abn|gst(?:/hst)?(?:\s*(?:reg\.?\s*)?(?:no\.?|number|#))?|gstin|hst\s*(?:no\.?|#)"
              r"|ust[\s.-]*id[\s.-]*(?:nr\.?)?|steuer(?:nummer|[\s-]*nr\.?)|(?:n[°º]\s*)?tva(?:\s*intracom(?:munautaire)?\.?)?"
              r"|siret|siren|btw[\s-]*(?:nummer|nr\.?|id)|kvk(?:[\s-]*(?:nummer|nr\.?))?|nif|cif|n\.?i\.?f\.?"
              r"|p\.?\s*iva|partita\s*iva|codice\s*fiscale|company\s*reg(?:istration)?\.?\s*(?:no\.?|number)",
}
_NUMBER_LABELS["payment_terms"] = FIELD_LABELS["payment_terms"]
_LABEL_BEFORE = {kind: re.compile(rf"(?i)(?<![^\W\d_])(?:{rx})\s*[:.#]?\s*$") for kind, rx in _NUMBER_LABELS.items()}


def _labels_of(value: str, text: str) -> list[str | None]:
    """The label kind printed right before each occurrence of `value` in `text` (None where
    none is known); `date` where the occurrence is part of a date, `line item` where it
    starts a line item's row (an item code: the words before the row's quantity, unit price
    and amount)."""
    from models.candidates import _date_spans, balanced_readings

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
_ADDRESS_END = re.compile(
    r"(?i)[\s,.;:-]*(?<![^\W\d_])(?:tel(?:ephone)?|phone|fax|h/p|mobile|e-?mail|website|gst\s*(?:reg|id|no)"
    r"|co(?:mpany)?\.?\s*reg)(?![^\W\d_]).*$")
#: A company name printed before its address: its legal form, then perhaps its registration
#: number (`TK DIVISION KITCHEN SDN BHD 1202152-P 19-1, JALAN ...`).
_COMPANY_HEAD = re.compile(
    r"(?i)^.{0,80}?(?<![^\W\d_])(?:sdn\.?\s*bhd|bhd|pty\.?\s*ltd|ltd|limited|llc|inc|gmbh|plc)\.?"
    r"(?:\s*\(?\d{3,8}-?[A-Z]\)?)?[\s,.;:-]+")


def reconcile_address(fields: dict, text: str) -> list[Reconciled]:
    """The vendor's address without what is printed around it: a company name (the vendor's
    own, or one ending in a legal form and a registration number) before it, a phone, fax
    or registration label and what follows after it."""
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
    m = _ADDRESS_END.search(out)
    # only after a whole address: its head holds a postcode-like number and a word
    if m and re.search(r"\d{4,}", out[: m.start()]) and re.search(r"[^\W\d_]{3}", out[: m.start()]):
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
    r"|(?:e-?mail|correo|courriel|tel(?:efon|éfono|efono)?|phone|fax)\s*[:.]"  # a contact's
    r"|(?:invoice\s*(?:no\.?|number)|num[ée]ro\s*de\s*facture|rechnungs?[\s-]*(?:nr\.?|nummer)|factuurnummer"
    r"|n[úu]mero\s*de\s*factura|numero\s*fattura)\s*[:.#]?\s*$"
    r"|(?:sub-?total|subtotaal|zwischensumme|sous-total|total\s*ht|base\s*imponible|imponibile|net\s*amount|nettobetrag"
    r"|due\s*date|payment\s*due|f\u00e4llig(?:keitsdatum|\s*am)|zahlbar\s*bis|date\s*d'\s*\u00e9ch\u00e9ance|vervaldatum"
    r"|fecha\s*de\s*vencimiento|data\s*scadenza)\s*[:.#]?\s*(?:$|[0-9]))")


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


def reconcile_shapes(fields: dict, text: str) -> list[Reconciled]:
    """The shapes the grammar holds labelled values to (`models.grammar._SHAPES`), for every
    value: a vendor or client name loses a leading title or stamp word (`COPY ANDERSSON
    OFFICE SUPPLIES HB`) and is null without two letters in a row (`Z = 0% 4.00`, `KOPIE`);
    an invoice, PO or bank account number without a digit (`RECHNUNG`) is null."""
    from models.grammar import TITLE_START

    changes = []
    for name in ("vendor_name", "client_name"):
        value = fields.get(name)
        if not isinstance(value, str):
            continue
        after = value
        while m := TITLE_START.match(after):
            after = after[m.end():]
        after = after if re.search(r"[^\W\d_]{2}", after) else None
        if after != value:
            fields[name] = after
            changes.append(Reconciled(name, value, after, "a title or stamp word, or no name"))
    bank = fields.get("bank") if isinstance(fields.get("bank"), dict) else {}
    for name, holder in (("invoice_id", fields), ("po_number", fields), ("bank.account_number", bank)):
        key = name.rsplit(".", 1)[-1]
        value = holder.get(key)
        if isinstance(value, str) and not re.search(r"\d", value):
            holder[key] = None
            changes.append(Reconciled(name, value, None, "a number without a digit"))
    return changes


def reconcile(fields: dict, text: str, grounding: dict | None = None) -> list[Reconciled]:
    """Apply the reconciliations to `fields` in place; the changes made, in order."""
    return (reconcile_shapes(fields, text) + reconcile_rows(fields, text, grounding) + reconcile_subtotal(fields, text)
            + reconcile_totals(fields, text) + reconcile_identifiers(fields, text) + reconcile_address(fields, text)
            + reconcile_run_on_text(fields, text))


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
