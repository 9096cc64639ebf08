"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from invoicechain.enums import AdapterName


class TextSubmission(BaseModel):
    text: str = Field(min_length=1, description="Invoice text, e.g. pasted from an e-mail.")
    filename: str = "pasted.txt"


class Accepted(BaseModel):
    id: str
    status: str
    duplicate: bool = False
    location: str


class StepOut(BaseModel):
    step: str
    status: str
    attempt: int
    decision: str | None
    reasons: list[Any] | None
    mode: str | None = None
    agree: bool | None = None
    model_output: dict | None = None
    rules_output: dict | None = None
    adapter_version: str | None = None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    model_ms: float | None


class DocumentOut(BaseModel):
    id: str
    filename: str
    sha256: str
    content_type: str
    size: int
    page_count: int | None
    ocr: dict | None = None  # scans and photos: engine, per-page confidence, or why OCR did not read it


class ApprovalOut(BaseModel):
    """A person's approval or rejection of the invoice."""

    approver: str
    role: str | None
    decision: str
    reason: str | None
    at: datetime


class InvoiceOut(BaseModel):
    id: str
    status: str
    current_step: str | None
    error: str | None
    source: str
    fields: dict | None
    confidence: dict | None
    grounding: dict | None
    document_type: str | None = None  # invoice, credit_note, receipt, reminder
    paid: bool | None = None  # the document says it is paid already (card, cash, direct debit)
    language: str | None = None  # ISO 639-1, detected from the text
    document: DocumentOut | None = None
    steps: list[StepOut] = []
    approvals: list[ApprovalOut] = []
    created_at: datetime
    updated_at: datetime


class InvoicePage(BaseModel):
    items: list[InvoiceOut]
    total: int
    limit: int
    offset: int


class ApprovalIn(BaseModel):
    """The approver and role are the API key's owner and role; names given here are ignored."""

    reason: str | None = Field(None, max_length=5000)


class RejectionIn(BaseModel):
    reason: str = Field(min_length=1, max_length=5000)


class CorrectionIn(BaseModel):
    """Recorded under the API key's owner."""

    reason: str = Field(min_length=1, max_length=5000)
    fields: dict | None = Field(None, description="Field values to set (same schema as extraction).")
    decisions: dict[str, str] | None = Field(None, description="Step name → decision that overrides the step.")


class TrainingJobIn(BaseModel):
    adapter: str = Field(AdapterName.EXTRACT, min_length=1, max_length=60, pattern=r"^[a-z][a-z0-9_-]*$")
    data_source: str = Field("synthetic", pattern="^(synthetic|upload|dataset|corrections)$")
    params: dict = Field(default_factory=dict)
    dataset: str | None = Field(None, max_length=100, description="Name of a stored dataset (data_source `dataset`).")


class TrainingJobOut(BaseModel):
    id: str
    adapter: str
    status: str
    data_source: str
    params: dict | None
    progress: dict | None
    metrics: dict | None
    adapter_version: int | None
    promoted: bool | None
    error: str | None
    celery_task_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
