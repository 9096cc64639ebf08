"""The invoice pipeline as plain Python: storing documents, running each step once, and
recording it. Celery tasks (workers/tasks.py), the in-process `process` command and the
API all call these functions; none of them needs a broker.

Exactly-once effects under at-least-once delivery: every step owns one StepRun row,
unique on (invoice_id, step). A step that finds its row `done` repeats nothing and hands
on the stored decision; a row left `running` by a crashed worker is taken over with
`attempt + 1` (the step's own effects are idempotent, e.g. one Payment per invoice).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from invoicechain.config import Settings, get_settings
from invoicechain.db.session import session_scope
from invoicechain.db.tables import Document, Invoice, StepRun, forget_step_runs, remember_step_runs
from invoicechain.decisions import ALL_STEPS, Decision, InvoiceStatus, Step
from invoicechain.pdf import PdfError, pdf_text

log = logging.getLogger(__name__)

PDF_TYPES = {"application/pdf", "application/x-pdf"}
TEXT_TYPES = {"text/plain"}


class DocumentRejected(Exception):
    """An upload that cannot become an invoice (too large, wrong type, empty)."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class Submission:
    invoice: Invoice
    document: Document
    created: bool  # False: the same document (sha256) or idempotency key was seen before


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- documents -------------------------------------------------------------------------


def sniff_content_type(data: bytes, filename: str, declared: str | None) -> str:
    """What the bytes are, by their magic number first: the declared type is a hint only."""
    if data.lstrip()[:5].startswith(b"%PDF"):
        return "application/pdf"
    if filename.lower().endswith(".txt") or (declared or "").startswith("text/"):
        try:
            data.decode("utf-8")
            return "text/plain"
        except UnicodeDecodeError:
            pass
    # A declared PDF without the PDF magic number is not a PDF.
    return "application/octet-stream" if declared in PDF_TYPES or not declared else declared


def submit_document(
    data: bytes,
    filename: str,
    content_type: str | None = None,
    *,
    idempotency_key: str | None = None,
    source: str = "api",
    allow_text: bool = True,
    settings: Settings | None = None,
) -> Submission:
    """Store a document and create its invoice; the same bytes twice give the same invoice."""
    settings = settings or get_settings()
    if len(data) > settings.max_upload_bytes:
        raise DocumentRejected(413, f"The document is {len(data)} bytes, over the {settings.max_upload_bytes}-byte limit.")
    if not data.strip():
        raise DocumentRejected(422, "The document is empty.")
    kind = sniff_content_type(data, filename, content_type)
    if kind not in PDF_TYPES and not (allow_text and kind in TEXT_TYPES):
        if (content_type or "") in PDF_TYPES or filename.lower().endswith(".pdf"):
            raise DocumentRejected(415, "The file is named or declared a PDF but is not one (no %PDF header).")
        raise DocumentRejected(415, f"Only PDF documents are accepted (got {content_type or kind}).")
    digest = hashlib.sha256(data).hexdigest()

    with session_scope(settings) as session:
        if idempotency_key:
            existing = session.exec(select(Invoice).where(Invoice.idempotency_key == idempotency_key)).first()
            if existing:
                return Submission(existing, session.get(Document, existing.document_id), False)
        found = _find_by_sha(session, digest)
        if found:
            return found

    rel = Path(digest[:2]) / f"{digest}{'.pdf' if kind in PDF_TYPES else '.txt'}"
    path = settings.documents_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a reader never sees half a document

    try:
        with session_scope(settings) as session:
            doc = Document(sha256=digest, filename=filename[:500], content_type=kind, size=len(data), path=str(rel))
            session.add(doc)
            session.flush()
            inv = Invoice(document_id=doc.id, idempotency_key=idempotency_key, source=source)
            session.add(inv)
            session.flush()
            return Submission(inv, doc, True)
    except IntegrityError:
        # Lost a race with a concurrent upload of the same bytes or key: return the winner.
        with session_scope(settings) as session:
            if idempotency_key:
                existing = session.exec(select(Invoice).where(Invoice.idempotency_key == idempotency_key)).first()
                if existing:
                    return Submission(existing, session.get(Document, existing.document_id), False)
            found = _find_by_sha(session, digest)
            if found:
                return found
        raise


