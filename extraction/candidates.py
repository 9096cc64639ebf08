"""What a document can give each field: its own numbers and dates in canonical form, and
its own text.

Grounded decoding (`extraction.grammar.document_grammar`) lets the model write an amount or a
date only as one of the values printed in the document, and a name, number or description
only as a piece of the document's text. The model still chooses which value goes where;
the grammar only rules out what the document does not say: a dropped digit, a
`3.3333` for a printed `3.333,85`, an invented date, a misspelt name.

* Numbers: every digit run with `,` `.` `'` or space grouping is read in each way it can be
  meant (`1.234` is 1234 or 1.234; `1.234,56` is 1234.56; `7,5` is 7.5), with either sign
  (credit notes and discounts print signs in several ways).
* Dates: numeric dates (`/` `.` `-` separators, two- or four-digit years) in each order
  they can be meant (day first, month first, year first), and dates with a month name in
  any language dateparser knows (`14. März 2026`, `March 14th, 2026`, `14-MAR-18`).
* Currencies: ISO 4217 codes printed in the text, and the codes its signs can stand for
  (`$` is USD, AUD, CAD, ...; `kr` is SEK, NOK, DKK or ISK).
* IBANs: a country code and two check digits followed by letter/digit groups, printed with
  or without spaces, written without them; where some reading passes the ISO 13616 check
  (python-stdnum), only those readings, else every reading of 15 to 34 characters (a
  misprinted IBAN can still be copied, as printed).
* Text: the document's words and separators, whitespace runs as one space, each
  JSON-escaped (a value holds whole words as printed and never splits an escape).
* Rows: the (quantity, unit price, amount) readings of a printed line that balance
  (`balanced_readings`), and the words before them that make an item's description
  (`row_words`, `row_descriptions`).
* Labels: what the text prints right after a field's own label (bank details, a due
  date, a client, payment terms: `labelled_*`), which the grammar never lets the model
  leave out.
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import NamedTuple

from invoicechain.lexicon import lexicon

LEXICON = lexicon()

#: The canonical amount of the schema: up to 9 integer digits and 4 decimals.
_CANONICAL = re.compile(r"^-?[0-9]{1,9}(\.[0-9]{1,4})?$")
_NUMBER = re.compile(r"(?<![0-9])[0-9]{1,3}(?:[,.' \u00a0\u202f][0-9]{3})*(?:[.,][0-9]{1,4})?(?![0-9])|(?<![0-9])[0-9]+(?:[.,][0-9]{1,4})?(?![0-9])")
_NUMERIC_DATE = re.compile(r"(?<![0-9])([0-9]{1,4})([./-])([0-9]{1,2})\2([0-9]{2,4})(?![0-9])")
_WORD = r"[^\W\d_]{3,12}\.?"
#: What follows a day's number (`1st`) and what joins a date's parts (`3 de marzo de 2026`): lexicon words.
_ORD, _JOIN = LEXICON.alternation("ordinals") + "?", LEXICON.alternation("date_joiners")
_TEXT_DATES = (
    re.compile(r"(?<![0-9])[0-9]{1,2}" + _ORD + r"\.?[\s-]*" + _WORD + r",?[\s-]*[0-9]{2,4}(?![0-9])"),
    re.compile(_WORD + r"\s*[0-9]{1,2}" + _ORD + r",?\s*[0-9]{4}(?![0-9])"),
    re.compile(r"(?<![0-9])[0-9]{1,2}\s+" + _JOIN + r"\s+" + _WORD + r"\s+" + _JOIN + r"\s+[0-9]{4}(?![0-9])"),
)
_PIECE = re.compile(r" |[,;:()\[\]]|[^ ,;:()\[\]]+")
_LANGUAGES = list(LEXICON.date_languages)


def _canonical(value: Decimal) -> str | None:
    text = f"{value:f}"
    return text if _CANONICAL.match(text) else None


def _readings(token: str) -> set[Decimal]:
    """Every number a printed digit group can mean."""
    out: set[Decimal] = set()
    seps = [c for c in token if not c.isdigit()]
    digits_only = re.sub(r"[^0-9]", "", token)

    def add(text: str) -> None:
        try:
            out.add(Decimal(text))
        except InvalidOperation:
            pass

    if not seps:
        add(token)
        return out
    last = max(token.rfind("."), token.rfind(","))
    tail = token[last + 1 :]
    head = token[:last]
    # The last separator as a decimal point, every earlier one as grouping.
    if token[last] in ".," and len(tail) <= 4:
        add(re.sub(r"[^0-9]", "", head) + "." + tail)
    # Every separator as grouping (`1.234`, `1,234,567`, `1 234`).
    if all(len(g) == 3 for g in re.split(r"[,.' \u00a0\u202f]", token)[1:]):
        add(digits_only)
    return out


def number_candidates(text: str) -> list[str]:
    """Canonical decimal strings of every number the text prints, with both signs."""
    found: set[str] = set()
    for m in _NUMBER.finditer(text or ""):
        token = m.group(0)
        parts = [token, *re.split(r"[ \u00a0\u202f]", token)] if re.search(r"[ \u00a0\u202f]", token) else [token]
        for part in parts:
            for value in _readings(part):
                for v in (value, -value):
                    c = _canonical(v)
                    if c is not None and c != "-0" and not c.startswith("-0.0000"):
                        found.add(c)
    return sorted(found, key=lambda s: (len(s), s))


#: Words of a total's label (English, German, French, Dutch, Spanish, Italian; receipts'
#: `TOTAL RM`, `ROUNDED TOTAL`), and words that make such a label another amount's
#: (`Sub-total`, `Total tax`, `Total net`, `Total qty`, `Cash`, `Change`) unless it says
#: the total includes them (`TOTAL INCL. GST`, `Total TTC`, `Summe brutto`).
_TOTAL_WORDS = re.compile("(?i)" + LEXICON.label("total"))
_NOT_TOTAL_WORDS = re.compile("(?i)" + LEXICON.label("not_total"))
_TOTAL_INCLUDES = re.compile("(?i)" + LEXICON.label("total_includes"))


def _is_total_label(label: str) -> bool:
    return bool(_TOTAL_WORDS.search(label)) and (
        not _NOT_TOTAL_WORDS.search(label) or bool(_TOTAL_INCLUDES.search(label)))


def _label_cell(before: str) -> str:
    """The cell that labels an amount printed after `before` (the text before it on its line):
    the last cell (cells are split by gaps of two spaces) holding a letter, a bare currency
    code or sign not counted."""
    for cell in reversed(re.split(r" {2,}", before.rstrip())):
        bare = cell.strip(" :.-")
        if re.search(r"[^\W\d_]", bare) and not re.fullmatch(r"[A-Z]{3}|RM|[€$£¥]", bare):
            return cell
    return ""


def labelled_totals(text: str) -> list[str]:
    """The amounts (two decimals, not zero, not a percentage) the text prints after a total's
    label on their line (`Total due  € 208,30`, `TOTAL RM  41.00`): canonical decimals,
    both signs. A label that holds a rate (`TOTAL INCLUDED GST @ 6%`) labels no total."""
    text = text or ""
    found: dict[str, None] = {}

    def add(token: str) -> None:
        for value in _readings(token.replace(" ", "")):
            for v in (value, -value):
                c = _canonical(v)
                if c is not None and c.strip("-0."):
                    found[c] = None

    lines = [ln for ln in text.splitlines() if ln.strip(" \t:")]  # a lone colon is no line of its own
    columns: dict[str, None] = {}  # a label's first amount of several in a row: a summary table's column
    for k, line in enumerate(lines):
        for m in _NUMBER.finditer(line):
            token = m.group(0)
            if len(token) <= 3 or token[-3] not in ".," or line[m.end():].lstrip().startswith("%"):
                continue
            label = _label_cell(line[max(0, m.start() - 60) : m.start()])
            if _is_total_label(label) and not re.search(r"[@%]", label):
                add(token)
        # A receipt's OCR text prints a label alone on its line and its amount alone on the next.
        label = line.strip()
        below = lines[k + 1].strip() if k + 1 < len(lines) else ""
        after = " ".join(lines[k + 2 : k + 4])
        if (_LONE_AMOUNT.fullmatch(below) and _lone_total_label(label)
                and not _ROUNDING.search(after)):  # rounded below: not the total
            if k + 2 < len(lines) and _LONE_AMOUNT.fullmatch(lines[k + 2].strip()):
                # `TOTAL :  26.00  1.56`: net and tax of a tax summary's row (the last of stacked
                # labels, `stacked_labels`, is not even that)
                if not (k and _label_only(lines[k - 1])):
                    columns[below.lstrip("-")] = None
            else:
                add(below.lstrip("-"))
    for label, amount in stacked_labels(lines):
        if _lone_total_label(label):
            add(amount.lstrip("-"))
    if not found:
        for token in columns:
            add(token)
    return list(found)


def _lone_total_label(label: str) -> bool:
    return not _NUMBER.search(label) and _is_total_label(label) and not re.search(r"[@%]", label)


#: The fewest labels read as a block stacked above its amounts (two are a table's column heads).
STACKED_LABELS = 3


def _label_only(line: str) -> bool:
    return bool(re.search(r"[^\W\d_]{2}", line)) and not _NUMBER.search(line)


def stacked_labels(lines: list[str]) -> list[tuple[str, str]]:
    """Labels and amounts of a receipt whose OCR text reads a block's labels column first and
    its amounts after them (`SUBTOTAL :`, `GST :`, `TOTAL :`, then `94.34`, `5.66`, `100.00`):
    where a run of STACKED_LABELS or more lines that hold only a label is followed at once by
    exactly as many lines that hold only an amount, the i-th label with the i-th amount (a
    count that differs leaves the pairing unknown: nothing)."""
    out = []
    k, n = 0, len(lines)
    while k < n:
        j = k
        while j < n and _label_only(lines[j]):
            j += 1
        labels = [ln.strip() for ln in lines[k:j]]
        m = j
        while m < n and _LONE_AMOUNT.fullmatch(lines[m].strip()):
            m += 1
        if len(labels) >= STACKED_LABELS and m - j == len(labels):
            out += list(zip(labels, (ln.strip() for ln in lines[j:m])))
        k = max(j, k + 1)
    return out


_ROUNDING = re.compile(r"(?i)(?<![^\W\d_])" + LEXICON.label("rounding"))
#: A line that holds one amount with cents and nothing else (a sign or currency code at most).
_LONE_AMOUNT = re.compile(r"(?:[A-Z]{2,3}\s*)?-?[0-9]{1,3}(?:[,.][0-9]{3})*[.,][0-9]{2}")


def _valid(y: int, m: int, d: int) -> str | None:
    if y < 100:
        y += 2000
    try:
        return date(y, m, d).isoformat() if 1900 <= y <= 2100 else None
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _parse_text_date(span: str) -> str | None:
    import dateparser

    settings = {"STRICT_PARSING": True, "PREFER_DAY_OF_MONTH": "first", "RETURN_AS_TIMEZONE_AWARE": False}
    try:
        parsed = dateparser.parse(span, languages=_LANGUAGES, settings=settings)
    except Exception:  # dateparser raises on odd inputs; the span is then not a date
        return None
    return _valid(parsed.year, parsed.month, parsed.day) if parsed else None


_PLACES = LEXICON.places
#: What marks a document as written in the United States (month first): a state and ZIP code
#: (`Austin, TX 78701`), `USD`/`US$`, an EIN; and as written elsewhere (day first): a
#: currency other than the dollar, an IBAN.
_US_MARK = re.compile(rf"(?<![A-Za-z])(?:(?:{'|'.join(_PLACES['us_states'])})\s+\d{{5}}(?:-\d{{4}})?(?!\d)"
                      rf"|{'|'.join(_PLACES['us_marks'])})")
_ELSEWHERE_MARK = re.compile(rf"(?<![A-Za-z])(?:{'|'.join(_PLACES['elsewhere_codes'])})(?![A-Za-z])"
                             rf"|[{''.join(_PLACES['elsewhere_signs'])}]")


def date_order(text: str) -> str | None:
    """`dmy` or `mdy` where the text's numeric dates show which one it writes (a day over 12
    in one place, and never the other way round). Where they do not, the document's place:
    `mdy` for one written in the United States (`_US_MARK`, and nothing of `_ELSEWHERE_MARK`),
    `dmy` for one written elsewhere (the reverse); None where neither is clear."""
    seen = set()
    text = text or ""
    for m in _NUMERIC_DATE.finditer(text):
        a, _, b, c = m.groups()
        if len(a) <= 2 and len(c) != 3:
            if int(a) > 12 >= int(b):
                seen.add("dmy")
            elif int(b) > 12 >= int(a):
                seen.add("mdy")
    if len(seen) == 1:
        return seen.pop()
    if seen:
        return None
    us, elsewhere = bool(_US_MARK.search(text)), bool(_ELSEWHERE_MARK.search(text))
    return "mdy" if us and not elsewhere else "dmy" if elsewhere and not us else None


def printed_dates(text: str) -> list[tuple[int, list[str]]]:
    """Each date the text prints: where it starts, and its ISO readings (every order a
    numeric date can be read in, or only the text's own order where its other dates show it:
    `date_order`)."""
    out: list[tuple[int, list[str]]] = []
    text = text or ""
    order = date_order(text)
    for m in _NUMERIC_DATE.finditer(text):
        a, _, b, c = m.groups()
        ia, ib, ic = int(a), int(b), int(c)
        if len(a) == 4:
            options = [(ia, ib, ic)]
        elif len(a) <= 2:
            options = [(ic, ib, ia), (ic, ia, ib)]  # day first, month first
            if order:
                options = options[:1] if order == "dmy" else options[1:]
        else:
            options = []
        readings = [iso for y, mo, d in options if len(c) != 3 and (iso := _valid(y, mo, d))]
        if readings:
            out.append((m.start(), list(dict.fromkeys(readings))))
    for pattern in _TEXT_DATES:
        for m in pattern.finditer(text):
            iso = _parse_text_date(" ".join(m.group(0).replace("-", " ").split()))
            if iso:
                out.append((m.start(), [iso]))
    return sorted(out)


def date_candidates(text: str) -> list[str]:
    """ISO dates of every date the text prints (`printed_dates`)."""
    return document_dates(text).printed


#: Labels of a due date (English, German, French, Dutch, Spanish, Italian), matched right
#: before the date they label.
_DUE_LABEL = re.compile(r"(?i)(?<![^\W\d_])" + LEXICON.label("due_date") + r"\s*[:.]?\s*$")


#: Labels of a field whose value is the text printed after it (on its line, or alone on
#: the next line when the label ends its line), by field, as a table's cell starts them
#: (at a line start or after a gap of two spaces or more).
FIELD_LABELS = {name: "|".join(LEXICON.fragments(name))
                for name in ("vendor_name", "client_name", "payment_terms", "po_number")}

#: Fields whose value is a reference number: it holds a digit (`RECHNUNG`, `Invoice` are no
#: invoice number).
IDENTIFIER_FIELDS = frozenset({"invoice_id", "po_number"})
_CELL_LABEL = {name: re.compile(rf"(?i)(?:^|(?<=\S {{2}}))[ \t]*(?:{rx})(?:[ \t]*:[ \t]*|[ \t]*$)")
               for name, rx in FIELD_LABELS.items()}


#: How many lines below a label that ends its line may hold its value (a PDF's text can put
#: another column's line between the two).
LABEL_REACH = 3


_LABELLED_CELL = re.compile(r"[^\W\d_][^:]{0,30}:(?:\s|(?=[^/\s]))")  # `Tel: …`, `StNr.:DE20…`, not `https://`


def _label_cells(cells: list[str]) -> bool:
    """Whether a line's cells start with a label: its first cell ends in a colon, or its
    second starts with one (`Nummer  : 339420`)."""
    return cells[0].endswith(":") or (len(cells) > 1 and cells[1].startswith(":"))


def labelled_text(text: str, name: str) -> list[str]:
    """The text printed after a `FIELD_LABELS` label of field `name` (the label starts a
    cell: a line or the text after a gap of two spaces, and ends with a colon or the line):
    the rest of the label's cell, and where nothing or another label follows it on its line,
    the first cell of each of the next `LABEL_REACH` lines that do not start with a label
    themselves (`_label_cells`);
    whitespace runs as one space."""
    text = text or ""
    found: dict[str, None] = {}
    lines = text.splitlines()

    def cells(line: str) -> list[str]:
        out = []
        for cell in re.split(r" {2,}", line.strip()):
            cell = " ".join(cell.split())
            # Two columns with the same content (`Bill to` and `Ship to` alike) read as one cell.
            half = (len(cell) - 1) // 2
            out += [cell[:half]] if len(cell) % 2 and cell[half] == " " and cell[:half] == cell[half + 1:] else [cell]
        return [c for c in out if c]

    for k, line in enumerate(lines):
        for m in _CELL_LABEL[name].finditer(line):
            rest = cells(line[m.end():])
            values = rest[:1] if rest and not rest[0].endswith(":") else []
            if not rest or ":" in rest[0]:  # nothing, or another label, follows on its line
                values += [c[0] for c in map(cells, lines[k + 1 : k + 1 + LABEL_REACH]) if c and not _label_cells(c)]
            wanted = r"\d" if name in IDENTIFIER_FIELDS else r"[^\W\d_]"  # a number holds a digit, a name a letter
            # another label's cell (`E-mail: accounts@...`, `N° TVA: FR94...`) is none of this field's values
            found.update(dict.fromkeys(v for v in values if re.search(wanted, v) and not _LABELLED_CELL.match(v)))
    return list(found)


#: Legal forms that end a company's name (Malaysia, English-speaking countries, Germany,
#: France, Spain, Italy, the Netherlands, Sweden), and the trade words Malaysian receipts end
#: a company's name with.
_LEGAL_FORM = LEXICON.legal_form()
_NAME_IN_LEGAL_FORM = re.compile(rf"(?i)\S\s+({_LEGAL_FORM})$")
_LEGAL_NAME = re.compile(rf"(?i)(.+?)\s+{_LEGAL_FORM}")
#: A company's registration number printed after its legal form at the end of its cell.
_TRAILING_REGISTRATION = re.compile(r"(?i)(?<=[^\W\d_])[\s,.;:]*" + LEXICON.label("registration_number") + r"[\s,.;:]*$")
#: A word that is a legal form, or a piece of one (`GmbH`, `Sdn`, `Pty`, `Co`).
_LEGAL_FORM_WORD = re.compile(rf"(?i){_LEGAL_FORM}|sdn|pty|co")
#: How many first lines of a document are its header, where the vendor's name is.
HEADER_LINES = 5
#: How many lines a company's name may be printed over (receipts wrap long names).
NAME_LINES = 3


def legal_names(text: str) -> list[str]:
    """Where one of the text's first HEADER_LINES lines holds a cell that is a name ending in
    a legal form, perhaps with its registration number after it (`TEO HENG STATIONERY & BOOKS SDN
    BHD`, `LITTLE CRAVINGS SDN BHD (562007-D)`, `Weitzel Industriebedarf GmbH`), the
    names the vendor's can be: each cell of the text that ends in a legal form, from any of
    its words on (a name may start after a stamp or noise: `ILLEGALMEDIASOURCE UNIHAKKA
    INTERNATIONAL SDN BHD`), or, where the cell holds only one word before its legal form, from
    a word of the last cells of the NAME_LINES - 1 lines above (a name printed over several
    lines); whitespace runs as one space. Otherwise none (the name is any piece of the text)."""
    found: dict[str, None] = {}
    header = False
    lines = (text or "").splitlines()
    for k, line in enumerate(lines):
        for cell in re.split(r" {2,}|\s+·\s+", line.strip()):
            # a registration number after the legal form is no part of the name (`SDN BHD (562007-D)`)
            cell = _TRAILING_REGISTRATION.sub("", " ".join(cell.split()))
            if not _NAME_IN_LEGAL_FORM.search(cell):
                continue
            header |= k < HEADER_LINES
            # a cell with a name of two words or more before its legal form is the whole name,
            # unless it starts with a joining word (`& TEA LEAF (M) SDN. BHD.`)
            head = m.group(1) if (m := _LEGAL_NAME.fullmatch(cell)) else ""
            # (a word of two letters or more, or letters joined by `&`: `R&C`)
            words = [w for w in re.findall(r"[^\W\d_](?:[^\W\d_]|&(?=[^\W\d_]))+", head)
                     if not re.fullmatch(rf"(?i){_LEGAL_FORM}", w)]
            wrapped = len(words) < 2 or re.match(rf"(?i){LEXICON.alternation('name_joiners')}\s", cell)
            above = " ".join(filter(None, (" ".join(re.split(r" {2,}", lines[j].strip())[-1].split())
                                           for j in range(max(0, k - NAME_LINES + 1), k)))) if wrapped else ""
            whole = f"{above} {cell}".strip()
            found.update(dict.fromkeys(whole[w.start():] for w in re.finditer(r"(?<!\S)\S", whole)))

    def named(n: str) -> bool:
        """A name before the legal form, not a piece of one (`SDN BHD`, `GmbH & Co. KG`): a word
        of two letters or more that is no legal form itself."""
        m = _LEGAL_NAME.fullmatch(n)
        return bool(m) and any(not _LEGAL_FORM_WORD.fullmatch(w) for w in re.findall(r"[^\W\d_]{2,}", m.group(1)))

    return [n for n in found if named(n)] if header else []


def cell_prefixes(cell: str) -> list[str]:
    """A cell and its beginnings up to a comma, bracket, slash, semicolon or spaced dash
    (`ACME Corp (C-1234)` → `ACME Corp (C-1234)`, `ACME Corp`): where a labelled name may end."""
    out = [cell]
    for m in re.finditer(r"\s*[,(/;]|\s+[-–]\s+", cell):
        head = cell[: m.start()].rstrip()
        if head and re.search(r"[^\W\d_]", head):
            out.append(head)
    return list(dict.fromkeys(out))


#: How far before a value its label may start, on the value's own line.
LABEL_SPAN = 40


def text_before(text: str, start: int, span: int = LABEL_SPAN) -> str:
    """What `text` prints on the same line just before offset `start` (at most `span`
    characters): where a value's label is."""
    return text[max(text.rfind("\n", 0, start) + 1, start - span) : start]


