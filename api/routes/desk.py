"""The review desk: a web page served by the API (`/desk`) and the reads it needs.

Search and filter the invoices (vendor, status, amount, date, reason), export the list as
CSV, read one invoice with its page images, each field's boxes on the page, its approval
trail and the actions that apply now, and confirm extracted fields. Corrections,
approvals, rejections and uploads use the ordinary invoice routes.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Iterator

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, BeforeValidator, Field
from sqlalchemy import String, cast, or_
from sqlmodel import Session, func, select

from api.deps import SessionDep, SettingsDep, require_scope
from invoicechain import desk
from invoicechain.auth import Identity, Scope
from invoicechain.db.tables import ApprovalAction, AuditEntry, Document, Invoice, Payment, StepRun, utcnow
from invoicechain.decisions import ALL_STEPS, InvoiceStatus, Reason, Step
from invoicechain.enums import StepRunStatus

log = logging.getLogger(__name__)
router = APIRouter(tags=["desk"])
#: What a reason filter looks like (a code such as UNKNOWN_VENDOR; case is ignored).
REASON_CODE = "^(_*[A-Za-z0-9][A-Za-z0-9_]*)?$"


def _iso_date(value):
    """Dates as YYYY-MM-DD only (the lax reading would take `0` for 1970-01-01)."""
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a date is written YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
STATIC = Path(__file__).resolve().parents[1] / "static"
ReadAccess = require_scope(Scope.READ)
_STEP_ORDER = {str(s): i for i, s in enumerate(ALL_STEPS)}
#: Columns of the CSV export, in order.
CSV_COLUMNS = ("id", "status", "vendor_name", "invoice_id", "invoice_date", "due_date", "currency", "total_amount",
               "po_number", "reasons", "error", "created_at", "updated_at")
CSV_MAX_ROWS = 100_000


@router.get("/desk", include_in_schema=False)
def desk_page() -> FileResponse:
    """The review desk page (static HTML and JavaScript; the data calls carry the API key)."""
    return FileResponse(STATIC / "desk.html", media_type="text/html")


@router.get("/desk/{asset}", include_in_schema=False)
def desk_asset(asset: str) -> FileResponse:
    kinds = {"desk.js": "text/javascript", "desk.css": "text/css"}
    if asset not in kinds:
        raise HTTPException(404, "Not Found")
    return FileResponse(STATIC / asset, media_type=kinds[asset])


class DeskConfig(BaseModel):
    max_upload_bytes: int
    refresh_s: float
    statuses: list[str]
    reasons: list[str]


@router.get("/v1/desk/config", response_model=DeskConfig, dependencies=[ReadAccess])
def desk_config(settings: SettingsDep) -> DeskConfig:
    """The upload limit (the same one the API enforces), the refresh period and the vocabularies."""
    return DeskConfig(
        max_upload_bytes=settings.max_upload_bytes,
        refresh_s=settings.desk_refresh_s,
        statuses=[s.value for s in InvoiceStatus],
        reasons=[r.value for r in Reason],
    )


# --- the list -----------------------------------------------------------------------------


class DeskRow(BaseModel):
    id: str
    status: str
    vendor_name: str | None
    invoice_id: str | None
    invoice_date: str | None
    due_date: str | None
    currency: str | None
    total_amount: str | None
    po_number: str | None
    reasons: list[str]
    error: str | None
    created_at: str
    updated_at: str


class DeskPage(BaseModel):
    items: list[DeskRow]
    total: int
    limit: int
    offset: int


def _filters(
    vendor: str | None, status_: str | None, reason: str | None, amount_min: float | None, amount_max: float | None,
    date_from: date | None, date_to: date | None, q: str | None,
) -> list:
    conds = []
    if status_:
        if status_ not in {s.value for s in InvoiceStatus}:
            raise HTTPException(422, f"Unknown status {status_!r}; one of {', '.join(s.value for s in InvoiceStatus)}.")
        conds.append(Invoice.status == status_)
    if vendor:
        conds.append(func.lower(Invoice.fields["vendor_name"].as_string()).contains(vendor.strip().lower(), autoescape=True))
    if amount_min is not None:
        conds.append(Invoice.fields["total_amount"].as_float() >= amount_min)
    if amount_max is not None:
        conds.append(Invoice.fields["total_amount"].as_float() <= amount_max)
    if date_from is not None:
        conds.append(Invoice.fields["invoice_date"].as_string() >= date_from.isoformat())
    if date_to is not None:
        conds.append(Invoice.fields["invoice_date"].as_string() <= date_to.isoformat())
    if reason:
        code = reason.strip().upper()
        if not code.replace("_", "").isalnum():
            raise HTTPException(422, "A reason is a code such as UNKNOWN_VENDOR.")
        in_steps = select(StepRun.invoice_id).where(cast(StepRun.reasons, String).contains(f'"{code}"', autoescape=True))
        conds.append(or_(Invoice.id.in_(in_steps), Invoice.error.contains(code, autoescape=True)))
    if q:
        text = q.strip().lower()
        conds.append(or_(
            Invoice.id.startswith(text, autoescape=True),
            func.lower(Invoice.fields["invoice_id"].as_string()).contains(text, autoescape=True),
            func.lower(Invoice.fields["po_number"].as_string()).contains(text, autoescape=True),
        ))
    return conds


def _reasons_by_invoice(session: Session, ids: list[str]) -> dict[str, list[str]]:
    """Reason codes of each invoice's steps, in chain order, without repeats."""
    out: dict[str, list[str]] = {i: [] for i in ids}
    if not ids:
        return out
    runs = session.exec(select(StepRun).where(StepRun.invoice_id.in_(ids))).all()
    for run in sorted(runs, key=lambda r: (r.invoice_id, _STEP_ORDER.get(r.step, 99))):
        for r in run.reasons or []:
            code = r.get("code") if isinstance(r, dict) else str(r)
            if code and code not in out[run.invoice_id]:
                out[run.invoice_id].append(code)
    return out


