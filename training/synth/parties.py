"""Vendors and clients drawn with Faker in their own locale, plus the vendor master record.

A vendor's legal name is its master-data name; invoices print that name, one of its
aliases, or a near variant (punctuation, legal form spelling), as real vendors do.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from training.synth.catalog import DEPARTMENTS, LEGAL_FORMS, TRADE_WORDS
from training.synth.countries import COUNTRIES, Country, make_bank_account, make_tax_id
from training.synth.formats import printable
from invoicechain.enums import VendorStatus

_fakers: dict[str, object] = {}

#: Faker word lists that Faker builds by iterating a set of strings: their order, and so what a
#: seeded draw picks from them, follows the interpreter's string-hash seed (PYTHONHASHSEED).
HASH_ORDERED_LISTS: dict[str, tuple[str, ...]] = {"it_IT": ("cities",)}


def _fix_hash_order(fake, locale: str) -> None:
    """Give the locale's hash-ordered word lists a fixed (sorted) order on this instance."""
    for provider in fake.get_providers():
        for attr in HASH_ORDERED_LISTS.get(locale, ()):
            values = getattr(provider, attr, None)
            if isinstance(values, list):
                setattr(provider, attr, sorted(values))


def faker_for(locale: str, seed: int):
    """A Faker for the locale, re-seeded so that what it draws depends on `seed` only."""
    from faker import Faker

    fake = _fakers.get(locale)
    if fake is None:
        fake = Faker(locale)
        _fix_hash_order(fake, locale)
        _fakers[locale] = fake
    fake.seed_instance(seed)
    return fake


BANK_NAMES: dict[str, tuple[str, ...]] = {
    "US": ("JPMorgan Chase Bank", "Bank of America", "Wells Fargo Bank", "U.S. Bank"),
    "GB": ("Barclays Bank", "HSBC UK", "Lloyds Bank", "NatWest"),
    "IE": ("AIB", "Bank of Ireland", "PTSB"),
    "AU": ("Commonwealth Bank", "Westpac", "ANZ", "NAB"),
    "CA": ("RBC Royal Bank", "TD Canada Trust", "Scotiabank", "BMO"),
    "DE": ("Deutsche Bank", "Commerzbank", "Sparkasse", "Volksbank"),
    "AT": ("Erste Bank", "Raiffeisenbank", "Bank Austria"),
    "FR": ("BNP Paribas", "Société Générale", "Crédit Agricole", "LCL"),
    "NL": ("ING Bank", "Rabobank", "ABN AMRO"),
    "ES": ("Banco Santander", "BBVA", "CaixaBank"),
    "IT": ("Intesa Sanpaolo", "UniCredit", "Banco BPM"),
    "SE": ("Handelsbanken", "SEB", "Swedbank"),
}

TLDS = {"US": "com", "GB": "co.uk", "IE": "ie", "AU": "com.au", "CA": "ca", "DE": "de", "AT": "at",
        "FR": "fr", "NL": "nl", "ES": "es", "IT": "it", "SE": "se"}

INVOICE_PATTERNS = ("INV-{y}-{n:05d}", "{n:06d}", "RE{y}{n:04d}", "F{y}-{n:04d}", "{y}/{n:04d}", "INV{n:07d}",
                    "{n}", "SI-{n:06d}", "{y}-{n:05d}")
CREDIT_PATTERNS = ("CN-{y}-{n:04d}", "GS{n:05d}", "CR{n:06d}", "AV-{y}-{n:04d}")
PO_FORMATS = ("45{d8}", "PO-{d7}", "PO{yy}-{d6}", "{code}/PO/{d6}", "{code}-{d7}")


#: Legal forms recognised at the end of a name (Faker's company names bring their own).
KNOWN_FORMS = sorted(
    {form for forms in LEGAL_FORMS.values() for form in forms}
    | {"S.A.R.L.", "S.A.", "S.A.S.", "AG", "SE", "OHG", "GbR", "mbH", "e.V.", "Group", "Groep", "Gruppe",
       "and Sons", "& Sons", "Inc", "Corp", "Corporation", "Limited", "Ltd.", "s.r.l.", "S.R.L.", "s.p.a.", "s.a.s.",
       "S.L.U.", "S.C.", "KB", "Oy", "A/S", "NV", "N.V.", "CV", "VOF", "Cie", "Cie."},
    key=len,
    reverse=True,
)


