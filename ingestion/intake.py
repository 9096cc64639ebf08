"""One way in for every entry path (mail, drop folder, bulk submit): classify the bytes, store
them through `documents.submit_document` (unique on the document's SHA-256, so the same document
from mail, folder and upload is one invoice), record where it came from, and hand the new
invoice to a caller-given `enqueue` (the services layer never imports the workers).

What is accepted is data (`KINDS`), checked by magic number, not by the name a sender gave.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from invoicechain.config import Settings, get_settings
from ingestion.documents import DocumentRejected, Submission, submit_document

log = logging.getLogger(__name__)

Enqueue = Callable[[str], Any]

#: Document kinds by magic number: (prefix, kind). Images are wrapped in a one-page PDF
#: (the text step then reports a scan, or OCR reads it).
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"II*\x00", "image"),
    (b"MM\x00*", "image"),
    (b"GIF8", "image"),
    (b"PK\x03\x04", "zip"),
    (b"Rar!", "rar"),
    (b"7z\xbc\xaf", "7z"),
    (b"\x1f\x8b", "gzip"),
)
#: Kinds that become invoices, and the content type each is stored as.
KINDS = {"pdf": "application/pdf", "xml": "application/xml", "image": "application/pdf"}
#: Why a kind is refused, for the reason a person reads.
REFUSED = {
    "zip": "a zip archive (archives are not opened)",
    "rar": "a rar archive (archives are not opened)",
    "7z": "a 7z archive (archives are not opened)",
    "gzip": "a gzip archive (archives are not opened)",
    "xml-other": "XML that is no CII or UBL e-invoice",
    "xml-refused": "XML that declares a document type or entities (never expanded, never fetched)",
    "unknown": "not a PDF, image or e-invoice XML",
}


def classify(data: bytes) -> str:
    """The kind of a document by its bytes: pdf, image, xml, xml-other, xml-refused, zip, ..., unknown."""
    head = data.lstrip()[:16]
    for prefix, kind in MAGIC:
        if data.startswith(prefix) or head.startswith(prefix):
            return kind
    if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<" or data.startswith((b"\xff\xfe<", b"\xfe\xff\x00<")):
        from ingestion.einvoice import detect_syntax, refused_declaration

        if refused_declaration(data):
            return "xml-refused"
        return "xml" if detect_syntax(data) else "xml-other"
    return "unknown"


def image_to_pdf(data: bytes) -> bytes:
    """A one-page PDF holding the image (first frame), written deterministically."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        frame = img.convert("RGB") if img.mode not in ("RGB", "L") else img.copy()
    out = io.BytesIO()
    frame.save(out, "PDF", resolution=200.0)
    return out.getvalue()


@dataclass
class Taken:
    """One document offered to intake: what became of it."""

    name: str
    invoice_id: str | None = None
    created: bool = False
    reason: str | None = None  # set when the document was refused


@dataclass
class IntakeResult:
    taken: list[Taken] = field(default_factory=list)

    @property
    def invoices(self) -> list[str]:
        return [t.invoice_id for t in self.taken if t.invoice_id]

    @property
    def refused(self) -> list[Taken]:
        return [t for t in self.taken if t.invoice_id is None]


def take_document(
    data: bytes,
    name: str,
    *,
    source: str,
    intake: dict[str, Any] | None = None,
    enqueue: Enqueue | None = None,
    enqueued: set[str] | None = None,
    settings: Settings | None = None,
) -> Taken:
    """Store one document as an invoice (or find the invoice it already is) and enqueue it once.

    Never raises for bad input: a refused document comes back with its reason.
    """
    settings = settings or get_settings()
    if len(data) > settings.max_upload_bytes:
        return Taken(name, reason=f"{name} is {len(data)} bytes, over the {settings.max_upload_bytes}-byte limit")
    kind = classify(data)
    if kind not in KINDS:
        return Taken(name, reason=f"{name} is {REFUSED.get(kind, REFUSED['unknown'])}")
    key = None
    if kind == "image":
        # The stored PDF is derived; the image's own hash keeps one invoice per image.
        key = f"sha256:{hashlib.sha256(data).hexdigest()}"
        try:
            data = image_to_pdf(data)
        except Exception as exc:  # Pillow raises many types for damaged images
            return Taken(name, reason=f"{name} is an image that cannot be read ({type(exc).__name__})")
        name = name.rsplit(".", 1)[0] + ".pdf"
    try:
        sub: Submission = submit_document(
            data, name, KINDS[kind], idempotency_key=key, source=source, intake=intake, allow_text=False,
            settings=settings,
        )
    except DocumentRejected as exc:
        return Taken(name, reason=f"{name}: {exc}")
    # Only a new invoice is enqueued here: one stored earlier whose enqueue was lost (a crash
    # between the two) is still `received`, and the reaper enqueues it past its deadline.
    if enqueue is not None and sub.created:
        seen = enqueued if enqueued is not None else set()
        if sub.invoice.id not in seen:
            seen.add(sub.invoice.id)
            enqueue(sub.invoice.id)
    return Taken(name, sub.invoice.id, sub.created)
