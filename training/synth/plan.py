"""Planning a corpus: layouts, faults, vendors, clients, every invoice's content, master data.

Planning is cheap and sequential (it owns the shared state: vendor number sequences, PO
numbers, master data); rendering, the expensive part, then works on finished documents
and can run in any order or process. Everything random comes from `random.Random` seeded
with strings derived from the corpus seed, so a seed fixes the corpus.
"""

from __future__ import annotations

import calendar
import math
import random
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from invoicechain.decisions import Fault
from training.synth.catalog import (
    GOODS_TRADES,
    RETAIL_TRADES,
    SERVICE_TEXTS,
    SERVICE_TRADES,
    pick_items,
)
from training.synth.countries import COUNTRIES, Country, changed_bank_account, tax_label
from training.synth.document import Bank, InvoiceDoc, Line, Party, Style
from training.synth.faults import NEEDS_PO, PO_LAYOUTS, PoRegistry, assign_faults
from training.synth.formats import format_date
from training.synth.labels import PAYMENT_TERMS
from training.synth.master import MasterDataBuilder, OrderLine, headroom
from training.synth.money import (
    CLEAN_CEILING_EUR,
    OVER_LIMIT_FLOOR_EUR,
    cents,
    from_eur,
    to_eur,
)
from training.synth.parties import ClientRecord, VendorRecord, make_client, make_vendor
from invoicechain.enums import VendorStatus

#: Invoices are dated in the WINDOW_DAYS before this day (fixed so that a seed fixes the corpus).
REFERENCE_DATE = date(2026, 10, 31)
WINDOW_DAYS = 180
#: The day the corpus counts as processed on (for rules that look at how old an invoice is).
PROCESSING_DATE = REFERENCE_DATE + timedelta(days=14)

#: Share of each layout in a corpus.
LAYOUT_WEIGHTS: dict[str, float] = {
    "table": 0.19,
    "two_column": 0.15,
    "remittance": 0.12,
    "letter": 0.10,
    "multipage": 0.07,
    "service": 0.14,
    "receipt": 0.12,
    "credit_note": 0.11,
}
LAYOUTS: tuple[str, ...] = tuple(LAYOUT_WEIGHTS)

#: How many line items each layout prints (inclusive range).
LINE_COUNTS: dict[str, tuple[int, int]] = {
    "table": (1, 12), "two_column": (1, 10), "remittance": (1, 8), "letter": (1, 5),
    "multipage": (16, 40), "receipt": (1, 12), "credit_note": (1, 4), "service": (0, 0),
}

CLIENT_COUNTRY_WEIGHTS = {"DE": 4, "GB": 3, "US": 3, "FR": 2, "NL": 2, "IE": 1, "AT": 1, "ES": 1, "IT": 1,
                          "SE": 1, "AU": 1, "CA": 1}
ACCENTS = ((0.12, 0.23, 0.45), (0.55, 0.1, 0.1), (0.1, 0.4, 0.3), (0.2, 0.2, 0.2), (0.35, 0.2, 0.5),
           (0.0, 0.35, 0.6), (0.6, 0.35, 0.0))
CODENAMES = ("Falcon", "Atlas", "Orion", "Nimbus", "Harbor", "Summit", "Beacon", "Quartz", "Meridian", "Juniper")


@dataclass
class CorpusPlan:
    documents: list[InvoiceDoc]
    master_data: dict

    def layouts(self) -> Counter:
        return Counter(d.layout for d in self.documents)

    def faults(self) -> Counter:
        return Counter(f for d in self.documents for f in d.faults)


