"""The review queue: invoices where the toolchain adapter and the rules disagree, or a person must look."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import func, select

from api.deps import ReadAccess, SessionDep
from api.routes.invoices import invoice_out
from api.schemas import InvoicePage
from invoicechain.db.tables import Invoice
from invoicechain.decisions import InvoiceStatus

router = APIRouter(prefix="/v1/review-queue", tags=["review"])


@router.get("", response_model=InvoicePage, dependencies=[ReadAccess])
def review_queue(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> InvoicePage:
    """Invoices in `needs_review`, oldest first (with their steps, to see what disagreed)."""
    where = Invoice.status == InvoiceStatus.NEEDS_REVIEW
    rows = session.exec(select(Invoice).where(where).order_by(Invoice.updated_at).offset(offset).limit(limit)).all()
    total = session.exec(select(func.count()).select_from(Invoice).where(where)).one()
    return InvoicePage(items=[invoice_out(session, i) for i in rows], total=total, limit=limit, offset=offset)
