"""What a document says about itself, besides its fields: its type (invoice, credit note,
receipt, reminder), whether it says it is already paid, and its language.

Rules are data: every phrase lives in `indications.yaml`, per language. Pure: needs neither
torch nor the database. `detect(text, type_code=None)` returns an `Indications`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().with_name("indications.yaml")
DOCUMENT_TYPES = ("invoice", "credit_note", "receipt", "reminder")


@dataclass(frozen=True)
class Indications:
    document_type: str
    paid: bool
    language: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def _phrase(phrase: str) -> str:
    # a space may be any run of spaces, or none at all (OCR drops spaces between words)
    words = [re.escape(w) for w in phrase.split()]
    return r"(?<![^\W_])" + r"\s*".join(words) + r"(?![^\W_])"


def _union(phrases) -> re.Pattern | None:
    phrases = sorted(set(phrases), key=len, reverse=True)
    return re.compile("|".join(_phrase(p) for p in phrases), re.IGNORECASE) if phrases else None


@lru_cache(maxsize=1)
def rules() -> dict:
    """The data file, compiled once."""
    import yaml

    data = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    langs = data["languages"]
    types = {t: _union(p for lang in langs.values() for p in lang["document_type"].get(t, ()))
             for t in DOCUMENT_TYPES}
    return {
        "title_lines": int(data.get("title_lines", 15)),
        "type_codes": {str(k): v for k, v in (data.get("e_invoice_type_codes") or {}).items()},
        "types": types,
        "paid": _union(p for lang in langs.values() for p in lang.get("paid", ())),
        "not_paid": _union(p for lang in langs.values() for p in lang.get("not_paid", ())),
        "words": {code: frozenset(w.casefold() for w in lang.get("words", ())) for code, lang in langs.items()},
    }


_WORD = re.compile(r"[^\W\d_]+")


def language_of(text: str) -> str | None:
    """The language whose frequent invoice words the text uses most (None: no evidence)."""
    words = [w.casefold() for w in _WORD.findall(text)]
    if not words:
        return None
    scores = {code: sum(w in vocab for w in words) for code, vocab in rules()["words"].items()}
    best = max(scores, key=scores.get)
    return best if scores[best] >= 2 else None


def document_type_of(text: str, type_code: str | None = None) -> str:
    r = rules()
    if type_code and str(type_code) in r["type_codes"]:
        return r["type_codes"][str(type_code)]
    title = "\n".join([line for line in text.splitlines() if line.strip()][: r["title_lines"]])
    for kind in ("credit_note", "reminder"):
        if r["types"][kind] and r["types"][kind].search(title):
            return kind
    invoice = r["types"]["invoice"]
    if r["types"]["receipt"] and r["types"]["receipt"].search(text) and not (invoice and invoice.search(title)):
        return "receipt"
    return "invoice"


_ZERO_AFTER = re.compile(r"\W{0,6}(?:[A-Z]{3}|[€$£])?\s*0+(?:[.,]0+)?(?!\s*[.,]?\d)")


def is_paid(text: str) -> bool:
    r = rules()
    if not r["paid"]:
        return False
    settled = [m for m in r["paid"].finditer(text) if not _ZERO_AFTER.match(text, m.end())]
    if r["not_paid"] and (nots := list(r["not_paid"].finditer(text))):
        # an explicit "not paid" phrase wins unless a settlement phrase comes after it (a receipt's footer)
        return any(m.start() > nots[-1].end() for m in settled)
    return bool(settled)


def detect(text: str, type_code: str | None = None) -> Indications:
    """Type, paid and language of a document from its text (and its e-invoice type code, if any)."""
    text = text or ""
    return Indications(document_type_of(text, type_code), is_paid(text), language_of(text))
