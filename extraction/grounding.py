"""Locate extracted values in the source text (character spans), or mark them ungrounded.

Values are written in canonical form (ISO dates, plain decimal amounts, ISO currency
codes), while documents print them in many ways; each kind is searched in its printed
forms:

* dates: ISO, day-first and month-first numeric dates with `/ . -` separators and two- or
  four-digit years, day-month-name and month-name-day forms (`5 Mar 2024`, `March 5th, 2024`);
* amounts: digit groups with `,` `.` space or apostrophe separators, `.` or `,` decimals,
  trailing zeros optional (`1,234.50`, `1.234,5`, `1234.5`);
* codes (invoice number, PO, IBAN, BIC, account numbers): exact, else with spaces or
  dashes between characters (`DE89 3704 0044 ...`);
* currencies: the code, else its symbol;
* free text (names, addresses, descriptions): exact, case-insensitive, then word by word
  across punctuation and line breaks, then a fuzzy alignment (score >= 90).

A grounded field is `{"start": int, "end": int}` (end exclusive) in the document text; a
value not found is `{"grounded": false}`; a null field has no grounding (`None`). Line
items are grounded item by item, their numbers searched on the item's own line first.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation

from invoicechain.lexicon import lexicon
from invoicechain.schema import AMOUNT_FIELDS, DATE_FIELDS

LEXICON = lexicon()

CODE_FIELDS = ("invoice_id", "po_number", "iban", "bic", "account_number", "routing_number")
LINE_NUMBER_FIELDS = ("quantity", "unit_price", "amount")
#: How each currency is found in the text (`invoicechain/lexicon/common.yaml`).
CURRENCY_SYMBOLS = LEXICON.currency_symbols


def _month_names(month: int) -> str:
    """A month written out in any of the lexicon's languages, or cut to its first three letters."""
    names = {name.lower() for code in LEXICON.languages for name in [LEXICON.months(code)[month - 1]]}
    forms = sorted({re.escape(n) for n in names} | {re.escape(n[:3]) + r"\.?" for n in names}, key=len, reverse=True)
    return "|".join(forms)
_GROUP_SEP = r"[,.' \u00a0\u202f]?"
_ORD = LEXICON.alternation("ordinals") + "?"
_JOIN = LEXICON.alternation("date_joiners")
_FUZZY_MIN = 90.0

Span = dict


def _span(m_start: int, m_end: int, offset: int) -> Span:
    return {"start": m_start + offset, "end": m_end + offset}


def _first(patterns: list[str], text: str, flags=re.IGNORECASE) -> tuple[int, int] | None:
    best = None
    for p in patterns:
        m = re.search(p, text, flags)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), m.end())
    return best


def _date_patterns(value: str) -> list[str]:
    try:
        d = date.fromisoformat(value)
    except ValueError:
        return []
    day = f"0?{d.day}" if d.day < 10 else str(d.day)
    mon = f"0?{d.month}" if d.month < 10 else str(d.month)
    year = f"(?:{d.year}|{d.year % 100:02d})"
    sept = r"|sept\.?" if d.month == 9 else ""
    mname = f"(?:{_month_names(d.month)}{sept})"
    sep = r"[\-/.]"
    b, e = r"(?<!\d)", r"(?!\d)"
    return [
        f"{b}{d.year}{sep}{mon}{sep}{day}{e}",
        f"{b}{day}{sep}{mon}{sep}{year}{e}",
        f"{b}{mon}{sep}{day}{sep}{year}{e}",
        f"{b}{day}{_ORD}\\.?[\\s\\-]*(?:{_JOIN}\\s+)?{mname}[\\s\\-,.]*(?:{_JOIN}\\s+)?{year}{e}",
        f"{mname}[\\s.]*{day}{_ORD},?[\\s\\-]*{year}{e}",
        f"{b}{d.year}{d.month:02d}{d.day:02d}{e}",
    ]


