"""Token-level grammars for JSON-schema-constrained decoding, on llguidance.

llguidance was chosen over xgrammar by measurement (`benchmarks/grammar.py`, on the
default base's tokenizer and the strict InvoiceFields schema): both fill a batch of 16
masks in well under a millisecond, but xgrammar 0.2.8 rejects escaped characters inside
length-bounded strings (a `27" monitor` line item cannot be written), lets special
tokens appear inside strings and takes 1-3 s to compile the schema, while llguidance
accepts every target, compiles lazily in milliseconds and only admits the canonical
tokenisation of forced text (keys, punctuation), so about a quarter of the tokens of an
answer are forced: never sampled, and fed to the model together with the token before
them (see `models.decoding`).

Masks are bitmasks (int32 words, one bit per token id) filled for the whole batch in
parallel threads, then expanded on the logits' device.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

from models.schemas import all_null_document, schema_key

log = logging.getLogger(__name__)

#: JSON options: compact separators, no free whitespace (whitespace is never left to the model).
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}

#: Lexer fuel per token mask (llguidance's default is 200,000, about 14 ms). A grounded
#: grammar offers many printed values at once; on about 3% of synthetic invoices the true
#: answer ran out of the default fuel ("too many expressions constructed") at a long
#: printed value. Ten times as much admits every answer we tried (the slowest mask seen:
#: 25 ms) and still ends a runaway step in about 150 ms.
STEP_LEXER_FUEL = 2_000_000


@dataclass(frozen=True)
class CompiledSchema:
    """A schema's llguidance grammar plus the token budget its closing needs."""

    key: str
    grammar: str
    #: Tokens that always suffice to finish an answer from any point (see `closing_reserve`).
    reserve: int