def allocate_layouts(n: int, layouts: tuple[str, ...], rng: random.Random) -> list[str]:
    """`n` layouts in proportion to their weights (each at least once when n allows), shuffled."""
    weights = {name: LAYOUT_WEIGHTS[name] for name in layouts}
    total = sum(weights.values())
    exact = {name: n * w / total for name, w in weights.items()}
    counts = {name: int(v) for name, v in exact.items()}
    for name in sorted(layouts, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[name] += 1
    if n >= len(layouts):
        for name in layouts:
            if counts[name] == 0:
                donor = max(counts, key=counts.get)
                counts[donor] -= 1
                counts[name] = 1
    sequence = [name for name in layouts for _ in range(counts[name])]
    rng.shuffle(sequence)
    return sequence


def _weighted(rng: random.Random, weights: dict) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _vendor_class(layout: str, rng: random.Random) -> str:
    if layout == "receipt":
        return "retail"
    if layout == "service":
        return "service"
    if layout in ("credit_note", "multipage"):
        return "goods"
    return "goods" if rng.random() < 0.75 else "service"


TRADES_BY_CLASS = {"goods": GOODS_TRADES, "service": SERVICE_TRADES, "retail": RETAIL_TRADES}
RECEIPT_PATTERNS = ("{n:06d}", "R{n:07d}", "{y}-{n:06d}", "0{n:05d}")


class CorpusPlanner:
    """Builds every document of a corpus and the master data they imply."""

    def __init__(self, n: int, seed: int, fault_rate: float, layouts: tuple[str, ...]):
        self.n = n
        self.seed = seed
        self.rng = random.Random(f"synth:{seed}:plan")
        self.layout_seq = allocate_layouts(n, layouts, self.rng)
        self.fault_seq = assign_faults(self.layout_seq, fault_rate, self.rng)
        self.classes = [_vendor_class(layout, self.rng) for layout in self.layout_seq]
        self.master = MasterDataBuilder()
        self.po_registry = PoRegistry()
        self.names_taken: list[str] = []
        self.customer_numbers: dict[tuple[str, int], str] = {}
        self._vendor_counter = 10000
        self.history_seq: dict[str, int] = {}
        self.clients = self._make_clients()
        self.pools = self._make_pools()

    # --- parties -------------------------------------------------------------------------

    def _new_vendor(self, trade: str, status: str = VendorStatus.ACTIVE, country: str | None = None) -> VendorRecord:
        self._vendor_counter += 1
        vid = f"V{self._vendor_counter}"
        if country is None:
            codes = list(COUNTRIES)
            country = self.rng.choices(codes, weights=[COUNTRIES[c].weight for c in codes])[0]
        vendor = make_vendor(vid, country, trade, self.rng.getrandbits(32), self.names_taken)
        if trade == "retail":
            vendor.invoice_pattern = self.rng.choice(RECEIPT_PATTERNS)
        vendor.status = status
        self.history_seq[vid] = vendor.seq
        self.master.add_vendor(vendor)
        return vendor

    def _make_clients(self) -> list[ClientRecord]:
        count = max(3, min(24, round(self.n / 25)))
        clients = []
        for _ in range(count):
            country = _weighted(self.rng, CLIENT_COUNTRY_WEIGHTS)
            clients.append(make_client(country, self.rng.getrandbits(32), self.names_taken))
        return clients

    def _make_pools(self) -> dict[str, list[VendorRecord]]:
        needed = Counter(self.classes)
        pools: dict[str, list[VendorRecord]] = {}
        for cls in ("goods", "service", "retail"):
            size = max(2, math.ceil(needed.get(cls, 0) / 3.5))
            trades = TRADES_BY_CLASS[cls]
            pools[cls] = [self._new_vendor(trades[k % len(trades)] if k < len(trades) else self.rng.choice(trades))
                          for k in range(size)]
        # Vendors nobody should pay: present in master data, never on an invoice.
        for _ in range(max(1, self.n // 60)):
            vendor = self._new_vendor(self.rng.choice(GOODS_TRADES), status=VendorStatus.BLOCKED)
            vendor.risk = "high"
        return pools

    def _history_number(self, vendor: VendorRecord, rng: random.Random) -> tuple[str, date]:
        """An invoice number the vendor issued before the corpus window (below its sequence)."""
        self.history_seq[vendor.id] = max(1, self.history_seq[vendor.id] - rng.randint(1, 5))
        day = REFERENCE_DATE - timedelta(days=WINDOW_DAYS + rng.randint(5, 300))
        return vendor.invoice_pattern.format(y=day.year, n=self.history_seq[vendor.id]), day

    # --- the corpus ----------------------------------------------------------------------

    def plan(self) -> CorpusPlan:
        docs = [self._document(i) for i in range(self.n)]
        self._ledger_history()
        self._open_orders()
        return CorpusPlan(docs, self.master.to_dict())

    def _document(self, i: int) -> InvoiceDoc:
        rng = random.Random(f"synth:{self.seed}:invoice:{i}")
        layout = self.layout_seq[i]
        fault = self.fault_seq[i]
        cls = self.classes[i]
        if fault == Fault.VENDOR_ON_HOLD:
            vendor = self._new_vendor(rng.choice(TRADES_BY_CLASS[cls]), status=VendorStatus.ON_HOLD)
        else:
            vendor = rng.choice(self.pools[cls])
        return InvoiceBuilder(self, i, layout, fault, vendor, rng).build()

    def client_for(self, vendor: VendorRecord, rng: random.Random) -> ClientRecord:
        domestic = [c for c in self.clients if c.country == vendor.country]
        if domestic and rng.random() < 0.6:
            return rng.choice(domestic)
        return rng.choice(self.clients)

    def customer_number(self, vendor: VendorRecord, client_index: int, rng: random.Random) -> str:
        key = (vendor.id, client_index)
        if key not in self.customer_numbers:
            style = rng.choice(("K{:05d}", "C-{:05d}", "CUST{:04d}", "{:06d}", "D{:05d}"))
            self.customer_numbers[key] = style.format(rng.randrange(100, 99999))
        return self.customer_numbers[key]

    def new_po_number(self, client: ClientRecord, year: int, rng: random.Random) -> str:
        return self.po_registry.issue(lambda: client.po_candidate(rng, year))

    def _ledger_history(self) -> None:
        """Invoices each vendor had booked before the corpus window."""
        rng = random.Random(f"synth:{self.seed}:ledger")
        for vendor in list(self.master.vendors.values()):
            for _ in range(rng.randint(0, 3)):
                number, day = self._history_number(vendor, rng)
                total = from_eur(Decimal(str(round(rng.uniform(40, 4000), 2))), vendor.currency)
                self.master.add_posted(vendor.id, number, total, vendor.currency, day)

    def _open_orders(self) -> None:
        """Open POs that no invoice in the corpus refers to yet."""
        rng = random.Random(f"synth:{self.seed}:orders")
        vendors = [v for v in self.master.vendors.values() if v.status == VendorStatus.ACTIVE]
        for _ in range(max(1, self.n // 10)):
            vendor = rng.choice(vendors)
            client = rng.choice(self.clients)
            issued = REFERENCE_DATE - timedelta(days=rng.randint(0, 90))
            number = self.new_po_number(client, issued.year, rng)
            lines = []
            for desc, item in pick_items(vendor.trade, rng.randint(1, 4), rng):
                qty = Decimal(rng.randint(1, 20))
                price = from_eur(Decimal(str(round(rng.uniform(*item.price_eur), 2))), vendor.currency)
                lines.append(OrderLine(desc, qty, price, Decimal(rng.randint(0, int(qty)))))
            gross = sum((ln.quantity * ln.unit_price for ln in lines), Decimal(0)) * Decimal("1.2")
            total = headroom(gross, rng)
            remaining = total if rng.random() < 0.6 else Decimal(math.ceil(total * Decimal("0.5")))
            self.master.add_purchase_order(number, vendor, vendor.currency, issued, REFERENCE_DATE, lines,
                                           remaining, rng, total=total)


def _quantity(kind: str, rng: random.Random) -> Decimal:
    if kind == "few":
        return Decimal(rng.choices((1, 2, 3, 4, 5), weights=(5, 4, 2, 1, 1))[0])
    if kind == "some":
        return Decimal(rng.choices((1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20), weights=(6, 5, 4, 3, 3, 2, 2, 2, 1, 1, 1))[0])
    if kind == "bulk":
        return Decimal(rng.choice((10, 12, 20, 24, 25, 30, 40, 50, 60, 100, 150, 200)))
    if kind == "hours":
        return Decimal(rng.randint(1, 60)) / 2
    if kind == "days":
        return Decimal(rng.randint(1, 16)) / 2
    if kind == "months":
        return Decimal(rng.randint(1, 3))
    return Decimal(1)


def _nice_price(value_eur: float, currency: str, rng: random.Random) -> Decimal:
    value = from_eur(Decimal(str(round(value_eur, 2))), currency)
    roll = rng.random()
    if value >= 20 and roll < 0.25:
        return Decimal(int(value))
    if value >= 3 and roll < 0.45:
        return Decimal(int(value)) + rng.choice((Decimal("0.99"), Decimal("0.95"), Decimal("0.50"), Decimal("0.90")))
    return max(Decimal("0.10"), value)


def _description_variant(desc: str, rng: random.Random) -> str:
    """How an invoice may word a PO line slightly differently."""
    roll = rng.random()
    if roll < 0.70:
        return desc
    if roll < 0.80 and "(" in desc:
        return desc[: desc.index("(")].rstrip()
    if roll < 0.90:
        return desc.replace(" and ", " & ").replace("cartridge", "cart.").replace("Cartridge", "Cartr.")
    return desc[0].upper() + desc[1:].lower()


class InvoiceBuilder:
    """One document: its content, its fault, and the master data it needs."""

    def __init__(self, planner: CorpusPlanner, index: int, layout: str, fault: str | None,
                 vendor: VendorRecord, rng: random.Random):
        self.p = planner
        self.i = index
        self.layout = layout
        self.fault = fault
        self.vendor = vendor
        self.rng = rng
        self.country: Country = COUNTRIES[vendor.country]
        self.kind = {"credit_note": "credit_note", "receipt": "receipt"}.get(layout, "invoice")

    # --- style ---------------------------------------------------------------------------

    def style(self) -> Style:
        rng, country = self.rng, self.country
        language = country.language if country.language != "en" and rng.random() < 0.45 else "en"
        number_format = country.number_format
        # Continental vendors sometimes write English-style numbers, never the reverse.
        alternatives = {"1,234.56": (), "1.234,56": ("1,234.56",), "1 234,56": ("1.234,56", "1,234.56")}
        if alternatives[number_format] and rng.random() < 0.15:
            number_format = rng.choice(alternatives[number_format])
        date_format = "iso" if rng.random() < 0.1 else rng.choice(country.date_formats)
        currency = country.currency
        if currency == "EUR" and language != "en":
            display = _weighted(rng, {"symbol_after": 45, "code_after": 20, "code_before": 20, "symbol_before": 15})
        elif currency == "SEK":
            display = _weighted(rng, {"symbol_after": 60, "code_after": 40})
        elif currency in ("USD", "GBP", "EUR"):
            display = _weighted(rng, {"symbol_before": 70, "code_before": 30})
        else:
            display = _weighted(rng, {"symbol_before": 50, "code_before": 50})
        if self.layout == "receipt":
            font = "courier"
        elif self.layout == "letter":
            font = "times" if rng.random() < 0.7 else "helvetica"
        else:
            font = "helvetica" if rng.random() < 0.75 else "times"
        return Style(language, number_format, date_format, display, font, rng.choice(ACCENTS))

    # --- content -------------------------------------------------------------------------

    def lines(self) -> list[Line]:
        rng = self.rng
        lo, hi = LINE_COUNTS[self.layout]
        if hi == 0:
            return []
        count = rng.randint(lo, hi) if self.layout == "multipage" else min(
            rng.choices(range(lo, hi + 1), weights=[max(1, 8 - abs(k - 3)) for k in range(lo, hi + 1)])[0], hi)
        pool = list(pick_items(self.vendor.trade, count, rng))
        # A wholesaler's long invoice runs over several of its catalogs.
        extra_trades = [t for t in GOODS_TRADES if t != self.vendor.trade]
        rng.shuffle(extra_trades)
        while len(pool) < count and extra_trades:
            pool += pick_items(extra_trades.pop(), count - len(pool), rng)
        lines = []
        for desc, item in pool:
            qty = _quantity(item.quantity, rng)
            price = _nice_price(rng.uniform(*item.price_eur), self.vendor.currency, rng)
            if self.kind == "receipt":
                printed = desc.upper()[:24].rstrip(" (")
            else:
                printed = _description_variant(desc, rng)
            item_no = None if rng.random() < 0.4 else f"{rng.choice(('', 'A', 'ART-', 'P'))}{rng.randrange(1000, 99999)}"
            lines.append(Line(printed, qty, price, Decimal(0), item.unit, item_no, po_description=desc))
        if self.kind == "credit_note":
            for line in lines:
                line.quantity = -line.quantity
        for line in lines:
            self._reprice(line)
        return lines

    @staticmethod
    def _reprice(line: Line) -> None:
        # Half units times an odd cent price would need rounding: keep every line exact.
        if line.quantity != line.quantity.to_integral_value() and (line.unit_price * 100) % 2:
            line.unit_price += Decimal("0.01")
        line.amount = cents(line.quantity * line.unit_price)

    def tax_setup(self, client: ClientRecord) -> tuple[str, Decimal]:
        """(mode, rate): mode standard | zero (0 % printed) | none (no tax line)."""
        rng, country = self.rng, self.country
        rate = country.tax_rates[0] if rng.random() < 0.85 else rng.choice(country.tax_rates)
        if self.kind == "receipt" or client.country == country.code:
            if country.code == "US" and self.kind != "receipt" and rng.random() < 0.2:
                return "none", Decimal(0)
            return "standard", rate
        client_country = COUNTRIES[client.country]
        if country.eu and client_country.eu:
            return ("zero" if rng.random() < 0.7 else "none"), Decimal(0)
        return ("zero" if rng.random() < 0.4 else "none"), Decimal(0)

    def build(self) -> InvoiceDoc:
        """One synthetic invoice, drawn part by part in the order the document prints it.

        Long because each draw depends on the ones before it under one seeded generator."""
        rng, vendor, country = self.rng, self.vendor, self.country
        fault = self.fault
        style = self.style()
        client_index = self.p.clients.index(self.p.client_for(vendor, rng))
        client = self.p.clients[client_index]
        invoice_date = REFERENCE_DATE - timedelta(days=rng.randint(0, WINDOW_DAYS))

        # --- lines and amounts ----------------------------------------------------------
        lines = self.lines()
        tax_mode, tax_rate = self.tax_setup(client)
        discount_rate = None
        if self.kind == "invoice" and rng.random() < 0.18:
            discount_rate = rng.choice((Decimal(2), Decimal(3), Decimal(5), Decimal(10)))
        shipping = None
        if self.kind == "invoice" and vendor.trade in GOODS_TRADES and rng.random() < 0.3:
            shipping = _nice_price(rng.uniform(4.95, 95), vendor.currency, rng)
        tax_on_shipping = country.tax_kind != "sales_tax"
        fee = None
        if self.layout == "service":
            fee = _nice_price(rng.uniform(250, 4000), vendor.currency, rng)

        def amounts(ls: list[Line]) -> tuple[Decimal, Decimal | None, Decimal | None, Decimal]:
            subtotal = fee if fee is not None else sum((ln.amount for ln in ls), Decimal("0.00"))
            discount = cents(subtotal * discount_rate / 100) if discount_rate else None
            base = subtotal - (discount or 0) + ((shipping or 0) if tax_on_shipping else 0)
            if tax_mode == "standard":
                tax = cents(base * tax_rate / 100)
            elif tax_mode == "zero":
                tax = Decimal("0.00")
            else:
                tax = None
            total = subtotal - (discount or 0) + (shipping or 0) + (tax or 0)
            return cents(subtotal), discount, tax, cents(total)

        ceiling = CLEAN_CEILING_EUR
        if fault == Fault.AMOUNT_OVER_PO_TOLERANCE:
            ceiling = CLEAN_CEILING_EUR / Decimal("1.3")
        floor = OVER_LIMIT_FLOOR_EUR if fault == Fault.APPROVAL_ABOVE_THRESHOLD else None
        if fee is not None and to_eur(fee, vendor.currency) > ceiling / Decimal("1.3"):
            fee = cents(from_eur(ceiling / Decimal("1.3"), vendor.currency) * Decimal("0.8"))
        lines = self._fit_budget(lines, amounts, ceiling, floor)
        if fault == Fault.QUANTITY_OVER_RECEIPT:
            self._ensure_divisible_line(lines)
        if fault == Fault.AMOUNT_OVER_PO_TOLERANCE:
            self._overcharge(lines)
        subtotal, discount, tax, total = amounts(lines)

        # --- numbers and references ----------------------------------------------------
        number = vendor.next_number(self.kind, invoice_date.year, rng)
        po_mode = self._po_mode()
        true_po = printed_po = None
        if po_mode in ("present", "mistyped"):
            true_po = self.p.new_po_number(client, invoice_date.year, rng)
            printed_po = self.p.po_registry.mistype(true_po, rng) if po_mode == "mistyped" else true_po
        elif po_mode == "unknown":
            printed_po = self.p.po_registry.unknown_number(lambda: client.po_candidate(rng, invoice_date.year))

        terms_kind, terms, due_date = self._terms(style.language, invoice_date)

        # --- bank details ------------------------------------------------------------------
        bank = None
        if self.layout in PO_LAYOUTS or self.layout == "service":
            if fault == Fault.CHANGED_BANK_ACCOUNT or rng.random() < 0.92:
                record = vendor.bank
                if fault == Fault.CHANGED_BANK_ACCOUNT:
                    record = changed_bank_account(country, vendor.bank, rng)
                bank = self._printed_bank(record)

        # --- the printed parties -------------------------------------------------------------
        vendor_party = Party(vendor.printed_name(rng), list(vendor.address_lines), vendor.country,
                             vendor.tax_id, vendor.phone, vendor.email, vendor.website)
        client_lines = list(client.address_lines)
        if client.country != vendor.country:
            client_lines.append(COUNTRIES[client.country].name)
        client_party = Party(client.name, client_lines, client.country, client.tax_id)
        if self.kind == "receipt" and rng.random() < 0.7:
            client_party = None

        doc = InvoiceDoc(
            name=f"inv-{self.i:05d}",
            index=self.i,
            seed=rng.getrandbits(32),
            layout=self.layout,
            kind=self.kind,
            style=style,
            vendor_id=vendor.id,
            vendor=vendor_party,
            client=client_party,
            number=number,
            invoice_date=invoice_date,
            due_date=due_date,
            currency=vendor.currency,
            lines=lines,
            subtotal=subtotal,
            discount=discount,
            discount_rate=discount_rate,
            shipping=shipping,
            tax=tax,
            tax_rate=tax_rate,
            tax_label=tax_label(country, style.language, tax_rate),
            tax_note=None if tax_mode == "standard" else ("reverse_charge" if country.eu and COUNTRIES[
                client.country].eu else "export"),
            total=total,
            po_number=printed_po,
            terms=terms,
            terms_kind=terms_kind,
            bank=bank,
            registration=vendor.registration or None,
            signatory=vendor.manager,
            true_po=true_po,
        )
        self._noise(doc, client, client_index)
        self._apply_printed_faults(doc)
        self._record_master_data(doc, client, total)
        if fault:
            doc.faults = [fault]
        return doc

    # --- pieces of build -------------------------------------------------------------------

    def _fit_budget(self, lines: list[Line], amounts, ceiling: Decimal, floor: Decimal | None) -> list[Line]:
        """Shrink or grow quantities until the total in EUR is under `ceiling` (or over `floor`)."""
        currency = self.vendor.currency
        min_lines = LINE_COUNTS[self.layout][0]
        for _ in range(400):
            total = amounts(lines)[3]
            eur = to_eur(abs(total), currency)
            if eur > ceiling and not floor:
                line = max(lines, key=lambda ln: abs(ln.amount))
                step = Decimal(1) if line.quantity == line.quantity.to_integral_value() else Decimal("0.5")
                magnitude = abs(line.quantity)
                if magnitude > step:
                    new = max(step, (magnitude / 2 / step).to_integral_value() * step)
                    line.quantity = new.copy_sign(line.quantity)
                elif len(lines) > max(1, min_lines):
                    lines.remove(line)
                else:
                    line.unit_price = max(Decimal("0.10"), cents(line.unit_price / 2))
                self._reprice(line)
            elif floor and eur < floor:
                line = self.rng.choice(lines)
                line.quantity = line.quantity * 2
                self._reprice(line)
            else:
                break
        return lines

    def _ensure_divisible_line(self, lines: list[Line]) -> None:
        # A receipt short of the invoice needs a line of at least two units.
        if not any(ln.quantity >= 2 for ln in lines):
            line = min(lines, key=lambda ln: ln.amount)
            line.quantity = Decimal(2)
            self._reprice(line)

    def _overcharge(self, lines: list[Line]) -> None:
        """Invoice unit prices 10-25 % above the PO price on some lines."""
        chosen = self.rng.sample(range(len(lines)), k=self.rng.randint(1, len(lines)))
        for k in chosen:
            line = lines[k]
            line.po_unit_price = line.unit_price
            factor = Decimal(str(round(self.rng.uniform(1.10, 1.25), 3)))
            line.unit_price = max(cents(line.unit_price * factor), line.unit_price + Decimal("0.02"))
            if line.unit_price < cents(line.po_unit_price * Decimal("1.10")):
                line.unit_price = cents(line.po_unit_price * Decimal("1.10")) + Decimal("0.01")
            self._reprice(line)

    def _po_mode(self) -> str:
        """present | mistyped | absent | unknown."""
        if self.layout not in PO_LAYOUTS:
            return "absent"
        if self.fault == Fault.UNKNOWN_PO:
            return "unknown"
        if self.fault in NEEDS_PO:
            return "present"
        if self.fault:
            return "present" if self.rng.random() < 0.7 else "absent"
        return _weighted(self.rng, {"present": 65, "mistyped": 12, "absent": 23})

    def _terms(self, language: str, invoice_date: date) -> tuple[str | None, str | None, date | None]:
        rng = self.rng
        if self.kind != "invoice":
            return None, None, None
        kind = _weighted(rng, {"net30": 40, "skonto": 20, "receipt": 15, "eom": 15, "none": 10})
        if kind == "none":
            due = invoice_date + timedelta(days=rng.choice((14, 30, 30, 45))) if rng.random() < 0.7 else None
            return None, None, due
        terms = rng.choice(PAYMENT_TERMS[language][kind])
        if kind in ("net30", "skonto"):
            due = invoice_date + timedelta(days=30)
        elif kind == "eom":
            due = invoice_date.replace(day=calendar.monthrange(invoice_date.year, invoice_date.month)[1])
        else:
            due = invoice_date
        if rng.random() < (0.5 if kind == "receipt" else 0.2):
            due = None
        return kind, terms, due

    def _printed_bank(self, record: dict[str, str | None]) -> Bank:
        rng, style = self.rng, self.country.bank_style
        name = self.vendor.bank_name
        if style == "iban":
            return Bank(iban=record["iban"], bic=record["bic"] if rng.random() < 0.8 else None, bank_name=name)
        if style == "gb":
            choice = _weighted(rng, {"local": 50, "iban": 25, "both": 25})
            bank = Bank(bank_name=name)
            if choice in ("local", "both"):
                bank.account_number, bank.routing_number = record["account_number"], record["routing_number"]
            if choice in ("iban", "both"):
                bank.iban, bank.bic = record["iban"], record["bic"]
            return bank
        bic = record["bic"] if record.get("bic") and rng.random() < 0.5 else None
        return Bank(account_number=record["account_number"], routing_number=record["routing_number"], bic=bic,
                    bank_name=name)

    def _noise(self, doc: InvoiceDoc, client: ClientRecord, client_index: int) -> None:
        rng = self.rng
        if self.kind != "receipt":
            doc.customer_no = self.p.customer_number(self.vendor, client_index, rng) if rng.random() < 0.7 else None
            doc.contact = rng.choice(client.contacts) if rng.random() < 0.4 else None
        if self.kind == "invoice" and self.layout != "service" and rng.random() < 0.35:
            doc.delivery_note = f"{rng.choice(('DN', 'LS', 'BL', ''))}{rng.randrange(10000, 999999)}"
            doc.delivery_date = doc.invoice_date - timedelta(days=rng.randint(0, 10))
        if self.kind != "receipt" and rng.random() < 0.3:
            doc.stamp = (rng.choice(("received", "received", "entered", "copy")),
                         doc.invoice_date + timedelta(days=rng.randint(2, 12)))
        if self.kind == "receipt":
            doc.receipt_time = f"{rng.randint(7, 20):02d}:{rng.randint(0, 59):02d}"
            doc.card_digits = f"{rng.randint(0, 9999):04d}"
        if self.layout == "service":
            trade = self.vendor.trade if self.vendor.trade in SERVICE_TEXTS else "consulting"
            start = (doc.invoice_date.replace(day=1) - timedelta(days=1)).replace(day=1)
            end = doc.invoice_date.replace(day=1) - timedelta(days=1)
            period = f"{format_date(start, doc.style.date_format, doc.style.language)} - " \
                     f"{format_date(end, doc.style.date_format, doc.style.language)}"
            code = f"{rng.choice(CODENAMES)} {rng.randrange(100, 999)}"
            doc.service_text = rng.choice(SERVICE_TEXTS[trade]).format(code=code, period=period)
        if self.kind == "credit_note":
            number, day = self.p._history_number(self.vendor, rng)
            doc.reference_number, doc.reference_date = number, day
            original = cents(abs(doc.total or 0) * Decimal(str(round(rng.uniform(1.0, 3.0), 2))))
            self.p.master.add_posted(self.vendor.id, number, original, doc.currency, day)

    def _apply_printed_faults(self, doc: InvoiceDoc) -> None:
        rng = self.rng
        if self.fault == Fault.ARITHMETIC_ERROR:
            true_total = doc.total
            kind = rng.choice(("offset", "offset", "swap", "tax_left_out"))
            wrong = true_total
            if kind == "tax_left_out" and doc.tax and abs(doc.tax) >= 1:
                wrong = true_total - doc.tax
            elif kind == "swap":
                digits = f"{abs(true_total):f}".replace(".", "")
                pairs = [k for k in range(len(digits) - 3) if digits[k] != digits[k + 1]]
                if pairs:
                    k = rng.choice(pairs)
                    swapped = digits[:k] + digits[k + 1] + digits[k] + digits[k + 2:]
                    wrong = (Decimal(swapped) / 100).copy_sign(true_total)
            if abs(wrong - true_total) < 1:
                wrong = true_total + rng.choice((Decimal(1), Decimal(-1))) * Decimal(rng.choice((10, 20, 50, 100, 9)))
            doc.total = cents(wrong)
        elif self.fault == Fault.MISSING_REQUIRED_FIELD:
            if rng.random() < 0.5:
                doc.number = None
            else:
                doc.total = None

    def _record_master_data(self, doc: InvoiceDoc, client: ClientRecord, true_total: Decimal) -> None:
        rng = self.rng
        if doc.true_po:
            short: dict[int, Decimal] = {}
            if self.fault == Fault.QUANTITY_OVER_RECEIPT:
                candidates = [k for k, ln in enumerate(doc.lines) if ln.quantity >= 2]
                for k in rng.sample(candidates, k=rng.randint(1, min(2, len(candidates)))):
                    qty = doc.lines[k].quantity
                    step = Decimal(1) if qty == qty.to_integral_value() else Decimal("0.5")
                    fraction = Decimal(str(round(rng.uniform(0.3, 0.8), 2)))
                    received = max(step, (qty * fraction / step).to_integral_value() * step)
                    short[k] = min(received, qty - step)
            order_lines = [
                OrderLine(ln.po_description or ln.description, ln.quantity,
                          ln.po_unit_price if ln.po_unit_price is not None else ln.unit_price,
                          short.get(k, ln.quantity))
                for k, ln in enumerate(doc.lines)
            ]
            issued_on = doc.invoice_date - timedelta(days=rng.randint(8, 60))
            remaining = headroom(true_total, rng)
            self.p.master.add_purchase_order(doc.true_po, self.vendor, doc.currency, issued_on, doc.invoice_date,
                                             order_lines, remaining, rng)
        if self.fault == Fault.DUPLICATE_INVOICE and doc.number:
            self.p.master.add_posted(self.vendor.id, doc.number, true_total, doc.currency, doc.invoice_date)


def plan_corpus(n: int, seed: int, fault_rate: float = 0.3, layouts: list[str] | None = None) -> CorpusPlan:
    """Every document of a corpus (content, ground truth, faults) and its master data."""
    chosen = tuple(layouts) if layouts else LAYOUTS
    unknown = [name for name in chosen if name not in LAYOUT_WEIGHTS]
    if unknown:
        raise ValueError(f"unknown layouts {unknown}; choose from {list(LAYOUTS)}")
    if n < 1:
        raise ValueError("n must be at least 1")
    return CorpusPlanner(n, seed, fault_rate, chosen).plan()
