"""Which invoices carry which fault, and the PO numbers printed on them.

At most one fault per invoice. Faults that the PO match or later steps catch need an invoice
that references a PO (and prints bank details), so they go to layouts that do; faults that
invalidate an invoice fit any layout.

PO numbers keep their distances so the rules can tell a typo from an unknown PO: issued POs
are at least 3 edits apart, a mistyped PO is one edit (a changed, dropped or swapped
character, or a separator typed differently) from its real PO and at least 3 edits from
every other PO, and an unknown PO is at least 4 edits from every PO in master data.
"""

from __future__ import annotations

import random

from invoicechain.decisions import Fault

#: Layouts whose invoices reference purchase orders and print bank details.
PO_LAYOUTS = frozenset({"table", "two_column", "letter", "multipage", "remittance"})
#: Faults caught at validate_invoice: any layout can carry them.
INVALIDATING = (Fault.ARITHMETIC_ERROR, Fault.MISSING_REQUIRED_FIELD, Fault.DUPLICATE_INVOICE)
#: Faults that need a PO on the invoice.
NEEDS_PO = (
    Fault.AMOUNT_OVER_PO_TOLERANCE,
    Fault.UNKNOWN_PO,
    Fault.QUANTITY_OVER_RECEIPT,
    Fault.VENDOR_ON_HOLD,
    Fault.CHANGED_BANK_ACCOUNT,
    Fault.APPROVAL_ABOVE_THRESHOLD,
)


def assign_faults(layouts: list[str], fault_rate: float, rng: random.Random) -> list[str | None]:
    """One fault or None per invoice; fault types are spread evenly, not drawn independently."""
    n = len(layouts)
    n_faulty = min(n, round(n * max(0.0, min(1.0, fault_rate))))
    kinds = list(Fault)
    rng.shuffle(kinds)
    wanted = [kinds[i % len(kinds)] for i in range(n_faulty)]
    # Place the PO faults first: they have fewer layouts to go to.
    wanted.sort(key=lambda f: f not in NEEDS_PO)
    order = list(range(n))
    rng.shuffle(order)
    assigned: list[str | None] = [None] * n
    free = set(order)
    for fault in wanted:
        candidates = [i for i in order if i in free and (fault not in NEEDS_PO or layouts[i] in PO_LAYOUTS)]
        if not candidates:
            # No PO layout left: an invalidating fault keeps the requested fault rate.
            fault = INVALIDATING[len([f for f in assigned if f]) % len(INVALIDATING)]
            candidates = [i for i in order if i in free]
        i = candidates[0]
        free.discard(i)
        assigned[i] = str(fault)
    return assigned


class PoRegistry:
    """Every PO number issued or printed in one corpus, with the distances kept apart."""

    ISSUED_GAP = 3
    TYPO_GAP = 3
    UNKNOWN_GAP = 4

    def __init__(self) -> None:
        self.issued: list[str] = []
        self.typos: list[str] = []
        self.unknown: list[str] = []

    @staticmethod
    def _nearest(candidate: str, pool: list[str]) -> int:
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        if not pool:
            return 99
        return int(process.extractOne(candidate, pool, scorer=Levenshtein.distance)[1])

    def issue(self, make_candidate) -> str:
        """A new PO number from `make_candidate()` that keeps its distance from all others."""
        while True:
            po = make_candidate()
            if (self._nearest(po, self.issued) >= self.ISSUED_GAP and self._nearest(po, self.typos) >= self.TYPO_GAP
                    and self._nearest(po, self.unknown) >= self.UNKNOWN_GAP):
                self.issued.append(po)
                return po

    def mistype(self, po: str, rng: random.Random) -> str:
        """A one-edit typo of an issued PO number, far from every other PO."""
        others = [p for p in self.issued if p != po]
        for _ in range(50):
            typo = _typo(po, rng)
            if typo != po and typo not in self.issued and self._nearest(typo, others) >= self.TYPO_GAP:
                self.typos.append(typo)
                return typo
        raise RuntimeError(f"no safe typo for PO {po}")

    def unknown_number(self, make_candidate) -> str:
        """A PO number in the buyer's format that is in no master data and near no PO."""
        while True:
            po = make_candidate()
            if self._nearest(po, self.issued) >= self.UNKNOWN_GAP and self._nearest(po, self.typos) >= self.TYPO_GAP:
                self.unknown.append(po)
                return po


def _typo(po: str, rng: random.Random) -> str:
    digits = [i for i, ch in enumerate(po) if ch.isdigit()]
    seps = [i for i, ch in enumerate(po) if ch in "-/"]
    kind = rng.choice(("change", "change", "swap", "drop", "separator" if seps else "swap"))
    if kind == "change":
        i = rng.choice(digits)
        return po[:i] + rng.choice([d for d in "0123456789" if d != po[i]]) + po[i + 1:]
    if kind == "swap":
        pairs = [i for i in digits if i + 1 < len(po) and po[i + 1].isdigit() and po[i] != po[i + 1]]
        if pairs:
            i = rng.choice(pairs)
            return po[:i] + po[i + 1] + po[i] + po[i + 2:]
    if kind == "separator" and seps:
        i = rng.choice(seps)
        return po[:i] + rng.choice((" ", "", "." if po[i] == "-" else "-")) + po[i + 1:]
    i = rng.choice(digits[1:] or digits)
    return po[:i] + po[i + 1:]