class GrammarBank:
    """Grammars for one tokenizer: compiled once per schema, matchers made per sequence."""

    def __init__(self, tokenizer, vocab_size: int, stop_token_id: int, threads: int | None = None):
        import llguidance
        import llguidance.hf

        self._ll = llguidance
        self.vocab_size = vocab_size
        self.stop_token_id = stop_token_id
        self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=stop_token_id)
        self.executor = llguidance.LLExecutor(num_threads=threads or max(1, min(8, os.cpu_count() or 1)))
        self.limits = llguidance.LLParserLimits(step_lexer_fuel=STEP_LEXER_FUEL)
        self._hf_tokenizer = tokenizer
        self._compiled: dict[str, CompiledSchema] = {}
        self._lock = threading.Lock()
        self._token_bytes: list[bytes] | None = None
        self._structural: dict[str, Any] = {}

    def compile(self, schema: dict) -> CompiledSchema:
        """The grammar of a JSON schema (cached by its canonical text)."""
        key = schema_key(schema)
        with self._lock:
            hit = self._compiled.get(key)
        if hit is not None:
            return hit
        grammar = self._ll.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_OPTIONS)
        probe = self.matcher_for(grammar)
        if probe.is_error():
            raise ValueError(f"schema does not compile to a grammar: {probe.get_error()}")
        compiled = CompiledSchema(key, grammar, self.closing_reserve(schema))
        with self._lock:
            self._compiled[key] = compiled
        return compiled

    def compile_document(self, schema: dict, text: str) -> CompiledSchema:
        """The grammar of a strict schema grounded in one document (see `document_grammar`).

        Falls back to the schema's plain grammar if the grounded one does not compile.
        """
        import hashlib

        base = self.compile(schema)
        lark = document_grammar(schema, text)
        try:
            grammar = self._ll.LLMatcher.grammar_from_lark(lark)
            probe = self.matcher_for(grammar)
            error = probe.get_error() if probe.is_error() else None
        except ValueError as exc:
            error = str(exc)
        if error:
            log.warning("grounded grammar did not compile, decoding with the plain schema: %.300s", error)
            return base
        digest = hashlib.sha256(lark.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return CompiledSchema(f"{base.key}#{digest}", grammar, base.reserve)

    def closing_reserve(self, schema: dict) -> int:
        """Tokens kept back to close an answer: the all-null document plus slack.

        From any point of an answer, the shortest way out (close the open string, null
        every remaining nullable field, close open arrays and objects) is no longer than
        the document with every nullable field null, plus the rest of one array item.
        """
        from models.prompts import dump_output

        text = dump_output(all_null_document(schema))
        return len(self._hf_tokenizer(text, add_special_tokens=False)["input_ids"]) + 24

    def matcher(self, compiled: CompiledSchema):
        return self.matcher_for(compiled.grammar)

    def matcher_for(self, grammar: str):
        """A matcher of a compiled grammar under this bank's parser limits."""
        return self._ll.LLMatcher(self.ll_tokenizer, grammar, limits=self.limits)

    def allocate_bitmask(self, rows: int):
        import torch

        return torch.full((rows, (self.vocab_size + 31) // 32), -1, dtype=torch.int32)

    def fill_bitmasks(self, matchers: list, bitmask) -> None:
        """Fill row i of `bitmask` with the allowed next tokens of matchers[i] (in parallel)."""
        from llguidance.torch import fill_next_token_bitmask_par

        fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(matchers)], bitmask)

    def structural(self, device):
        """The structural-token mask of the closing rule on `device` (built once per device)."""
        key = str(device)
        if key not in self._structural:
            self._structural[key] = structural_mask(self.token_bytes, device)
        return self._structural[key]

    @property
    def token_bytes(self) -> list[bytes]:
        """The bytes of every token id (special tokens decode to b'')."""
        if self._token_bytes is None:
            tok = self.ll_tokenizer
            self._token_bytes = [
                b"" if tok.is_special_token(i) else tok.decode_bytes([i]) for i in range(self.vocab_size)
            ]
        return self._token_bytes


def expand_bitmask(bitmask, vocab_size: int, device) -> Any:
    """int32 bitmask [rows, words] -> bool allowed-mask [rows, vocab_size] on `device`."""
    import torch

    words = bitmask.to(device, non_blocking=True)
    shifts = torch.arange(32, device=device, dtype=torch.int32)
    bits = (words.unsqueeze(-1) >> shifts) & 1
    return bits.view(words.shape[0], -1)[:, :vocab_size].bool()


class JsonScanner:
    """Tracks whether an answer is inside a JSON string, from the bytes written so far."""

    __slots__ = ("in_string", "escaped")

    def __init__(self) -> None:
        self.in_string = False
        self.escaped = False

    def feed(self, data: bytes) -> None:
        for b in data:
            if self.escaped:
                self.escaped = False
            elif self.in_string and b == 0x5C:  # backslash
                self.escaped = True
            elif b == 0x22:  # quote
                self.in_string = not self.in_string


#: Bytes that change the JSON structure (or write a null): only such tokens can close faster.
_STRUCTURAL = (b'"', b"{", b"}", b"[", b"]", b",", b"null")


def structural_mask(token_bytes: list[bytes], device) -> Any:
    """Boolean mask over the vocabulary: tokens holding a quote, bracket, brace, comma or null."""
    import torch

    flags = [any(s in t for s in _STRUCTURAL) for t in token_bytes]
    return torch.tensor(flags, dtype=torch.bool, device=device)


def closing_score(data: bytes, in_string: bool, escaped: bool) -> int:
    """How much writing `data` from the given string state brings the answer towards its end.

    Closing a bracket or brace counts 3, opening one -3, writing `null` 2, and ending
    inside a string -2 (a string still has to be closed; a value string may grow).
    """
    opens = closes = nulls = 0
    for pos, b in enumerate(data):
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x7B, 0x5B):
            opens += 1
        elif b in (0x7D, 0x5D):
            closes += 1
        elif data.startswith(b"null", pos):
            nulls += 1
    return 3 * (closes - opens) + 2 * nulls - (2 if in_string else 0)