def _find_by_sha(session: Session, digest: str) -> Submission | None:
    doc = session.exec(select(Document).where(Document.sha256 == digest)).first()
    if doc is None:
        return None
    inv = session.exec(select(Invoice).where(Invoice.document_id == doc.id)).first()
    return Submission(inv, doc, False) if inv else None


def document_bytes(doc: Document, settings: Settings | None = None) -> bytes:
    settings = settings or get_settings()
    return (settings.documents_dir / doc.path).read_bytes()


# --- step bookkeeping ------------------------------------------------------------------


@dataclass
class StepResult:
    """What a step hands to the chain: continue or stop, and the stored decision."""

    invoice_id: str
    step: str
    decision: str | None
    proceed: bool
    replayed: bool = False  # True: the step had already run; nothing was repeated


def claim_step(session: Session, invoice_id: str, step: str, *, deferred: bool = False) -> StepRun:
    """The step's row, created or taken over (attempt + 1); rows already done are returned as they are.

    `deferred`: a new row is not inserted now but by `finish_step`, in the same transaction, so
    a step that runs in one transaction writes its row once (one INSERT, not INSERT + UPDATE).
    A concurrent redelivery then surfaces as an IntegrityError at commit; `_once` runs the step
    again, and it finds the winner's row done.
    """
    query = select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == step)
    # One query for all of the invoice's rows: the step's own, and the earlier steps'
    # decisions that the accounts-payable rules read (`invoicechain.ap.steps.prior_decisions`).
    runs = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id)).all()
    remember_step_runs(session, invoice_id, runs)  # until finish_step
    run = next((r for r in runs if r.step == step), None)
    if run is None:
        if deferred:
            return StepRun(invoice_id=invoice_id, step=step)
        try:
            with session.begin_nested():  # a concurrent redelivery may insert the row first
                run = StepRun(invoice_id=invoice_id, step=step)
                session.add(run)
            return run
        except IntegrityError:
            run = session.exec(query).one()
    if run.status != "done":
        run.attempt += 1  # taking over a run that crashed or failed
        run.status = "running"
        run.started_at = utcnow()
        session.add(run)
        if not deferred:
            session.flush()
    return run


def _once(fn):
    """Run a one-transaction step; when a concurrent delivery of the same step committed its
    row first (unique (invoice_id, step)), run it again: it then replays the stored result."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IntegrityError:
            return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn
    return wrapper


def finish_step(
    session: Session,
    run: StepRun,
    decision: str | None,
    reasons: list | None = None,
    *,
    t0: float,
    model_ms: float | None = None,
    **extra,
) -> None:
    forget_step_runs(session, run.invoice_id)
    run.status = "done"
    run.decision = decision
    run.reasons = reasons or []
    run.finished_at = utcnow()
    run.duration_ms = (time.perf_counter() - t0) * 1000.0
    run.model_ms = model_ms
    for key, value in extra.items():
        setattr(run, key, value)
    session.add(run)


def set_status(session: Session, invoice: Invoice, status: str, *, step: str | None = None, error: str | None = None) -> None:
    invoice.status = status
    if step is not None:
        invoice.current_step = step
    if error is not None:
        invoice.error = error
    invoice.updated_at = utcnow()
    session.add(invoice)


def fail_invoice(invoice_id: str, step: str | None, reason: str, settings: Settings | None = None) -> None:
    """Terminal failure with a reason; the step's row (if any) is marked failed too."""
    with session_scope(settings) as session:
        inv = session.get(Invoice, invoice_id)
        if inv is None:
            return
        if step:
            run = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == step)).first()
            if run is not None and run.status != "done":
                run.status = "failed"
                run.decision = Decision.FAILED
                run.reasons = [{"code": "ERROR", "message": reason[:1000]}]
                run.finished_at = utcnow()
                session.add(run)
        set_status(session, inv, InvoiceStatus.FAILED, step=step, error=reason[:2000])


