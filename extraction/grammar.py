"""Grounded grammars for constrained decoding, as llguidance (lark) text.

Pure text: the grammar of one document's answer, built from its candidates
(`extraction.candidates`); compiling it for a tokenizer and filling token masks is the
model runtime's part (`models.matchers`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from invoicechain.lexicon import lexicon
from invoicechain.schema import CURRENCY_PATTERN, DATE_PATTERN, DECIMAL_PATTERN

#: JSON options: compact separators, no free whitespace (whitespace is never left to the model).
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


# --- grounded decoding ---------------------------------------------------------------------

#: Text fields whose value is a piece of the document's text, written as it is printed.
#: Addresses (ADDRESS_FIELDS) and IBANs (`extraction.candidates.iban_candidates`) have rules of
#: their own.
GROUNDED_TEXT_FIELDS = frozenset({
    "invoice_id", "vendor_name", "client_name", "po_number", "payment_terms",
    "description", "bic", "account_number", "routing_number",
})


#: Address fields: printed over several lines (or cells of a line) and answered as their
#: parts joined by `, `, so up to ADDRESS_PARTS pieces of the text joined by `, `.
ADDRESS_FIELDS = frozenset({"vendor_address"})
ADDRESS_PARTS = 8

#: Labelled text fields whose value is a whole cell after the label, or the cell up to a
#: comma, bracket, slash or dash (`extraction.candidates.cell_prefixes`): a name is never cut
#: short (`Bolzmann Kitzmann AG & Co.` of `Bolzmann Kitzmann AG & Co. OHG`).
WHOLE_CELL_FIELDS = frozenset({"client_name"})

#: Text fields that, where the document prints their label (`Bill to:`, `Terms:`, `PO #:`),
#: are a piece of the text after it and never null (`extraction.candidates.labelled_text`).
LABELLED_TEXT_FIELDS = ("client_name", "payment_terms", "po_number")


#: A text value's outline: at least one character, no space at either end.
_TRIMMED = "/[^ ](.*[^ ])?/"

#: Words a document prints as its title or a stamp (every language of the lexicon): a name never starts with one (`COPY ANDERSSON OFFICE SUPPLIES HB` is a stamp
#: beside the name). `Invoice Cloud Inc.` cannot be written: such names are rare.
TITLE_WORDS = lexicon().title_words
_TITLE_VARIANTS = [v for w in TITLE_WORDS for v in dict.fromkeys((w, w.capitalize(), w.title()))]
#: Not a name: one that starts with a title or stamp word, or holds no two letters in a row.
#: One negated union, not two intersections: llguidance's lexer builds far fewer states.
_NOT_A_NAME = "~/(({})([ ,].*)?|([^\\p{{L}}]|\\p{{L}}[^\\p{{L}}])*\\p{{L}}?)/".format("|".join(_TITLE_VARIANTS))
#: A title or stamp word starting a text (with what separates it from the rest).
TITLE_START = re.compile(r"(?i)(?:{})(?:[ ,]+|$)".format("|".join(map(re.escape, TITLE_WORDS))))

#: Shapes some grounded text fields keep (terminal suffix, regex): a reference or account
#: number holds a digit (`RECHNUNG` is no invoice number); a name holds two letters in a
#: row (`Z = 0% 4.00` is none) and starts with no title or stamp word (TITLE_WORDS). The
#: grammar holds a labelled value to its shape; reconciliation holds every other value to it.
_SHAPES = {
    "vendor_name": ("NAME", _NOT_A_NAME),
    "client_name": ("NAME", _NOT_A_NAME),
    "invoice_id": ("NUMBER", "~/[^0-9]*/"),
    "po_number": ("NUMBER", "~/[^0-9]*/"),
    "account_number": ("NUMBER", "~/[^0-9]*/"),
}


def _lit(text: str) -> str:
    """A Lark string literal."""
    return json.dumps(text)


def document_grammar(schema: dict, text: str) -> str:
    """The Lark grammar of a strict schema grounded in one document's text.

    The answer keeps the schema's exact shape (compact JSON, keys in order), but a decimal
    field may only be one of the numbers the document prints (`extraction.candidates`), a date
    field one of its dates, a currency one the document prints or signs (`$`, `kr`), and a
    GROUNDED_TEXT_FIELDS string a piece of its text (its characters with whitespace runs as
    one space), each bounded by the schema's maxLength; any of them may be null where the
    schema allows. An IBAN is one the document prints (`extraction.candidates.iban_candidates`),
    a BIC one it prints in the ISO 9362 shape, a routing number one printed beside its label.
    Bank details printed beside their label (`extraction.candidates.labelled_bank_details`: a
    valid IBAN, a BIC after `BIC`/`SWIFT`, a sort code, ABA, BSB or transit number after its
    label) are never null, nor is the bank object holding them. Dates follow their labels
    (`extraction.candidates.document_dates`): a due date printed after a due-date label (`Due
    date:`, `Scadenza:`) is the due date, never null, and an unlabelled due date is never a
    date printed only as another date (`Ship date:`, the invoice date); an invoice date
    printed after its label (`Invoice date:`, `Datum:`) is the invoice date, never null. A
    total printed after a total's label (`Total due`, `Summe brutto`, `TOTAL RM`;
    `labelled_totals`) is the total or null, and a total is never zero. Where the
    document's first lines print a name in a legal form (`... SDN BHD`, `... GmbH`), the
    vendor is a name in a legal form the document prints (`legal_names`). Where it prints a
    LABELLED_TEXT_FIELDS label (`Bill to:`, `Terms:`, `PO #:`), that field is a piece of the
    text after the label, never null, in its field's shape (`_SHAPES`: a PO number holds a
    digit). A field kind the document offers no value for is null. Line items are read row by row
    (`_line_items`). Everything else is generated from its own JSON schema.
    """
    return GrammarBuilder(text).build(schema)


@dataclass(frozen=True)
class ValueRule:
    """One rule of a grounded grammar: where it `applies` to a field (the builder, the field's
    name, its non-null schema), it gives the field's expression (`build`; None: nothing
    printed could be the value, so the field is null where the schema allows)."""

    name: str
    applies: Callable[[GrammarBuilder, str, dict], Any]
    build: Callable[[GrammarBuilder, str, dict], str | None]


def _decimal(inner: dict) -> bool:
    return inner.get("type") == "string" and inner.get("pattern") == DECIMAL_PATTERN


def _date(inner: dict) -> bool:
    return inner.get("type") == "string" and inner.get("pattern") == DATE_PATTERN


def _text(inner: dict) -> bool:
    return inner.get("type") == "string" and "pattern" not in inner


def _string(inner: dict) -> bool:
    return inner.get("type") == "string"


def _limit(inner: dict) -> int:
    return int(inner.get("maxLength", 200))


#: The value rules, in order: the first that applies to a field gives its expression; a field
#: no rule applies to is generated from its own JSON schema.
VALUE_RULES: tuple[ValueRule, ...] = (
    ValueRule("labelled_total", lambda b, n, i: _decimal(i) and n == "total_amount" and b.totals,
              lambda b, n, i: b.choice("LABELLED_TOTAL", b.totals)),
    # an invoice's total is never zero (`0.00` is a tax rate's amount or a change given)
    ValueRule("nonzero_total", lambda b, n, i: _decimal(i) and n == "total_amount",
              lambda b, n, i: b.choice("TOTAL", nz) if (nz := [x for x in b.numbers if x.strip("-0.")]) else None),
    ValueRule("printed_number", lambda b, n, i: _decimal(i),
              lambda b, n, i: b.choice("NUMBER", b.numbers) if b.numbers else None),
    ValueRule("labelled_due_date", lambda b, n, i: _date(i) and n == "due_date" and b.dates.due,
              lambda b, n, i: b.choice("DUE_DATE", b.dates.due)),
    ValueRule("unlabelled_due_date", lambda b, n, i: _date(i) and n == "due_date",
              lambda b, n, i: b.choice("OTHER_DUE_DATE", b.dates.unlabelled_due) if b.dates.unlabelled_due else None),
    ValueRule("labelled_issue_date", lambda b, n, i: _date(i) and n == "invoice_date" and b.dates.issue,
              lambda b, n, i: b.choice("ISSUE_DATE", b.dates.issue)),
    ValueRule("printed_date", lambda b, n, i: _date(i),
              lambda b, n, i: b.choice("DATE", b.dates.printed) if b.dates.printed else None),
    ValueRule("printed_currency", lambda b, n, i: _string(i) and i.get("pattern") == CURRENCY_PATTERN,
              lambda b, n, i: b.choice("CURRENCY", b.currencies) if b.currencies else None),
    ValueRule("printed_iban", lambda b, n, i: _string(i) and n == "iban",
              lambda b, n, i: b.choice("IBAN", b.ibans) if b.ibans else None),
    ValueRule("labelled_bank_detail", lambda b, n, i: _string(i) and n in ("bic", "routing_number") and n in b.labelled,
              lambda b, n, i: b.choice(f"LABELLED_{n.upper()}", b.labelled[n])),
    # a routing number is only ever read beside its label (above)
    ValueRule("unlabelled_routing_number", lambda b, n, i: _string(i) and n == "routing_number", lambda b, n, i: None),
    ValueRule("printed_bic", lambda b, n, i: _string(i) and n == "bic",
              lambda b, n, i: b.choice("BIC", b.bics) if b.bics else None),
    ValueRule("labelled_whole_cell", lambda b, n, i: _text(i) and n in WHOLE_CELL_FIELDS and n in b.labelled_texts,
              lambda b, n, i: b.whole_cells(n, _limit(i))),
    ValueRule("labelled_text", lambda b, n, i: _text(i) and n in b.labelled_texts,
              lambda b, n, i: " | ".join(b.substring(_limit(i), b.chunks_of(v), tag=f"{n.upper()}{k}", field=n)
                                         for k, v in enumerate(b.labelled_texts[n]))),
    ValueRule("legal_name", lambda b, n, i: _string(i) and n == "vendor_name" and b.vendor_names,
              lambda b, n, i: b.choice("LEGAL_NAME", f) if (f := [x for x in b.vendor_names if len(x) <= _limit(i)]) else None),
    ValueRule("printed_address", lambda b, n, i: _text(i) and n in ADDRESS_FIELDS,
              lambda b, n, i: b.address(_limit(i)) if b.chunks else None),
    ValueRule("printed_text", lambda b, n, i: _text(i) and n in GROUNDED_TEXT_FIELDS,
              lambda b, n, i: b.substring(_limit(i)) if b.chunks else None),
    ValueRule("object", lambda b, n, i: i.get("type") == "object", lambda b, n, i: b.obj(i, n)),
    ValueRule("printed_rows", lambda b, n, i: n == "line_items" and i.get("type") == "array"
              and _is_line_item(i.get("items", {})) and b.rows,
              lambda b, n, i: _line_items(i["items"], b.rows, b.rules, b.terminals, b.substring, b.value,
                                          int(i.get("maxItems", 1000)))),
    ValueRule("list_of_objects", lambda b, n, i: i.get("type") == "array" and i.get("items", {}).get("type") == "object",
              lambda b, n, i: b.object_list(i, n)),
)


class GrammarBuilder:
    """Builds one document's grounded grammar (`document_grammar`) from its candidates, and
    remembers which value rule gave each field (`applied`)."""

    def __init__(self, text: str):
        from extraction.candidates import (
            bic_candidates,
            currency_candidates,
            document_dates,
            iban_candidates,
            labelled_bank_details,
            labelled_text,
            labelled_totals,
            legal_names,
            number_candidates,
            text_chunks,
        )

        self.text = text
        self.chunks_of = text_chunks
        self.numbers = number_candidates(text)
        self.ibans = iban_candidates(text)
        self.bics = bic_candidates(text)
        self.labelled = labelled_bank_details(text)
        dated = document_dates(text)
        self.dates = dated._replace(unlabelled_due=[] if dated.due else dated.unlabelled_due)
        self.totals = labelled_totals(text)
        self.vendor_names = [n for n in legal_names(text) if not TITLE_START.match(n)]
        self.labelled_texts = {name: found for name in LABELLED_TEXT_FIELDS if (found := labelled_text(text, name))}
        self.currencies = currency_candidates(text)
        self.chunks = text_chunks(text)
        self.rows = _rows(text)
        self.rules: dict[str, str] = {}
        self.terminals: dict[str, str] = {}
        #: field name -> the value rule that gave its expression (the last such field of a name wins).
        self.applied: dict[str, str] = {}

    def build(self, schema: dict) -> str:
        start = self.obj(schema, "root")
        lines = [f"start: {start}"]
        lines += [f"{k}: {v}" for k, v in self.rules.items()]
        lines += [f"{k}: {v}" for k, v in self.terminals.items()]
        return "\n".join(lines) + "\n"

    def choice(self, name: str, values: list[str]) -> str:
        if name not in self.terminals:  # one terminal per kind, shared by every field of that kind
            self.terminals[name] = " | ".join(_lit(json.dumps(v, ensure_ascii=False)) for v in values)
        return name

    def substring(self, limit: int, pieces: list[str] | None = None, tag: str = "", field: str = "") -> str:
        # A field's shape is given to a labelled cell's pieces only: over the whole text, its
        # product with the substring automaton costs the lexer several times the mask time (and,
        # on long invoices, more than its fuel); there `extraction.reconcile.reconcile_shapes` applies it.
        shape = _SHAPES.get(field)
        name = (f"TEXT{tag}_{limit}" if tag else f"TEXT{limit}") + (f"_{shape[0]}" if shape else "")
        if name not in self.terminals:
            pieces = pieces or self.chunks
            # Never empty and never starting or ending with a space: a value is words as printed,
            # and a field the document does not state is null. Some fields have a shape of their own.
            regex = f"(%regex {json.dumps({'substring_chunks': pieces})} & {_TRIMMED}{f' & {shape[1]}' if shape else ''})"
            if sum(len(p) for p in pieces) > limit:  # bounded only where the text could exceed the limit
                regex = f"({regex} & /(.|\\\\.){{0,{limit}}}/)"
            self.terminals[name] = f'"\\"" {regex} "\\""'
        return name

    def address(self, limit: int) -> str:
        name = f"ADDRESS{limit}"
        if name not in self.terminals:
            part = f"%regex {json.dumps({'substring_chunks': self.chunks})}"
            parts = f'{part} (", " {part}){{0,{ADDRESS_PARTS - 1}}}'
            self.terminals[name] = f'"\\"" (({parts}) & {_TRIMMED} & /(.|\\\\.){{0,{limit}}}/) "\\""'
        return name

    def whole_cells(self, name: str, limit: int) -> str | None:
        from extraction.candidates import cell_prefixes

        whole = [v for v in dict.fromkeys(p for cell in self.labelled_texts[name] for p in cell_prefixes(cell))
                 if len(v) <= limit and not TITLE_START.match(v)]
        return self.choice(f"{name.upper()}_CELLS", whole) if whole else None

    @staticmethod
    def free(node: dict) -> str:
        return "%json " + json.dumps({**node, "x-guidance": JSON_OPTIONS})

    def value(self, node: dict, name: str) -> str:
        inner, nullable = _split_nullable(node)
        if inner is None:
            return self.free(node)
        if self.labelled and (name == "bank" or name in self.labelled):  # labelled bank details are never left out
            nullable = False
        if (name == "due_date" and self.dates.due) or (name == "invoice_date" and self.dates.issue) \
                or name in self.labelled_texts:
            nullable = False  # nor a labelled date or text
        rule = next((r for r in VALUE_RULES if r.applies(self, name, inner)), None)
        if rule is None:
            return self.free(node)
        self.applied[name] = rule.name
        return _or_null(rule.build(self, name, inner), nullable, lambda: self.free(node))

    def obj(self, node: dict, name: str) -> str:
        parts = []
        for i, (key, sub) in enumerate(node["properties"].items()):
            head = ("{" if i == 0 else ",") + json.dumps(key) + ":"
            parts.append(f"{_lit(head)} ({self.value(sub, key)})")
        rule = f"obj_{name}"
        self.rules[rule] = " ".join(parts) + ' "}"' if parts else '"{}"'
        return rule

    def object_list(self, inner: dict, name: str) -> str:
        item = self.obj(inner["items"], name + "_item")
        most = int(inner.get("maxItems", 1000))
        rule = f"list_{name}"
        self.rules[rule] = f'"[]" | "[" {item} ("," {item}){{0,{most - 1}}} "]"'
        return rule



def _split_nullable(node: dict) -> tuple[dict | None, bool]:
    """(the one non-null schema of `node`, whether null is allowed); None when there is no single one."""
    if node.get("type") == "null":
        return None, True
    options = node.get("anyOf")
    if not options:
        return node, False
    inner = [o for o in options if o.get("type") != "null"]
    return (inner[0] if len(inner) == 1 else None), len(inner) < len(options)


def _or_null(expr: str | None, nullable: bool, fallback) -> str:
    """`expr`, or null where the schema allows; a field with no grounded value is null, else `fallback()`."""
    if expr is None:  # the document offers nothing this field could be
        return '"null"' if nullable else fallback()
    return f'"null" | {expr}' if nullable else expr


_WORDY = re.compile(r"[^\W\d_]{3,}")

#: A text with a line longer than this is not read row by row (pasted text without line
#: breaks would otherwise allow a single item); its items are pieces of the whole text.
ROW_MAX_CHARS = 400


def _rows(text: str) -> list[str] | None:
    """The text's non-blank lines, or None when it is not printed in rows (see ROW_MAX_CHARS)."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return lines if lines and max(len(ln) for ln in lines) <= ROW_MAX_CHARS else None


