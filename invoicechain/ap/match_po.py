"""The match_po step: does the invoice agree with what was ordered and received?

The PO number on the invoice is looked up exactly, then ignoring separators and case,
then as a near typo of one of the vendor's purchase orders (at most two edits after
folding look-alike characters such as O/0). A number that is none of these is not
guessed: the invoice goes to a person with the closest candidates (by vendor, amount
and embedding similarity of the line descriptions) named in the reason.

Once a PO is found, each invoice line is paired with a PO line (fuzzy string match of
the descriptions, MiniLM embeddings when that is not conclusive) and checked 2-way
(unit price within `price_tolerance`, quantity within `quantity_tolerance` of the
ordered quantity) and, when the PO has goods receipts, 3-way (quantity within the
received quantity). The invoice's net amount must fit in the PO's remaining balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlmodel import Session, select

from invoicechain.ap.findings import RuleResult, dec, money, normalize_ref, qty, reason, short
from invoicechain.ap.vendors import resolve_vendor
from invoicechain.config import Settings
from invoicechain.db.tables import GoodsReceipt, Invoice, PurchaseOrder, PurchaseOrderLine, Vendor
from invoicechain.decisions import Decision, Reason
from invoicechain.enums import PurchaseOrderStatus

#: Edits allowed between a typed PO number and the real one (after folding look-alikes).
MAX_TYPO_EDITS = 2
#: A pairing of invoice and PO lines below this similarity is not a pairing.
LINE_MATCH_MIN = 0.55
#: Fuzzy similarity at or above which the embedding model is not consulted.
LINE_FUZZY_SURE = 0.85
MAX_CONTEXT_LINES = 10

# Characters OCR and typists confuse with digits.
_LOOKALIKES = str.maketrans({"O": "0", "Q": "0", "D": "0", "I": "1", "L": "1", "Z": "2", "S": "5", "B": "8", "G": "6"})


@dataclass
class PoLookup:
    po: PurchaseOrder | None
    method: str  # exact | normalized | fuzzy | none
    distance: int | None = None
    candidates: list[dict] | None = None


def match_po(session: Session, invoice: Invoice, settings: Settings, *, today: date | None = None) -> RuleResult:
    """MATCHED, PARTIAL, NO_MATCH or NO_PO, with the PO and line comparisons as reasons."""
    fields = invoice.fields or {}
    vendor = resolve_vendor(session, fields.get("vendor_name")).vendor
    net = net_amount(fields)
    given = (fields.get("po_number") or "").strip()
    facts: dict = {"po_ref": {"given": given or None}, "net": money(net)}

    if not given:
        candidates = po_candidates(session, vendor, fields, net)
        facts["candidates"] = candidates
        hint = _candidate_hint(candidates)
        return RuleResult(
            Decision.NO_PO,
            [reason(Reason.NO_PO_REFERENCE, f"The invoice states no PO number.{hint}")],
            facts,
        )

    lookup = find_po(session, given, vendor, fields, net)
    facts["po_ref"].update({"found": lookup.method, "distance": lookup.distance})
    if lookup.po is None:
        facts["candidates"] = lookup.candidates or []
        hint = _candidate_hint(lookup.candidates or [])
        owner = f" of {vendor.name}" if vendor else ""
        return RuleResult(
            Decision.NO_MATCH,
            [reason(Reason.PO_NOT_FOUND, f"PO {given} does not exist and is not a near typo of a PO{owner}.{hint}")],
            facts,
        )

    po = lookup.po
    reasons: list[dict] = []
    if lookup.method == "fuzzy":
        reasons.append(
            reason(
                Reason.PO_RESOLVED_FUZZY,
                f"PO {given} does not exist; it was read as {po.po_number} of the same vendor ({lookup.distance} edit(s) apart).",
            )
        )
    elif lookup.method == "normalized":
        reasons.append(
            reason(
                Reason.PO_RESOLVED_FUZZY,
                f"PO {given} does not exist as printed; it was read as {po.po_number} (the same characters, other separators or case).",
            )
        )
    return _compare(session, po, vendor, fields, net, settings, reasons, facts)


def net_amount(fields: dict) -> Decimal | None:
    """The invoice's goods value after discount, before tax and shipping (what a PO balance covers)."""
    discount = abs(dec(fields.get("discount")) or Decimal("0"))
    subtotal = dec(fields.get("subtotal"))
    if subtotal is None:
        amounts = [dec(li.get("amount")) for li in fields.get("line_items") or []]
        if amounts and all(a is not None for a in amounts):
            subtotal = sum(amounts, Decimal("0"))
    if subtotal is not None:
        return subtotal - discount
    total = dec(fields.get("total_amount"))
    if total is None:
        return None
    tax = dec(fields.get("tax")) or Decimal("0")
    shipping = dec(fields.get("shipping")) or Decimal("0")
    return total - tax - shipping


