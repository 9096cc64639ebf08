"""Invoices: submit (PDF or text), read, list, approve or reject, correct."""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool
from sqlmodel import Session, func, select

from api.deps import SessionDep, SettingsDep, WriteAccess
from api.schemas import (
    Accepted,
    ApprovalIn,
    ApprovalOut,
    CorrectionIn,
    DocumentOut,
    InvoiceOut,
    InvoicePage,
    RejectionIn,
    StepOut,
    TextSubmission,
)
from invoicechain import pipeline
from invoicechain.db.tables import ApprovalAction, Document, Invoice, StepRun
from invoicechain.decisions import ALL_STEPS, InvoiceStatus, Step

router = APIRouter(prefix="/v1/invoices", tags=["invoices"])
log = logging.getLogger(__name__)
_STEP_ORDER = {str(s): i for i, s in enumerate(ALL_STEPS)}


def invoice_out(session: Session, inv: Invoice, steps: bool = True) -> InvoiceOut:
    doc = session.get(Document, inv.document_id)
    runs, approvals = [], []
    if steps:
        rows = session.exec(select(StepRun).where(StepRun.invoice_id == inv.id)).all()
        runs = [StepOut.model_validate(r, from_attributes=True) for r in sorted(rows, key=lambda r: _STEP_ORDER.get(r.step, 99))]
        actions = session.exec(
            select(ApprovalAction).where(ApprovalAction.invoice_id == inv.id).order_by(ApprovalAction.at)
        ).all()
        approvals = [ApprovalOut.model_validate(a, from_attributes=True) for a in actions]
    return InvoiceOut(
        **inv.model_dump(exclude={"document_id", "idempotency_key"}),
        document=DocumentOut.model_validate(doc, from_attributes=True) if doc else None,
        steps=runs,
        approvals=approvals,
    )


def _enqueue(invoice_id: str, start: str = "ingest") -> None:
    from workers.chain import enqueue_invoice

    try:
        enqueue_invoice(invoice_id, start)
    except Exception as exc:  # the document is stored; resubmitting it enqueues again
        log.exception("could not enqueue invoice %s", invoice_id)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"The invoice {invoice_id} is stored but the queue is unavailable ({type(exc).__name__}); submit it again later.",
        ) from exc


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted, dependencies=[WriteAccess],
             responses={200: {"model": Accepted, "description": "The same document was submitted before."},
                        413: {}, 415: {}, 422: {}, 503: {}})