#: Labels of the invoice's own date (issue date), as a cell starts them (at a line start or
#: after a gap of two spaces): `Invoice date:`, `Date:`, `Rechnungsdatum`, `Data fattura`.
_ISSUE_LABEL = re.compile(r"(?i)(?:^|(?<= {2}))[ \t]*" + LEXICON.label("issue_date") + r"\s*[:.]?\s*$")


#: Labels of the other dates an invoice prints (delivery, shipping, order, service period,
#: printing): a date printed only after one of these, or after an invoice-date label, is no
#: due date.
_OTHER_DATE_LABEL = re.compile(r"(?i)(?<![^\W\d_])" + LEXICON.label("other_date") + r"\s*[:.]?\s*$")


class DocumentDates(NamedTuple):
    """A document's dates by what they can be (`document_dates`), ISO, each list in order."""

    printed: list[str]  # every date it prints
    due: list[str]  # printed right after a due-date label
    issue: list[str]  # printed right after an invoice-date label
    unlabelled_due: list[str]  # printed at least once after no other date's label


def document_dates(text: str) -> DocumentDates:
    """The text's dates (`printed_dates`, read once) sorted by the label printed right before
    them: a due-date label (`Due date:`, `Payment due:`, `Fällig am:`, `Scadenza:`), or one on
    the lines just above a date that starts its line (`_due_above`), which a reader never leaves out; an invoice-date label (`_ISSUE_LABEL`), where the invoice date
    is one of those; another date's label (`_OTHER_DATE_LABEL`: delivery, shipping, order),
    so that a due date without a label is never a date printed only as another date."""
    text = text or ""
    printed: set[str] = set()
    due: dict[str, None] = {}
    issue: dict[str, None] = {}
    free: set[str] = set()
    for start, readings in printed_dates(text):
        before = text_before(text, start)
        printed.update(readings)
        if _DUE_LABEL.search(before) or _due_above(text, start):
            due.update(dict.fromkeys(readings))
        if _ISSUE_LABEL.search(before):
            issue.update(dict.fromkeys(readings))
        elif not _OTHER_DATE_LABEL.search(before):
            free.update(readings)
    return DocumentDates(sorted(printed), list(due), list(issue), sorted(free))


