"""The lexicon: every language-dependent word and format extraction reads, as data.

One YAML file per language (`en.yaml`, `de.yaml`, ...) plus `common.yaml` for what no
language owns (currency signs, legal forms by country, bank-detail labels). Each language
file holds:

- `labels`: what the reader recognises, by what a label labels (`total`, `due_date`,
  `po_number`, ...), as regular-expression fragments matched case-insensitively;
- `title_words`, `months`, `units`, `payment_terms` (the parts of a terms phrase), and
  `numbers` (decimal and group separators);
- `ordinals` (what follows a day's number, `1st`), `date_joiners` (words between a date's
  parts, `3 de marzo de 2026`), `name_joiners` (words that join a company's name, `Bank of`),
  and `label_words` (whole words that label a field, as printed: the attention metrics look
  for them);
- `printed` and `printed_terms`: what the synthetic generator prints, by key.

The files are read and compiled once (`lexicon()`), into a `Lexicon` whose readers join
every language's fragments into one alternation per kind. Adding a language is one new
file here and its rows in `tests/unit/extraction/test_lexicon.py`; nothing else changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: The language read first: its fragments come first in every alternation (the others follow
#: in `common.yaml`'s `order`, then any other file by name).
FIRST_LANGUAGE = "en"

#: Label kinds the reader knows (each language may leave some empty).
LABEL_KINDS = (
    "total", "not_total", "total_includes", "due_date", "issue_date", "other_date", "vendor_name", "client_name",
    "payment_terms", "po_number", "invoice_id", "invoice_number", "customer_number", "delivery_note",
    "tax_id", "shipping", "tax", "discount", "amount", "subtotal", "unit_column", "price_words",
    "contact", "contact_field", "rounding", "change_given", "without",
    "salutation", "net_total",
)
#: Parts of a payment-terms phrase (`invoicechain.ap.payment`).
TERMS_PARTS = ("days", "net", "net_to", "discount", "condition", "within", "end_of_month", "on_receipt")


class LexiconError(ValueError):
    """A lexicon file that does not have the expected shape."""


@dataclass(frozen=True)
class Language:
    """One language's words and formats, as its file states them."""

    code: str
    name: str
    dateparser: str
    decimal: str
    group: str
    labels: dict[str, tuple[str, ...]]
    title_words: tuple[str, ...]
    months: tuple[str, ...]
    units: tuple[str, ...]
    payment_terms: dict[str, tuple[str, ...]]
    printed: dict[str, tuple[str, ...]]
    printed_terms: dict[str, tuple[str, ...]]
    descriptive_units: tuple[str, ...] = ()
    ordinals: tuple[str, ...] = ()
    date_joiners: tuple[str, ...] = ()
    name_joiners: tuple[str, ...] = ()
    label_words: tuple[str, ...] = ()


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LexiconError(f"{where}: expected a list of strings")
    return tuple(value)


def _language(path: Path) -> Language:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    code = data.get("language") or path.stem
    where = path.name
    labels = data.get("labels") or {}
    unknown = set(labels) - set(LABEL_KINDS)
    if unknown:
        raise LexiconError(f"{where}: unknown label kinds {sorted(unknown)}")
    for kind, fragments in labels.items():
        for fragment in _strings(fragments, f"{where} labels.{kind}"):
            try:
                re.compile(fragment)
            except re.error as exc:
                raise LexiconError(f"{where} labels.{kind}: {fragment!r} is no regular expression ({exc})") from None
    months = _strings(data.get("months"), f"{where} months")
    if len(months) != 12:
        raise LexiconError(f"{where}: months must name twelve months")
    numbers = data.get("numbers") or {}
    return Language(
        code=code,
        name=data.get("name", code),
        dateparser=data.get("dateparser", code),
        decimal=numbers.get("decimal", "."),
        group=numbers.get("group", ","),
        labels={k: _strings(labels.get(k), f"{where} labels.{k}") for k in LABEL_KINDS},
        title_words=_strings(data.get("title_words"), f"{where} title_words"),
        months=months,
        units=_strings(data.get("units"), f"{where} units"),
        payment_terms={k: _strings((data.get("payment_terms") or {}).get(k), f"{where} payment_terms.{k}")
                       for k in TERMS_PARTS},
        printed={k: _strings(v, f"{where} printed.{k}") for k, v in (data.get("printed") or {}).items()},
        printed_terms={k: _strings(v, f"{where} printed_terms.{k}")
                       for k, v in (data.get("printed_terms") or {}).items()},
        descriptive_units=_strings(data.get("descriptive_units"), f"{where} descriptive_units"),
        **{key: _strings(data.get(key), f"{where} {key}")
           for key in ("ordinals", "date_joiners", "name_joiners", "label_words")},
    )


