"""Invoices: submit (PDF or text), read, list, approve or reject, correct."""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool
from sqlmodel import Session, func, select

from api.deps import ReadAccess, SessionDep, SettingsDep, WriteAccess, require_scope
from invoicechain.auth import Identity, Scope
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
from ingestion import documents
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


def _enqueue(invoice_id: str, start: str = Step.INGEST) -> None:
    from workers.chain import enqueue_invoice

    try:
        enqueue_invoice(invoice_id, start)
    except Exception as exc:  # the document is stored; resubmitting it enqueues again
        log.exception("could not enqueue invoice %s", invoice_id)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"The invoice {invoice_id} is stored but the queue is unavailable ({type(exc).__name__}); submit it again later.",
        ) from exc


def _store_and_enqueue(data: bytes, filename: str, declared: str | None, idempotency_key: str | None,
                       allow_text: bool, settings) -> documents.Submission:
    """Store the document; a new invoice, or a stored one that never reached the queue, is enqueued."""
    sub = documents.submit_document(data, filename, declared, idempotency_key=idempotency_key,
                                    allow_text=allow_text, settings=settings)
    if sub.created or sub.invoice.status == InvoiceStatus.RECEIVED:
        _enqueue(sub.invoice.id)
    return sub


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted, dependencies=[WriteAccess],
             responses={200: {"model": Accepted, "description": "The same document was submitted before."},
                        413: {}, 415: {}, 422: {}, 429: {}, 503: {}})
