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

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


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


class Invoice(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    document_id: str = Field(foreign_key="document.id", index=True, unique=True, max_length=32)
    status: str = Field(default="received", index=True, max_length=32)
    current_step: str | None = Field(default=None, max_length=32)
    fields: dict | None = json_field(default_factory=lambda: None)
    confidence: dict | None = json_field(default_factory=lambda: None)
    grounding: dict | None = json_field(default_factory=lambda: None)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    idempotency_key: str | None = Field(default=None, index=True, unique=True, max_length=200)
    source: str = Field(default="api", max_length=50)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class StepRun(SQLModel, table=True):
    """One row per (invoice, step): a redelivered step finds its row and repeats nothing."""

    __table_args__ = (UniqueConstraint("invoice_id", "step", name="uq_steprun_invoice_step"),)

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", index=True, max_length=32)
    step: str = Field(max_length=32)
    attempt: int = 1
    status: str = Field(default="running", max_length=16)  # running | done | failed
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
    status: str = Field(default="active", max_length=16)  # active | on_hold | blocked
    risk: str = Field(default="low", max_length=16)  # low | medium | high
    department: str | None = Field(default=None, max_length=60)


class PurchaseOrder(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    po_number: str = Field(index=True, unique=True, max_length=60)
    vendor_id: str = Field(foreign_key="vendor.id", index=True, max_length=40)
    currency: str = Field(max_length=3)
    total: str = Field(max_length=20)
    remaining: str = Field(max_length=20, description="Open balance not yet invoiced.")
    department: str | None = Field(default=None, max_length=60)
    status: str = Field(default="open", max_length=16)
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
    status: str = Field(default="open", max_length=16)  # open | exported
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
    status: str = Field(default="candidate", max_length=16)  # candidate | active | retired
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


class TrainingJob(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    adapter: str = Field(max_length=60)
    status: str = Field(default="queued", index=True, max_length=16)  # queued|running|done|failed|cancelled
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
        runs = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.status == "done")).all()
    return {r.step: r.decision for r in runs if r.status == "done"}
