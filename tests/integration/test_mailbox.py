"""Mailbox ingestion against a real dovecot IMAP server the test starts on 127.0.0.1."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlmodel import select

from ingestion.mailbox import MailboxConfig, poll_mailbox
from ingestion import documents
from invoicechain.db.session import session_scope
from invoicechain.db.tables import Invoice, MailMessage
from tests.integration.imap_server import Dovecot
from tests.integration.mail_factory import mail, small_pdf

DATA = Path(__file__).resolve().parents[1] / "data" / "einvoice"


@pytest.fixture
def imap():
    with Dovecot() as server:
        yield server


def _ledger(settings):
    with session_scope(settings) as s:
        return {r.message_key: r for r in s.exec(select(MailMessage)).all()}


def _invoices(settings):
    with session_scope(settings) as s:
        return s.exec(select(Invoice)).all()


def test_attachments_become_invoices_once_and_junk_is_quarantined(settings, imap):
    inner = mail("Fwd inner", [("inner.pdf", small_pdf("inner"))])
    xml = (DATA / "EN16931_Einfach.ubl.xml").read_bytes()
    mails = [
        mail("Two invoices", [("a.pdf", small_pdf("A")), ("b.pdf", small_pdf("B"))], message_id="<two@acme>"),
        mail("E-invoice", [("rechnung.xml", xml)], message_id="<xml@acme>"),
        mail("Forwarded", forwarded=inner, message_id="<fwd@acme>"),
        mail("As .eml file", eml_file=mail("inner2", [("c.pdf", small_pdf("C"))]), message_id="<eml@acme>"),
        mail("Again A", [("a-copy.pdf", small_pdf("A"))], message_id="<dup@acme>"),  # same bytes as a.pdf
        mail("Hello", body="No attachment here.", message_id="<junk@acme>"),
        mail("Archive", [("invoices.zip", b"PK\x03\x04" + b"\x00" * 100)], message_id="<zip@acme>"),
    ]
    imap.append_many(bytes(m) for m in mails)
    enqueued: list[str] = []
    cfg = MailboxConfig.from_dict(imap.mailbox_settings())
    report = poll_mailbox(cfg, enqueue=enqueued.append, settings=settings)

    assert (report.mails, report.taken, report.quarantined) == (7, 5, 2)
    assert report.invoices == 5 and report.duplicates == 1
    invoices = _invoices(settings)
    assert len(invoices) == 5 and sorted(enqueued) == sorted(i.id for i in invoices)
    by_subject = {i.intake["subject"]: i for i in invoices}
    assert set(by_subject) == {"Two invoices", "E-invoice", "Forwarded", "As .eml file"}
    first = by_subject["E-invoice"].intake
    assert first["channel"] == "mail" and first["message_id"] == "<xml@acme>"
    assert first["sender"] == "billing@acme.example" and first["received_at"].startswith("2026-11-02T09:30")

    ledger = _ledger(settings)
    assert {k: r.status for k, r in ledger.items()} == {
        "<two@acme>": "done", "<xml@acme>": "done", "<fwd@acme>": "done", "<eml@acme>": "done",
        "<dup@acme>": "done", "<junk@acme>": "quarantined", "<zip@acme>": "quarantined"}
    assert "no attachment" in ledger["<junk@acme>"].reason
    assert "zip archive" in ledger["<zip@acme>"].reason
    assert ledger["<dup@acme>"].invoice_ids == ledger["<two@acme>"].invoice_ids[:1]
    assert imap.count("Quarantine") == 2 and imap.count("INBOX") == 5
    assert imap.flagged("$Processed") == 5

    # The e-invoice XML runs through ingest and extraction from its XML.
    xml_invoice = by_subject["E-invoice"]
    assert documents.run_ingest(xml_invoice.id, settings).proceed

    # A second poll, and the same mail delivered again (a move lost with a crashed poller): nothing twice.
    imap.append(bytes(mails[0]))
    again = poll_mailbox(cfg, enqueue=enqueued.append, settings=settings)
    assert (again.mails, again.taken, again.finished_again, again.invoices) == (1, 0, 1, 0)
    assert len(_invoices(settings)) == 5 and len(enqueued) == 5


def test_concurrent_pollers_take_each_mail_once(settings, imap):
    imap.append_many(bytes(mail(f"Invoice {i}", [(f"{i}.pdf", small_pdf(str(i)))], message_id=f"<c{i}@acme>"))
                     for i in range(30))
    cfg = MailboxConfig.from_dict(imap.mailbox_settings(done_folder="Processed"))
    enqueued: list[str] = []
    errors: list[BaseException] = []

    def poll():
        try:
            poll_mailbox(cfg, enqueue=enqueued.append, settings=settings)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=poll) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []  # a mail another poller moved first is no error
    for _ in range(2):  # a move lost to a race is settled by a later poll
        poll_mailbox(cfg, enqueue=enqueued.append, settings=settings)
    assert len(_invoices(settings)) == 30
    assert sorted(enqueued) == sorted(set(enqueued)) and len(enqueued) == 30
    assert len(_ledger(settings)) == 30 and all(r.status == "done" for r in _ledger(settings).values())
    assert imap.count("INBOX") == 0 and imap.count("Processed") == 30


def test_a_poll_that_breaks_off_frees_its_claims_for_the_next_poll(settings, imap, monkeypatch):
    import ingestion.mailbox as mailbox
    from sqlalchemy.exc import OperationalError

    imap.append_many(bytes(mail(f"Invoice {i}", [(f"{i}.pdf", small_pdf(f"r{i}"))], message_id=f"<r{i}@acme>"))
                     for i in range(5))
    cfg = MailboxConfig.from_dict(imap.mailbox_settings(done_folder="Processed"))
    finish, calls = mailbox._finish, []

    def database_goes_away(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise OperationalError("UPDATE mailmessage", {}, ConnectionError("server closed the connection"))
        return finish(*args, **kwargs)

    monkeypatch.setattr(mailbox, "_finish", database_goes_away)
    with pytest.raises(OperationalError):
        poll_mailbox(cfg, settings=settings)
    monkeypatch.setattr(mailbox, "_finish", finish)
    # The claims of the three unfinished mails are gone: the next poll takes them now, not after the lease.
    assert {r.status for r in _ledger(settings).values()} == {"done"} and len(_ledger(settings)) == 2
    report = poll_mailbox(cfg, settings=settings)
    assert report.busy == 0 and report.taken == 3
    # The two mails finished before the break stay until their poller's grace to move them is over.
    assert imap.count("INBOX") == 2 and report.finished_again == 2
    monkeypatch.setattr(mailbox, "SETTLE_GRACE_S", 0)
    assert poll_mailbox(cfg, settings=settings).finished_again == 2
    assert len(_ledger(settings)) == 5 and all(r.status == "done" for r in _ledger(settings).values())
    assert imap.count("INBOX") == 0 and imap.count("Processed") == 5


def test_bad_mail_is_quarantined_with_a_reason_and_the_poller_goes_on(settings, imap, monkeypatch):
    monkeypatch.setattr(settings, "mail_max_bytes", 2_000_000)
    bomb = mail("Bomb", [(f"x{i}.pdf", small_pdf(f"bomb{i}")) for i in range(60)], message_id="<bomb@acme>")
    big = mail("Big", [("big.pdf", b"%PDF-1.4\n" + b"0" * 3_000_000)], message_id="<big@acme>")
    xxe = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    hostile = mail("XXE", [("evil.xml", xxe)], message_id="<xxe@acme>")
    broken = (b"From: x@y.z\r\nMessage-ID: <mime@acme>\r\nSubject: broken\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/mixed; boundary=\"zzz\"\r\n\r\n--zzz\r\nContent-Type: application/pdf\r\n"
              b"Content-Disposition: attachment; filename=\"t.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@not base64@@@")
    good = mail("Good", [("good.pdf", small_pdf("good"))], message_id="<good@acme>")
    locked = mail("Locked", [("locked.pdf", _encrypted(small_pdf("locked")))], message_id="<locked@acme>")
    imap.append_many([bytes(bomb), bytes(big), bytes(hostile), broken, bytes(good), bytes(locked)])
    cfg = MailboxConfig.from_dict(imap.mailbox_settings())
    report = poll_mailbox(cfg, settings=settings)
    ledger = _ledger(settings)
    assert ledger["<good@acme>"].status == "done" and len(ledger["<good@acme>"].invoice_ids) == 1
    assert ledger["<bomb@acme>"].status == "quarantined" and "mail bomb" in ledger["<bomb@acme>"].reason
    assert ledger["<big@acme>"].status == "quarantined" and "over the 2000000-byte limit" in ledger["<big@acme>"].reason
    assert ledger["<xxe@acme>"].status == "quarantined" and "declares a document type" in ledger["<xxe@acme>"].reason
    assert ledger["<mime@acme>"].status == "quarantined" and "malformed MIME" in ledger["<mime@acme>"].reason
    assert report.quarantined == 4
    assert len(_invoices(settings)) == 2
    # A password-protected PDF is an invoice that ends failed at ingest, with its reason.
    (locked_id,) = ledger["<locked@acme>"].invoice_ids
    assert not documents.run_ingest(locked_id, settings).proceed
    with session_scope(settings) as s:
        inv = s.get(Invoice, locked_id)
        assert inv.status == "failed" and "encrypted" in inv.error


def _encrypted(pdf: bytes) -> bytes:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password="open-sesame", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
