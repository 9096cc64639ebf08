"""How numbers, dates and currencies are written on the synthetic documents.

Every document has one number format and one date format; the ground-truth check in
`training.synth.grounding` writes canonical values back in the same formats.
"""

from __future__ import annotations

import unicodedata
from datetime import date
from decimal import Decimal

from invoicechain.lexicon import lexicon

#: Number format name -> (thousands separator, decimal separator).
NUMBER_FORMATS: dict[str, tuple[str, str]] = {
    "1,234.56": (",", "."),
    "1.234,56": (".", ","),
    "1 234,56": (" ", ","),
}

DATE_FORMATS = ("iso", "us_numeric", "dmy_slash", "dmy_dot", "dmy_dash", "long", "short", "us_long")

#: Month names by language (the lexicon's `months`).
MONTHS: dict[str, tuple[str, ...]] = {code: lexicon().months(code) for code in lexicon().languages}

CURRENCY_SYMBOLS: dict[str, str] = {
    "EUR": "€",
    "USD": "$",
    "GBP": "£",
    "AUD": "A$",
    "CAD": "C$",
    "SEK": "kr",
}


def format_number(value: Decimal, number_format: str, places: int = 2, grouping: bool = True) -> str:
    """`value` written with the document's separators (`-1.234,56`)."""
    thousands, decimal_sep = NUMBER_FORMATS[number_format]
    quantised = value.quantize(Decimal(1).scaleb(-places)) if places else value.quantize(Decimal(1))
    sign = "-" if quantised < 0 else ""
    digits = f"{abs(quantised):f}"
    whole, _, frac = digits.partition(".")
    if grouping and len(whole) > 3:
        groups = []
        while len(whole) > 3:
            groups.insert(0, whole[-3:])
            whole = whole[:-3]
        groups.insert(0, whole)
        whole = thousands.join(groups)
    return sign + whole + (decimal_sep + frac if frac else "")


def format_quantity(quantity: Decimal, number_format: str) -> str:
    """A quantity as printed: its canonical digits with the document's decimal separator."""
    text = f"{quantity.normalize():f}"
    return text.replace(".", NUMBER_FORMATS[number_format][1])


def format_money(value: Decimal, number_format: str, currency: str, display: str) -> str:
    """An amount with its currency as the document shows it (`€ 1.234,56`, `1 234,56 kr`, `USD 12.00`)."""
    number = format_number(value, number_format)
    symbol = CURRENCY_SYMBOLS[currency]
    if display == "symbol_before":
        tight = len(symbol) == 1 and number_format == "1,234.56" and value >= 0
        return f"{symbol}{number}" if tight else f"{symbol} {number}"
    if display == "symbol_after":
        return f"{number} {symbol}"
    if display == "code_before":
        return f"{currency} {number}"
    if display == "code_after":
        return f"{number} {currency}"
    return number


def format_date(day: date, date_format: str, language: str = "en") -> str:
    """A date as printed in one of `DATE_FORMATS` (written months in the document's language)."""
    months = MONTHS.get(language, MONTHS["en"])
    if date_format == "iso":
        return day.isoformat()
    if date_format == "us_numeric":
        return f"{day.month:02d}/{day.day:02d}/{day.year}"
    if date_format == "dmy_slash":
        return f"{day.day:02d}/{day.month:02d}/{day.year}"
    if date_format == "dmy_dot":
        return f"{day.day:02d}.{day.month:02d}.{day.year}"
    if date_format == "dmy_dash":
        return f"{day.day:02d}-{day.month:02d}-{day.year}"
    if date_format == "us_long":
        return f"{MONTHS['en'][day.month - 1]} {day.day}, {day.year}"
    if date_format == "short" and language == "en":
        return f"{day.day:02d} {MONTHS['en'][day.month - 1][:3]} {day.year}"
    # "long", and "short" outside English, write the month name out.
    month = months[day.month - 1]
    if language == "de":
        return f"{day.day}. {month} {day.year}"
    if language == "es":
        return f"{day.day} de {month} de {day.year}"
    return f"{day.day} {month} {day.year}"


def printable(text: str) -> str:
    """Text the standard PDF fonts can draw (Windows-1252): other letters lose their accents."""
    text = text.replace("\u00a0", " ").replace("\n", " ")
    out = []
    for ch in text:
        try:
            ch.encode("cp1252")
            out.append(ch)
        except UnicodeEncodeError:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            try:
                base.encode("cp1252")
                out.append(base)
            except UnicodeEncodeError:
                out.append("?")
    return " ".join("".join(out).split())
