"""Resolve the vendor named on an invoice against the vendor master.

In order: exact match of the name or an alias, the same after normalising case,
punctuation and legal-form suffixes, fuzzy string match (rapidfuzz), then embedding
similarity (MiniLM).
Each later method needs a clear winner: a best score over its threshold and a margin over
the runner-up, so that two similar vendors never get confused silently.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from sqlmodel import Session, select

from invoicechain.ap.findings import normalize_account
from invoicechain.db.tables import Vendor

FUZZY_THRESHOLD = 90.0
FUZZY_MARGIN = 5.0
EMBEDDING_THRESHOLD = 0.65
EMBEDDING_MARGIN = 0.08

# Legal-form words carry no identity: "ACME GmbH" and "Acme Corporation" are one vendor.
# Dots are removed first, so "S.r.l." reads "srl" and "B.V." reads "bv".
_LEGAL_FORMS = frozenset(
    """
    ab ag and aps as asa bv co company corp corporation cv dac doo eg ek eurl ev gbr gmbh hb inc
    incorporated kg kgaa lda limited llc llp lp ltd ltda mbh nv oy og ohg plc pty sa sarl sas se sl
    snc spa sro srl the ug und vof
    """.split()
)


@dataclass(frozen=True)
class VendorMatch:
    """The vendor record found for an invoice's vendor name, and how it was found."""

    vendor: Vendor | None
    method: str  # exact | alias | normalized | fuzzy | embedding | none
    score: float | None = None
    matched_name: str | None = None

    @property
    def found(self) -> bool:
        return self.vendor is not None

    def facts(self) -> dict:
        """What the toolchain adapter sees about the vendor record."""
        v = self.vendor
        if v is None:
            return {"found": "none"}
        return {
            "found": self.method,
            "score": None if self.score is None else round(self.score, 2),
            "id": v.id,
            "name": v.name,
            "status": v.status,
            "risk": v.risk,
        }


def normalize_name(name: str | None) -> str:
    """Vendor name core: accents stripped, lower case, letters and digits, no legal form."""
    text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode().lower()
    text = text.replace(".", "").replace("&", " and ")
    words = re.findall(r"[a-z0-9]+", text)
    core = [w for w in words if w not in _LEGAL_FORMS]
    return " ".join(core or words)


@dataclass(frozen=True)
class _NameIndex:
    """Every vendor name and alias, as written and normalised (ids only: rows are read live)."""

    exact: dict[str, str]  # casefolded name → vendor id
    alias: dict[str, str]  # casefolded alias → vendor id
    entries: list[tuple[str, str, str]]  # (normalised, vendor id, name as written)
    by_core: dict[str, set[str]]


#: The last index built in this process and the rows it was built from: rebuilding it means
#: normalising every name and alias, while reading the rows is one small query.
_last_index: tuple[tuple, _NameIndex] | None = None


def _name_index(session: Session) -> _NameIndex:
    """The vendor name index, read once per transaction and rebuilt only when the rows change."""
    global _last_index
    txn = session.get_transaction()
    cached = session.info.get("ap.vendor_names")
    if cached is not None and cached[0] is txn and txn is not None:
        return cached[1]
    rows = tuple(
        (vid, name, tuple(aliases or ()))
        for vid, name, aliases in session.exec(select(Vendor.id, Vendor.name, Vendor.aliases).order_by(Vendor.id)).all()
    )
    last = _last_index
    if last is not None and last[0] == rows:
        index = last[1]
    else:
        index = _build_index(rows)
        _last_index = (rows, index)
    session.info["ap.vendor_names"] = (txn, index)
    return index


def _build_index(rows: tuple) -> _NameIndex:
    exact: dict[str, str] = {}
    alias: dict[str, str] = {}
    entries: list[tuple[str, str, str]] = []
    by_core: dict[str, set[str]] = {}
    for vid, name, aliases in rows:
        exact.setdefault(" ".join(name.split()).casefold(), vid)
        for a in aliases:
            if a:
                alias.setdefault(" ".join(a.split()).casefold(), vid)
        for n in [name, *[a for a in aliases if a]]:
            nn = normalize_name(n)
            if nn:
                entries.append((nn, vid, n))
                by_core.setdefault(nn, set()).add(vid)
    return _NameIndex(exact, alias, entries, by_core)