# --- ingest ----------------------------------------------------------------------------


@_once
def run_ingest(invoice_id: str, settings: Settings | None = None) -> StepResult:
    """PDF text and page count; a PDF without a text layer ends `needs_ocr`, a broken one `failed`."""
    settings = settings or get_settings()
    t0 = time.perf_counter()
    with session_scope(settings) as session:
        inv = session.get(Invoice, invoice_id)
        if inv is None:
            raise LookupError(f"invoice {invoice_id} does not exist")
        run = claim_step(session, invoice_id, Step.INGEST, deferred=True)
        if run.status == "done":
            return StepResult(invoice_id, Step.INGEST, run.decision, run.decision == Decision.OK, replayed=True)
        doc = session.get(Document, inv.document_id)
        set_status(session, inv, InvoiceStatus.PROCESSING, step=Step.INGEST)
        data = document_bytes(doc, settings)
        if doc.content_type in TEXT_TYPES:
            doc.text, doc.page_count = data.decode("utf-8"), 1
            decision, reasons = Decision.OK, []
        else:
            try:
                extracted = pdf_text(data)
                doc.page_count = extracted.page_count
                doc.text = extracted.text
                if extracted.has_text:
                    decision, reasons = Decision.OK, []
                else:
                    decision = Decision.NEEDS_OCR
                    reasons = [{"code": "NO_TEXT_LAYER", "message": f"The PDF has {extracted.page_count} page(s) but no text layer: it is a scan and needs OCR."}]
            except PdfError as exc:
                decision, reasons = Decision.FAILED, [{"code": exc.reason.upper(), "message": str(exc)}]
        session.add(doc)
        finish_step(session, run, decision, reasons, t0=t0)
        if decision == Decision.NEEDS_OCR:
            set_status(session, inv, InvoiceStatus.NEEDS_OCR, error=reasons[0]["message"])
        elif decision == Decision.FAILED:
            set_status(session, inv, InvoiceStatus.FAILED, error=reasons[0]["message"])
        return StepResult(invoice_id, Step.INGEST, decision, decision == Decision.OK)


# --- extract ---------------------------------------------------------------------------


def extraction_inputs(invoice_ids: list[str], settings: Settings | None = None) -> dict[str, str]:
    """Document text for each invoice still waiting for extraction (done ones are left out)."""
    settings = settings or get_settings()
    todo: dict[str, str] = {}
    with session_scope(settings) as session:
        for invoice_id in invoice_ids:
            inv = session.get(Invoice, invoice_id)
            if inv is None:
                continue
            run = claim_step(session, invoice_id, Step.EXTRACT)
            if run.status == "done":
                continue
            set_status(session, inv, InvoiceStatus.PROCESSING, step=Step.EXTRACT)
            doc = session.get(Document, inv.document_id)
            todo[invoice_id] = doc.text or ""
    return todo


def batched_step_start(model_s: float, setup_s: float, batch: int) -> float:
    """perf_counter start of one document's extract step inside a batch, taken just before it
    is saved: the batch's model call, plus this document's share of the batch's setup. The
    step's duration minus the model call is then the document's own bookkeeping, not the
    saves of the documents before it."""
    return time.perf_counter() - model_s - setup_s / max(1, batch)


def extraction_replay(invoice_id: str, settings: Settings | None = None) -> StepResult | None:
    """The stored result when extraction already ran for this invoice, else None."""
    with session_scope(settings) as session:
        run = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == Step.EXTRACT)).first()
        if run is not None and run.status == "done":
            return StepResult(invoice_id, Step.EXTRACT, run.decision, run.decision == Decision.OK, replayed=True)
    return None


#: The reason code of a reconciled field (amounts and line items: RECONCILED_AMOUNT).
_RECONCILED_CODES = {
    "invoice_id": "RECONCILED_IDENTIFIER", "po_number": "RECONCILED_IDENTIFIER",
    "bank.account_number": "RECONCILED_IDENTIFIER",
    "vendor_name": "RECONCILED_TEXT", "vendor_address": "RECONCILED_TEXT", "client_name": "RECONCILED_TEXT",
    "payment_terms": "RECONCILED_TEXT",
}