async def submit_invoice(
    request: Request,
    response: Response,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Accepted:
    """A multipart PDF (`file`) or JSON `{"text": ...}`; answers 202 with the id and a Location."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.max_upload_bytes + 64 * 1024:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"The request is over the {settings.max_upload_bytes}-byte limit.")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=5, max_part_size=settings.max_upload_bytes + 1)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "The multipart form needs a `file` part holding the PDF.")
        data = await upload.read(settings.max_upload_bytes + 1)
        filename, declared = upload.filename or "upload.pdf", upload.content_type
        allow_text = False
    elif ctype.startswith("application/json"):
        try:
            body = TextSubmission.model_validate(json.loads(await request.body()))
        except (ValueError, TypeError) as exc:
            raise HTTPException(422, f"The JSON body must be {{\"text\": ...}}: {exc}") from exc
        data, filename, declared, allow_text = body.text.encode("utf-8"), body.filename, "text/plain", True
    else:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Send a multipart PDF upload or a JSON body with `text`.")
    # Storing (database, disk) and enqueueing block: they run in the thread pool, so the
    # event loop keeps reading other uploads meanwhile.
    try:
        sub = await run_in_threadpool(
            pipeline.submit_document,
            data, filename, declared, idempotency_key=idempotency_key, allow_text=allow_text, settings=settings,
        )
    except pipeline.DocumentRejected as exc:
        raise HTTPException(exc.status_code, str(exc)) from exc
    location = f"/v1/invoices/{sub.invoice.id}"
    response.headers["Location"] = location
    if sub.created or sub.invoice.status == InvoiceStatus.RECEIVED:
        # A stored invoice that never reached the queue is enqueued again on resubmission.
        await run_in_threadpool(_enqueue, sub.invoice.id)
    if not sub.created:
        response.status_code = status.HTTP_200_OK
    return Accepted(id=sub.invoice.id, status=sub.invoice.status, duplicate=not sub.created, location=location)


@router.get("", response_model=InvoicePage)
def list_invoices(
    session: SessionDep,
    status_: Annotated[str | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> InvoicePage:
    """Invoices, newest first, optionally filtered by status."""
    query, count = select(Invoice), select(func.count()).select_from(Invoice)
    if status_:
        if status_ not in {s.value for s in InvoiceStatus}:
            raise HTTPException(422, f"Unknown status {status_!r}; one of {', '.join(s.value for s in InvoiceStatus)}.")
        query, count = query.where(Invoice.status == status_), count.where(Invoice.status == status_)
    rows = session.exec(query.order_by(Invoice.created_at.desc(), Invoice.id).offset(offset).limit(limit)).all()
    return InvoicePage(
        items=[invoice_out(session, inv, steps=False) for inv in rows],
        total=session.exec(count).one(),
        limit=limit,
        offset=offset,
    )


def _get(session: Session, invoice_id: str) -> Invoice:
    inv = session.get(Invoice, invoice_id)
    if inv is None:
        raise HTTPException(404, f"No invoice {invoice_id}.")
    return inv


@router.get("/{invoice_id}", response_model=InvoiceOut)
def get_invoice(invoice_id: str, session: SessionDep) -> InvoiceOut:
    """Status, fields with confidence and grounding, and every step."""
    return invoice_out(session, _get(session, invoice_id))


@router.post("/{invoice_id}/approve", response_model=InvoiceOut, dependencies=[WriteAccess])
def approve_invoice(invoice_id: str, body: ApprovalIn, session: SessionDep) -> InvoiceOut:
    """Record an approval; when the policy's approvals are complete the chain resumes at payment."""
    from invoicechain.ap import review

    inv = _get(session, invoice_id)
    if inv.status != InvoiceStatus.PENDING_APPROVAL:
        raise HTTPException(409, f"Invoice {invoice_id} is {inv.status}, not pending_approval.")
    try:
        outcome = review.approve(session, inv, body.approver, body.role, body.reason)
    except review.ApprovalError as exc:  # e.g. the approver's role may not approve this amount
        session.rollback()
        raise HTTPException(403, str(exc)) from exc
    session.commit()
    if outcome == "approved":
        _enqueue(invoice_id, str(Step.PAYMENT))
    session.refresh(inv)
    return invoice_out(session, inv)


@router.post("/{invoice_id}/reject", response_model=InvoiceOut, dependencies=[WriteAccess])
def reject_invoice(invoice_id: str, body: RejectionIn, session: SessionDep) -> InvoiceOut:
    """End the chain: the invoice is rejected with the reason."""
    from invoicechain.ap import review

    inv = _get(session, invoice_id)
    if inv.status not in (InvoiceStatus.PENDING_APPROVAL, InvoiceStatus.NEEDS_REVIEW):
        raise HTTPException(409, f"Invoice {invoice_id} is {inv.status}; only invoices waiting for a person can be rejected.")
    try:
        review.reject(session, inv, body.approver, body.reason)
    except review.ApprovalError as exc:
        session.rollback()
        raise HTTPException(409, str(exc)) from exc
    session.commit()
    session.refresh(inv)
    return invoice_out(session, inv)


@router.patch("/{invoice_id}", response_model=InvoiceOut, dependencies=[WriteAccess])
def correct_invoice(invoice_id: str, body: CorrectionIn, session: SessionDep) -> InvoiceOut:
    """A reviewer's correction of fields or decisions; audited, and the chain resumes where needed."""
    from pydantic import ValidationError

    from invoicechain.ap import review

    inv = _get(session, invoice_id)
    if not body.fields and not body.decisions:
        raise HTTPException(422, "Give `fields` or `decisions` to correct.")
    if inv.status in (InvoiceStatus.PROCESSING, InvoiceStatus.RECEIVED):
        raise HTTPException(409, f"Invoice {invoice_id} is still being processed.")
    try:
        resume = review.apply_correction(session, inv, body.actor, body.fields, body.decisions, body.reason)
    except (ValueError, ValidationError) as exc:
        session.rollback()
        raise HTTPException(422, str(exc)) from exc
    session.commit()
    if resume:
        _enqueue(invoice_id, resume)
    session.refresh(inv)
    return invoice_out(session, inv)