async def submit_invoice(
    request: Request,
    response: Response,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Accepted:
    """A multipart PDF (`file`) or JSON `{"text": ...}`; answers 202 with the id and a Location."""
    from ingestion.backpressure import Backpressure, check, check_cached

    try:  # too much waits for extraction: the client comes back later (nothing is read or stored)
        if not check_cached(settings):  # the depth measured within the last half second, else Redis
            await run_in_threadpool(check, settings)
    except Backpressure as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
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
    # Storing (database, disk) and enqueueing block: they run in the thread pool, in one hop,
    # so the event loop keeps reading other uploads meanwhile.
    try:
        sub = await run_in_threadpool(_store_and_enqueue, data, filename, declared, idempotency_key, allow_text, settings)
    except documents.DocumentRejected as exc:
        raise HTTPException(exc.status_code, str(exc)) from exc
    location = f"/v1/invoices/{sub.invoice.id}"
    response.headers["Location"] = location
    if not sub.created:
        response.status_code = status.HTTP_200_OK
    return Accepted(id=sub.invoice.id, status=sub.invoice.status, duplicate=not sub.created, location=location)


@router.get("", response_model=InvoicePage, dependencies=[ReadAccess])
def list_invoices(
    session: SessionDep,
    status_: Annotated[str | None, Query(alias="status", json_schema_extra={"enum": [s.value for s in InvoiceStatus]})] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
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


@router.get("/{invoice_id}", response_model=InvoiceOut, dependencies=[ReadAccess])
def get_invoice(invoice_id: str, session: SessionDep) -> InvoiceOut:
    """Status, fields with confidence and grounding, and every step."""
    return invoice_out(session, _get(session, invoice_id))


def _get_locked(session: Session, invoice_id: str) -> Invoice:
    """The invoice row, locked until the transaction ends: decisions on one invoice run one at a time."""
    inv = session.exec(select(Invoice).where(Invoice.id == invoice_id).with_for_update()).first()
    if inv is None:
        raise HTTPException(404, f"No invoice {invoice_id}.")
    return inv


def _already_decided(session: Session, invoice_id: str, actor: str, decision: str) -> bool:
    """True when `actor`'s latest decision on the invoice is `decision` (a resent request)."""
    last = session.exec(
        select(ApprovalAction).where(ApprovalAction.invoice_id == invoice_id, ApprovalAction.approver == actor)
        .order_by(ApprovalAction.at.desc(), ApprovalAction.id.desc())
    ).first()
    return last is not None and last.decision == decision


APPROVE_RESPONSES = {403: {"description": "The key lacks the scope, or its role may not approve this invoice."},
                     404: {"description": "No such invoice."},
                     409: {"description": "The invoice is not waiting for this decision."}}


@router.post("/{invoice_id}/approve", response_model=InvoiceOut, responses=APPROVE_RESPONSES)
def approve_invoice(
    invoice_id: str,
    body: ApprovalIn,
    session: SessionDep,
    identity: Annotated[Identity, require_scope(Scope.APPROVE)],
) -> InvoiceOut:
    """Record the key owner's approval; when the policy's approvals are complete the chain resumes at payment.

    Idempotent per approver: the same approval sent again changes nothing (200).
    """
    from invoicechain.ap import review
    from invoicechain.decisions import Decision

    inv = _get_locked(session, invoice_id)
    if inv.status != InvoiceStatus.PENDING_APPROVAL:
        if _already_decided(session, invoice_id, identity.owner, Decision.APPROVED):
            session.rollback()
            return invoice_out(session, inv)
        raise HTTPException(409, f"Invoice {invoice_id} is {inv.status}, not pending_approval.")
    try:
        outcome = review.approve(session, inv, identity.owner, identity.role, body.reason)
    except review.ApprovalError as exc:  # e.g. the approver's role may not approve this amount
        session.rollback()
        raise HTTPException(403, str(exc)) from exc
    session.commit()
    if outcome == "approved":
        _enqueue(invoice_id, str(Step.PAYMENT))
    session.refresh(inv)
    return invoice_out(session, inv)


@router.post("/{invoice_id}/reject", response_model=InvoiceOut, responses=APPROVE_RESPONSES)
def reject_invoice(
    invoice_id: str,
    body: RejectionIn,
    session: SessionDep,
    identity: Annotated[Identity, require_scope(Scope.APPROVE, Scope.REVIEW)],
) -> InvoiceOut:
    """End the chain: the invoice is rejected with the reason (`approve` scope for a pending
    approval, `review` for an invoice in review). Sent again by the same key: no change (200)."""
    from invoicechain.ap import review
    from invoicechain.decisions import Decision

    inv = _get_locked(session, invoice_id)
    if inv.status == InvoiceStatus.REJECTED and _already_decided(session, invoice_id, identity.owner, Decision.REJECTED):
        session.rollback()
        return invoice_out(session, inv)
    if inv.status not in (InvoiceStatus.PENDING_APPROVAL, InvoiceStatus.NEEDS_REVIEW):
        raise HTTPException(409, f"Invoice {invoice_id} is {inv.status}; only invoices waiting for a person can be rejected.")
    needed = Scope.APPROVE if inv.status == InvoiceStatus.PENDING_APPROVAL else Scope.REVIEW
    if not identity.allows(needed):
        raise HTTPException(403, f"Rejecting an invoice in {inv.status} needs the `{needed}` scope.")
    try:
        review.reject(session, inv, identity.owner, body.reason)
    except review.ApprovalError as exc:
        session.rollback()
        raise HTTPException(409, str(exc)) from exc
    session.commit()
    session.refresh(inv)
    return invoice_out(session, inv)


@router.patch("/{invoice_id}", response_model=InvoiceOut,
              responses={404: {"description": "No such invoice."}, 409: {"description": "The invoice is still being processed."}})
def correct_invoice(
    invoice_id: str,
    body: CorrectionIn,
    session: SessionDep,
    identity: Annotated[Identity, require_scope(Scope.REVIEW)],
) -> InvoiceOut:
    """A reviewer's correction of fields or decisions, recorded under the key's owner; the chain resumes where needed."""
    from pydantic import ValidationError

    from invoicechain.ap import review

    inv = _get_locked(session, invoice_id)  # 404 first: no body makes a missing invoice exist
    if not body.fields and not body.decisions:
        raise HTTPException(422, "Give `fields` or `decisions` to correct.")
    if inv.status in (InvoiceStatus.PROCESSING, InvoiceStatus.RECEIVED):
        raise HTTPException(409, f"Invoice {invoice_id} is still being processed.")
    try:
        resume = review.apply_correction(session, inv, identity.owner, body.fields, body.decisions, body.reason)
    except (ValueError, ValidationError) as exc:
        session.rollback()
        raise HTTPException(422, str(exc)) from exc
    session.commit()
    if resume:
        _enqueue(invoice_id, resume)
    session.refresh(inv)
    return invoice_out(session, inv)
