"""Reading mails without a server: attachments, attached mails, bombs, malformed MIME."""

from __future__ import annotations

from email.message import EmailMessage

from ingestion.intake import classify
from ingestion.mail import MAX_PARTS, read_mail


def _mail(n_attachments: int = 0, **headers) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = headers.get("sender", "Billing <billing@acme.example>")
    msg["Subject"] = headers.get("subject", "Invoice")
    if "message_id" in headers:
        msg["Message-ID"] = headers["message_id"]
    msg.set_content("see attached")
    for i in range(n_attachments):
        msg.add_attachment(b"%PDF-1.4 tiny " + str(i).encode(), maintype="application", subtype="pdf", filename=f"{i}.pdf")
    return msg


def test_attachments_and_nested_mails_are_found_once():
    inner = _mail(1, subject="inner")
    outer = _mail(2, message_id="<o@x>")
    outer.add_attachment(inner)  # message/rfc822
    outer.add_attachment(bytes(_mail(1, subject="eml")), maintype="application", subtype="octet-stream", filename="fw.eml")
    got = read_mail(bytes(outer))
    assert got.problem is None and got.message_key == "<o@x>" and got.sender == "billing@acme.example"
    assert [name for name, _ in got.documents] == ["0.pdf", "1.pdf", "0.pdf", "0.pdf"]


def test_a_mail_without_message_id_is_keyed_by_its_bytes():
    raw = bytes(_mail(1))
    assert read_mail(raw).message_key.startswith("sha256:")
    assert read_mail(raw).message_key == read_mail(raw).message_key


def _bomb(n: int) -> bytes:
    parts = [b'From: a@b.example\r\nMessage-ID: <bomb@x>\r\nMIME-Version: 1.0\r\n'
             b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n']
    parts += [b'--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="%d.pdf"\r\n'
              b'Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n' % i for i in range(n)]
    return b"".join(parts) + b"--B--\r\n"


def test_ten_thousand_tiny_attachments_are_a_bomb():
    got = read_mail(_bomb(10_000))
    assert got.problem and "mail bomb" in got.problem and str(MAX_PARTS) in got.problem
    assert got.message_key == "<bomb@x>" and got.documents == []


def test_encoded_subject_and_file_names_are_decoded():
    msg = _mail(0, subject="Rechnung Nr. 4711 für März", message_id="<enc@x>")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="Rechnung März.pdf")
    got = read_mail(bytes(msg))
    assert got.subject == "Rechnung Nr. 4711 für März"
    assert [name for name, _ in got.documents] == ["Rechnung März.pdf"]


def test_garbage_never_raises():
    for raw in (b"", b"\x00\xff" * 1000, b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--",
                b"From: x\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!"):
        got = read_mail(raw)
        assert got.message_key.startswith("sha256:")


def test_classify_by_magic_number_not_by_name():
    assert classify(b"%PDF-1.7") == "pdf"
    assert classify(b"\x89PNG\r\n\x1a\n....") == "image"
    assert classify(b"PK\x03\x04zip") == "zip"
    assert classify(b"<?xml version='1.0'?><html/>") == "xml-other"
    assert classify(b"hello") == "unknown"


def test_xml_with_a_document_type_is_refused_as_such():
    xxe = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    assert classify(xxe) == "xml-refused"
    assert classify(xxe.decode().encode("utf-16")) == "xml-refused"


def test_an_attachment_with_broken_base64_is_left_out_with_its_reason():
    raw = (b"From: x@y.z\r\nMessage-ID: <b64@acme>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"zzz\"\r\n\r\n--zzz\r\nContent-Type: application/pdf\r\n"
           b"Content-Disposition: attachment; filename=\"t.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"@@@not base64@@@\r\n--zzz--\r\n")
    got = read_mail(raw)
    assert got.documents == []
    assert got.skipped == ["t.pdf cannot be decoded: malformed MIME (InvalidBase64LengthDefect)"]