#: A due-date label that ends a line (`... überweisen Sie bitte bis zum`) or is a table's column
#: head (`Beschreibung  Fälligkeit  Teilzahlung`).
_DUE_HEAD = re.compile(r"(?i)(?:^|\s)" + LEXICON.label("due_date") + r"\s*[:.]?(?:\s*$| {2})")
#: How many lines above a date that starts its line its due-date label may be printed.
DUE_HEAD_LINES = 2


def _due_above(text: str, start: int) -> bool:
    """Whether a date that starts its line, the only date of its line, is printed under a due-date label: on one of the
    DUE_HEAD_LINES lines above it, with no date between them (the label ends its line, or heads
    a table's column)."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", start)
    line = text[line_start : len(text) if line_end == -1 else line_end]
    if text[line_start:start].strip() or not line_start or len(_NUMERIC_DATE.findall(line)) > 1:
        return False  # not at its line's start, or a table row's dates (`01.02.2026  03.03.2026`)
    above = text[:line_start - 1].split("\n")[-DUE_HEAD_LINES:]
    for line in reversed(above):
        if _DUE_HEAD.search(line):
            return True
        if _NUMERIC_DATE.search(line):
            return False
    return False


def labelled_due_dates(text: str) -> list[str]:
    """The ISO readings of the dates printed right after a due-date label (`document_dates`)."""
    return document_dates(text).due


def labelled_issue_dates(text: str) -> list[str]:
    """The ISO readings of the dates printed right after an invoice-date label (`document_dates`)."""
    return document_dates(text).issue


def due_date_candidates(text: str) -> list[str]:
    """The ISO dates a due date without a label can be (`document_dates`)."""
    return document_dates(text).unlabelled_due


#: Currency signs and the ISO 4217 codes each can stand for.
_SIGNS: dict[str, tuple[str, ...]] = LEXICON.currency_signs
#: Signs written as words: only whole words count.
_SIGN_WORDS: dict[str, tuple[str, ...]] = LEXICON.currency_words


@lru_cache(maxsize=1)
def _iso_codes() -> frozenset[str]:
    import pycountry

    return frozenset(c.alpha_3 for c in pycountry.currencies)


def currency_candidates(text: str) -> list[str]:
    """ISO 4217 codes the text prints, and the codes its currency signs can stand for."""
    text = text or ""
    found = {w for w in re.findall(r"(?<![A-Za-z])[A-Z]{3}(?![A-Za-z])", text) if w in _iso_codes()}
    for sign, codes in _SIGNS.items():
        if sign in text:
            found.update(codes)
    for word in re.findall(r"[^\W\d_]+", text):
        found.update(_SIGN_WORDS.get(word, ()))
    return sorted(found)


_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?=[ \u00a0]?[A-Z0-9])")
_IBAN_GROUP = re.compile(r"[ \u00a0]?([A-Z0-9]{1,30})")


def iban_candidates(text: str) -> list[str]:
    """Compact IBANs the text prints (see the module docstring)."""
    from stdnum import iban

    found: set[str] = set()
    text = text or ""
    for m in _IBAN_START.finditer(text):
        readings, pos, compact = [], m.end(), m.group(0)
        while len(compact) < 34:
            g = _IBAN_GROUP.match(text, pos)
            if not g:
                break
            compact += g.group(1)
            pos = g.end()
            if 15 <= len(compact) <= 34:
                readings.append(compact)
        valid = [r for r in readings if iban.is_valid(r)]
        found.update(valid or readings)
    return sorted(found)


#: A BIC (ISO 9362): bank, country, location, optional branch.
_BIC = re.compile(r"(?<![A-Za-z0-9])[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?(?![A-Za-z0-9])")
_BIC_LABEL = re.compile(r"(?i)(?<![A-Za-z])(?:{0})(?:\s*[/-]\s*(?:{0}))?(?:[ -]?code)?\s*[:.#]?\s*$".format(
    LEXICON.label("bic")))
#: Bank routing labels and the shapes of what they label: a UK sort code (`73-20-92`), a
#: US ABA number (nine digits with its check digit), an Australian BSB (`860-765`), a
#: Canadian transit/institution pair (`12345-003`), a German Bankleitzahl (eight digits).
_ROUTING_LABEL = re.compile(r"(?i)(?<![A-Za-z])" + LEXICON.label("routing")
                            + r"(?:\s*" + LEXICON.label("number_suffix") + r")?\s*[:.#]?\s*$")
_ROUTING = re.compile(r"(?<![0-9-])(?:[0-9]{2}-[0-9]{2}-[0-9]{2}|[0-9]{3}-[0-9]{3}|[0-9]{5}-[0-9]{3}|[0-9]{6}|[0-9]{8}|[0-9]{9})(?![0-9-])")


def bic_candidates(text: str) -> list[str]:
    """The BICs the text prints: tokens of the ISO 9362 shape that python-stdnum accepts."""
    from stdnum import bic

    return sorted({m.group(0) for m in _BIC.finditer(text or "") if bic.is_valid(m.group(0))})


def labelled_bank_details(text: str) -> dict[str, list[str]]:
    """Bank details the text prints beside their own label, which a reader never leaves out:
    `iban`, IBANs that pass the ISO 13616 check; `bic`, BICs right after `BIC`, `SWIFT`,
    `SWIFT/BIC` (`bic_candidates`); `routing_number`, a sort code, ABA, BSB, transit or BLZ
    number right after its label (`_ROUTING_LABEL`; an ABA number only with a valid check
    digit). The account number is not among them: `Account no.` labels a customer's account
    with the vendor as often as a bank account."""
    from stdnum import iban
    from stdnum.us import rtn

    text = text or ""
    found: dict[str, list[str]] = {"iban": [c for c in iban_candidates(text) if iban.is_valid(c)]}
    bics = set(bic_candidates(text))
    found["bic"] = sorted({m.group(0) for m in _BIC.finditer(text)
                           if m.group(0) in bics and _BIC_LABEL.search(text[max(0, m.start() - 20) : m.start()])})
    routing = set()
    for m in _ROUTING.finditer(text):
        if not _ROUTING_LABEL.search(text[max(0, m.start() - 30) : m.start()]):
            continue
        value = m.group(0)
        if len(value) == 9 and value.isdigit() and not rtn.is_valid(value):
            continue
        routing.add(value)
    found["routing_number"] = sorted(routing)
    return {k: v for k, v in found.items() if v}


def text_chunks(text: str) -> list[str]:
    """The text in the pieces a grounded value is made of, each JSON-escaped.

    Whitespace runs become one space; a piece is a space, one of `,;:()[]`, or a run of
    other characters. A value starts and ends on piece boundaries, so it holds whole words
    as printed, with their own punctuation (`Inc.`, `PTY.`), never a word cut short.
    """
    flat = " ".join((text or "").split())
    return [json.dumps(piece, ensure_ascii=False)[1:-1] for piece in _PIECE.findall(flat)]


def _date_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _NUMERIC_DATE.finditer(text)]
    for pattern in _TEXT_DATES:  # only where the words make a date (`30 box 12` is none)
        spans += [m.span() for m in pattern.finditer(text)
                  if _parse_text_date(" ".join(m.group(0).replace("-", " ").split()))]
    return spans


class Printed(NamedTuple):
    """One number a line prints (`printed_numbers`)."""

    readings: list[Decimal]
    negative: bool
    kind: str
    start: int


def printed_numbers(line: str) -> list[Printed]:
    """The numbers a line prints, left to right: each one's unsigned readings, whether it is
    printed negative (`-12.00`, `12.00-`, `(12.00)`), and its kind: `plain`, `date` (part of
    a date), `times` (beside an `x`: `2x`, `x3.50`), `percent` (`10%`) or `word` (glued to
    a letter or a hyphen: `80gsm`, `A4`, `6205-2RS`, part of a name rather than a column)."""
    line = line or ""
    dates = _date_spans(line)
    out = []
    for m in _NUMBER.finditer(line):
        readings = sorted({r for r in _readings(m.group(0)) if _canonical(r) is not None})
        if not readings:
            continue
        s, e = m.start(), m.end()
        left, right = line[s - 1 : s] if s else "", line[e : e + 1]
        minus = left in ("-", "\u2212") and not line[s - 2 : s - 1].isalnum()
        negative = minus or left == "(" or (right == "-" and not line[e + 1 : e + 2].isalnum())
        if any(a < e and s < b for a, b in dates):
            kind = "date"
        elif right == "%":
            kind = "percent"
        elif left in ("x", "X") or right in ("x", "X"):
            kind = "times"
        elif left.isalpha() or right.isalpha() or (left == "-" and not minus):
            kind = "word"
        else:
            kind = "plain"
        out.append(Printed(readings, negative, kind, s))
    return out


#: The most numbers of one line tried as a row's columns.
ROW_MAX_NUMBERS = 12


def balanced_rows(line: str) -> list[tuple[str, str, str]]:
    """The (quantity, unit price, amount) readings of `balanced_readings`, without positions."""
    return list(dict.fromkeys(triple for triple, _ in balanced_readings(line)))


def balanced_readings(line: str) -> list[tuple[tuple[str, str, str], int]]:
    """Every (quantity, unit price, amount) a printed line can be read as, with quantity x
    unit price = amount to the cent (amount not zero), each from a different number of the
    line, with the offset where the first of the three numbers starts (the row's words end
    before it: `row_description`).

    Numbers that are part of a word or a percentage are never columns, and the amount is a
    plain number (`printed_numbers`). Readings are tried in tiers and the first tier that
    has any is kept: plain numbers printed left to right in that order; then left to right
    with quantity or unit price beside an `x` or inside something read as a date (`2x3.50`;
    `set of 6 set 20  5,82  116,40`, where `6 set 20` reads as a date); then plain numbers in
    any order (a table may print the price before the quantity). `1 July 2026 - 31 July
    2026  4,072.40` is no row.

    Signs: as printed, where that keeps the identity; else every combination that keeps it
    and leaves each number printed with a minus negative (a credit note may sign only some
    columns); else every combination that keeps it.
    """
    if len(_NUMBER.findall(line or "")) < 3:
        return []
    numbers = printed_numbers(line)[:ROW_MAX_NUMBERS]
    tiers: tuple[list, list, list] = ([], [], [])
    n = len(numbers)
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if len({i, j, k}) < 3:
                    continue
                kinds = (numbers[i].kind, numbers[j].kind, numbers[k].kind)
                if kinds[2] != "plain" or "word" in kinds or "percent" in kinds:
                    continue
                ordered = i < j < k
                plain = kinds == ("plain",) * 3
                if not (ordered or plain):
                    continue
                tier = tiers[0 if ordered and plain else 1 if ordered else 2]
                first = min(numbers[x].start for x in (i, j, k))
                for a in numbers[k].readings:
                    if a == 0:
                        continue
                    for q in numbers[i].readings:
                        for p in numbers[j].readings:
                            if abs(q * p - a) <= Decimal("0.005"):
                                tier.append(((q, p, a), tuple(numbers[x].negative for x in (i, j, k)), first))
    out: dict[tuple[tuple[str, str, str], int], None] = {}
    for (q, p, a), marks, first in next((t for t in tiers if t), []):
        combos = [(sq, sp, sq * sp) for sq in (1, -1) for sp in (1, -1)]
        printed = [c for c in combos if all((sg < 0) == mk for sg, mk in zip(c, marks))]
        signed = [c for c in combos if all(sg < 0 for sg, mk in zip(c, marks) if mk)]
        for signs in printed or signed or combos:
            triple = tuple(_canonical(sg * v) for sg, v in zip(signs, (q, p, a)))
            if None not in triple:
                out[(triple, first)] = None
    return list(out)


#: Units of measure a table may print in a column of its own between an item's words and
#: its quantity (English and the invoice languages' usual abbreviations, UN/ECE Rec. 20
#: codes), compared in lower case.
UNIT_WORDS = LEXICON.units

#: Unit words that also end descriptions (`Photo shoot full day`, `Pallet storage per
#: month`): never taken off a description for sure, even in a table with a unit column.
DESCRIPTIVE_UNITS = LEXICON.descriptive_units

_ROW_NUMBER = re.compile(r"^[0-9]{1,3}[.)]?$")
#: An item code printed before an item's words: four digits or more, maybe after a short
#: letter prefix (`5727`, `A82056`, `ART-28928`, `SKU/0042`).
_ITEM_CODE = re.compile(r"^(?:[A-Za-z]{1,4}[-/]?)?[0-9]{4,}[A-Za-z]?$")


def row_words(line: str, end: int) -> list[str]:
    """The words of a printed row before offset `end`, with what is not the item's
    description taken off the front: a row number (`12`, `3.`) and an item code (`A82056`);
    and off the back: marks that hold no letter or digit (`x`, `@`, `-`)."""
    words = line[:end].split()
    if len(words) > 1 and _ROW_NUMBER.match(words[0]):
        words = words[1:]
    if len(words) > 1 and _ITEM_CODE.match(words[0]):
        words = words[1:]
    while words and (not any(c.isalnum() for c in words[-1]) or words[-1] in ("x", "X", "\u00d7")):
        words = words[:-1]
    return words


#: A table header's name for a unit-of-measure column (`Unit`, `UoM`, `Einheit`, `Unité`,
#: `Eenheid`, `Unidad`, `Unità`), not followed by a price word (`Unit price`) and not the
#: plural `Units` (a quantity column's name).
_UNIT_HEADER = re.compile(r"(?i)(?<![\w/])" + LEXICON.label("unit_column") + r"(?![\w/])"
                          r"(?!\.?\s*" + LEXICON.label("price_words") + ")")


def unit_header(line: str) -> bool:
    """Whether a table header line names a unit-of-measure column (`_UNIT_HEADER`)."""
    return bool(_UNIT_HEADER.search(line or ""))


def ends_in_unit(words: list[str]) -> bool:
    """Whether the last of a row's words is a unit of measure (`UNIT_WORDS`), with words before it."""
    return len(words) > 1 and words[-1].lower() in UNIT_WORDS


def row_descriptions(words: list[str], unit_column: bool) -> list[str]:
    """What an item's description can be, from its row's words (`row_words`): the words
    themselves, less a last word that is a unit of measure where the table has a unit
    column; where it has none (or none is known), or where the word also ends descriptions
    (`DESCRIPTIVE_UNITS`), a last unit word may be either the description's or a unit, so
    both are offered. Nothing where no word of letters is left."""
    options = []
    if ends_in_unit(words):
        options.append(words[:-1])
    if not (unit_column and ends_in_unit(words) and words[-1].lower() not in DESCRIPTIVE_UNITS):
        options.append(words)
    texts = [" ".join(w) for w in options]
    return [t for t in texts if re.search(r"[^\W\d_]{2,}", t)]