def closing_choice(allowed, logits, structural, token_bytes: list[bytes], scanner: JsonScanner,
                   stop_id: int) -> int:
    """The token that heads fastest to the end of the answer (used when the budget runs low).

    `allowed` is the row's boolean mask and `logits` its masked logits. Every allowed
    structural token and the model's best token are scored by `closing_score`; the best
    score wins, the model's preference breaks ties. Strings close, `null` is written where
    allowed, arrays and objects close, and nothing new is opened unless the grammar
    requires it.
    """
    if bool(allowed[stop_id]):
        return stop_id
    best = int(logits.argmax())
    ids = (allowed & structural).nonzero().flatten().tolist()
    if best not in ids:
        ids.append(best)
    scores = logits[ids].tolist()
    return max(
        zip(ids, scores),
        key=lambda pair: (closing_score(token_bytes[pair[0]], scanner.in_string, scanner.escaped), pair[1]),
    )[0]


# --- grounded decoding ---------------------------------------------------------------------

#: Text fields whose value is a piece of the document's text, written as it is printed.
#: Addresses (ADDRESS_FIELDS) and IBANs (`models.candidates.iban_candidates`) have rules of
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
#: comma, bracket, slash or dash (`models.candidates.cell_prefixes`): a name is never cut
#: short (`Bolzmann Kitzmann AG & Co.` of `Bolzmann Kitzmann AG & Co. OHG`).
WHOLE_CELL_FIELDS = frozenset({"client_name"})

#: Text fields that, where the document prints their label (`Bill to:`, `Terms:`, `PO #:`),
#: are a piece of the text after it and never null (`models.candidates.labelled_text`).
LABELLED_TEXT_FIELDS = ("client_name", "payment_terms", "po_number")


#: A text value's outline: at least one character, no space at either end.
_TRIMMED = "/[^ ](.*[^ ])?/"