def _is_line_item(node: dict) -> bool:
    from extraction.grounding import LINE_NUMBER_FIELDS

    props = node.get("properties", {})
    return node.get("type") == "object" and "description" in props and set(LINE_NUMBER_FIELDS) <= set(props)


def _line_items(item: dict, lines: list[str], rules: dict, terminals: dict, substring, value,
                most: int = 1000) -> str:
    """Line items read row by row, in the order the document prints them.

    Each item is anchored on one printed line: its description is a piece of that line
    and its quantity, unit price and amount are numbers printed on that line. Where the
    next line holds only figures (no word of three letters or more: `2 x 3.50  7.00`), an
    item may also take its description from the line and its numbers from the next one,
    as receipts print them. Anchors strictly increase from item to item, so no row is
    read twice and none out of order.

    Where rows balance (a line with a word whose numbers read as quantity x unit price =
    amount, `extraction.candidates.balanced_rows`), the table is found by its arithmetic: the
    items are the balanced rows, each with a description and one of its balanced readings
    as its numbers, and nothing else (a total, an address, a page footer, a "carried
    forward" line is no item). Without balanced rows (or with more than the schema's
    `maxItems`) any row may be an item, and its description is a piece of its line.

    A balanced row printed on one line has its description set by its layout: its words
    before the first of the reading's three numbers, less a row number, an item code and,
    where the header above the rows names a unit column, the unit before the quantity
    (`extraction.candidates.row_words`, `row_descriptions`). Which reading of a row, and
    whether a last unit word that could also end a description (`day`) is part of it, are
    the model's choice.

    Long because the row alternatives (one-line items, receipt items over two lines, balanced rows) are built together from the same line anchors.
    """
    from invoicechain.schema import DECIMAL_PATTERN
    from extraction.candidates import (
        balanced_readings,
        balanced_rows,
        number_candidates,
        row_descriptions,
        row_words,
        text_chunks,
        unit_header,
    )
    from extraction.grounding import LINE_NUMBER_FIELDS

    props = item["properties"]
    keys = list(props)
    desc_limit = int((_split_nullable(props["description"])[0] or {}).get("maxLength", 200))
    line_numbers = [number_candidates(ln) for ln in lines]
    figures_only = [bool(nums) and not _WORDY.search(ln) for ln, nums in zip(lines, line_numbers)]
    terminal_of: dict[tuple, str] = {}  # one terminal per distinct line text or number set
    n = len(lines)

    def numbers_of(line: int) -> str | None:
        values = line_numbers[line]
        if not values:
            return None
        key = ("N", *values)
        if key not in terminal_of:
            terminal_of[key] = f"ROWNUM{len(terminal_of)}"
            terminals[terminal_of[key]] = " | ".join(_lit(json.dumps(v)) for v in values)
        return terminal_of[key]

    def text_of(line: int) -> str:
        pieces = text_chunks(lines[line])
        key = ("T", *pieces)
        if key not in terminal_of:
            terminal_of[key] = substring(desc_limit, pieces, tag=f"ROW{len(terminal_of)}")
        return terminal_of[key]

    def head(key: str) -> str:
        return ("{" if keys.index(key) == 0 else ",") + json.dumps(key) + ":"

    # The three number columns are written together where the schema puts them side by side.
    first = keys.index(LINE_NUMBER_FIELDS[0]) if LINE_NUMBER_FIELDS[0] in keys else -1
    joint = first >= 0 and tuple(keys[first : first + 3]) == LINE_NUMBER_FIELDS

    def item_rule(name: str, desc_line: int, num_line: int, readings: list | None = None,
                  description: str | None = None) -> str:
        parts = []
        for key, sub in props.items():
            inner, nullable = _split_nullable(sub)
            if readings and joint and key in LINE_NUMBER_FIELDS:
                if key == LINE_NUMBER_FIELDS[0]:
                    rules[f"{name}_nums"] = " | ".join(
                        " ".join(f"{_lit(head(k))} {_lit(json.dumps(v))}" for k, v in zip(LINE_NUMBER_FIELDS, r))
                        for r in readings)
                    parts.append(f"({name}_nums)")
                continue
            if key == "description" and description is not None:
                expr = _lit(json.dumps(description, ensure_ascii=False))
            elif key == "description":  # a balanced row has its words: never null
                expr = text_of(desc_line) if readings else _or_null(text_of(desc_line), nullable, None)
            elif readings and key in LINE_NUMBER_FIELDS:
                column = LINE_NUMBER_FIELDS.index(key)
                expr = " | ".join(_lit(json.dumps(v)) for v in dict.fromkeys(r[column] for r in readings))
            elif inner is not None and inner.get("pattern") == DECIMAL_PATTERN:
                expr = _or_null(numbers_of(num_line), nullable, lambda sub=sub, key=key: value(sub, key))
            else:
                expr = value(sub, key)
            parts.append(f"{_lit(head(key))} ({expr})")
        rules[name] = " ".join(parts) + ' "}"'
        return name

    def pairs_with_next(k: int) -> bool:
        return k + 1 < n and figures_only[k + 1] and not figures_only[k]

    # Balanced rows: (description line, numbers line, [(reading, the row's words before it)]).
    anchors: list[tuple[int, int, list]] = []
    for k, ln in enumerate(lines):
        if not _WORDY.search(ln):
            continue
        if found := balanced_readings(ln):
            anchors.append((k, k, [(r, row_words(ln, start)) for r, start in found]))
        elif pairs_with_next(k) and (readings := balanced_rows(lines[k + 1])):
            anchors.append((k, k + 1, [(r, None) for r in readings]))

    if anchors and len(anchors) <= most:
        # A unit column: a header line just above a run of rows names one.
        anchored = {k for k, _, _ in anchors}
        unit_column = any(k - 1 >= 0 and k - 1 not in anchored and unit_header(lines[k - 1]) for k in anchored)
        items = []
        for k, num_line, found in anchors:
            by_description: dict[str | None, list] = {}
            for reading, words in found:
                options = row_descriptions(words, unit_column) if words is not None else []
                options = [d for d in options if len(d) <= desc_limit] or [None]
                for description in options:
                    by_description.setdefault(description, []).append(reading)
            if len(by_description) > 1:  # readings that leave the row no words are not the row's
                by_description.pop(None, None)
            options = [item_rule(f"anchor{k}_{g}", k, num_line, list(dict.fromkeys(readings)), description)
                       for g, (description, readings) in enumerate(by_description.items())]
            rules[f"anchor{k}"] = " | ".join(options)
            items.append(f"anchor{k}")
        rules["list_line_items"] = '"[" ' + ' "," '.join(items) + ' "]"'
        return "list_line_items"

    for k in range(n - 1, -1, -1):
        options = []
        single = item_rule(f"row{k}", k, k)
        options.append(single if k + 1 >= n else f'{single} ("," after{k + 1})?')
        if pairs_with_next(k):
            pair = item_rule(f"rowpair{k}", k, k + 1)
            options.append(pair if k + 2 >= n else f'{pair} ("," after{k + 2})?')
        rules[f"seq{k}"] = " | ".join(options)
        rules[f"after{k}"] = f"seq{k}" if k + 1 >= n else f"seq{k} | after{k + 1}"
    rules["list_line_items"] = '"[]" | "[" after0 "]"'
    return "list_line_items"