def _row(inv: Invoice, reasons: list[str]) -> DeskRow:
    f = inv.fields or {}
    return DeskRow(
        id=inv.id, status=inv.status, vendor_name=f.get("vendor_name"), invoice_id=f.get("invoice_id"),
        invoice_date=f.get("invoice_date"), due_date=f.get("due_date"), currency=f.get("currency"),
        total_amount=f.get("total_amount"), po_number=f.get("po_number"), reasons=reasons, error=inv.error,
        created_at=inv.created_at.isoformat(), updated_at=inv.updated_at.isoformat(),
    )


@router.get("/v1/desk/invoices", response_model=DeskPage, dependencies=[ReadAccess])
def desk_invoices(
    session: SessionDep,
    vendor: Annotated[str | None, Query(max_length=200)] = None,
    status_: Annotated[str | None, Query(alias="status", json_schema_extra={"enum": [s.value for s in InvoiceStatus]})] = None,
    reason: Annotated[str | None, Query(max_length=60, json_schema_extra={"pattern": REASON_CODE})] = None,
    amount_min: float | None = None,
    amount_max: float | None = None,
    date_from: IsoDate | None = None,
    date_to: IsoDate | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DeskPage:
    """Invoices matching every filter given, newest first, with their reason codes."""
    conds = _filters(vendor, status_, reason, amount_min, amount_max, date_from, date_to, q)
    rows = session.exec(
        select(Invoice).where(*conds).order_by(Invoice.created_at.desc(), Invoice.id).offset(offset).limit(limit)
    ).all()
    total = session.exec(select(func.count()).select_from(Invoice).where(*conds)).one()
    reasons = _reasons_by_invoice(session, [r.id for r in rows])
    return DeskPage(items=[_row(r, reasons[r.id]) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/v1/desk/invoices.csv", dependencies=[ReadAccess], response_class=StreamingResponse)
def desk_invoices_csv(
    session: SessionDep,
    vendor: Annotated[str | None, Query(max_length=200)] = None,
    status_: Annotated[str | None, Query(alias="status", json_schema_extra={"enum": [s.value for s in InvoiceStatus]})] = None,
    reason: Annotated[str | None, Query(max_length=60, json_schema_extra={"pattern": REASON_CODE})] = None,
    amount_min: float | None = None,
    amount_max: float | None = None,
    date_from: IsoDate | None = None,
    date_to: IsoDate | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> StreamingResponse:
    """The filtered list as CSV (the same filters as the list; up to 100,000 rows)."""
    conds = _filters(vendor, status_, reason, amount_min, amount_max, date_from, date_to, q)
    invoices = session.exec(
        select(Invoice).where(*conds).order_by(Invoice.created_at.desc(), Invoice.id).limit(CSV_MAX_ROWS)
    ).all()

    def lines() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        for start in range(0, len(invoices), 500):
            chunk = invoices[start:start + 500]
            reasons = _reasons_by_invoice(session, [i.id for i in chunk])
            for inv in chunk:
                row = _row(inv, reasons[inv.id]).model_dump()
                row["reasons"] = " ".join(row["reasons"])
                writer.writerow([_csv_safe(row[c]) for c in CSV_COLUMNS])
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
        if not invoices:
            yield buf.getvalue()

    headers = {"Content-Disposition": f'attachment; filename="invoices-{date.today().isoformat()}.csv"'}
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=headers)


def _csv_safe(value) -> str:
    """A cell a spreadsheet shows as text: a leading =, +, - or @ would start a formula."""
    if value is None:
        return ""
    text = str(value)
    if text[:1] in ("=", "+", "@") or (text[:1] == "-" and not _is_number(text)):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- one invoice ---------------------------------------------------------------------------


class TrailEntry(BaseModel):
    at: str
    actor: str
    action: str
    step: str | None = None
    detail: dict | None = None
    reason: str | None = None


class DeskInvoice(BaseModel):
    id: str
    status: str
    current_step: str | None
    error: str | None
    fields: dict | None
    confidence: dict | None
    boxes: dict[str, list[dict]] = Field(description="Field → boxes on the page (fractions of its width and height).")
    spans: dict[str, list[int]] = Field(description="Field → [start, end] in `text` (documents without pages).")
    page_count: int
    filename: str | None
    is_pdf: bool
    text: str | None
    steps: list[dict]
    trail: list[TrailEntry]
    actions: dict
    payment: dict | None
    updated_at: str


def _document(session: Session, inv: Invoice) -> Document | None:
    return session.get(Document, inv.document_id)


def _is_pdf(doc: Document | None) -> bool:
    return bool(doc) and doc.content_type == "application/pdf"


@router.get("/v1/desk/invoices/{invoice_id}", response_model=DeskInvoice, dependencies=[ReadAccess])
def desk_invoice(invoice_id: str, session: SessionDep, settings: SettingsDep) -> DeskInvoice:
    """One invoice for the desk: fields, their boxes on the page, the trail and the actions that apply."""
    inv = session.get(Invoice, invoice_id)
    if inv is None:
        raise HTTPException(404, f"No invoice {invoice_id}.")
    doc = _document(session, inv)
    runs = sorted(session.exec(select(StepRun).where(StepRun.invoice_id == inv.id)).all(),
                  key=lambda r: _STEP_ORDER.get(r.step, 99))
    decisions = {r.step: r.decision for r in runs if r.status == StepRunStatus.DONE}
    boxes: dict[str, list[dict]] = {}
    if _is_pdf(doc) and inv.grounding and doc.text:
        try:
            boxes = desk.span_boxes((settings.documents_dir / doc.path).read_bytes(), doc.text, inv.grounding)
        except Exception as exc:  # a damaged file shows without highlights, never a 500
            log.warning("no page boxes for %s: %s", invoice_id, exc)
    spans = {k: [g["start"], g["end"]] for k, g in (inv.grounding or {}).items()
             if isinstance(g, dict) and "start" in g and "end" in g}
    trail = [
        TrailEntry(at=a.at.isoformat(), actor=a.actor, action=a.action, step=a.step,
                   detail={"before": a.before, "after": a.after}, reason=a.reason)
        for a in session.exec(select(AuditEntry).where(AuditEntry.invoice_id == inv.id).order_by(AuditEntry.at)).all()
    ]
    for a in session.exec(select(ApprovalAction).where(ApprovalAction.invoice_id == inv.id)).all():
        if not any(t.action in ("approve", "reject") and t.actor == a.approver and t.at[:19] == a.at.isoformat()[:19]
                   for t in trail):
            trail.append(TrailEntry(at=a.at.isoformat(), actor=a.approver, action=a.decision.lower(),
                                    step=str(Step.APPROVAL), detail={"role": a.role}, reason=a.reason))
    trail.sort(key=lambda t: t.at)
    pay = session.exec(select(Payment).where(Payment.invoice_id == inv.id)).first()
    return DeskInvoice(
        id=inv.id, status=inv.status, current_step=inv.current_step, error=inv.error, fields=_schema_order(inv.fields),
        confidence=inv.confidence, boxes=boxes, spans=spans,
        page_count=(doc.page_count or 1) if _is_pdf(doc) else 0,
        filename=doc.filename if doc else None, is_pdf=_is_pdf(doc), text=None if _is_pdf(doc) else (doc.text if doc else None),
        steps=[{"step": r.step, "status": r.status, "decision": r.decision, "reasons": r.reasons or [],
                "mode": r.mode, "agree": r.agree} for r in runs],
        trail=trail, actions=desk.allowed_actions(inv.status, decisions),
        payment=({"batch_id": pay.batch_id, "amount": pay.amount, "currency": pay.currency, "pay_on": pay.pay_on.isoformat(),
                  "creditor_name": pay.creditor_name} if pay else None),
        updated_at=inv.updated_at.isoformat(),
    )


def _schema_order(fields: dict | None) -> dict | None:
    """The fields in the schema's order (a JSONB column keeps its own key order)."""
    if fields is None:
        return None
    from invoicechain.schema import BankDetails, InvoiceFields

    out = {k: fields[k] for k in InvoiceFields.model_fields if k in fields}
    if isinstance(out.get("bank"), dict):
        bank = out["bank"]
        out["bank"] = {k: bank[k] for k in BankDetails.model_fields if k in bank} | bank
    return out | fields


@router.get("/v1/desk/invoices/{invoice_id}/pages/{page}.png", dependencies=[ReadAccess],
            responses={200: {"content": {"image/png": {}}}, 404: {}})
def desk_page_image(invoice_id: str, page: int, session: SessionDep, settings: SettingsDep) -> Response:
    """One page of the invoice's PDF as a PNG (rendered once, then cached beside the document)."""
    inv = session.get(Invoice, invoice_id)
    doc = _document(session, inv) if inv else None
    if doc is None or not _is_pdf(doc):
        raise HTTPException(404, f"Invoice {invoice_id} has no PDF page {page}.")
    if page < 1 or (doc.page_count and page > doc.page_count):
        raise HTTPException(404, f"Invoice {invoice_id} has no page {page}.")
    path = settings.documents_dir / doc.path
    try:
        png = desk.render_page(path, page, settings.data_dir / "pages" / doc.sha256)
    except desk.PageRenderError as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


class ConfirmIn(BaseModel):
    reason: str = Field("fields checked against the document", min_length=1, max_length=500)


@router.post("/v1/desk/invoices/{invoice_id}/confirm", response_model=DeskInvoice)
def desk_confirm(
    invoice_id: str,
    body: ConfirmIn,
    session: SessionDep,
    settings: SettingsDep,
    identity: Annotated[Identity, require_scope(Scope.REVIEW)],
) -> DeskInvoice:
    """A reviewer confirms the extracted fields as they are: each field's confidence becomes 1.0
    (a person checked it), the confirmation is audited and the chain runs again from validation."""
    from invoicechain.ap.review import _reset_from
    from api.routes.invoices import _enqueue

    inv = session.exec(select(Invoice).where(Invoice.id == invoice_id).with_for_update()).first()
    if inv is None:
        raise HTTPException(404, f"No invoice {invoice_id}.")
    if inv.status != InvoiceStatus.NEEDS_REVIEW:
        raise HTTPException(409, f"Invoice {invoice_id} is {inv.status}; only an invoice in review can be confirmed.")
    before = dict(inv.confidence or {})
    inv.confidence = {k: 1.0 for k in (inv.fields or {})}
    session.add(AuditEntry(invoice_id=inv.id, actor=identity.owner, action="confirm_fields", step=str(Step.EXTRACT),
                           before={"confidence": before}, after={"confidence": inv.confidence}, reason=body.reason))
    _reset_from(session, inv, Step.VALIDATE)
    inv.status, inv.current_step, inv.error, inv.updated_at = InvoiceStatus.PROCESSING, str(Step.VALIDATE), None, utcnow()
    session.add(inv)
    session.commit()
    _enqueue(invoice_id, str(Step.VALIDATE))
    return desk_invoice(invoice_id, session, settings)