@dataclass(frozen=True)
class Lexicon:
    """Every language's words, and the language-neutral ones, with the readers built from them."""

    languages: dict[str, Language]
    common: dict[str, Any] = field(repr=False)

    # --- labels ---------------------------------------------------------------------------

    def fragments(self, kind: str, languages: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The label fragments of `kind`, every language's (or those named) and the common ones."""
        if kind not in LABEL_KINDS and kind not in (self.common.get("labels") or {}):
            raise KeyError(kind)
        out: list[str] = []
        for code, lang in self.languages.items():
            if languages is None or code in languages:
                out += lang.labels.get(kind, ())
        out += (self.common.get("labels") or {}).get(kind) or []
        return tuple(dict.fromkeys(out))

    def label(self, kind: str) -> str:
        """One non-capturing alternation of every fragment of `kind` (`(?:a|b|...)`)."""
        return "(?:" + "|".join(self.fragments(kind)) + ")"

    # --- words ----------------------------------------------------------------------------

    @cached_property
    def title_words(self) -> tuple[str, ...]:
        """Words a document prints as its title or a stamp, in every language."""
        return tuple(dict.fromkeys(w for lang in self.languages.values() for w in lang.title_words))

    def months(self, language: str) -> tuple[str, ...]:
        """The twelve month names of a language (English where it has no file)."""
        return (self.languages.get(language) or self.languages[FIRST_LANGUAGE]).months

    @cached_property
    def month_names(self) -> dict[str, int]:
        """Every language's month names (lower case) and their three-letter stems -> month number."""
        out: dict[str, int] = {}
        for lang in self.languages.values():
            for i, name in enumerate(lang.months, 1):
                out.setdefault(name.lower(), i)
        return out

    @cached_property
    def units(self) -> frozenset[str]:
        """Units of measure a table prints (lower case), every language's and the coded ones."""
        words = [u for lang in self.languages.values() for u in lang.units] + list(self.common.get("units") or [])
        return frozenset(w.lower() for w in words)

    @cached_property
    def descriptive_units(self) -> frozenset[str]:
        """Unit words that also end a description (`Photo shoot full day`)."""
        return frozenset(w.lower() for lang in self.languages.values() for w in lang.descriptive_units)

    def terms(self, part: str) -> str:
        """One alternation of a payment-terms part (`days`, `net`, ...) in every language."""
        words = [w for lang in self.languages.values() for w in lang.payment_terms.get(part, ())]
        return "(?:" + "|".join(dict.fromkeys(words)) + ")"

    def words(self, key: str) -> tuple[str, ...]:
        """Every language's words of one list (`ordinals`, `date_joiners`, `name_joiners`,
        `label_words`), then `common.yaml`'s, each once."""
        words = [w for lang in self.languages.values() for w in getattr(lang, key)]
        return tuple(dict.fromkeys(words + list(self.common.get(key) or [])))

    def alternation(self, key: str) -> str:
        """One non-capturing alternation of a word list, its words escaped, longest first."""
        return "(?:" + "|".join(re.escape(w) for w in sorted(self.words(key), key=len, reverse=True)) + ")"

    @cached_property
    def date_languages(self) -> tuple[str, ...]:
        """Languages whose written dates are read (dateparser codes)."""
        own = [lang.dateparser for lang in self.languages.values()]
        return tuple(dict.fromkeys(own + list(self.common.get("date_languages") or [])))

    # --- common ---------------------------------------------------------------------------

    @cached_property
    def legal_forms(self) -> dict[str, tuple[str, ...]]:
        """Legal forms that end a company's name, by country."""
        return {country: tuple(forms) for country, forms in (self.common.get("legal_forms") or {}).items()}

    def legal_form(self) -> str:
        """One alternation of every country's legal forms."""
        return "(?:" + "|".join(f for forms in self.legal_forms.values() for f in forms) + ")"

    @cached_property
    def currency_signs(self) -> dict[str, tuple[str, ...]]:
        return {k: tuple(v) for k, v in (self.common.get("currency_signs") or {}).items()}

    @cached_property
    def currency_words(self) -> dict[str, tuple[str, ...]]:
        return {k: tuple(v) for k, v in (self.common.get("currency_words") or {}).items()}

    @cached_property
    def currency_symbols(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in (self.common.get("currency_symbols") or {}).items()}

    @property
    def places(self) -> dict[str, list[str]]:
        return self.common.get("places") or {}

    @property
    def company_head_forms(self) -> tuple[str, ...]:
        return tuple(self.common.get("company_head_forms") or ())

    # --- the generator's wording ----------------------------------------------------------

    def printed(self, language: str) -> dict[str, tuple[str, ...]]:
        return self.languages[language].printed

    def printed_terms(self, language: str) -> dict[str, tuple[str, ...]]:
        return self.languages[language].printed_terms


def _language_files(folder: Path, order: list[str]) -> list[Path]:
    """The language files, in `common.yaml`'s `order` and then by name (a new file comes last)."""
    files = sorted(p for p in folder.glob("*.yaml") if p.stem != "common")
    rank = {code: i for i, code in enumerate(order)}
    return sorted(files, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


@lru_cache(maxsize=4)
def load(folder: Path = HERE) -> Lexicon:
    """The lexicon of a folder of YAML files (cached)."""
    import yaml

    common_path = folder / "common.yaml"
    common = (yaml.safe_load(common_path.read_text(encoding="utf-8")) if common_path.exists() else None) or {}
    order = [FIRST_LANGUAGE] + [c for c in common.get("order") or [] if c != FIRST_LANGUAGE]
    languages = {lang.code: lang for lang in map(_language, _language_files(folder, order))}
    if FIRST_LANGUAGE not in languages:
        raise LexiconError(f"{folder}: no {FIRST_LANGUAGE}.yaml")
    return Lexicon(languages, common)


def lexicon() -> Lexicon:
    """The shipped lexicon, compiled once per process."""
    return load(HERE)


def languages() -> tuple[str, ...]:
    """The languages the lexicon has a file for, English first."""
    return tuple(lexicon().languages)
