"""Master data in and out over HTTP, waiting invoices re-run, vendors created from invoices.

`POST /v1/master-data/{entity}` takes one entity's CSV (the headers of docs/workspace.md) or
JSON, as the body or as a multipart file: all rows load or none (422 with the errors, line
by line). The invoices waiting for master data then run again.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep, SettingsDep, require_scope
from invoicechain.auth import Identity, Scope
from invoicechain.db.tables import Invoice, Vendor
from invoicechain.ap.rerun import RERUNNABLE_STATUSES
from invoicechain.decisions import InvoiceStatus, Reason

log = logging.getLogger(__name__)
router = APIRouter(tags=["master data"])

AdminKey = Annotated[Identity, require_scope(Scope.ADMIN)]
ReviewKey = Annotated[Identity, require_scope(Scope.REVIEW)]


def _enqueue(invoice_id: str, step: str) -> None:
    from workers.chain import enqueue_invoice

    enqueue_invoice(invoice_id, step)


def _rerun_out(queued, failed) -> list[dict]:
    out = [{"invoice_id": r.invoice_id, "from_step": r.step, "was": r.status, "reasons": list(r.reasons), "queued": True} for r in queued]
    out += [{"invoice_id": r.invoice_id, "from_step": r.step, "was": r.status, "reasons": list(r.reasons), "queued": False,
             "error": problem} for r, problem in failed]
    return out


async def _upload_bytes(request: Request) -> tuple[bytes, str | None]:
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "Send the CSV or JSON as the form field 'file'.")
        return await upload.read(), upload.filename
    return await request.body(), None


@router.post("/v1/master-data/{entity}")
async def import_entity(entity: str, request: Request, settings: SettingsDep, identity: AdminKey) -> dict[str, Any]:
    """Load one entity (vendors, purchase_orders, purchase_order_lines, goods_receipts, posted_invoices)."""
    from invoicechain.ap.rerun import rerun_waiting
    from invoicechain.db.session import session_scope
    from invoicechain.master_data import CSV_ENTITIES, MasterDataError, import_master_data, parse_upload

    if entity not in CSV_ENTITIES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Unknown master data {entity!r}; one of {', '.join(CSV_ENTITIES)}.")
    data, filename = await _upload_bytes(request)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"The upload is over {settings.max_upload_bytes} bytes.")
    if not data.strip():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "The upload is empty.")

    def load():
        parsed = parse_upload(entity, data, filename)
        with session_scope(settings) as session:
            return parsed.counts(), import_master_data(session, parsed)

    try:
        given, written = await run_in_threadpool(load)
    except MasterDataError as exc:
        errors = [{"file": e.file, "line": e.line, "column": e.column, "reason": e.reason} for e in exc.errors]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            {"message": f"{len(errors)} error(s); nothing was loaded.", "errors": errors[:1000]}) from None
    reruns: list[dict] = []
    if settings.rerun_after_import:
        reruns = _rerun_out(*await run_in_threadpool(
            rerun_waiting, settings, _enqueue, actor=identity.owner, why=f"{entity} imported"))
    return {"entity": entity, "read": given[entity], "written": written[entity], "reruns": reruns}


@router.get("/v1/master-data/{entity}.csv")
def export_entity(entity: str, session: SessionDep, _: Annotated[Identity, require_scope(Scope.READ)]):
    """The loaded master data of one entity as CSV (the headers the import reads)."""
    from fastapi.responses import PlainTextResponse

    from invoicechain.master_data import CSV_ENTITIES, master_data_rows, write_csv

    if entity not in CSV_ENTITIES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Unknown master data {entity!r}; one of {', '.join(CSV_ENTITIES)}.")
    return PlainTextResponse(write_csv(master_data_rows(session)[entity], entity), media_type="text/csv")


class RerunIn(BaseModel):
    status: list[str] = Field(default_factory=lambda: [InvoiceStatus.INVALID, InvoiceStatus.NEEDS_REVIEW],
                              json_schema_extra={"items": {"type": "string", "enum": [str(s) for s in RERUNNABLE_STATUSES]}})
    reasons: list[str] = Field(default_factory=lambda: [Reason.UNKNOWN_VENDOR],
                               json_schema_extra={"items": {"type": "string", "enum": [r.value for r in Reason]}})
    invoice_ids: list[str] | None = None


@router.post("/v1/reruns")
def rerun(body: RerunIn, settings: SettingsDep, identity: ReviewKey) -> dict[str, Any]:
    """Run waiting invoices again from the step that stopped them."""
    from invoicechain.ap.rerun import rerun_waiting

    try:
        queued, failed = rerun_waiting(settings, _enqueue, statuses=body.status, reasons=body.reasons,
                                       invoice_ids=body.invoice_ids, actor=identity.owner, why="rerun requested")
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return {"reruns": _rerun_out(queued, failed)}


class VendorIn(BaseModel):
    """Changes to the vendor details read from the invoice (all optional)."""

    id: str | None = None
    name: str | None = None
    address: str | None = None
    country: str | None = None
    tax_id: str | None = None
    currency: str | None = None
    iban: str | None = None
    bic: str | None = None
    account_number: str | None = None
    routing_number: str | None = None
    department: str | None = None


def _vendor_out(v: Vendor) -> dict:
    return v.model_dump(mode="json")


@router.get("/v1/invoices/{invoice_id}/vendor-proposal")
def vendor_proposal(invoice_id: str, session: SessionDep, _: Annotated[Identity, require_scope(Scope.READ)]) -> dict:
    """The vendor record the invoice describes (what "create vendor" would create)."""
    from invoicechain.ap.vendor_onboarding import proposed_vendor
    from invoicechain.ap.vendors import resolve_vendor

    inv = session.get(Invoice, invoice_id)
    if inv is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Invoice {invoice_id} not found.")
    proposal = proposed_vendor(inv)
    match = resolve_vendor(session, proposal["name"]) if proposal["name"] else None
    return {"invoice_id": invoice_id, "vendor": proposal, "known_vendor_id": match.vendor.id if match and match.vendor else None}


@router.post("/v1/invoices/{invoice_id}/create-vendor", status_code=status.HTTP_201_CREATED)
def create_vendor(invoice_id: str, session: SessionDep, settings: SettingsDep, identity: ReviewKey,
                  body: VendorIn | None = None) -> dict:
    """Create the vendor from the invoice; bank details wait for a second person; the invoice re-runs."""
    from invoicechain.ap.rerun import rerun_waiting
    from invoicechain.ap.vendor_onboarding import OnboardingError, create_vendor_from_invoice

    inv = session.get(Invoice, invoice_id)
    if inv is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Invoice {invoice_id} not found.")
    try:
        vendor = create_vendor_from_invoice(session, inv, identity.owner, body.model_dump(exclude_none=True) if body else None)
        session.commit()
    except OnboardingError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT if "already" in str(exc) else status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    queued, failed = rerun_waiting(settings, _enqueue, reasons=[Reason.UNKNOWN_VENDOR], invoice_ids=[invoice_id],
                                   actor=identity.owner, why="vendor created from this invoice")
    return {"vendor": _vendor_out(vendor), "reruns": _rerun_out(queued, failed)}


@router.post("/v1/vendors/{vendor_id}/confirm-bank")
def confirm_bank(vendor_id: str, session: SessionDep, settings: SettingsDep, identity: ReviewKey) -> dict:
    """A second person confirms a new vendor's bank details; its held invoices go on to payment."""
    from invoicechain.ap.rerun import rerun_waiting
    from invoicechain.ap.vendor_onboarding import OnboardingError, confirm_vendor_bank, held_invoices

    try:
        vendor = confirm_vendor_bank(session, vendor_id, identity.owner)
        held = held_invoices(session, vendor)
        session.commit()
    except LookupError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except OnboardingError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_403_FORBIDDEN if "second person" in str(exc) else status.HTTP_409_CONFLICT, str(exc)) from None
    reruns: list[dict] = []
    if held:
        reruns = _rerun_out(*rerun_waiting(settings, _enqueue, statuses=[InvoiceStatus.PAYMENT_HELD], reasons=[Reason.BANK_ACCOUNT_UNVERIFIED],
                                           invoice_ids=held, actor=identity.owner, why="vendor bank details confirmed"))
    return {"vendor": _vendor_out(vendor), "reruns": reruns}
