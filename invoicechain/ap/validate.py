"""The validate_invoice step: is this a well-formed invoice from a vendor we may pay?

Blocking findings (the invoice is INVALID): a required field missing, totals that do not add
up (and line items that do not either, unless the totals do), impossible dates, an unknown
currency, an unknown or blocked vendor, a duplicate of an invoice already posted or already
accepted. Warnings that do not block
here but hold the payment later: the vendor is on hold, the bank account differs from the
vendor record; and line items that do not add up on an invoice whose totals do.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import func, or_
from sqlmodel import Session, select

from invoicechain.ap.currencies import is_known_currency
from invoicechain.ap.findings import RuleResult, dec, money, normalize_ref, parse_date, qty, reason
from invoicechain.ap.vendors import VendorMatch, bank_account_differs, resolve_vendor
from invoicechain.config import Settings
from invoicechain.db.tables import Invoice, PostedInvoice, StepRun
from invoicechain.decisions import Decision, InvoiceStatus, Reason, Step
from invoicechain.enums import StepRunStatus, VendorStatus

REQUIRED_FIELDS = ("invoice_id", "vendor_name", "invoice_date", "total_amount", "currency")
#: An invoice dated further ahead than this is not accepted (typo in the year, or fraud).
MAX_DAYS_AHEAD = 31
#: A due date more than this after the invoice date is treated as an error.
MAX_DAYS_TO_DUE = 366
#: Other invoices that no longer count for duplicate checks.
_DISCARDED = (InvoiceStatus.INVALID, InvoiceStatus.REJECTED, InvoiceStatus.FAILED)


def check_document(fields: dict, settings: Settings, today: date) -> tuple[list[dict], list[dict], dict]:
    """The rules that need only the document's own fields (required fields, numbers, arithmetic,
    dates, currency): (blocking findings, warnings, facts). `validate_invoice` adds the
    master-data rules.

    Line items that do not add up (a line's quantity × price, or the lines' sum against the
    subtotal) block only when the totals that are paid do not add up either: when subtotal, tax,
    discount and shipping make the total, the amount to pay is consistent and the line findings
    are warnings (the lines are read less reliably than the totals; the PO match still checks
    them against the order)."""
    tol = Decimal(str(settings.amount_tolerance))
    blocking: list[dict] = []
    warnings: list[dict] = []
    missing = [name for name in REQUIRED_FIELDS if not _present(fields.get(name))]
    for name in missing:
        blocking.append(reason(Reason.MISSING_FIELD, f"The required field {name} is missing."))
    for name in ("total_amount", "subtotal", "tax", "discount", "shipping"):
        if _present(fields.get(name)) and dec(fields.get(name)) is None:
            blocking.append(reason(Reason.MISSING_FIELD, f"{name} '{fields[name]}' is not a number."))

    arithmetic = _check_arithmetic(fields, tol, blocking, warnings)
    dates = _check_dates(fields, today, blocking)

    currency = fields.get("currency")
    currency_known = is_known_currency(currency) if currency else None
    if currency and not currency_known:
        blocking.append(reason(Reason.UNKNOWN_CURRENCY, f"The currency '{currency}' is not an ISO 4217 code."))
    return blocking, warnings, {"missing": missing, "arithmetic": arithmetic, "dates": dates, "currency_known": currency_known}


def validate_invoice(session: Session, invoice: Invoice, settings: Settings, *, today: date | None = None) -> RuleResult:
    """VALID or INVALID, with every finding as a reason (warnings included)."""
    fields = invoice.fields or {}
    today = today or date.today()
    blocking, warnings, document_facts = check_document(fields, settings, today)

    match = resolve_vendor(session, fields.get("vendor_name"))
    vendor = match.vendor
    bank: dict = {"on_invoice": bool((fields.get("bank") or {}) and any((fields.get("bank") or {}).values()))}
    history: dict = {}
    if fields.get("vendor_name") and vendor is None:
        blocking.append(
            reason(Reason.UNKNOWN_VENDOR, f"The vendor '{fields['vendor_name']}' is not in the vendor master.")
        )
    if vendor is not None:
        if vendor.status == VendorStatus.BLOCKED:
            blocking.append(reason(Reason.VENDOR_BLOCKED, f"The vendor {vendor.name} ({vendor.id}) is blocked."))
        elif vendor.status == VendorStatus.ON_HOLD:
            warnings.append(
                reason(Reason.VENDOR_ON_HOLD, f"The vendor {vendor.name} ({vendor.id}) is on hold: payment will be held.")
            )
        differs, sentence = bank_account_differs(fields, vendor)
        bank["matches_record"] = None if not bank["on_invoice"] else not differs
        if differs:
            warnings.append(reason(Reason.BANK_ACCOUNT_CHANGED, sentence + " Payment will be held until verified."))
        history = _check_duplicates(session, invoice, fields, match, blocking)

    decision = Decision.INVALID if blocking else Decision.VALID
    facts = {
        **document_facts,
        "vendor": match.facts(),
        "bank": bank,
        "history": history,
    }
    return RuleResult(decision, blocking + warnings, facts)


def _present(value) -> bool:
    return value is not None and str(value).strip() != ""


def _check_arithmetic(fields: dict, tol: Decimal, blocking: list[dict], warnings: list[dict]) -> dict:
    lines = fields.get("line_items") or []
    line_findings: list[dict] = []
    line_errors = 0
    amounts: list[Decimal] = []
    for i, line in enumerate(lines, start=1):
        q, p, a = dec(line.get("quantity")), dec(line.get("unit_price")), dec(line.get("amount"))
        if a is not None:
            amounts.append(a)
        if q is not None and p is not None and a is not None:
            product = (q * p).quantize(Decimal("0.01"))
            if abs(product - a) > tol:
                line_errors += 1
                line_findings.append(
                    reason(
                        Reason.ARITHMETIC_MISMATCH,
                        f"Line {i}: {qty(q)} × {money(p)} = {money(product)}, but the line amount is {money(a)}.",
                    )
                )
    lines_sum = sum(amounts, Decimal("0")) if lines and len(amounts) == len(lines) else None
    subtotal = dec(fields.get("subtotal"))
    if lines_sum is not None and subtotal is not None and abs(lines_sum - subtotal) > tol:
        line_findings.append(
            reason(
                Reason.LINES_DONT_SUM,
                f"The {len(lines)} line amounts sum to {money(lines_sum)}, but the subtotal is {money(subtotal)}.",
            )
        )
    base = subtotal if subtotal is not None else lines_sum
    total = dec(fields.get("total_amount"))
    computed = None
    header_adds_up = False
    at = len(blocking)  # blocking line findings go before the totals' own
    if base is not None and total is not None:
        tax = dec(fields.get("tax")) or Decimal("0")
        shipping = dec(fields.get("shipping")) or Decimal("0")
        # A discount is subtracted whichever sign the document prints it with.
        discount = abs(dec(fields.get("discount")) or Decimal("0"))
        computed = base + tax - discount + shipping
        adds_up = abs(computed - total) <= tol
        header_adds_up = adds_up and subtotal is not None
        if not adds_up:
            what = "subtotal" if subtotal is not None else "line sum"
            blocking.append(
                reason(
                    Reason.ARITHMETIC_MISMATCH,
                    f"{what} {money(base)} + tax {money(tax)} − discount {money(discount)} + shipping "
                    f"{money(shipping)} = {money(computed)}, but the total is {money(total)}.",
                )
            )
    if header_adds_up:
        warnings.extend(line_findings)
    else:
        blocking[at:at] = line_findings
    return {
        "lines": len(lines),
        "lines_block": bool(line_findings) and not header_adds_up,
        "lines_sum": money(lines_sum),
        "line_errors": line_errors,
        "computed_total": money(computed),
    }


def _check_dates(fields: dict, today: date, blocking: list[dict]) -> dict:
    issued_raw, due_raw = fields.get("invoice_date"), fields.get("due_date")
    issued, due = parse_date(issued_raw), parse_date(due_raw)
    if _present(issued_raw) and issued is None:
        blocking.append(reason(Reason.MISSING_FIELD, f"invoice_date '{issued_raw}' is not a valid date."))
    if _present(due_raw) and due is None:
        blocking.append(reason(Reason.MISSING_FIELD, f"due_date '{due_raw}' is not a valid date."))
    if issued and due and due < issued:
        blocking.append(
            reason(Reason.DUE_BEFORE_ISSUE, f"The due date {due} is {(issued - due).days} day(s) before the invoice date {issued}.")
        )
    if issued and issued > today + timedelta(days=MAX_DAYS_AHEAD):
        blocking.append(
            reason(
                Reason.DATE_TOO_FAR,
                f"The invoice date {issued} is {(issued - today).days} days after today ({today}); at most {MAX_DAYS_AHEAD} are accepted.",
            )
        )
    if issued and due and (due - issued).days > MAX_DAYS_TO_DUE:
        blocking.append(
            reason(
                Reason.DATE_TOO_FAR,
                f"The due date {due} is {(due - issued).days} days after the invoice date; at most {MAX_DAYS_TO_DUE} are accepted.",
            )
        )
    return {
        "today": today.isoformat(),
        "days_ahead": (issued - today).days if issued else None,
        "days_to_due": (due - issued).days if issued and due else None,
    }


def _check_duplicates(session: Session, invoice: Invoice, fields: dict, match: VendorMatch, blocking: list[dict]) -> dict:
    """Same vendor and invoice number, or same vendor, amount and date: in the ledger or already accepted here."""
    vendor = match.vendor
    number = normalize_ref(fields.get("invoice_id"))
    total = dec(fields.get("total_amount"))
    issued = parse_date(fields.get("invoice_date"))
    same_number: list[str] = []
    same_amount_date: list[str] = []

    posted = session.exec(select(PostedInvoice).where(PostedInvoice.vendor_id == vendor.id)).all()
    for p in posted:
        if number and normalize_ref(p.invoice_number) == number:
            same_number.append(f"posted {p.invoice_number}")
            blocking.append(
                reason(
                    Reason.DUPLICATE_INVOICE,
                    f"Invoice {p.invoice_number} of {vendor.name} is already posted (total {p.total_amount} {p.currency}, dated {p.invoice_date}).",
                )
            )
        elif total is not None and issued and dec(p.total_amount) == total and p.invoice_date == issued:
            same_amount_date.append(f"posted {p.invoice_number}")
            blocking.append(
                reason(
                    Reason.DUPLICATE_INVOICE,
                    f"Posted invoice {p.invoice_number} of {vendor.name} has the same total {money(total)} and date {issued}.",
                )
            )

    # Invoices this system already accepted (validated VALID and not discarded since).
    raw_number = (fields.get("invoice_id") or "").strip()
    conditions = []
    if raw_number:
        conditions.append(func.upper(func.trim(Invoice.fields["invoice_id"].as_string())) == raw_number.upper())
    if issued and total is not None:
        conditions.append(Invoice.fields["invoice_date"].as_string() == issued.isoformat())
    if conditions:
        accepted = select(StepRun.invoice_id).where(
            StepRun.step == Step.VALIDATE, StepRun.status == StepRunStatus.DONE, StepRun.decision == Decision.VALID
        )
        # The number/date filter narrows the invoices first; membership in `accepted` is
        # checked only for those few (a join would evaluate the JSON filter per step run).
        query = (
            select(Invoice)
            .where(
                or_(*conditions),
                Invoice.id != invoice.id,
                Invoice.status.not_in([str(s) for s in _DISCARDED]),
                Invoice.id.in_(accepted),
            )
            .order_by(Invoice.created_at)
        )
        names: dict[str, str | None] = {}
        for other in session.exec(query).all():
            of = other.fields or {}
            name = of.get("vendor_name")
            if name not in names:
                names[name] = getattr(resolve_vendor(session, name).vendor, "id", None)
            if names[name] != vendor.id:
                continue
            if number and normalize_ref(of.get("invoice_id")) == number:
                same_number.append(f"invoice {other.id}")
                blocking.append(
                    reason(
                        Reason.DUPLICATE_INVOICE,
                        f"Invoice {of.get('invoice_id')} of {vendor.name} was already received as invoice {other.id} (status {other.status}).",
                    )
                )
            elif total is not None and dec(of.get("total_amount")) == total and parse_date(of.get("invoice_date")) == issued:
                same_amount_date.append(f"invoice {other.id}")
                blocking.append(
                    reason(
                        Reason.DUPLICATE_INVOICE,
                        f"Invoice {other.id} ({of.get('invoice_id')}) of {vendor.name} has the same total {money(total)} and date {issued}.",
                    )
                )
    return {"posted": len(posted), "same_number": same_number[:3], "same_amount_date": same_amount_date[:3]}