def _fold(ref: str) -> str:
    return normalize_ref(ref).translate(_LOOKALIKES)


def find_po(session: Session, given: str, vendor: Vendor | None, fields: dict, net: Decimal | None) -> PoLookup:
    """The purchase order a typed PO number refers to (see the module docstring)."""
    from rapidfuzz.distance import OSA

    po = session.exec(select(PurchaseOrder).where(PurchaseOrder.po_number == given)).first()
    if po is not None:
        return PoLookup(po, "exact", 0)
    wanted = normalize_ref(given)
    everyone = session.exec(select(PurchaseOrder).order_by(PurchaseOrder.id)).all()
    same = [p for p in everyone if normalize_ref(p.po_number) == wanted]
    if len(same) == 1:
        return PoLookup(same[0], "normalized", 0)

    # Near typos are looked for among the vendor's own POs only: a typo that lands on
    # another vendor's PO must not silently redirect the invoice.
    pool = [p for p in everyone if vendor is not None and p.vendor_id == vendor.id]
    folded = _fold(given)
    limit = MAX_TYPO_EDITS if len(folded) >= 6 else 1
    near = [(OSA.distance(folded, _fold(p.po_number)), p) for p in pool]
    near = [(d, p) for d, p in near if d <= limit]
    if near:
        best_d = min(d for d, _ in near)
        tied = [p for d, p in near if d == best_d]
        if len(tied) == 1:
            return PoLookup(tied[0], "fuzzy", best_d)
        # Equally near typos of several POs: the one whose amount and goods fit decides.
        score = {c["po_number"]: c["score"] for c in po_candidates(session, vendor, fields, net, limit=len(pool), among=tied)}
        tied.sort(key=lambda p: (-score.get(p.po_number, 0.0), p.po_number))
        if score.get(tied[0].po_number, 0.0) > score.get(tied[1].po_number, 0.0):
            return PoLookup(tied[0], "fuzzy", best_d)
    return PoLookup(None, "none", None, po_candidates(session, vendor, fields, net))


#: Only POs whose balance is this close to the invoice's net amount are compared line by line.
AMOUNT_PREFILTER = 0.5
#: At most this many POs per invoice are compared by embedding similarity, on at most
#: this many of its line descriptions (enough to recognise an order, and bounded in time).
EMBEDDING_SHORTLIST = 3
EMBEDDING_LINES = 10


def po_candidates(
    session: Session,
    vendor: Vendor | None,
    fields: dict,
    net: Decimal | None,
    limit: int = 3,
    among: list[PurchaseOrder] | None = None,
) -> list[dict]:
    """The vendor's open POs ranked by closeness of amount and similarity of line descriptions.

    Amount closeness is 1 − |net − remaining| / max(net, remaining); the POs closest in
    amount are also compared by MiniLM similarity of their line descriptions with the
    invoice's, and the score is the mean of both.
    """
    if vendor is None:
        return []
    if among is None:
        pos = session.exec(
            select(PurchaseOrder)
            .where(PurchaseOrder.vendor_id == vendor.id, PurchaseOrder.status == PurchaseOrderStatus.OPEN)
            .order_by(PurchaseOrder.id)
        ).all()
    else:
        pos = list(among)
    if not pos:
        return []
    amount_scores: dict[int, float] = {}
    for p in pos:
        remaining = dec(p.remaining)
        score = 0.0
        if net is not None and remaining is not None and max(abs(net), abs(remaining)) > 0:
            score = max(0.0, 1.0 - float(abs(net - remaining) / max(abs(net), abs(remaining))))
        amount_scores[p.id] = score
    descriptions = [li.get("description") for li in fields.get("line_items") or [] if li.get("description")]
    descriptions = descriptions[:EMBEDDING_LINES]
    shortlist = sorted(
        (p for p in pos if amount_scores[p.id] >= AMOUNT_PREFILTER or among is not None),
        key=lambda p: -amount_scores[p.id],
    )[:EMBEDDING_SHORTLIST]
    desc_scores: dict[int, float] = {}
    if descriptions and shortlist:
        from invoicechain.ap.embeddings import similarity_matrix

        po_lines = _lines_by_po(session, [p.id for p in shortlist])
        all_po_descs = sorted({ln.description for lines in po_lines.values() for ln in lines})
        if all_po_descs:
            sims = similarity_matrix(descriptions, all_po_descs)
            index = {d: i for i, d in enumerate(all_po_descs)}
            for p in shortlist:
                cols = [index[ln.description] for ln in po_lines.get(p.id, [])]
                if cols:
                    desc_scores[p.id] = sum(max(row[c] for c in cols) for row in sims) / len(sims)
    out = []
    for p in pos:
        d = desc_scores.get(p.id)
        a = amount_scores[p.id]
        total = a if d is None else 0.5 * a + 0.5 * max(0.0, d)
        out.append({"po_number": p.po_number, "remaining": p.remaining, "score": round(total, 2)})
    out.sort(key=lambda c: (-c["score"], c["po_number"]))
    return out[:limit]