#: Words a document prints as its title or a stamp (English, German, French, Dutch, Spanish,
#: Italian): a name never starts with one (`COPY ANDERSSON OFFICE SUPPLIES HB` is a stamp
#: beside the name). `Invoice Cloud Inc.` cannot be written: such names are rare.
TITLE_WORDS = (
    "INVOICE", "TAX INVOICE", "CREDIT NOTE", "CREDIT MEMO", "COPY", "DUPLICATE", "RECEIVED", "ENTERED", "PAID",
    "RECHNUNG", "GUTSCHRIFT", "KOPIE", "EINGANG", "GEBUCHT", "BEZAHLT", "FACTURE", "AVOIR", "DUPLICATA", "REÇU",
    "COMPTABILISÉ", "FACTUUR", "CREDITNOTA", "ONTVANGEN", "GEBOEKT", "FACTURA", "FACTURA RECTIFICATIVA",
    "NOTA DE CRÉDITO", "RECIBIDO", "CONTABILIZADO", "COPIA", "FATTURA", "NOTA DI CREDITO", "RICEVUTO", "REGISTRATO",
)
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
    field may only be one of the numbers the document prints (`models.candidates`), a date
    field one of its dates, a currency one the document prints or signs (`$`, `kr`), and a
    GROUNDED_TEXT_FIELDS string a piece of its text (its characters with whitespace runs as
    one space), each bounded by the schema's maxLength; any of them may be null where the
    schema allows. An IBAN is one the document prints (`models.candidates.iban_candidates`),
    a BIC one it prints in the ISO 9362 shape, a routing number one printed beside its label.
    Bank details printed beside their label (`models.candidates.labelled_bank_details`: a
    valid IBAN, a BIC after `BIC`/`SWIFT`, a sort code, ABA, BSB or transit number after its
    label) are never null, nor is the bank object holding them. Dates follow their labels
    (`models.candidates.document_dates`): a due date printed after a due-date label (`Due
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
    from invoicechain.schema import CURRENCY_PATTERN, DATE_PATTERN, DECIMAL_PATTERN
    from models.candidates import (
        bic_candidates,
        cell_prefixes,
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

    numbers = number_candidates(text)
    ibans = iban_candidates(text)
    bics = bic_candidates(text)
    labelled = labelled_bank_details(text)
    dated = document_dates(text)
    due_dates, issue_dates, dates = dated.due, dated.issue, dated.printed
    unlabelled_due = [] if due_dates else dated.unlabelled_due
    totals = labelled_totals(text)
    vendor_names = [n for n in legal_names(text) if not TITLE_START.match(n)]
    labelled_texts = {name: found for name in LABELLED_TEXT_FIELDS if (found := labelled_text(text, name))}
    currencies = currency_candidates(text)
    chunks = text_chunks(text)
    rules: dict[str, str] = {}
    terminals: dict[str, str] = {}

    def quoted_choice(name: str, values: list[str]) -> str:
        if name not in terminals:  # one terminal per kind, shared by every field of that kind
            terminals[name] = " | ".join(_lit(json.dumps(v, ensure_ascii=False)) for v in values)
        return name

    def substring(limit: int, pieces: list[str] | None = None, tag: str = "", field: str = "") -> str:
        # A field's shape is given to a labelled cell's pieces only: over the whole text, its
        # product with the substring automaton costs the lexer several times the mask time (and,
        # on long invoices, more than its fuel); there `models.reconcile.reconcile_shapes` applies it.
        shape = _SHAPES.get(field)
        name = (f"TEXT{tag}_{limit}" if tag else f"TEXT{limit}") + (f"_{shape[0]}" if shape else "")
        if name not in terminals:
            pieces = pieces or chunks
            # Never empty and never starting or ending with a space: a value is words as printed,
            # and a field the document does not state is null. Some fields have a shape of their own.
            regex = f"(%regex {json.dumps({'substring_chunks': pieces})} & {_TRIMMED}{f' & {shape[1]}' if shape else ''})"
            if sum(len(p) for p in pieces) > limit:  # bounded only where the text could exceed the limit
                regex = f"({regex} & /(.|\\\\.){{0,{limit}}}/)"
            terminals[name] = f'"\\"" {regex} "\\""'
        return name

    def address(limit: int) -> str:
        name = f"ADDRESS{limit}"
        if name not in terminals:
            part = f"%regex {json.dumps({'substring_chunks': chunks})}"
            parts = f'{part} (", " {part}){{0,{ADDRESS_PARTS - 1}}}'
            terminals[name] = f'"\\"" (({parts}) & {_TRIMMED} & /(.|\\\\.){{0,{limit}}}/) "\\""'
        return name

    def free(node: dict) -> str:
        return "%json " + json.dumps({**node, "x-guidance": JSON_OPTIONS})

    def value(node: dict, name: str) -> str:
        inner, nullable = _split_nullable(node)
        if inner is None:
            return free(node)
        kind = inner.get("type")
        expr: str | None
        if labelled and (name == "bank" or name in labelled):  # labelled bank details are never left out
            nullable = False
        if (name == "due_date" and due_dates) or (name == "invoice_date" and issue_dates) or name in labelled_texts:
            nullable = False  # nor a labelled date or text
        if kind == "string" and inner.get("pattern") == DECIMAL_PATTERN and name == "total_amount" and totals:
            expr = quoted_choice("LABELLED_TOTAL", totals)  # printed after a total's label
        elif kind == "string" and inner.get("pattern") == DECIMAL_PATTERN and name == "total_amount":
            # an invoice's total is never zero (`0.00` is a tax rate's amount or a change given)
            nonzero = [n for n in numbers if n.strip("-0.")]
            expr = quoted_choice("TOTAL", nonzero) if nonzero else None
        elif kind == "string" and inner.get("pattern") == DECIMAL_PATTERN:
            expr = quoted_choice("NUMBER", numbers) if numbers else None
        elif kind == "string" and inner.get("pattern") == DATE_PATTERN and name == "due_date" and due_dates:
            expr = quoted_choice("DUE_DATE", due_dates)
        elif kind == "string" and inner.get("pattern") == DATE_PATTERN and name == "due_date":
            expr = quoted_choice("OTHER_DUE_DATE", unlabelled_due) if unlabelled_due else None
        elif kind == "string" and inner.get("pattern") == DATE_PATTERN and name == "invoice_date" and issue_dates:
            expr = quoted_choice("ISSUE_DATE", issue_dates)
        elif kind == "string" and inner.get("pattern") == DATE_PATTERN:
            expr = quoted_choice("DATE", dates) if dates else None
        elif kind == "string" and inner.get("pattern") == CURRENCY_PATTERN:
            expr = quoted_choice("CURRENCY", currencies) if currencies else None
        elif kind == "string" and name == "iban":
            expr = quoted_choice("IBAN", ibans) if ibans else None
        elif kind == "string" and name in ("bic", "routing_number") and name in labelled:
            expr = quoted_choice(f"LABELLED_{name.upper()}", labelled[name])
        elif kind == "string" and name == "routing_number":
            expr = None  # a routing number is only ever read beside its label (above)
        elif kind == "string" and name == "bic":
            expr = quoted_choice("BIC", bics) if bics else None
        elif kind == "string" and name in WHOLE_CELL_FIELDS and name in labelled_texts and "pattern" not in inner:
            limit = int(inner.get("maxLength", 200))
            whole = [v for v in dict.fromkeys(p for cell in labelled_texts[name] for p in cell_prefixes(cell))
                     if len(v) <= limit and not TITLE_START.match(v)]
            expr = quoted_choice(f"{name.upper()}_CELLS", whole) if whole else None
        elif kind == "string" and name in labelled_texts and "pattern" not in inner:
            limit = int(inner.get("maxLength", 200))
            expr = " | ".join(substring(limit, text_chunks(v), tag=f"{name.upper()}{k}", field=name)
                              for k, v in enumerate(labelled_texts[name]))
        elif kind == "string" and name == "vendor_name" and vendor_names:
            fitting = [n for n in vendor_names if len(n) <= int(inner.get("maxLength", 200))]
            expr = quoted_choice("LEGAL_NAME", fitting) if fitting else None
        elif kind == "string" and name in ADDRESS_FIELDS and "pattern" not in inner:
            expr = address(int(inner.get("maxLength", 200))) if chunks else None
        elif kind == "string" and name in GROUNDED_TEXT_FIELDS and "pattern" not in inner:
            expr = substring(int(inner.get("maxLength", 200))) if chunks else None
        elif kind == "object":
            expr = obj(inner, name)
        elif name == "line_items" and kind == "array" and _is_line_item(inner.get("items", {})) and (rows := _rows(text)):
            expr = _line_items(inner["items"], rows, rules, terminals, substring, value,
                               int(inner.get("maxItems", 1000)))
        elif kind == "array" and inner.get("items", {}).get("type") == "object":
            item = obj(inner["items"], name + "_item")
            most = int(inner.get("maxItems", 1000))
            rule = f"list_{name}"
            rules[rule] = f'"[]" | "[" {item} ("," {item}){{0,{most - 1}}} "]"'
            expr = rule
        else:
            return free(node)
        return _or_null(expr, nullable, lambda: free(node))

    def obj(node: dict, name: str) -> str:
        parts = []
        for i, (key, sub) in enumerate(node["properties"].items()):
            head = ("{" if i == 0 else ",") + json.dumps(key) + ":"
            parts.append(f"{_lit(head)} ({value(sub, key)})")
        rule = f"obj_{name}"
        rules[rule] = " ".join(parts) + ' "}"' if parts else '"{}"'
        return rule

    start = obj(schema, "root")
    lines = [f"start: {start}"]
    lines += [f"{k}: {v}" for k, v in rules.items()]
    lines += [f"{k}: {v}" for k, v in terminals.items()]
    return "\n".join(lines) + "\n"



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
    from models.grounding import LINE_NUMBER_FIELDS

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
    amount, `models.candidates.balanced_rows`), the table is found by its arithmetic: the
    items are the balanced rows, each with a description and one of its balanced readings
    as its numbers, and nothing else (a total, an address, a page footer, a "carried
    forward" line is no item). Without balanced rows (or with more than the schema's
    `maxItems`) any row may be an item, and its description is a piece of its line.

    A balanced row printed on one line has its description set by its layout: its words
    before the first of the reading's three numbers, less a row number, an item code and,
    where the header above the rows names a unit column, the unit before the quantity
    (`models.candidates.row_words`, `row_descriptions`). Which reading of a row, and
    whether a last unit word that could also end a description (`day`) is part of it, are
    the model's choice.
    """
    from invoicechain.schema import DECIMAL_PATTERN
    from models.candidates import (
        balanced_readings,
        balanced_rows,
        number_candidates,
        row_descriptions,
        row_words,
        text_chunks,
        unit_header,
    )
    from models.grounding import LINE_NUMBER_FIELDS

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