def resolve_vendor(session: Session, name: str | None, *, use_embeddings: bool = True) -> VendorMatch:
    """The vendor-master record for an invoice's vendor name (see the module docstring)."""
    if not name or not name.strip():
        return VendorMatch(None, "none")
    index = _name_index(session)
    if not index.entries:
        return VendorMatch(None, "none")

    def found(vid: str, method: str, score: float, matched: str) -> VendorMatch:
        # Held for the transaction: the identity map alone keeps no row alive, and the steps
        # resolve the same vendor more than once in a transaction.
        txn = session.get_transaction()
        cached = session.info.get("ap.vendor_rows")
        if cached is None or cached[0] is not txn:
            cached = session.info["ap.vendor_rows"] = (txn, {})
        held = cached[1]
        if vid not in held:
            held[vid] = session.get(Vendor, vid)
        return VendorMatch(held[vid], method, score, matched)

    wanted = " ".join(name.split()).casefold()
    if wanted in index.exact:
        vid = index.exact[wanted]
        return found(vid, "exact", 1.0, name)
    if wanted in index.alias:
        return found(index.alias[wanted], "alias", 1.0, name)

    core = normalize_name(name)
    if core and len(index.by_core.get(core, ())) == 1:
        vid = next(iter(index.by_core[core]))
        written = next(n for nn, v, n in index.entries if nn == core and v == vid)
        return found(vid, "normalized", 1.0, written)

    from rapidfuzz import fuzz

    entries = index.entries
    best = _best_per_vendor(entries, [fuzz.token_sort_ratio(core, nn) for nn, _, _ in entries])
    if best:
        (top_score, top_v, top_n), runner = best[0], (best[1][0] if len(best) > 1 else 0.0)
        if top_score >= FUZZY_THRESHOLD and top_score - runner >= FUZZY_MARGIN:
            return found(top_v, "fuzzy", top_score / 100.0, top_n)

    if use_embeddings:
        from invoicechain.ap.embeddings import similarity_matrix

        sims = similarity_matrix([" ".join(name.split())], [n for _, _, n in entries])[0]
        best = _best_per_vendor(entries, sims)
        if best:
            (top_score, top_v, top_n), runner = best[0], (best[1][0] if len(best) > 1 else 0.0)
            if top_score >= EMBEDDING_THRESHOLD and top_score - runner >= EMBEDDING_MARGIN:
                return found(top_v, "embedding", top_score, top_n)
    return VendorMatch(None, "none")


def _best_per_vendor(entries, scores) -> list[tuple[float, str, str]]:
    """Each vendor's best-scoring name (scores aligned with entries), best vendor first."""
    best: dict[str, tuple[float, str, str]] = {}
    for (_nn, vid, n), s in zip(entries, scores):
        s = float(s)
        if vid not in best or s > best[vid][0]:
            best[vid] = (s, vid, n)
    return sorted(best.values(), key=lambda t: (-t[0], t[1]))


def invoice_accounts(fields: dict) -> dict[str, str]:
    """The bank account stated on the invoice, normalised (iban, account_number, routing_number)."""
    bank = fields.get("bank") or {}
    out = {}
    for key in ("iban", "account_number", "routing_number"):
        value = normalize_account(bank.get(key))
        if value:
            out[key] = value
    return out


def bank_account_differs(fields: dict, vendor: Vendor) -> tuple[bool, str | None]:
    """Whether the invoice asks to be paid into an account other than the vendor record's.

    Returns (differs, sentence). An invoice that states no bank account does not differ.
    """
    stated = invoice_accounts(fields)
    if not stated:
        return False, None
    on_file_iban = normalize_account(vendor.iban)
    on_file_acct = normalize_account(vendor.account_number)
    on_file_routing = normalize_account(vendor.routing_number)
    if "iban" in stated:
        if stated["iban"] != on_file_iban:
            shown = _mask(on_file_iban) if on_file_iban else "none"
            return True, (
                f"The invoice asks for payment to IBAN {_mask(stated['iban'])}, but the vendor record "
                f"of {vendor.name} has IBAN {shown}."
            )
        return False, None
    if "account_number" in stated:
        if stated["account_number"] != on_file_acct or (
            "routing_number" in stated and on_file_routing and stated["routing_number"] != on_file_routing
        ):
            shown = _mask(on_file_acct) if on_file_acct else "none"
            return True, (
                f"The invoice asks for payment to account {_mask(stated['account_number'])}, but the vendor "
                f"record of {vendor.name} has account {shown}."
            )
    return False, None


def _mask(account: str) -> str:
    """Show an account by its last four characters only (messages end up in logs and prompts)."""
    return f"…{account[-4:]}" if len(account) > 4 else account