#: Candidates below this score are kept in the facts but not suggested in the reason.
HINT_MIN_SCORE = 0.5


def _candidate_hint(candidates: list[dict]) -> str:
    if not candidates or candidates[0]["score"] < HINT_MIN_SCORE:
        return ""
    c = candidates[0]
    return f" Closest open PO of the vendor: {c['po_number']} (remaining {c['remaining']}, similarity {c['score']:.2f})."


def _lines_by_po(session: Session, po_ids: list[int]) -> dict[int, list[PurchaseOrderLine]]:
    out: dict[int, list[PurchaseOrderLine]] = {}
    if not po_ids:
        return out
    rows = session.exec(
        select(PurchaseOrderLine).where(PurchaseOrderLine.po_id.in_(po_ids)).order_by(PurchaseOrderLine.line_no)
    ).all()
    for ln in rows:
        out.setdefault(ln.po_id, []).append(ln)
    return out


def _blocking(po: PurchaseOrder, vendor: Vendor | None, fields: dict) -> list[dict]:
    """Why this PO cannot be matched at all: another vendor's, another currency, or not open."""
    blocking: list[dict] = []
    if vendor is not None and po.vendor_id != vendor.id:
        blocking.append(
            reason(Reason.VENDOR_MISMATCH, f"PO {po.po_number} belongs to vendor {po.vendor_id}, not to {vendor.name} ({vendor.id}).")
        )
    currency = fields.get("currency")
    if currency and po.currency and currency != po.currency:
        blocking.append(
            reason(Reason.CURRENCY_MISMATCH, f"The invoice is in {currency} but PO {po.po_number} is in {po.currency}.")
        )
    if po.status != PurchaseOrderStatus.OPEN:
        blocking.append(reason(Reason.PO_NOT_FOUND, f"PO {po.po_number} is {po.status}, not open."))
    return blocking


def _check_line(
    i: int,
    line: dict,
    pl: PurchaseOrderLine | None,
    po_number: str,
    received: dict[int, Decimal],
    three_way: bool,
    price_tol: Decimal,
    qty_tol: Decimal,
) -> tuple[dict, list[dict]]:
    """One invoice line against its PO line: the line's row for the context and its exceptions
    (not on the PO, price over tolerance, quantity over the order or over what was received)."""
    q, p = dec(line.get("quantity")), dec(line.get("unit_price"))
    desc = short(line.get("description") or f"line {i + 1}")
    row = {"desc": short(desc, 32), "qty": qty(q), "price": money(p), "po_line": None}
    found: list[dict] = []
    if pl is None:
        found.append(
            reason(Reason.QUANTITY_OVER_PO, f"Line {i + 1} '{desc}' (quantity {qty(q) or '?'}) is not on PO {po_number}.")
        )
        return row, found
    po_q, po_p = dec(pl.quantity), dec(pl.unit_price)
    got = received.get(pl.line_no, Decimal("0"))
    row.update({"po_line": pl.line_no, "po_qty": qty(po_q), "po_price": money(po_p)})
    if three_way:
        row["received"] = qty(got)
    if p is not None and po_p is not None and p - po_p > po_p * price_tol + Decimal("0.005"):
        over = (p - po_p) / po_p * 100 if po_p else Decimal("0")
        found.append(
            reason(
                Reason.PRICE_OVER_TOLERANCE,
                f"Line {i + 1} '{desc}': unit price {money(p)} is {over:.1f}% above the PO price {money(po_p)} "
                f"(tolerance {price_tol * 100:.1f}%).",
            )
        )
    if q is not None and po_q is not None and q > po_q * (1 + qty_tol):
        found.append(
            reason(
                Reason.QUANTITY_OVER_PO,
                f"Line {i + 1} '{desc}': quantity {qty(q)} is over the {qty(po_q)} ordered on PO {po_number}.",
            )
        )
    if three_way and q is not None and q > got * (1 + qty_tol):
        found.append(
            reason(
                Reason.QUANTITY_OVER_RECEIPT,
                f"Line {i + 1} '{desc}': quantity {qty(q)} is over the {qty(got)} received against PO {po_number}.",
            )
        )
    return row, found


