"""All SQLModel tables, in families: documents and invoices, step runs and audit,
accounts-payable master data, payments, adapters and training jobs.

JSON columns use JSONB on Postgres and JSON elsewhere. Timestamps are UTC.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel
from invoicechain.clock import utcnow
from invoicechain.decisions import InvoiceStatus
from invoicechain.enums import (
    AdapterStatus,
    MailStatus,
    PaymentBatchStatus,
    PurchaseOrderStatus,
    StepRunStatus,
    TrainingJobStatus,
    VendorStatus,
)

JSONType = JSON().with_variant(JSONB(), "postgresql")




def new_id() -> str:
    return uuid.uuid4().hex


def json_field(default_factory=dict, **kw) -> Any:
    return Field(default_factory=default_factory, sa_column=Column(JSONType, nullable=True), **kw)


# --- documents and invoices ------------------------------------------------------------


class Document(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    sha256: str = Field(index=True, unique=True, max_length=64)
    filename: str = Field(max_length=500)
    content_type: str = Field(max_length=100)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    page_count: int | None = None
    text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    path: str = Field(max_length=1000, description="Bytes on disk, relative to the data dir.")
    created_at: datetime = Field(default_factory=utcnow)
    #: A structured e-invoice's fields and what was read ({"fields", "meta"}), or its reading error.
    einvoice: dict | None = json_field(default_factory=lambda: None)
    #: OCR of a scan or photo: engine, per-page confidence and time, or why it was not read (ingestion.ocr).
    ocr: dict | None = json_field(default_factory=lambda: None)


class Invoice(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    document_id: str = Field(foreign_key="document.id", index=True, unique=True, max_length=32)
    status: str = Field(default=InvoiceStatus.RECEIVED, index=True, max_length=32)
    current_step: str | None = Field(default=None, max_length=32)
    fields: dict | None = json_field(default_factory=lambda: None)
    confidence: dict | None = json_field(default_factory=lambda: None)
    grounding: dict | None = json_field(default_factory=lambda: None)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    idempotency_key: str | None = Field(default=None, index=True, unique=True, max_length=200)
    source: str = Field(default="api", max_length=50)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    #: Where the document came in: a mail (mailbox, message id, sender, subject, received) or a file.
    intake: dict | None = json_field(default_factory=lambda: None)
    #: What the document is (invoice, credit_note, receipt, reminder), whether it says it is already
    #: paid, and its language (ISO 639-1): detected at extraction (extraction.indications).
    document_type: str | None = Field(default=None, max_length=20)
    paid: bool | None = None
    language: str | None = Field(default=None, max_length=8)


class StepRun(SQLModel, table=True):
    """One row per (invoice, step): a redelivered step finds its row and repeats nothing."""

    __table_args__ = (UniqueConstraint("invoice_id", "step", name="uq_steprun_invoice_step"),)

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", index=True, max_length=32)
    step: str = Field(max_length=32)
    attempt: int = 1
    status: str = Field(default=StepRunStatus.RUNNING, max_length=16)
    decision: str | None = Field(default=None, max_length=32)
    reasons: list | None = json_field(default_factory=list)
    model_output: dict | None = json_field(default_factory=lambda: None)
    rules_output: dict | None = json_field(default_factory=lambda: None)
    agree: bool | None = None
    mode: str | None = Field(default=None, max_length=16)
    adapter_version: str | None = Field(default=None, max_length=100)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    duration_ms: float | None = None
    model_ms: float | None = None


class AuditEntry(SQLModel, table=True):
    """A person's change to an invoice: who, when, before, after, why."""

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", index=True, max_length=32)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=50)  # correct_fields | override_decision | approve | reject
    step: str | None = Field(default=None, max_length=32)
    before: dict | None = json_field(default_factory=lambda: None)
    after: dict | None = json_field(default_factory=lambda: None)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime = Field(default_factory=utcnow, index=True)