def save_extraction(
    invoice_id: str, result, *, t0: float, model_ms: float | None = None, settings: Settings | None = None
) -> StepResult:
    """Persist one ExtractionResult (fields, confidence, grounding) as the extract step.

    The step's duration runs from `t0` (perf_counter) to now. `model_ms` is the wall time of
    the batched model call the document took part in (default: the result's share of it);
    see `batched_step_start` for a t0 that leaves out the other documents' bookkeeping.
    """
    with session_scope(settings) as session:
        inv = session.get(Invoice, invoice_id)
        # Claimed by extraction_inputs when the batch started; claim only if that row is gone.
        run = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == Step.EXTRACT)).first()
        if run is None:
            run = claim_step(session, invoice_id, Step.EXTRACT)
        if run.status == "done":
            return StepResult(invoice_id, Step.EXTRACT, run.decision, run.decision == Decision.OK, replayed=True)
        inv.fields = result.fields
        inv.confidence = result.confidence
        inv.grounding = result.grounding
        ungrounded = [k for k, g in (result.grounding or {}).items() if isinstance(g, dict) and g.get("grounded") is False]
        reasons = [{"code": "UNGROUNDED_FIELD", "message": f"The value of {k} was not found in the document text."} for k in ungrounded]
        reconciled = result.reconciled
        reasons += [
            {"code": _RECONCILED_CODES.get(c["field"], "RECONCILED_AMOUNT"),
             "message": f"{c['field']}: {c['before'] or 'null'} -> {c['after'] or 'null'} ({c['reason']})."}
            for c in reconciled
        ]
        output = {"fields": result.fields, "confidence": result.confidence}
        if reconciled:
            output["reconciled"] = reconciled
        finish_step(
            session, run, Decision.OK, reasons, t0=t0, model_ms=result.model_ms if model_ms is None else model_ms,
            model_output=output,
            adapter_version=result.adapter_version, mode="model",
        )
        set_status(session, inv, InvoiceStatus.PROCESSING, step=Step.EXTRACT)
        return StepResult(invoice_id, Step.EXTRACT, Decision.OK, True)


# --- toolchain steps -------------------------------------------------------------------


@_once
def run_toolchain_step(invoice_id: str, step: str, settings: Settings | None = None, proposer=None) -> StepResult:
    """Run one accounts-payable step through invoicechain.ap and record it."""
    from invoicechain.ap.steps import run_step

    settings = settings or get_settings()
    t0 = time.perf_counter()
    with session_scope(settings) as session:
        inv = session.get(Invoice, invoice_id)
        if inv is None:
            raise LookupError(f"invoice {invoice_id} does not exist")
        run = claim_step(session, invoice_id, step, deferred=True)
        if run.status == "done":
            return StepResult(invoice_id, step, run.decision, inv.status == InvoiceStatus.PROCESSING, replayed=True)
        outcome = run_step(step, inv, session, settings, proposer=proposer)
        finish_step(
            session, run, outcome.decision, outcome.reasons, t0=t0, model_ms=outcome.model_ms,
            rules_output=outcome.rules_output, model_output=outcome.model_output,
            agree=outcome.agree, mode=outcome.mode,
            adapter_version=getattr(outcome, "adapter_version", None),
        )
        # One UPDATE of the invoice, after the rules (not one before them and one after).
        set_status(session, inv, outcome.status or InvoiceStatus.PROCESSING, step=step)
        return StepResult(invoice_id, step, outcome.decision, outcome.status is None)


def next_step(step: str) -> str | None:
    order = [str(s) for s in ALL_STEPS]
    i = order.index(str(step))
    return order[i + 1] if i + 1 < len(order) else None


def steps_from(step: str) -> list[str]:
    order = [str(s) for s in ALL_STEPS]
    return order[order.index(str(step)) :]