def _compare(
    session: Session,
    po: PurchaseOrder,
    vendor: Vendor | None,
    fields: dict,
    net: Decimal | None,
    settings: Settings,
    reasons: list[dict],
    facts: dict,
) -> RuleResult:
    """One invoice against one PO: 2-way (order) or 3-way (order and goods receipts), line by line
    and on the amount remaining."""
    price_tol = Decimal(str(settings.price_tolerance))
    qty_tol = Decimal(str(settings.quantity_tolerance))
    po_lines = _lines_by_po(session, [po.id]).get(po.id, [])
    receipts = session.exec(select(GoodsReceipt).where(GoodsReceipt.po_id == po.id)).all()
    received: dict[int, Decimal] = {}
    for r in receipts:
        received[r.line_no] = received.get(r.line_no, Decimal("0")) + (dec(r.quantity_received) or Decimal("0"))
    three_way = bool(receipts)
    remaining = dec(po.remaining)
    facts["po"] = {
        "number": po.po_number,
        "vendor_id": po.vendor_id,
        "vendor_matches": None if vendor is None else po.vendor_id == vendor.id,
        "currency": po.currency,
        "total": po.total,
        "remaining": po.remaining,
        "status": po.status,
        "lines": len(po_lines),
        "match": "3-way" if three_way else "2-way",
    }

    blocking = _blocking(po, vendor, fields)
    if blocking:
        return RuleResult(Decision.NO_MATCH, reasons + blocking, facts)

    exceptions: list[dict] = []
    inv_lines = fields.get("line_items") or []
    pairs = pair_lines(inv_lines, po_lines)
    context_lines = []
    flagged: set[int] = set()  # invoice lines with an exception
    for i, line in enumerate(inv_lines):
        row, found = _check_line(i, line, pairs.get(i), po.po_number, received, three_way, price_tol, qty_tol)
        if found:
            flagged.add(i)
            exceptions.extend(found)
        context_lines.append(row)
    matched = len(pairs)
    # Long invoices: the lines with an exception are shown first, so the cap never hides them.
    order = sorted(range(len(context_lines)), key=lambda k: (k not in flagged, k))
    facts["lines"] = [context_lines[k] for k in order[:MAX_CONTEXT_LINES]]
    if len(context_lines) > MAX_CONTEXT_LINES:
        facts["lines_not_shown"] = len(context_lines) - MAX_CONTEXT_LINES

    if net is not None and remaining is not None and net - remaining > remaining * price_tol + Decimal("0.005"):
        exceptions.append(
            reason(
                Reason.AMOUNT_OVER_REMAINING,
                f"The net amount {money(net)} is over the {money(remaining)} remaining on PO {po.po_number}.",
            )
        )

    if inv_lines and matched == 0:
        return RuleResult(Decision.NO_MATCH, reasons + exceptions, facts)
    if exceptions:
        return RuleResult(Decision.PARTIAL, reasons + exceptions, facts)
    how = "3-way (order and receipts)" if three_way else "2-way (order)"
    detail = f"{matched} line(s)" if inv_lines else "the amount"
    reasons.append(
        reason(
            Reason.PO_MATCHED,
            f"PO {po.po_number} matches {how} on {detail}; net {money(net)} within the {money(remaining)} remaining.",
        )
    )
    return RuleResult(Decision.MATCHED, reasons, facts)


def pair_lines(inv_lines: list[dict], po_lines: list[PurchaseOrderLine]) -> dict[int, PurchaseOrderLine]:
    """Invoice line index → PO line, by description similarity (best pairs first, each line used once)."""
    if not inv_lines or not po_lines:
        return {}
    from rapidfuzz import fuzz
    from rapidfuzz.utils import default_process

    inv_desc = [li.get("description") or "" for li in inv_lines]
    po_desc = [pl.description or "" for pl in po_lines]
    scores = [[fuzz.token_set_ratio(a, b, processor=default_process) / 100.0 for b in po_desc] for a in inv_desc]
    unsure = [i for i, row in enumerate(scores) if max(row) < LINE_FUZZY_SURE and inv_desc[i]]
    if unsure:
        from invoicechain.ap.embeddings import similarity_matrix

        sims = similarity_matrix([inv_desc[i] for i in unsure], po_desc)
        for i, row in zip(unsure, sims):
            scores[i] = [max(f, s) for f, s in zip(scores[i], row)]
    order = sorted(
        ((scores[i][j], i, j) for i in range(len(inv_lines)) for j in range(len(po_lines))),
        key=lambda t: (-t[0], abs(t[1] - t[2]), t[1], t[2]),
    )
    pairs: dict[int, PurchaseOrderLine] = {}
    used: set[int] = set()
    for s, i, j in order:
        if s < LINE_MATCH_MIN:
            break
        if i in pairs or j in used:
            continue
        pairs[i] = po_lines[j]
        used.add(j)
    return pairs