def _legal_form_of(name: str, country: str | None = None) -> str | None:
    for form in KNOWN_FORMS:
        if name.endswith(" " + form):
            return form
    return None


def _address_lines(fake, country: Country) -> list[str]:
    street = printable(fake.street_address())
    city = printable(fake.city())
    postcode = printable(fake.postcode())
    code = country.code
    if code == "US":
        return [street, f"{city}, {fake.state_abbr(include_territories=False)} {postcode}"]
    if code in ("GB", "IE"):
        return [street, city, postcode]
    if code == "AU":
        return [street, f"{city} {fake.state_abbr()} {postcode}"]
    if code == "CA":
        return [street, f"{city} {fake.province_abbr()} {postcode}"]
    return [street, f"{postcode} {city}"]


def _slug(name: str) -> str:
    words = re.findall(r"[a-z0-9]+", printable(name).lower().encode("ascii", "ignore").decode())
    return "-".join(words[:2]) or "mail"


def _registration(country: Country, city: str, rng: random.Random) -> str:
    n = rng.randrange(10**7, 10**8)
    return {
        "DE": f"Amtsgericht {city} HRB {n % 100000}",
        "AT": f"FN {n % 1000000}{rng.choice('abcdm')}, Handelsgericht {city}",
        "GB": f"Registered in England and Wales No. {n:08d}",
        "IE": f"Registered in Ireland No. {n % 1000000}",
        "FR": f"RCS {city} {n % 1000}{rng.randrange(100000, 999999)}",
        "NL": f"KvK {n:08d}",
        "ES": f"Registro Mercantil de {city}, Tomo {n % 5000}",
        "IT": f"REA {city[:2].upper()}-{n % 1000000}",
        "SE": f"Org.nr {n % 1000000:06d}-{rng.randrange(1000, 9999)}",
        "AU": "",
        "CA": "",
        "US": "",
    }[country.code]


@dataclass
class VendorRecord:
    id: str
    name: str
    aliases: list[str]
    address_lines: list[str]
    country: str
    tax_id: str
    currency: str
    bank: dict[str, str | None]
    bank_name: str
    trade: str
    department: str
    phone: str
    email: str
    website: str
    registration: str
    manager: str
    invoice_pattern: str
    credit_pattern: str
    seq: int
    credit_seq: int
    status: str = VendorStatus.ACTIVE
    risk: str = "low"
    near_variants: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return ", ".join(self.address_lines)

    def master_record(self) -> dict:
        """The vendor as master data stores it."""
        return {
            "id": self.id, "name": self.name, "aliases": list(self.aliases), "address": self.address,
            "country": self.country, "tax_id": self.tax_id, "currency": self.currency,
            "iban": self.bank["iban"], "bic": self.bank["bic"], "account_number": self.bank["account_number"],
            "routing_number": self.bank["routing_number"], "status": self.status, "risk": self.risk,
            "department": self.department,
        }

    def printed_name(self, rng: random.Random) -> str:
        roll = rng.random()
        if roll < 0.14 and self.aliases:
            return rng.choice(self.aliases)
        if roll < 0.28 and self.near_variants:
            return rng.choice(self.near_variants)
        return self.name

    def next_number(self, kind: str, year: int, rng: random.Random, earlier: bool = False) -> str:
        """The vendor's next document number (numbers never repeat within a vendor)."""
        if kind == "credit_note":
            self.credit_seq += rng.randint(1, 6)
            return self.credit_pattern.format(y=year, n=self.credit_seq)
        self.seq += rng.randint(1, 30)
        return self.invoice_pattern.format(y=year, n=self.seq)


def _near_variants(name: str, country: str) -> list[str]:
    """Spellings that differ only in punctuation or how the legal form is written."""
    swaps = (("Ltd.", "Ltd"), ("Ltd", "Limited"), ("Inc.", "Inc"), ("Corp.", "Corporation"), ("Co.", "Company"),
             ("GmbH & Co. KG", "GmbH & Co KG"), ("B.V.", "BV"), ("S.L.", "SL"), ("S.r.l.", "Srl"),
             ("S.p.A.", "SpA"), ("Pty Ltd", "Pty. Ltd."), (" & ", " and "), (", ", " "))
    out = []
    for old, new in swaps:
        if old in name:
            variant = name.replace(old, new, 1)
            if variant != name and variant not in out:
                out.append(variant)
    return out[:2]


