"""Country profiles: currency, language, tax, number and date habits, bank and tax-id formats."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from decimal import Decimal

from invoicechain.lexicon import lexicon


@dataclass(frozen=True)
class Country:
    code: str
    name: str
    faker_locale: str
    language: str  # language of the labels when a document is not in English
    currency: str
    number_format: str
    date_formats: tuple[str, ...]
    tax_kind: str  # vat | sales_tax | gst
    tax_rates: tuple[Decimal, ...]
    bank_style: str  # iban | gb | us | au | ca
    iban_bban: str = ""  # n digit, a letter; the bank code is the leading letters where there are any
    eu: bool = False
    weight: float = 1.0


def _d(*values: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in values)


COUNTRIES: dict[str, Country] = {
    c.code: c
    for c in (
        Country("US", "United States", "en_US", "en", "USD", "1,234.56", ("us_numeric", "us_long", "iso"),
                "sales_tax", _d("6.25", "7", "8.25", "8.875", "4"), "us", weight=3.0),
        Country("GB", "United Kingdom", "en_GB", "en", "GBP", "1,234.56", ("dmy_slash", "long", "short"),
                "vat", _d("20"), "gb", "aaaannnnnnnnnnnnnn", weight=2.0),
        Country("IE", "Ireland", "en_IE", "en", "EUR", "1,234.56", ("dmy_slash", "long", "short"),
                "vat", _d("23", "13.5"), "iban", "aaaannnnnnnnnnnnnn", eu=True),
        Country("AU", "Australia", "en_AU", "en", "AUD", "1,234.56", ("dmy_slash", "long", "short"),
                "gst", _d("10"), "au"),
        Country("CA", "Canada", "en_CA", "en", "CAD", "1,234.56", ("iso", "us_long", "long"),
                "gst", _d("5", "13"), "ca"),
        Country("DE", "Germany", "de_DE", "de", "EUR", "1.234,56", ("dmy_dot", "long", "iso"),
                "vat", _d("19", "7"), "iban", "nnnnnnnnnnnnnnnnnn", eu=True, weight=3.0),
        Country("AT", "Austria", "de_AT", "de", "EUR", "1.234,56", ("dmy_dot", "long"),
                "vat", _d("20"), "iban", "nnnnnnnnnnnnnnnn", eu=True),
        Country("FR", "France", "fr_FR", "fr", "EUR", "1 234,56", ("dmy_slash", "long"),
                "vat", _d("20", "10"), "iban", "nnnnnnnnnnnnnnnnnnnnnnn", eu=True, weight=2.0),
        Country("NL", "Netherlands", "nl_NL", "nl", "EUR", "1.234,56", ("dmy_dash", "long", "iso"),
                "vat", _d("21", "9"), "iban", "aaaannnnnnnnnn", eu=True, weight=2.0),
        Country("ES", "Spain", "es_ES", "es", "EUR", "1.234,56", ("dmy_slash", "long"),
                "vat", _d("21"), "iban", "nnnnnnnnnnnnnnnnnnnn", eu=True),
        Country("IT", "Italy", "it_IT", "it", "EUR", "1.234,56", ("dmy_slash", "long"),
                "vat", _d("22"), "iban", "annnnnnnnnnnnnnnnnnnnnn", eu=True),
        Country("SE", "Sweden", "sv_SE", "en", "SEK", "1 234,56", ("iso", "long"),
                "vat", _d("25"), "iban", "nnnnnnnnnnnnnnnnnnnn", eu=True),
    )
}

def tax_label(country: Country, language: str, rate: Decimal) -> str:
    """The tax's label as printed: the lexicon's `tax_<kind>` in the document's language (English
    where the language has none); Canada's 13% is HST, Austria's German invoices print USt."""
    kind = country.tax_kind
    if country.code == "CA" and rate == Decimal("13"):
        kind = "hst"
    if country.code == "AT" and language == "de":
        kind = "ust"
    key = f"tax_{kind}"
    return (lexicon().printed(language).get(key) or lexicon().printed("en")[key])[0]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def iban_check_digits(country: str, bban: str) -> str:
    """ISO 13616 check digits (mod 97) for a BBAN."""
    rearranged = bban + country + "00"
    number = int("".join(str(int(ch, 36)) for ch in rearranged))
    return f"{98 - number % 97:02d}"


def make_iban(country: Country, rng: random.Random, bank_code: str | None = None) -> str:
    """A syntactically valid IBAN (right length, right check digits) for the country."""
    bban = "".join(rng.choice(string.digits if c == "n" else string.ascii_uppercase) for c in country.iban_bban)
    if bank_code:
        bban = bank_code + bban[len(bank_code):]
    code = "GB" if country.bank_style == "gb" else country.code
    return code + iban_check_digits(code, bban) + bban


def make_bic(country_code: str, rng: random.Random, bank_code: str | None = None) -> str:
    bic = (bank_code or _letters(rng, 4)) + country_code + rng.choice(string.ascii_uppercase) + rng.choice(
        string.ascii_uppercase + string.digits
    )
    return bic + ("XXX" if rng.random() < 0.3 else "")


def make_routing_number(rng: random.Random) -> str:
    """A US ABA routing number with a valid checksum."""
    d = [rng.choice((0, 1, 2, 3))] + [int(c) for c in _digits(rng, 7)]
    # 3*(d1+d4+d7) + 7*(d2+d5+d8) + (d3+d6+d9) must be divisible by 10.
    partial = 3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + (d[2] + d[5])
    return "".join(map(str, d)) + str((-partial) % 10)


def make_bank_account(country: Country, rng: random.Random) -> dict[str, str | None]:
    """Bank details of a vendor in the shape of the vendor record."""
    style = country.bank_style
    if style == "iban":
        bank_code = _letters(rng, 4) if country.iban_bban.startswith("aaaa") else None
        bank_code = bank_code or (_letters(rng, 1) if country.iban_bban.startswith("a") else None)
        iban = make_iban(country, rng, bank_code)
        bic_code = iban[4:8] if iban[4:8].isalpha() else _letters(rng, 4)
        return {"iban": iban, "bic": make_bic(country.code, rng, bic_code), "account_number": None, "routing_number": None}
    if style == "gb":
        bank_code = _letters(rng, 4)
        sort_code = _digits(rng, 6)
        account = _digits(rng, 8)
        iban_bban = bank_code + sort_code + account
        iban = "GB" + iban_check_digits("GB", iban_bban) + iban_bban
        return {
            "iban": iban,
            "bic": make_bic("GB", rng, bank_code),
            "account_number": account,
            "routing_number": f"{sort_code[:2]}-{sort_code[2:4]}-{sort_code[4:]}",
        }
    if style == "us":
        return {
            "iban": None,
            "bic": make_bic("US", rng) if rng.random() < 0.4 else None,
            "account_number": _digits(rng, rng.choice((9, 10, 12))),
            "routing_number": make_routing_number(rng),
        }
    if style == "au":
        bsb = _digits(rng, 6)
        return {"iban": None, "bic": None, "account_number": _digits(rng, rng.choice((8, 9))),
                "routing_number": f"{bsb[:3]}-{bsb[3:]}"}
    # Canada: transit and institution numbers.
    return {"iban": None, "bic": None, "account_number": _digits(rng, 7),
            "routing_number": f"{_digits(rng, 5)}-{rng.choice(('001', '002', '003', '004', '006', '010'))}"}


def changed_bank_account(country: Country, record: dict[str, str | None], rng: random.Random) -> dict[str, str | None]:
    """Bank details that differ from the record (a new account at possibly the same bank)."""
    while True:
        new = make_bank_account(country, rng)
        if record.get("iban"):
            if new["iban"] != record["iban"]:
                return new
        elif new["account_number"] != record["account_number"]:
            new["routing_number"] = record["routing_number"] if rng.random() < 0.5 else new["routing_number"]
            return new


def make_tax_id(country: Country, rng: random.Random) -> str:
    code = country.code
    if code == "US":
        return f"{_digits(rng, 2)}-{_digits(rng, 7)}"
    if code == "AU":
        d = _digits(rng, 11)
        return f"{d[:2]} {d[2:5]} {d[5:8]} {d[8:]}"
    if code == "CA":
        return f"{_digits(rng, 9)}RT0001"
    if code == "AT":
        return "ATU" + _digits(rng, 8)
    if code == "NL":
        return "NL" + _digits(rng, 9) + "B01"
    if code == "ES":
        return "ES" + rng.choice("ABG") + _digits(rng, 8)
    if code == "IT":
        return "IT" + _digits(rng, 11)
    if code == "IE":
        return "IE" + _digits(rng, 7) + _letters(rng, 1)
    if code == "FR":
        return "FR" + _digits(rng, 11)
    if code == "SE":
        return "SE" + _digits(rng, 10) + "01"
    return code + _digits(rng, 9)
