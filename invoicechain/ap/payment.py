"""The trigger_payment step: when to pay, or why not to pay yet.

The payment date comes from the payment terms: `Net N`, `2/10 Net 30` (the early-payment
discount is taken when its window has not closed), `due on receipt`, `end of month`
(`EOM`, `Net 30 EOM`). Without readable terms the stated due date is used, else Net 30.
A vendor on hold, or a bank account on the invoice that differs from the vendor record,
holds the payment. Otherwise the invoice gets exactly one `Payment`, in the open
`PaymentBatch` of its currency: the unique key on `Payment.invoice_id` and a per-currency
lock make a redelivered or concurrent step add nothing twice.
"""

from __future__ import annotations

import calendar
import re
import zlib
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from invoicechain.lexicon import lexicon
from invoicechain.ap.findings import RuleResult, dec, money, parse_date, reason
from invoicechain.ap.vendors import bank_account_differs, resolve_vendor
from invoicechain.config import Settings
from invoicechain.db.tables import Invoice, Payment, PaymentBatch, Vendor
from invoicechain.decisions import Decision, Reason
from invoicechain.enums import PaymentBatchStatus, VendorStatus

DEFAULT_NET_DAYS = 30


@dataclass(frozen=True)
class Terms:
    """Payment terms as read from the invoice's terms text."""

    net_days: int | None = None
    discount_pct: Decimal | None = None
    discount_days: int | None = None
    end_of_month: bool = False
    on_receipt: bool = False


# Terms are printed in the vendor's language: the words of each part of a terms phrase come
# from the lexicon (`invoicechain/lexicon/*.yaml`, `payment_terms`), one file per language.
_TERMS = lexicon()
_DAYS = _TERMS.terms("days")
_NETWORD = _TERMS.terms("net")
_DISCOUNT_SLASH = re.compile(rf"(\d+(?:[.,]\d+)?)\s*%?\s*/\s*(\d+)\s*{_DAYS}?\s*[,;]?\s*{_NETWORD}\s*/?\s*(\d+)", re.I)
_DISCOUNT_PCT_FIRST = re.compile(
    rf"(\d+(?:[.,]\d+)?)\s*%\s*(?:{_TERMS.terms('discount')}\s*)?"
    rf"(?:{_TERMS.terms('condition')}\s*)?{_TERMS.terms('within')}?\s*(\d+)\s*{_DAYS}",
    re.I,
)
_DISCOUNT_DAYS_FIRST = re.compile(rf"(\d+)\s*{_DAYS}\s*(\d+(?:[.,]\d+)?)\s*%", re.I)
_NET_DAYS = re.compile(rf"(\d+)\s*{_DAYS}|\b{_NETWORD}\.?\s*(?:{_TERMS.terms('net_to')}\s*)?/?\s*(\d+)", re.I)
_EOM = re.compile(_TERMS.terms("end_of_month"), re.I)
_RECEIPT = re.compile(_TERMS.terms("on_receipt"), re.I)


def parse_terms(terms: str | None) -> Terms | None:
    """Read payment terms text; None when nothing in it is recognised."""
    if not terms or not terms.strip():
        return None
    t = " ".join(terms.split())
    eom = bool(_EOM.search(t))
    m = _DISCOUNT_SLASH.search(t)
    if m:
        return Terms(int(m.group(3)), Decimal(m.group(1).replace(",", ".")), int(m.group(2)), eom)
    pct = days = None
    rest = t
    for pattern, pct_group, days_group in ((_DISCOUNT_DAYS_FIRST, 2, 1), (_DISCOUNT_PCT_FIRST, 1, 2)):
        d = pattern.search(t)
        if d:
            pct, days = Decimal(d.group(pct_group).replace(",", ".")), int(d.group(days_group))
            rest = t[: d.start()] + " " + t[d.end() :]
            break
    n = _NET_DAYS.search(rest)
    net = int(next(g for g in n.groups() if g)) if n else None
    if pct is not None and net is not None:
        return Terms(net, pct, days, eom)
    if net is not None or eom:
        return Terms(net_days=net, end_of_month=eom)
    if _RECEIPT.search(t):
        return Terms(net_days=0, on_receipt=True)
    return None


def describe_terms(terms: Terms) -> str:
    """Canonical wording of parsed terms ("Net 30", "2% in 10 days, Net 30", "end of month + 30 days")."""
    if terms.on_receipt:
        base = "due on receipt"
    elif terms.end_of_month:
        base = "end of month" + (f" + {terms.net_days} days" if terms.net_days else "")
    else:
        base = f"Net {terms.net_days}"
    if terms.discount_pct is not None:
        return f"{terms.discount_pct.normalize():f}% in {terms.discount_days} days, {base}"
    return base