def make_vendor(vendor_id: str, country_code: str, trade: str, seed: int, taken: list[str]) -> VendorRecord:
    """A vendor with a name not too close to any in `taken` (names must identify vendors)."""
    from rapidfuzz import fuzz, process

    country = COUNTRIES[country_code]
    rng = random.Random(f"vendor:{seed}")
    fake = faker_for(country.faker_locale, seed)
    language = country.language if country.language in TRADE_WORDS[trade] else "en"
    name = ""
    for _ in range(20):
        if rng.random() < 0.45 and trade != "retail":
            name = printable(fake.company())
            if not _legal_form_of(name, country.code):
                name = f"{name} {rng.choice(LEGAL_FORMS[country.code][:2])}"
        else:
            words = TRADE_WORDS[trade].get(language) or TRADE_WORDS[trade]["en"]
            name = f"{printable(fake.last_name())} {rng.choice(words)} {rng.choice(LEGAL_FORMS[country.code])}"
        if len(name) > 55:
            continue
        base = name.lower()
        if not taken or process.extractOne(base, taken, scorer=fuzz.ratio, score_cutoff=80) is None:
            break
    taken.append(name.lower())
    form = _legal_form_of(name, country.code)
    aliases = []
    if form:
        aliases.append(name[: -len(form)].rstrip(" ,"))
    aliases.append(name.upper())
    address_lines = _address_lines(fake, country)
    slug = _slug(aliases[0] if form else name)
    domain = f"{slug}.{TLDS[country.code]}"
    mailbox = rng.choice(("invoices", "billing", "accounts", "info", "office"))
    bank = make_bank_account(country, rng)
    return VendorRecord(
        id=vendor_id,
        name=name,
        aliases=[a for a in aliases if a and a != name],
        address_lines=address_lines,
        country=country.code,
        tax_id=make_tax_id(country, rng),
        currency=country.currency,
        bank=bank,
        bank_name=rng.choice(BANK_NAMES[country.code]),
        trade=trade,
        department=DEPARTMENTS[trade],
        phone=printable(fake.phone_number()),
        email=f"{mailbox}@{domain}",
        website=f"www.{domain}",
        registration=_registration(country, printable(fake.city()), rng),
        manager=printable(f"{fake.first_name()} {fake.last_name()}"),
        invoice_pattern=rng.choice(INVOICE_PATTERNS),
        credit_pattern=rng.choice(CREDIT_PATTERNS),
        seq=rng.randrange(100, 9000),
        credit_seq=rng.randrange(10, 900),
        risk="low" if rng.random() < 0.85 else "medium",
        near_variants=_near_variants(name, country.code),
    )


@dataclass
class ClientRecord:
    """A buying entity: the company invoices are addressed to, and the issuer of its POs."""

    name: str
    address_lines: list[str]
    country: str
    tax_id: str
    po_format: str
    code: str
    contacts: list[str]

    def po_candidate(self, rng: random.Random, year: int) -> str:
        def digits(n: int) -> str:
            return "".join(rng.choice("0123456789") for _ in range(n))

        return self.po_format.format(d8=digits(8), d7=digits(7), d6=digits(6), yy=f"{year % 100:02d}", code=self.code)


def make_client(country_code: str, seed: int, taken: list[str]) -> ClientRecord:
    from rapidfuzz import fuzz, process

    country = COUNTRIES[country_code]
    rng = random.Random(f"client:{seed}")
    fake = faker_for(country.faker_locale, seed)
    name = ""
    for _ in range(20):
        name = printable(fake.company())
        if not _legal_form_of(name, country.code):
            name = f"{name} {rng.choice(LEGAL_FORMS[country.code][:2])}"
        if len(name) <= 55 and (not taken or process.extractOne(name.lower(), taken, scorer=fuzz.ratio,
                                                                 score_cutoff=80) is None):
            break
    taken.append(name.lower())
    letters = re.sub(r"[^A-Z]", "", name.upper().encode("ascii", "ignore").decode())
    code = (letters + "XYZ")[:3]
    return ClientRecord(
        name=name,
        address_lines=_address_lines(fake, country),
        country=country.code,
        tax_id=make_tax_id(country, rng),
        po_format=rng.choice(PO_FORMATS),
        code=code,
        contacts=[printable(f"{fake.first_name()} {fake.last_name()}") for _ in range(3)],
    )
