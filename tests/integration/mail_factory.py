"""Mails for intake tests and benchmarks: small distinct invoice PDFs, forwarded .eml, junk."""

from __future__ import annotations

import io
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone


def small_pdf(label: str) -> bytes:
    """A one-page PDF with a text layer, distinct per label (deterministic bytes)."""
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, invariant=1)
    c.drawString(72, 720, f"INVOICE {label}")
    c.drawString(72, 700, "Acme Supplies GmbH  Total: 119.00 EUR")
    c.save()
    return buf.getvalue()


def mail(subject: str, attachments=(), *, sender: str = "billing@acme.example", body: str = "Please find attached.",
         message_id: str | None = None, forwarded: EmailMessage | None = None, eml_file: EmailMessage | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Acme Billing <{sender}>"
    msg["To"] = "ap@buyer.example"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc))
    msg["Message-ID"] = message_id or make_msgid(domain="acme.example")
    msg.set_content(body)
    for name, data in attachments:
        maintype, subtype = ("application", "pdf") if name.endswith(".pdf") else \
            ("application", "xml") if name.endswith(".xml") else \
            ("image", "png") if name.endswith(".png") else ("application", "octet-stream")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    if forwarded is not None:
        msg.add_attachment(forwarded)  # message/rfc822
    if eml_file is not None:
        msg.add_attachment(bytes(eml_file), maintype="application", subtype="octet-stream", filename="forwarded.eml")
    return msg