def _end_of_month(d: date) -> date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


@dataclass(frozen=True)
class Schedule:
    """When and how much to pay."""

    pay_on: date
    due: date
    amount: Decimal
    discount: Decimal
    discount_deadline: date | None
    basis: str  # the sentence that explains the date


def payment_schedule(fields: dict, today: date) -> Schedule:
    """Payment date and amount from the terms, relative to the invoice date and today."""
    total = dec(fields.get("total_amount")) or Decimal("0")
    issued = parse_date(fields.get("invoice_date")) or today
    stated_due = parse_date(fields.get("due_date"))
    terms_text = (fields.get("payment_terms") or "").strip()
    terms = parse_terms(terms_text)

    if terms is None:
        if stated_due:
            due, basis = stated_due, f"the stated due date {stated_due}"
        else:
            due = issued + timedelta(days=DEFAULT_NET_DAYS)
            basis = f"Net {DEFAULT_NET_DAYS} from the invoice date {issued}, as no terms are stated"
    else:
        if terms.on_receipt:
            due = issued
        elif terms.end_of_month:
            due = _end_of_month(issued) + timedelta(days=terms.net_days or 0)
        else:
            due = issued + timedelta(days=terms.net_days or 0)
        read = describe_terms(terms)
        shown = f"terms '{terms_text}'" + ("" if read.casefold() == terms_text.casefold() else f" read as {read}")
        basis = f"{shown}, from the invoice date {issued}"

    if terms and terms.discount_pct and terms.discount_days is not None:
        deadline = issued + timedelta(days=terms.discount_days)
        if today <= deadline:
            # Pay on the last day that still earns the discount: cash stays longest.
            discount = (total * terms.discount_pct / 100).quantize(Decimal("0.01"))
            return Schedule(deadline, due, total - discount, discount, deadline, basis)
        return Schedule(max(due, today), due, total, Decimal("0.00"), deadline, basis)
    return Schedule(max(due, today), due, total, Decimal("0.00"), None, basis)


def trigger_payment(session: Session, invoice: Invoice, settings: Settings, *, today: date | None = None) -> RuleResult:
    """SCHEDULED (with date and amount) or HELD (with why); the Payment is added by `schedule_payment`."""
    fields = invoice.fields or {}
    today = today or date.today()
    vendor = resolve_vendor(session, fields.get("vendor_name")).vendor
    sched = payment_schedule(fields, today)
    currency = fields.get("currency") or "EUR"
    facts = {
        "terms": fields.get("payment_terms"),
        "invoice_date": fields.get("invoice_date"),
        "due_date": fields.get("due_date"),
        "today": today.isoformat(),
        "pay_on": sched.pay_on.isoformat(),
        "amount": money(sched.amount),
        "discount": money(sched.discount),
        "vendor_status": vendor.status if vendor else None,
        "account_on_file": bool(vendor and (vendor.iban or vendor.account_number)),
        "bank_matches_record": None,
    }
    holds: list[dict] = []
    if vendor is None:
        holds.append(reason(Reason.PAYMENT_BLOCKED_VENDOR, f"The vendor '{fields.get('vendor_name')}' has no vendor record to pay."))
    else:
        if vendor.status in (VendorStatus.ON_HOLD, VendorStatus.BLOCKED):
            status = vendor.status.replace("_", " ")
            holds.append(
                reason(Reason.PAYMENT_BLOCKED_VENDOR, f"The vendor {vendor.name} ({vendor.id}) is {status}: the payment of {money(sched.amount)} {currency} is held.")
            )
        if vendor.status == VendorStatus.PENDING_BANK_CONFIRMATION:
            holds.append(reason(Reason.BANK_ACCOUNT_UNVERIFIED, f"The bank details of the new vendor {vendor.name} ({vendor.id}) wait for a second person's confirmation: the payment is held."))
        differs, sentence = bank_account_differs(fields, vendor)
        facts["bank_matches_record"] = not differs
        if differs:
            holds.append(reason(Reason.BANK_ACCOUNT_UNVERIFIED, sentence + " The payment is held until the new account is verified."))
        elif not (vendor.iban or vendor.account_number):
            holds.append(
                reason(Reason.BANK_ACCOUNT_UNVERIFIED, f"The vendor record of {vendor.name} has no bank account to pay into.")
            )
    if holds:
        return RuleResult(Decision.HELD, holds, facts)

    reasons = []
    if sched.discount > 0:
        reasons.append(
            reason(
                Reason.EARLY_PAYMENT_DISCOUNT,
                f"Paying on {sched.pay_on}, within the discount window of terms '{fields.get('payment_terms')}', saves {money(sched.discount)} {currency}.",
            )
        )
    if sched.amount < 0:
        # A credit note is not paid out: it is settled against the vendor's open items.
        sentence = f"Credit of {money(-sched.amount)} {currency} from {vendor.name} to offset on {sched.pay_on}."
    else:
        sentence = f"Pay {money(sched.amount)} {currency} to {vendor.name} on {sched.pay_on}: due {sched.due} by {sched.basis}."
    reasons.insert(0, reason(Reason.PAYMENT_SCHEDULED, sentence))
    return RuleResult(Decision.SCHEDULED, reasons, facts)


