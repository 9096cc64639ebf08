"""The dead-letter list: invoices whose step kept crashing its worker; an admin retries them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel

from api.deps import SessionDep, require_scope
from invoicechain.auth import Identity, Scope

router = APIRouter(prefix="/v1/dead-letters", tags=["operations"])
AdminIdentity = Annotated[Identity, require_scope(Scope.ADMIN)]


class DeadLetterOut(BaseModel):
    id: int
    invoice_id: str
    step: str
    reason: str
    detail: str | None
    attempts: int
    created_at: datetime
    retried_at: datetime | None
    retried_by: str | None


@router.get("", response_model=list[DeadLetterOut])
def list_dead_letters(
    session: SessionDep,
    _: AdminIdentity,
    include_retried: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[DeadLetterOut]:
    """Dead letters, newest first (only those not yet retried unless `include_retried`)."""
    from invoicechain import recovery

    rows = recovery.dead_letters(session, include_retried=include_retried, limit=limit, offset=offset)
    return [DeadLetterOut.model_validate(r, from_attributes=True) for r in rows]


@router.post("/{letter_id}/retry", response_model=DeadLetterOut,
             responses={404: {"description": "No such dead letter."}, 409: {"description": "Already retried."},
                        503: {"description": "The queue is unavailable; the letter stays open."}})
def retry_dead_letter(
    letter_id: Annotated[int, Path(ge=1, le=2**31 - 1)], session: SessionDep, identity: AdminIdentity
) -> DeadLetterOut:
    """Run the invoice again from the step that crashed; recorded under the key's owner."""
    from invoicechain import recovery
    from workers.chain import enqueue_invoice

    try:
        letter = recovery.retry_dead_letter(session, letter_id, identity.owner)
    except recovery.RetryRefused as exc:
        session.rollback()
        raise HTTPException(404 if "No dead letter" in str(exc) else 409, str(exc)) from exc
    try:
        enqueue_invoice(letter.invoice_id, letter.step)
    except Exception as exc:
        session.rollback()
        raise HTTPException(503, f"The queue is unavailable ({type(exc).__name__}); retry later.") from exc
    session.commit()
    return DeadLetterOut.model_validate(letter, from_attributes=True)
