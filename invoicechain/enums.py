"""Vocabularies as types: every status, queue and adapter name the system stores or routes by.

Steps, invoice statuses, decisions and reason codes live in `invoicechain.decisions`; the
other vocabularies live here. A `StrEnum` member is its string (`Queue.EXTRACT == "extract"`),
so rows, JSON and Celery messages carry the same values as before; code writes the member,
never the bare string (`tests/unit/invoicechain/test_vocabularies.py` checks it).
"""

from __future__ import annotations

from enum import StrEnum

from invoicechain.decisions import ALL_STEPS, Step


class Queue(StrEnum):
    """Celery queues: one per kind of worker."""

    INGEST = "ingest"
    EXTRACT = "extract"
    TOOLCHAIN = "toolchain"
    TRAINING = "training"


#: The queue each pipeline step runs on (the extract worker holds the model).
STEP_QUEUE: dict[Step, Queue] = {
    step: Queue.INGEST if step == Step.INGEST else Queue.EXTRACT if step == Step.EXTRACT else Queue.TOOLCHAIN
    for step in ALL_STEPS
}


class AdapterName(StrEnum):
    """The LoRA adapters the chain uses."""

    EXTRACT = "extract"  # document -> fields
    TOOLCHAIN = "toolchain"  # fields -> a step's proposed decision


class MailStatus(StrEnum):
    """A mail's row in the intake ledger: claimed by a poller, then done or quarantined."""

    CLAIMED = "claimed"
    DONE = "done"
    QUARANTINED = "quarantined"


class StepRunStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class TrainingJobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TrainingPhase(StrEnum):
    """What a running training job is doing (its `progress.phase`)."""

    TRAINING = "training"
    EVALUATING = "evaluating"
    DONE = "done"


#: A training job in one of these states is over.
FINISHED_JOB_STATUSES = frozenset({TrainingJobStatus.DONE, TrainingJobStatus.FAILED, TrainingJobStatus.CANCELLED})


class AdapterStatus(StrEnum):
    """An adapter version moves candidate -> active -> retired."""

    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"


class VendorStatus(StrEnum):
    ACTIVE = "active"
    ON_HOLD = "on_hold"
    BLOCKED = "blocked"
    PENDING_BANK_CONFIRMATION = "pending_bank_confirmation"


class PurchaseOrderStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class PaymentBatchStatus(StrEnum):
    OPEN = "open"
    EXPORTED = "exported"


class OcrEngine(StrEnum):
    """The OCR engines `ingestion.ocr` can read scans with (Document.ocr["engine"])."""

    TESSERACT = "tesseract"
    RAPIDOCR = "rapidocr-onnxruntime"
