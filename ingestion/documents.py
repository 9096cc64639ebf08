"""Documents in: an upload stored once (unique on its SHA-256 or Idempotency-Key), the ingest
step that reads it (text layer, OCR for scans and photos, e-invoice XML, document type and
language), the text handed to extraction, and the extract step's result saved with the
e-invoice's fields merged in. Step bookkeeping (one StepRun per step) is
`invoicechain.pipeline`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from invoicechain.config import Settings, get_settings
from invoicechain.db.session import session_scope
from invoicechain.db.tables import Document, Invoice, StepRun
from invoicechain.decisions import Decision, InvoiceStatus, Reason, Step
from invoicechain.inputs import clean_filename, control_characters
from invoicechain.pdf import PdfError, pdf_text
from invoicechain.pipeline import StepResult, claim_step, finish_step, once_per_step, set_status
from invoicechain.recovery import clear_attempt
from invoicechain.enums import StepRunStatus

log = logging.getLogger(__name__)


PDF_TYPES = {"application/pdf", "application/x-pdf"}


TEXT_TYPES = {"text/plain"}


#: Structured e-invoices (CII or UBL XML); the ingest step reads them (ingestion.einvoice).
XML_TYPES = {"application/xml"}


#: Scans and photos uploaded as images; the ingest step reads them with OCR (ingestion.ocr).
IMAGE_TYPES = {"image/png", "image/jpeg", "image/tiff"}


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


def sniff_content_type(data: bytes, filename: str, declared: str | None) -> str:
    """What the bytes are, by their magic number first: the declared type is a hint only."""
    if data.lstrip()[:5].startswith(b"%PDF"):
        return "application/pdf"
    if image := _sniff_image(data):
        return image
    if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<" and (
        filename.lower().endswith(".xml") or "xml" in (declared or "")
    ):
        return "application/xml"
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
    intake: dict | None = None,
    allow_text: bool = True,
    settings: Settings | None = None,
) -> Submission:
    """Store a document and create its invoice; the same bytes twice give the same invoice.

    The filename is cleaned (no directories, control or reserved characters) before anything
    is stored; text with control characters is refused; an idempotency key sent again with a
    different document is refused (422), as the IETF Idempotency-Key draft asks."""
    settings = settings or get_settings()
    filename = clean_filename(filename, "upload")
    if len(data) > settings.max_upload_bytes:
        raise DocumentRejected(413, f"The document is {len(data)} bytes, over the {settings.max_upload_bytes}-byte limit.")
    if not data.strip():
        raise DocumentRejected(422, "The document is empty.")
    kind = sniff_content_type(data, filename, content_type)
    if kind not in PDF_TYPES | XML_TYPES | IMAGE_TYPES and not (allow_text and kind in TEXT_TYPES):
        if (content_type or "") in PDF_TYPES or filename.lower().endswith(".pdf"):
            raise DocumentRejected(415, "The file is named or declared a PDF but is not one (no %PDF header).")
        raise DocumentRejected(415, f"Only PDF, XML e-invoice and PNG/JPEG/TIFF documents are accepted (got {content_type or kind}).")
    digest = hashlib.sha256(data).hexdigest()
    if kind in TEXT_TYPES and (bad := control_characters(data.decode("utf-8", errors="replace"))):
        raise DocumentRejected(422, f"The text holds control characters ({', '.join(bad[:5])}); remove them and send it again.")

    if idempotency_key:  # a key sent again with another document is refused before anything is stored
        with session_scope(settings) as session:
            if known := _by_idempotency_key(session, idempotency_key, digest):
                return known
            if found := _find_by_sha(session, digest):
                return found

    suffix = {"image/png": ".png", "image/jpeg": ".jpg", "image/tiff": ".tif"}.get(kind)
    rel = Path(digest[:2]) / f"{digest}{suffix or ('.pdf' if kind in PDF_TYPES else '.xml' if kind in XML_TYPES else '.txt')}"
    path = settings.documents_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a reader never sees half a document

    # New documents are the common case: insert at once, in one transaction; a document stored
    # before (unique sha256) surfaces as an IntegrityError and is looked up.
    try:
        with session_scope(settings) as session:
            doc = Document(sha256=digest, filename=filename[:500], content_type=kind, size=len(data), path=str(rel))
            inv = Invoice(document_id=doc.id, idempotency_key=idempotency_key, source=source, intake=intake)
            session.add_all([doc, inv])  # one flush at commit: the document's row, then the invoice's
            return Submission(inv, doc, True)
    except IntegrityError:
        # Stored before, or lost a race with a concurrent upload of the same bytes or key: the winner.
        with session_scope(settings) as session:
            if idempotency_key and (known := _by_idempotency_key(session, idempotency_key, digest)):
                return known
            found = _find_by_sha(session, digest)
            if found:
                return found
        raise


def _by_idempotency_key(session: Session, key: str, digest: str) -> Submission | None:
    """The invoice submitted before with `key`; a different document under the same key is refused."""
    existing = session.exec(select(Invoice).where(Invoice.idempotency_key == key)).first()
    if existing is None:
        return None
    doc = session.get(Document, existing.document_id)
    if doc is not None and doc.sha256 != digest:
        raise DocumentRejected(
            422, f"The Idempotency-Key {key!r} was used for a different document (invoice {existing.id}); use a new key."
        )
    return Submission(existing, doc, False)


def _find_by_sha(session: Session, digest: str) -> Submission | None:
    doc = session.exec(select(Document).where(Document.sha256 == digest)).first()
    if doc is None:
        return None
    inv = session.exec(select(Invoice).where(Invoice.document_id == doc.id)).first()
    return Submission(inv, doc, False) if inv else None


def preload() -> None:
    """Import the document readers (pdfplumber, pypdf, lxml, OCR helpers, the lexicon) now: called
    in a worker's parent process before its pool forks, so that every pool process starts warm
    instead of paying these imports on its first document (and again after each restart)."""
    import pdfplumber  # noqa: F401
    import pypdf  # noqa: F401
    from pdfminer.pdfdocument import PDFPasswordIncorrect  # noqa: F401

    import ingestion.einvoice  # noqa: F401
    import ingestion.ocr  # noqa: F401
    from extraction.indications import detect

    detect("Invoice", None)  # compiles the lexicon's phrases


def document_bytes(doc: Document, settings: Settings | None = None) -> bytes:
    settings = settings or get_settings()
    return (settings.documents_dir / doc.path).read_bytes()


@once_per_step
def run_ingest(invoice_id: str, settings: Settings | None = None) -> StepResult:
    """PDF text and page count; a PDF without a text layer ends `needs_ocr`, a broken one `failed`."""
    settings = settings or get_settings()
    t0 = time.perf_counter()
    with session_scope(settings) as session:
        inv = session.get(Invoice, invoice_id)
        if inv is None:
            raise LookupError(f"invoice {invoice_id} does not exist")
        clear_attempt(session, invoice_id, Step.INGEST)  # committed with the step's result
        run = claim_step(session, invoice_id, Step.INGEST, deferred=True)
        if run.status == StepRunStatus.DONE:
            return StepResult(invoice_id, Step.INGEST, run.decision, run.decision == Decision.OK, replayed=True)
        doc = session.get(Document, inv.document_id)
        set_status(session, inv, InvoiceStatus.PROCESSING, step=Step.INGEST)
        data = document_bytes(doc, settings)
        if doc.content_type in TEXT_TYPES:
            doc.text, doc.page_count = data.decode("utf-8"), 1
            decision, reasons = Decision.OK, []
        elif doc.content_type in XML_TYPES:
            decision, reasons = _ingest_einvoice(doc, data)
        elif doc.content_type in IMAGE_TYPES:
            decision, reasons = _ingest_ocr(doc, data, settings)
        else:
            try:
                extracted = pdf_text(data)
                doc.page_count = extracted.page_count
                doc.text = extracted.text
                if extracted.has_text and not _garbled(extracted.text):
                    decision, reasons = Decision.OK, []
                else:
                    decision, reasons = _ingest_ocr(doc, data, settings)
            except PdfError as exc:
                decision, reasons = Decision.FAILED, [{"code": exc.reason.upper(), "message": str(exc)}]
            if decision != Decision.FAILED:
                reasons += _ingest_einvoice(doc, data)[1]
        if decision == Decision.OK and (script := _unsupported_script(doc.text or "")):
            decision, reasons = Decision.FAILED, [{"code": "UNSUPPORTED_SCRIPT", "message": script}]
        if decision == Decision.OK:
            _indicate(inv, doc)
        session.add(doc)
        finish_step(session, run, decision, reasons, t0=t0)
        if decision == Decision.NEEDS_OCR:
            set_status(session, inv, InvoiceStatus.NEEDS_OCR, error=reasons[0]["message"])
        elif decision == Decision.FAILED:
            set_status(session, inv, InvoiceStatus.FAILED, error=reasons[0]["message"])
        return StepResult(invoice_id, Step.INGEST, decision, decision == Decision.OK)


def _sniff_image(data: bytes) -> str | None:
    from ingestion.ocr import sniff_image

    return sniff_image(data)


def _unsupported_script(text: str) -> str | None:
    from ingestion.ocr import unsupported_script

    return unsupported_script(text)


def _garbled(text: str) -> bool:
    from ingestion.ocr import garbled_text_layer

    return garbled_text_layer(text)


def _indicate(inv: Invoice, doc: Document) -> None:
    """Document type, paid and language from the text (and an e-invoice's type code)."""
    from extraction.indications import detect

    type_code = ((doc.einvoice or {}).get("meta") or {}).get("type_code")
    found = detect(doc.text or "", type_code)
    inv.document_type, inv.paid, inv.language = found.document_type, found.paid, found.language


def _ingest_ocr(doc: Document, data: bytes, settings: Settings) -> tuple[str, list[dict]]:
    """OCR of a scan or photo into doc.text; an unreadable one ends needs_ocr, a broken file failed."""
    from ingestion.ocr import read_scan

    outcome = read_scan(data, doc.content_type, settings)
    doc.ocr = outcome.summary()
    doc.page_count = outcome.page_count or doc.page_count
    if outcome.ok:
        doc.text = outcome.text
        return Decision.OK, [{"code": "OCR", "message": f"Read by OCR: {outcome.page_count} page(s), "
                              f"lowest page confidence {doc.ocr['confidence']:.2f}."}]
    decision = Decision.FAILED if outcome.terminal == InvoiceStatus.FAILED else Decision.NEEDS_OCR
    return decision, [{"code": outcome.code, "message": outcome.message}]


def _ingest_einvoice(doc: Document, data: bytes) -> tuple[str, list[dict]]:
    """Read the document's e-invoice XML (standalone, or embedded in a PDF) into doc.einvoice."""
    from ingestion.einvoice import read_structured, render_text

    doc.einvoice = read_structured(data, doc.content_type)
    if doc.einvoice is None:
        return Decision.OK, []
    if "error" in doc.einvoice:
        reason = {"code": "EINVOICE_UNREADABLE", "message": doc.einvoice["error"]}
        # A standalone XML has nothing else to read; a PDF still has its page for the model.
        return (Decision.FAILED if doc.content_type in XML_TYPES else Decision.OK), [reason]
    if doc.content_type in XML_TYPES:
        doc.text, doc.page_count = render_text(doc.einvoice["fields"]), 0
    return Decision.OK, []


def _save_xml_only(session: Session, inv: Invoice, doc: Document, run: StepRun) -> None:
    """Extraction of a standalone e-invoice: its XML is the whole document, no model reads it."""
    from ingestion.einvoice import XML_SOURCE, xml_confidence, xml_grounding

    t0 = time.perf_counter()
    fields = doc.einvoice["fields"]
    inv.fields, inv.confidence, inv.grounding = fields, xml_confidence(fields), xml_grounding(fields)
    finish_step(session, run, Decision.OK, [], t0=t0, model_ms=0.0,
                model_output={"fields": fields, "confidence": inv.confidence, "source": XML_SOURCE,
                              "einvoice": doc.einvoice["meta"]}, mode=XML_SOURCE)
    set_status(session, inv, InvoiceStatus.PROCESSING, step=Step.EXTRACT)


def _merge_einvoice(inv: Invoice, doc: Document | None, output: dict, reasons: list[dict]) -> None:
    """A PDF with an e-invoice: the XML's fields win (confidence 1.0, source xml); where the page,
    as the model read it, states a field differently, that is a finding for review."""
    from ingestion.einvoice import XML_SOURCE, page_disagreements, xml_confidence, xml_grounding

    if doc is None or not doc.einvoice or "fields" not in doc.einvoice:
        return
    fields = doc.einvoice["fields"]
    mismatches = page_disagreements(fields, inv.fields)
    output["page"] = {"fields": inv.fields, "confidence": inv.confidence, "reconciled": output.pop("reconciled", [])}
    output["fields"], output["source"], output["einvoice"] = fields, XML_SOURCE, doc.einvoice["meta"]
    inv.fields, inv.confidence, inv.grounding = fields, xml_confidence(fields), xml_grounding(fields)
    reasons.clear()  # grounding and reconciliation concern the page reading, which is not kept
    if mismatches:
        output["einvoice_mismatches"] = mismatches
        reasons.append({"code": "EINVOICE_MISMATCH", "fields": [m["field"] for m in mismatches],
                        "message": "The e-invoice XML and the visible page differ: "
                        + "; ".join(f"{m['field']}: XML {m['xml']} / page {m['page']}" for m in mismatches) + "."})


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
            if run.status == StepRunStatus.DONE:
                continue
            set_status(session, inv, InvoiceStatus.PROCESSING, step=Step.EXTRACT)
            doc = session.get(Document, inv.document_id)
            if doc.content_type in XML_TYPES and (doc.einvoice or {}).get("fields") is not None:
                _save_xml_only(session, inv, doc, run)  # replayed as done by the caller
                continue
            todo[invoice_id] = doc.text or ""
    return todo


#: The reason code of a reconciled field (amounts and line items: RECONCILED_AMOUNT).
_RECONCILED_CODES = {
    "invoice_id": Reason.RECONCILED_IDENTIFIER, "po_number": Reason.RECONCILED_IDENTIFIER,
    "bank.account_number": Reason.RECONCILED_IDENTIFIER,
    "vendor_name": Reason.RECONCILED_TEXT, "vendor_address": Reason.RECONCILED_TEXT, "client_name": Reason.RECONCILED_TEXT,
    "payment_terms": Reason.RECONCILED_TEXT,
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
        if run.status == StepRunStatus.DONE:
            return StepResult(invoice_id, Step.EXTRACT, run.decision, run.decision == Decision.OK, replayed=True)
        inv.fields = result.fields
        inv.confidence = result.confidence
        inv.grounding = result.grounding
        ungrounded = [k for k, g in (result.grounding or {}).items() if isinstance(g, dict) and g.get("grounded") is False]
        reasons = [{"code": "UNGROUNDED_FIELD", "message": f"The value of {k} was not found in the document text."} for k in ungrounded]
        reconciled = result.reconciled
        reasons += [
            {"code": _RECONCILED_CODES.get(c["field"], Reason.RECONCILED_AMOUNT),
             "message": f"{c['field']}: {c['before'] or 'null'} -> {c['after'] or 'null'} ({c['reason']})."}
            for c in reconciled
        ]
        output = {"fields": result.fields, "confidence": result.confidence}
        if reconciled:
            output["reconciled"] = reconciled
        if getattr(result, "memory", None):
            output["vendor_memory"] = result.memory
        _merge_einvoice(inv, session.get(Document, inv.document_id), output, reasons)
        finish_step(
            session, run, Decision.OK, reasons, t0=t0, model_ms=result.model_ms if model_ms is None else model_ms,
            model_output=output,
            adapter_version=result.adapter_version, mode="model",
        )
        set_status(session, inv, InvoiceStatus.PROCESSING, step=Step.EXTRACT)
        return StepResult(invoice_id, Step.EXTRACT, Decision.OK, True)