def _currency_lock(session: Session, currency: str) -> None:
    """Serialise batch selection per currency on Postgres (SQLite serialises writers anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"paymentbatch:{currency}".encode())
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def existing_payment(session: Session, invoice_id: str) -> Payment | None:
    return session.exec(select(Payment).where(Payment.invoice_id == invoice_id)).first()


def open_batch(session: Session, currency: str) -> PaymentBatch:
    """The open payment batch for a currency, created when there is none."""
    batch = session.exec(
        select(PaymentBatch)
        .where(PaymentBatch.currency == currency, PaymentBatch.status == PaymentBatchStatus.OPEN)
        .order_by(PaymentBatch.id)
        .with_for_update(read=True)
    ).first()
    if batch is None:
        batch = PaymentBatch(currency=currency)
        session.add(batch)
        session.flush()
    return batch


def schedule_payment(session: Session, invoice: Invoice, *, today: date | None = None, checked: bool = False) -> Payment | None:
    """The invoice's one Payment, added to the open batch of its currency (existing one returned).

    None when the invoice cannot be paid at all (no vendor record to pay). `checked`: the
    caller has just looked for the invoice's payment in this transaction and found none
    (it is looked for again under the currency lock either way).
    """
    found = None if checked else existing_payment(session, invoice.id)
    if found is not None:
        return found
    fields = invoice.fields or {}
    vendor: Vendor | None = resolve_vendor(session, fields.get("vendor_name")).vendor
    if vendor is None:
        return None
    currency = (fields.get("currency") or vendor.currency or "EUR").upper()
    sched = payment_schedule(fields, today or date.today())
    _currency_lock(session, currency)
    found = existing_payment(session, invoice.id)  # a concurrent run may have won while we waited
    if found is not None:
        return found
    batch = open_batch(session, currency)
    payment = Payment(
        invoice_id=invoice.id,
        batch_id=batch.id,
        vendor_id=vendor.id,
        creditor_name=vendor.name[:200],
        iban=vendor.iban,
        bic=vendor.bic,
        amount=money(sched.amount),
        discount=money(sched.discount),
        currency=currency,
        pay_on=sched.pay_on,
        reference=(fields.get("invoice_id") or invoice.id)[:140],
    )
    try:
        with session.begin_nested():
            session.add(payment)
    except IntegrityError:
        # The unique key on invoice_id: another transaction added it first.
        found = existing_payment(session, invoice.id)
        if found is None:
            raise
        return found
    return payment


def unschedule_payment(session: Session, invoice_id: str) -> bool:
    """Remove an invoice's payment while its batch is still open; False when there is none."""
    payment = existing_payment(session, invoice_id)
    if payment is None:
        return False
    batch = session.get(PaymentBatch, payment.batch_id)
    if batch is not None and batch.status != PaymentBatchStatus.OPEN:
        raise ValueError(f"The payment of invoice {invoice_id} was already exported in batch {batch.id}.")
    session.delete(payment)
    session.flush()
    return True


def scheduled_outcome(payment: Payment, vendor_name: str) -> list[dict]:
    """Reasons for an invoice whose payment already exists (a repeated step)."""
    out = [
        reason(
            Reason.PAYMENT_SCHEDULED,
            f"Pay {payment.amount} {payment.currency} to {vendor_name} on {payment.pay_on} (batch {payment.batch_id}).",
        )
    ]
    if dec(payment.discount):
        out.append(
            reason(Reason.EARLY_PAYMENT_DISCOUNT, f"Paying on {payment.pay_on} saves {payment.discount} {payment.currency} early-payment discount.")
        )
    return out