def _amount_patterns(value: str) -> list[str]:
    try:
        amount = Decimal(value)
    except (InvalidOperation, ValueError):
        return []
    sign = "-" if amount < 0 else ""
    text = format(abs(amount), "f")
    whole, _, frac = text.partition(".")
    whole = whole.lstrip("0") or "0"
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    int_pat = _GROUP_SEP.join(groups)
    frac = frac.rstrip("0")
    frac_pat = f"[.,]{frac}0*" if frac else r"(?:[.,]0+)?"
    neg = r"(?:-\s?|\()" if sign else ""
    # Not a piece of a longer number, a date (2024-12-01) or a code (PO-4500/12).
    before = r"(?<![\d.,])(?<!\d[-/])"
    after = r"(?![\d]|[.,\-/]\d)"
    return [f"{neg}{before}{int_pat}{frac_pat}{after}"]


def _code_patterns(value: str) -> list[str]:
    chars = [c for c in value if not c.isspace()]
    if not chars:
        return []
    return [re.escape(value), r"[\s\-]?".join(re.escape(c) for c in chars if c not in "-")]


def _text_patterns(value: str) -> list[str]:
    words = re.findall(r"\w+", value)
    pats = [re.escape(value)]
    if words:
        pats.append(r"\W{0,6}".join(re.escape(w) for w in words))
    return pats


def locate(value: str, kind: str, text: str) -> tuple[int, int] | None:
    """Character span (start, end) of a value of the given kind in text, or None."""
    if value is None or value == "" or not text:
        return None
    if kind == "date":
        return _first(_date_patterns(value), text)
    if kind == "amount":
        return _first(_amount_patterns(value), text)
    if kind == "currency":
        exact = _first([rf"(?<![A-Za-z]){re.escape(value)}(?![A-Za-z])"], text, 0)
        if exact:
            return exact
        return _first([re.escape(s) for s in CURRENCY_SYMBOLS.get(value, [])], text, 0)
    exact = text.find(value)
    if exact != -1:
        return exact, exact + len(value)
    pats = _code_patterns(value) if kind == "code" else _text_patterns(value)
    found = _first(pats, text)
    if found or kind == "code" or len(value) < 4:
        return found
    from rapidfuzz import fuzz

    align = fuzz.partial_ratio_alignment(value.lower(), text.lower())
    if align is not None and align.score >= _FUZZY_MIN:
        return align.dest_start, align.dest_end
    return None


def field_kind(name: str) -> str:
    if name in DATE_FIELDS:
        return "date"
    if name in AMOUNT_FIELDS or name in LINE_NUMBER_FIELDS:
        return "amount"
    if name == "currency":
        return "currency"
    if name in CODE_FIELDS:
        return "code"
    return "text"


def _ground(value, name: str, text: str, offset: int) -> Span | None:
    if value is None:
        return None
    found = locate(str(value), field_kind(name), text)
    return _span(*found, offset) if found else {"grounded": False}


def _line_around(text: str, start: int, end: int) -> tuple[int, int]:
    """The line holding [start, end) plus the next one (wrapped table rows)."""
    lo = text.rfind("\n", 0, start) + 1
    hi = text.find("\n", end)
    hi = len(text) if hi == -1 else text.find("\n", hi + 1)
    return lo, (len(text) if hi == -1 else hi)


def ground_fields(fields: dict, text: str, offset: int = 0) -> dict:
    """Grounding of every field of an InvoiceFields dict in `text` (spans shifted by offset)."""
    out: dict = {}
    for name, value in fields.items():
        if name == "line_items":
            out[name] = [_ground_item(item, text, offset) for item in value or []]
        elif name == "bank":
            out[name] = None if value is None else {k: _ground(v, k, text, offset) for k, v in value.items()}
        else:
            out[name] = _ground(value, name, text, offset)
    return out


def _ground_item(item: dict, text: str, offset: int) -> dict:
    desc = item.get("description")
    where = locate(desc, "text", text) if desc else None
    out: dict = {"description": _span(*where, offset) if where else ({"grounded": False} if desc else None)}
    lo, hi = _line_around(text, *where) if where else (0, len(text))
    for key in LINE_NUMBER_FIELDS:
        value = item.get(key)
        if value is None:
            out[key] = None
            continue
        # Numbers are searched on the item's own line first: "2" alone is everywhere.
        found = locate(value, "amount", text[lo:hi])
        if found:
            out[key] = _span(found[0] + lo, found[1] + lo, offset)
        else:
            out[key] = _ground(value, key, text, offset)
    return out
