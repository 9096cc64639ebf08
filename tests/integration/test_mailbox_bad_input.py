"""Hostile and broken mail at full size against a real dovecot IMAP server: a mail bomb of
10,000 tiny attachments, a 100 MB attachment under the default limit, a zip, a
password-protected PDF, malformed MIME, an XML with an external entity and one with a
billion laughs. Each ends quarantined (or, for the locked PDF, an invoice failed at ingest)
with a reason; the poller goes on and the good mails around them are taken."""

from __future__ import annotations

import base64
import io

import pytest
from sqlmodel import select

from ingestion import documents
from ingestion.mailbox import MailboxConfig, poll_mailbox
from invoicechain.config import Settings
from invoicechain.db.session import session_scope
from invoicechain.db.tables import Invoice, MailMessage
from tests.integration.imap_server import Dovecot
from tests.integration.mail_factory import mail, small_pdf


@pytest.fixture
def imap():
    with Dovecot() as server:
        yield server


def _raw_mail(message_id: str, parts: list[bytes]) -> bytes:
    """A multipart mail written by hand: building 10,000 parts with `email` takes minutes."""
    head = (f"From: Acme Billing <billing@acme.example>\r\nTo: ap@buyer.example\r\nSubject: {message_id}\r\n"
            f"Date: Mon, 02 Nov 2026 09:30:00 +0000\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b0und\"\r\n\r\n").encode()
    body = b"".join(b"--b0und\r\n" + p + b"\r\n" for p in parts)
    return head + body + b"--b0und--\r\n"


def _attachment(name: str, data: bytes, ctype: str = "application/pdf") -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (f"Content-Type: {ctype}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + encoded


def _encrypted(pdf: bytes) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password="open-sesame", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Invoice [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"><cbc:ID>&x;</cbc:ID></Invoice>"""

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE Invoice [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"><cbc:ID>&lol9;</cbc:ID></Invoice>"""

MALFORMED = (b"From: x@y.z\r\nMessage-ID: <mime@acme>\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=\"zzz\"\r\n\r\n--zzz\r\nContent-Type: application/pdf\r\n"
             b"Content-Disposition: attachment; filename=\"t.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             b"@@@not base64@@@")


def test_every_kind_of_bad_mail_ends_with_a_reason_and_the_good_mails_around_it_are_taken(settings: Settings, imap):
    assert settings.mail_max_bytes < 100 * 1024 * 1024  # the shipped limit, not one lowered for the test
    bomb = _raw_mail("<bomb@acme>", [_attachment(f"x{i}.pdf", b"%%PDF-1.4 %d" % i) for i in range(10_000)])
    huge = _raw_mail("<huge@acme>", [_attachment("huge.pdf", b"%PDF-1.4\n" + b"0" * (100 * 1024 * 1024))])
    zipped = mail("Archive", [("invoices.zip", _zip({"a.pdf": small_pdf("zipped")}))], message_id="<zip@acme>")
    locked = mail("Locked", [("locked.pdf", _encrypted(small_pdf("locked")))], message_id="<locked@acme>")
    xxe = mail("XXE", [("evil.xml", XXE)], message_id="<xxe@acme>")
    laughs = mail("Laughs", [("lol.xml", LAUGHS)], message_id="<laughs@acme>")
    good = [mail(f"Good {i}", [(f"good{i}.pdf", small_pdf(f"good {i}"))], message_id=f"<good{i}@acme>") for i in range(4)]
    # Good mails between the bad ones: whatever a bad mail does, the next is still taken.
    imap.append_many([bytes(good[0]), bomb, bytes(good[1]), huge, bytes(zipped), bytes(locked), MALFORMED,
                      bytes(good[2]), bytes(xxe), bytes(laughs), bytes(good[3])])
    del huge, bomb

    report = poll_mailbox(MailboxConfig.from_dict(imap.mailbox_settings()), settings=settings)

    with session_scope(settings) as s:
        ledger = {r.message_key: r for r in s.exec(select(MailMessage)).all()}
        invoices = {i.id: i for i in s.exec(select(Invoice)).all()}
    assert len(ledger) == 11 and all(r.reason or r.status == "done" for r in ledger.values())
    status = {k: r.status for k, r in ledger.items()}
    assert status == {**{f"<good{i}@acme>": "done" for i in range(4)}, "<locked@acme>": "done",
                      **{k: "quarantined" for k in ("<bomb@acme>", "<huge@acme>", "<zip@acme>", "<mime@acme>",
                                                    "<xxe@acme>", "<laughs@acme>")}}
    reason = {k: r.reason for k, r in ledger.items()}
    assert "a mail bomb" in reason["<bomb@acme>"]
    assert f"over the {settings.mail_max_bytes}-byte limit" in reason["<huge@acme>"]
    assert "zip archive" in reason["<zip@acme>"]
    assert reason["<mime@acme>"].startswith("malformed MIME (")
    assert "declares a document type" in reason["<xxe@acme>"] and "declares a document type" in reason["<laughs@acme>"]
    assert (report.mails, report.taken, report.quarantined) == (11, 5, 6)
    assert imap.count("Quarantine") == 6 and imap.flagged("$Processed") == 5

    # Nothing else is lost: one invoice per good mail and one for the locked PDF, which ends
    # failed at ingest with its reason; the good ones read.
    assert len(invoices) == 5 and sorted(invoices) == sorted(i for r in ledger.values() for i in r.invoice_ids)
    (locked_id,) = ledger["<locked@acme>"].invoice_ids
    assert not documents.run_ingest(locked_id, settings).proceed
    for i in range(4):
        (good_id,) = ledger[f"<good{i}@acme>"].invoice_ids
        assert documents.run_ingest(good_id, settings).proceed
    with session_scope(settings) as s:
        locked_inv = s.get(Invoice, locked_id)
        assert locked_inv.status == "failed" and "encrypted" in locked_inv.error