class MailMessage(SQLModel, table=True):
    """The processed-message ledger: one row per mail of a mailbox, claimed before it is read.

    Unique on (mailbox, message_key), so two pollers never take the same mail, and a mail seen
    again after a restart is only flagged or moved, never read twice.
    """

    __table_args__ = (UniqueConstraint("mailbox", "message_key", name="uq_mailmessage_mailbox_key"),)

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(max_length=200)
    message_key: str = Field(max_length=400, description="Message-ID, or the SHA-256 of the raw mail when it has none.")
    uid: str | None = Field(default=None, max_length=40)
    status: str = Field(default=MailStatus.CLAIMED, index=True, max_length=16)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    sender: str | None = Field(default=None, max_length=300)
    subject: str | None = Field(default=None, max_length=500)
    received_at: datetime | None = None
    invoice_ids: list | None = json_field(default_factory=list)
    claimed_by: str | None = Field(default=None, max_length=100)
    claimed_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


# --- accounts-payable master data ------------------------------------------------------


class Vendor(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(index=True, max_length=200)
    aliases: list | None = json_field(default_factory=list)
    address: str | None = Field(default=None, max_length=300)
    country: str | None = Field(default=None, max_length=2)
    tax_id: str | None = Field(default=None, max_length=40)
    currency: str | None = Field(default=None, max_length=3)
    iban: str | None = Field(default=None, max_length=40)
    bic: str | None = Field(default=None, max_length=20)
    account_number: str | None = Field(default=None, max_length=40)
    routing_number: str | None = Field(default=None, max_length=20)
    status: str = Field(default=VendorStatus.ACTIVE, max_length=32)
    risk: str = Field(default="low", max_length=16)  # low | medium | high
    department: str | None = Field(default=None, max_length=60)
    # A vendor created from an invoice by a reviewer: its bank details wait in status
    # pending_bank_confirmation until another person confirms them.
    proposed_by: str | None = Field(default=None, max_length=200)
    source_invoice_id: str | None = Field(default=None, max_length=32)
    bank_confirmed_by: str | None = Field(default=None, max_length=200)
    bank_confirmed_at: datetime | None = None


class PurchaseOrder(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    po_number: str = Field(index=True, unique=True, max_length=60)
    vendor_id: str = Field(foreign_key="vendor.id", index=True, max_length=40)
    currency: str = Field(max_length=3)
    total: str = Field(max_length=20)
    remaining: str = Field(max_length=20, description="Open balance not yet invoiced.")
    department: str | None = Field(default=None, max_length=60)
    status: str = Field(default=PurchaseOrderStatus.OPEN, max_length=16)
    issued_on: date | None = None


class PurchaseOrderLine(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    po_id: int = Field(foreign_key="purchaseorder.id", index=True)
    line_no: int
    description: str = Field(max_length=300)
    quantity: str = Field(max_length=20)
    unit_price: str = Field(max_length=20)


class GoodsReceipt(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    po_id: int = Field(foreign_key="purchaseorder.id", index=True)
    line_no: int
    quantity_received: str = Field(max_length=20)
    received_on: date | None = None


class PostedInvoice(SQLModel, table=True):
    """Invoices already booked in the ledger before this system saw them (duplicate checks)."""

    id: int | None = Field(default=None, primary_key=True)
    vendor_id: str = Field(foreign_key="vendor.id", index=True, max_length=40)
    invoice_number: str = Field(index=True, max_length=60)
    total_amount: str = Field(max_length=20)
    currency: str = Field(max_length=3)
    invoice_date: date | None = None


class PolicySetting(SQLModel, table=True):
    """Approval-policy values and FX rates that come with the master data (key → JSON value)."""

    key: str = Field(primary_key=True, max_length=60)  # approval_policy | fx_to_eur
    value: dict | None = json_field(default_factory=dict)
    updated_at: datetime = Field(default_factory=utcnow)


# --- approvals and payments ------------------------------------------------------------


class ApprovalAction(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", index=True, max_length=32)
    approver: str = Field(max_length=200)
    role: str | None = Field(default=None, max_length=60)
    decision: str = Field(max_length=16)  # APPROVED | REJECTED
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime = Field(default_factory=utcnow)


class PaymentBatch(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    currency: str = Field(max_length=3, index=True)
    status: str = Field(default=PaymentBatchStatus.OPEN, max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    exported_at: datetime | None = None


class Payment(SQLModel, table=True):
    """At most one payment per invoice, enforced by the unique key."""

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", unique=True, max_length=32)
    batch_id: int = Field(foreign_key="paymentbatch.id", index=True)
    vendor_id: str | None = Field(default=None, max_length=40)
    creditor_name: str = Field(max_length=200)
    iban: str | None = Field(default=None, max_length=40)
    bic: str | None = Field(default=None, max_length=20)
    amount: str = Field(max_length=20)
    discount: str = Field(default="0.00", max_length=20)
    currency: str = Field(max_length=3)
    pay_on: date
    reference: str = Field(max_length=140)
    created_at: datetime = Field(default_factory=utcnow)


# --- adapters and training -------------------------------------------------------------


class AdapterVersion(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_adapter_name_version"),
        Index("ix_adapter_name_status", "name", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=60)
    version: int
    status: str = Field(default=AdapterStatus.CANDIDATE, max_length=16)
    path: str = Field(max_length=1000)
    base_fingerprint: str = Field(max_length=64)
    dataset_fingerprint: str | None = Field(default=None, max_length=64)
    metrics: dict | None = json_field()
    params: dict | None = json_field()
    training_job_id: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    promoted_at: datetime | None = None


class PromotionDecision(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    adapter: str = Field(max_length=60, index=True)
    candidate_version: int
    active_version: int | None = None
    metric: str = Field(max_length=60)
    candidate_metric: float | None = None
    active_metric: float | None = None
    promoted: bool
    forced: bool = False
    reason: str = Field(max_length=300)
    at: datetime = Field(default_factory=utcnow)
    #: The evaluation-set comparison behind the decision (set, documents, overall and per-field figures).
    comparison: dict | None = json_field(default_factory=lambda: None)
    #: Who asked for it (API key owner, CLI user, or the training job).
    actor: str | None = Field(default=None, max_length=200)


class TrainingJob(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    adapter: str = Field(max_length=60)
    status: str = Field(default=TrainingJobStatus.QUEUED, index=True, max_length=16)
    data_source: str = Field(max_length=30)  # upload | synthetic | corrections
    data_path: str | None = Field(default=None, max_length=1000)
    params: dict | None = json_field()
    progress: dict | None = json_field()
    metrics: dict | None = json_field()
    adapter_version: int | None = None
    promoted: bool | None = None
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    celery_task_id: str | None = Field(default=None, max_length=64)
    cancel_requested: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


# --- the step rows of one invoice, read once per step --------------------------------------


def remember_step_runs(session, invoice_id: str, runs) -> None:
    """Keep an invoice's StepRun rows, just read, for the rest of this transaction's step
    (until `forget_step_runs`), so the rules read earlier decisions without another query."""
    session.info[("step_runs", invoice_id)] = (session.get_transaction(), list(runs))


def forget_step_runs(session, invoice_id: str) -> None:
    session.info.pop(("step_runs", invoice_id), None)


def done_decisions(session, invoice_id: str) -> dict[str, str | None]:
    """Step name -> decision of the invoice's finished steps."""
    from sqlmodel import select

    cached = session.info.get(("step_runs", invoice_id))
    if cached is not None and cached[0] is session.get_transaction():
        runs = cached[1]
    else:
        runs = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.status == StepRunStatus.DONE)).all()
    return {r.step: r.decision for r in runs if r.status == StepRunStatus.DONE}


# --- reliability and security ------------------------------------------------------------


class ApiKey(SQLModel, table=True):
    """An API key: only its SHA-256 is stored; the owner and role are the caller's identity."""

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    owner: str = Field(max_length=200)
    role: str | None = Field(default=None, max_length=60)
    scopes: list | None = json_field(default_factory=list)
    prefix: str = Field(index=True, unique=True, max_length=16, description="Public part of the key, for lookup and listing.")
    key_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class StepAttempt(SQLModel, table=True):
    """How often a step of an invoice was started; past the cap the invoice ends `failed`."""

    __table_args__ = (UniqueConstraint("invoice_id", "step", name="uq_stepattempt_invoice_step"),)

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", index=True, max_length=32)
    step: str = Field(max_length=32)
    attempts: int = 0
    last_started_at: datetime = Field(default_factory=utcnow)


class DeadLetter(SQLModel, table=True):
    """A document whose step kept crashing its worker; an admin may send it again."""

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", index=True, max_length=32)
    step: str = Field(max_length=32)
    reason: str = Field(max_length=60)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    retried_at: datetime | None = None
    retried_by: str | None = Field(default=None, max_length=200)
