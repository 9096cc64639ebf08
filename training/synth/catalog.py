"""What vendors sell: item catalogs per trade, service descriptions, company-name words.

Each catalog entry is a description template with variants, a unit, a EUR price range and
a quantity kind, so that one trade yields dozens of distinct line descriptions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    template: str
    variants: tuple[str, ...]
    unit: str
    price_eur: tuple[float, float]
    quantity: str  # few | some | bulk | hours | days | one | months


def _i(template: str, variants: str, unit: str, lo: float, hi: float, quantity: str = "some") -> Item:
    return Item(template, tuple(v.strip() for v in variants.split("|")) if variants else ("",), unit, (lo, hi), quantity)


CATALOG: dict[str, tuple[Item, ...]] = {
    "office": (
        _i("Copy paper A4 {} (box of 5 reams)", "80gsm|90gsm|100gsm|recycled 80gsm", "box", 18, 42),
        _i("Ballpoint pens {} (pack of 50)", "blue|black|red|assorted", "pack", 6, 19),
        _i("Toner cartridge {}", "HP 305A black|HP 305A cyan|Brother TN-2420|Canon 054 magenta|Kyocera TK-1150", "pc", 39, 119, "few"),
        _i("Lever arch files A4 {} (10)", "50mm blue|75mm black|75mm red|50mm assorted", "pack", 14, 33),
        _i("Sticky notes {} (12 pads)", "76x76 yellow|76x127 neon|38x51 pastel", "pack", 5, 16),
        _i("Whiteboard markers {}", "set of 4|black (10)|chisel tip set of 6", "set", 4, 14),
        _i("Envelopes {} (250)", "C4 window|C5 plain|DL window|C4 self-seal", "box", 11, 35),
        _i("Desk organiser {}", "mesh black|bamboo|acrylic clear", "pc", 9, 29, "few"),
        _i("Printer labels {} (100 sheets)", "99.1x38.1|63.5x38.1|210x297", "box", 17, 45, "few"),
        _i("Stapler {}", "heavy duty|24/6 desktop|long reach", "pc", 7, 48, "few"),
    ),
    "it": (
        _i("USB-C docking station {}", "dual HDMI|90W PD|Thunderbolt 4", "pc", 79, 229, "few"),
        _i("Monitor {}", "24in IPS FHD|27in QHD|27in USB-C|22in FHD", "pc", 119, 349, "few"),
        _i("Wireless keyboard and mouse {}", "DE layout|UK layout|US layout|FR layout", "set", 24, 69, "few"),
        _i("HDMI cable {}", "1m|2m|3m|5m", "pc", 5, 19),
        _i("SSD {}", "500GB NVMe|1TB NVMe|2TB NVMe|1TB SATA", "pc", 45, 179, "few"),
        _i("Network switch {}", "8-port gigabit|16-port managed|24-port PoE", "pc", 29, 299, "few"),
        _i("Patch cable Cat6 {}", "0.5m|1m|2m|5m|10m", "pc", 2, 12, "bulk"),
        _i("Headset USB {}", "mono|stereo|with ANC", "pc", 29, 119, "few"),
        _i("Laptop bag {}", "14in|15.6in|17in", "pc", 19, 59, "few"),
        _i("Webcam {}", "1080p|4K|1080p with privacy cover", "pc", 39, 149, "few"),
    ),
    "industrial": (
        _i("Hex bolts {} (100)", "M6x30|M8x40|M10x50|M12x60", "box", 6, 29),
        _i("Safety gloves {} (12 pairs)", "size 8|size 9|size 10|cut level C", "pack", 12, 39),
        _i("Ball bearing {}", "6204-2RS|6205-2RS|6301-ZZ|6002-2RS", "pc", 3, 14, "bulk"),
        _i("Cable ties {} (100)", "200mm black|300mm black|370mm natural", "bag", 3, 11),
        _i("Welding wire {}", "0.8mm 5kg|1.0mm 15kg|0.6mm 1kg", "spool", 19, 79, "few"),
        _i("Safety goggles {}", "clear|anti-fog|tinted", "pc", 4, 15),
        _i("Hydraulic hose {}", "1/4in 1m|1/2in 2m|3/8in 1.5m", "pc", 14, 49, "few"),
        _i("Lubricant spray {}", "400ml|500ml PTFE|multi-purpose 400ml", "can", 4, 13),
        _i("Steel shelving unit {}", "1800x900x400|2000x1000x500", "pc", 79, 219, "few"),
        _i("Grinding discs {} (25)", "115mm|125mm|230mm", "box", 14, 45),
    ),
    "catering": (
        _i("Coffee beans {}", "1kg espresso|1kg crema|500g decaf|1kg organic", "bag", 11, 29),
        _i("Milk {} (12 x 1L)", "semi-skimmed|whole|oat drink", "case", 9, 22),
        _i("Tea assortment {}", "(100 bags)|green (50 bags)|herbal (60 bags)", "box", 5, 15),
        _i("Paper cups {} (1000)", "8oz|12oz|4oz", "case", 25, 69, "few"),
        _i("Mineral water {}", "still 24x0.5L|sparkling 24x0.5L|still 6x1.5L", "case", 5, 12),
        _i("Sugar sticks {}", "(500)|brown (500)|sweetener (1000)", "box", 6, 18, "few"),
        _i("Napkins {}", "33x33 white (500)|24x24 (1000)", "pack", 6, 19),
        _i("Biscuit assortment {}", "1kg|2kg|individually wrapped (150)", "box", 9, 34, "few"),
        _i("Fruit basket {}", "small|medium|large", "pc", 19, 59, "few"),
        _i("Sandwich platter {}", "for 10|for 20|vegetarian for 10", "pc", 39, 119, "few"),
    ),
    "packaging": (
        _i("Cardboard boxes {} (25)", "300x200x150|400x300x300|600x400x400", "bundle", 14, 49),
        _i("Packing tape {} (36 rolls)", "48mm brown|48mm clear|50mm printed", "case", 29, 79, "few"),
        _i("Bubble wrap {}", "500mm x 100m|1m x 50m|1.5m x 100m", "roll", 14, 59, "few"),
        _i("Stretch film {}", "23my 500mm|17my 450mm|machine 20my", "roll", 7, 29),
        _i("Shipping labels {} (500)", "A6|100x150|A5", "roll", 9, 29),
        _i("Euro pallet {}", "new|used grade A", "pc", 9, 24),
        _i("Corner protectors {} (100)", "35x35x800|50x50x1000", "bundle", 19, 59, "few"),
        _i("Void fill paper {}", "5kg|10kg|15kg", "box", 19, 49, "few"),
    ),
    "electrical": (
        _i("LED panel {}", "60x60 36W|30x120 40W|62x62 33W", "pc", 24, 79),
        _i("Installation cable {}", "3x1.5 50m|3x2.5 50m|5x2.5 50m", "ring", 35, 119, "few"),
        _i("Circuit breaker {}", "B16 1P|C16 1P|B32 3P", "pc", 4, 39),
        _i("Junction box {}", "IP65 100x100|IP55 80x80|IP67 150x110", "pc", 2, 15),
        _i("Extension lead {}", "5-way 2m|3-way 1.5m|6-way with switch", "pc", 8, 29),
        _i("LED tube T8 {}", "120cm 18W|150cm 24W|60cm 9W", "pc", 4, 14, "bulk"),
        _i("Motion sensor {}", "ceiling 360|wall 180|outdoor IP44", "pc", 14, 49, "few"),
        _i("Socket outlet {}", "double white|single white|double anthracite", "pc", 3, 12),
    ),
    "consulting": (
        _i("Consulting services {}", "senior consultant|consultant|principal", "h", 90, 190, "hours"),
        _i("Workshop facilitation {}", "full day|half day", "day", 600, 1400, "one"),
        _i("Project management {}", "", "h", 80, 140, "hours"),
        _i("Business analysis {}", "", "day", 700, 1100, "days"),
        _i("Travel time {}", "", "h", 45, 90, "hours"),
    ),
    "legal": (
        _i("Legal advice {}", "partner|associate|senior associate", "h", 150, 320, "hours"),
        _i("Contract review {}", "supply agreement|lease|NDA", "h", 140, 260, "hours"),
        _i("Court filing fees {}", "", "pc", 50, 400, "one"),
    ),
    "it_services": (
        _i("Software licence {}", "annual, per user|perpetual|annual, site", "user", 45, 240, "some"),
        _i("Support contract {}", "basic|premium|24/7", "month", 150, 900, "months"),
        _i("Cloud hosting {}", "small instance|medium instance|backup 1TB", "month", 40, 420, "months"),
        _i("On-site support {}", "", "h", 75, 130, "hours"),
        _i("Data migration {}", "", "pc", 400, 1500, "one"),
    ),
    "maintenance": (
        _i("HVAC maintenance visit {}", "quarterly|annual", "visit", 180, 650, "one"),
        _i("Replacement filter set {}", "G4|F7|M5", "set", 35, 120, "few"),
        _i("Call-out charge {}", "", "pc", 45, 120, "one"),
        _i("Labour {}", "technician|engineer", "h", 55, 110, "hours"),
        _i("Elevator inspection {}", "", "pc", 240, 480, "one"),
    ),
    "cleaning": (
        _i("Office cleaning {}", "weekly|daily", "month", 450, 2200, "months"),
        _i("Window cleaning {}", "inside and outside|outside only", "pc", 120, 480, "one"),
        _i("Carpet deep clean {}", "", "m2", 2, 6, "bulk"),
        _i("Sanitary supplies refill {}", "", "pc", 40, 180, "one"),
    ),
    "logistics": (
        _i("Freight {}", "full truck load|part load 4 pallets|LTL 2 pallets", "pc", 240, 1400, "one"),
        _i("Pallet storage {}", "per week|per month", "pallet", 3, 18, "bulk"),
        _i("Express courier {}", "next day|same day", "pc", 25, 140, "few"),
        _i("Customs clearance fee {}", "", "pc", 45, 140, "one"),
        _i("Fuel surcharge {}", "", "pc", 15, 90, "one"),
    ),
    "marketing": (
        _i("Flyer printing A5 {}", "1000 copies|2500 copies|5000 copies", "pc", 89, 390, "one"),
        _i("Roll-up banner {}", "85x200|100x200", "pc", 69, 189, "few"),
        _i("Social media management {}", "", "month", 400, 1600, "months"),
        _i("Photo shoot {}", "half day|full day", "pc", 450, 1600, "one"),
        _i("Copywriting {}", "", "h", 60, 120, "hours"),
    ),
    "retail": (
        _i("Coffee beans {}", "1kg|500g", "", 7, 19, "few"),
        _i("AA batteries {}", "(8)|(4)", "", 3, 9, "few"),
        _i("Printer paper {}", "A4 500 sheets|A4 2500 sheets", "", 4, 19, "few"),
        _i("Cleaning spray {}", "750ml|500ml", "", 2, 6, "few"),
        _i("Notebook A5 {}", "lined|squared", "", 2, 7, "few"),
        _i("Extension cable {}", "3m|5m", "", 6, 15, "few"),
        _i("Water {}", "6x1.5L|12x0.5L", "", 2, 6, "few"),
        _i("Light bulb {}", "E27 LED|GU10 LED", "", 3, 9, "few"),
        _i("Gaffer tape {}", "50mm black", "", 6, 12, "few"),
        _i("Milk {}", "1L|2L", "", 1, 3, "few"),
        _i("Paper towels {}", "(6 rolls)|(12 rolls)", "", 4, 11, "few"),
        _i("Bin bags {}", "60L (50)|120L (25)", "", 3, 9, "few"),
    ),
}

GOODS_TRADES = ("office", "it", "industrial", "catering", "packaging", "electrical")
SERVICE_TRADES = ("consulting", "legal", "it_services", "maintenance", "cleaning", "logistics", "marketing")
RETAIL_TRADES = ("retail",)

#: Which department buys from each trade.
DEPARTMENTS: dict[str, str] = {
    "office": "Administration", "it": "IT", "industrial": "Production", "catering": "Facilities",
    "packaging": "Logistics", "electrical": "Facilities", "consulting": "Finance", "legal": "Legal",
    "it_services": "IT", "maintenance": "Facilities", "cleaning": "Facilities", "logistics": "Logistics",
    "marketing": "Marketing", "retail": "Administration",
}

#: Words for composed company names, by trade and language.
TRADE_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "office": {"en": ("Office Supplies", "Stationery"), "de": ("Bürobedarf", "Büro-Service"), "fr": ("Fournitures de Bureau",),
               "nl": ("Kantoorartikelen",), "es": ("Material de Oficina",), "it": ("Forniture Ufficio",)},
    "it": {"en": ("IT Solutions", "Computers"), "de": ("IT-Systeme", "Computertechnik"), "fr": ("Informatique",),
           "nl": ("ICT",), "es": ("Informática",), "it": ("Informatica",)},
    "industrial": {"en": ("Industrial Supply", "Engineering Supplies"), "de": ("Industriebedarf", "Werkzeughandel"),
                   "fr": ("Fournitures Industrielles",), "nl": ("Technische Handel",), "es": ("Suministros Industriales",),
                   "it": ("Forniture Industriali",)},
    "catering": {"en": ("Catering", "Foodservice"), "de": ("Catering", "Getränkehandel"), "fr": ("Traiteur",),
                 "nl": ("Catering",), "es": ("Catering",), "it": ("Catering",)},
    "packaging": {"en": ("Packaging",), "de": ("Verpackungen",), "fr": ("Emballages",), "nl": ("Verpakkingen",),
                  "es": ("Embalajes",), "it": ("Imballaggi",)},
    "electrical": {"en": ("Electrical Wholesale", "Lighting"), "de": ("Elektrogroßhandel", "Elektrotechnik"),
                   "fr": ("Électricité",), "nl": ("Elektrotechniek",), "es": ("Material Eléctrico",), "it": ("Materiale Elettrico",)},
    "consulting": {"en": ("Consulting", "Advisory"), "de": ("Unternehmensberatung", "Consulting"), "fr": ("Conseil",),
                   "nl": ("Advies",), "es": ("Consultores",), "it": ("Consulenza",)},
    "legal": {"en": ("Solicitors", "Legal"), "de": ("Rechtsanwälte",), "fr": ("Avocats",), "nl": ("Advocaten",),
              "es": ("Abogados",), "it": ("Studio Legale",)},
    "it_services": {"en": ("Software", "Cloud Services"), "de": ("Software", "IT-Dienstleistungen"), "fr": ("Logiciels",),
                    "nl": ("Software",), "es": ("Software",), "it": ("Software",)},
    "maintenance": {"en": ("Facilities Maintenance", "Building Services"), "de": ("Haustechnik", "Gebäudetechnik"),
                    "fr": ("Maintenance",), "nl": ("Installatietechniek",), "es": ("Mantenimiento",), "it": ("Manutenzioni",)},
    "cleaning": {"en": ("Cleaning Services",), "de": ("Gebäudereinigung",), "fr": ("Nettoyage",), "nl": ("Schoonmaak",),
                 "es": ("Limpiezas",), "it": ("Pulizie",)},
    "logistics": {"en": ("Logistics", "Freight"), "de": ("Spedition", "Logistik"), "fr": ("Transports",),
                  "nl": ("Transport",), "es": ("Transportes",), "it": ("Trasporti",)},
    "marketing": {"en": ("Marketing", "Print & Media"), "de": ("Werbeagentur", "Druckerei"), "fr": ("Communication",),
                  "nl": ("Reclamebureau",), "es": ("Publicidad",), "it": ("Comunicazione",)},
    "retail": {"en": ("Store", "Market"), "de": ("Markt", "Fachmarkt"), "fr": ("Magasin",), "nl": ("Winkel",),
               "es": ("Tienda",), "it": ("Negozio",)},
}

#: Legal forms by country (the first ones are the common ones).
LEGAL_FORMS: dict[str, tuple[str, ...]] = {
    "US": ("Inc.", "LLC", "Corp.", "Co."),
    "GB": ("Ltd", "Limited", "PLC", "LLP"),
    "IE": ("Ltd", "Limited", "DAC"),
    "AU": ("Pty Ltd", "Pty. Ltd."),
    "CA": ("Inc.", "Ltd.", "Corp."),
    "DE": ("GmbH", "GmbH & Co. KG", "AG", "e.K.", "KG"),
    "AT": ("GmbH", "KG", "OG"),
    "FR": ("SARL", "SAS", "SA", "EURL"),
    "NL": ("B.V.", "BV", "V.O.F."),
    "ES": ("S.L.", "S.A.", "SL"),
    "IT": ("S.r.l.", "S.p.A.", "s.n.c."),
    "SE": ("AB", "HB"),
}

#: Service invoices without line items: the sentence that says what was done.
SERVICE_TEXTS: dict[str, tuple[str, ...]] = {
    "consulting": ("Consulting services for project {code}, period {period}",
                   "Strategy workshop series and follow-up, project {code}"),
    "legal": ("Legal advice regarding supply agreement, matter {code}",
              "Review of commercial lease and correspondence, matter {code}"),
    "it_services": ("Implementation services for ticketing system, project {code}",
                    "Quarterly managed service fee, contract {code}"),
    "maintenance": ("Maintenance of heating and ventilation, contract {code}",
                    "Emergency repair of cooling unit, job {code}"),
    "cleaning": ("Office cleaning services, period {period}",
                 "Deep cleaning after renovation, site {code}"),
    "logistics": ("Transport and warehousing services, period {period}",
                  "Freight forwarding, shipment {code}"),
    "marketing": ("Campaign design and media planning, project {code}",
                  "Monthly retainer for communications, period {period}"),
}


def pick_items(trade: str, count: int, rng: random.Random) -> list[tuple[str, Item]]:
    """`count` distinct (description, item) pairs from a trade's catalog (fewer if it runs out)."""
    pool = [(it.template.format(v).strip(), it) for it in CATALOG[trade] for v in it.variants]
    rng.shuffle(pool)
    seen: set[str] = set()
    out = []
    for desc, item in pool:
        if desc not in seen:
            seen.add(desc)
            out.append((desc, item))
        if len(out) == count:
            break
    return out


def catalog_size(trade: str) -> int:
    return len({it.template.format(v) for it in CATALOG[trade] for v in it.variants})
