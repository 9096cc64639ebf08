"""Bad input against the real API, Postgres and Redis: every request gets a clear 4xx, nothing
touches disk before it is accepted, and nothing is stored half."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from invoicechain.db.session import get_engine
from invoicechain.db.tables import Invoice


@pytest.fixture
def client(settings, redis_url, monkeypatch, auth_headers):
    from invoicechain import config
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    from api.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False, headers=auth_headers) as c:
        yield c
    config.get_settings.cache_clear()


def pdf_bytes(text: str = "INVOICE 1 Total 10.00 EUR", password: str | None = None) -> bytes:
    from pypdf import PdfReader, PdfWriter
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, invariant=1)
    c.drawString(72, 720, text)
    c.showPage()
    c.save()
    if password is None:
        return buf.getvalue()
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(buf.getvalue())))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def stored_files(settings) -> list:
    return [p for p in settings.documents_dir.rglob("*") if p.is_file()] if settings.documents_dir.exists() else []


@pytest.mark.parametrize("params", [{"offset": 10**20}, {"offset": -1}, {"limit": 0}, {"limit": 10**6}, {"offset": "x"}])
def test_paging_out_of_bounds_is_422(client, params):
    for path in ("/v1/invoices", "/v1/review-queue", "/v1/dead-letters"):
        r = client.get(path, params=params)
        assert r.status_code == 422, (path, params, r.text)


@pytest.mark.parametrize("path", ["/v1/invoices/%00", "/v1/invoices/abc%1b", "/v1/invoices?status=%00"])
def test_nul_and_control_characters_in_the_url_are_422(client, path):
    r = client.get(path)
    assert r.status_code == 422 and "control character" in r.json()["detail"]


def test_deep_json_is_422_and_huge_json_is_413(client, settings, monkeypatch):
    deep = b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = client.post("/v1/invoices", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "nested deeper" in r.json()["detail"]
    r = client.post("/v1/invoices/0123/approve", content=b'{"reason": ' + b"[" * 100000 + b"}",
                    headers={"content-type": "application/json"})
    assert r.status_code == 422
    from invoicechain import config

    monkeypatch.setenv("INVOICECHAIN_MAX_UPLOAD_BYTES", "1000")
    config.get_settings.cache_clear()
    r = client.post("/v1/invoices", json={"text": "x" * 200_000})
    assert r.status_code == 413


@pytest.mark.parametrize("text", ["INVOICE 9\x00 total 1.00", "INVOICE 9 \x1b[31m total 1.00"])
def test_control_characters_in_pasted_text_are_422_and_nothing_is_stored(client, settings, text):
    r = client.post("/v1/invoices", json={"text": text})
    assert r.status_code == 422, r.text
    assert stored_files(settings) == []
    with Session(get_engine(settings)) as session:
        assert session.exec(select(Invoice)).all() == []


def test_nul_in_a_decision_body_is_422(client):
    r = client.post("/v1/invoices/0123/reject", json={"reason": "bad\u0000"})
    assert r.status_code == 422 and "NUL" in r.json()["detail"]


@pytest.mark.parametrize("name,expected", [
    ("../../etc/passwd.pdf", "passwd.pdf"),
    ("in\x00voice.pdf", "invoice.pdf"),
    ("C:\\Users\\x\\scan<1>.pdf", "scan_1_.pdf"),
    ("\x1b[2J.pdf", "_[2J.pdf"),
    ("a" * 600 + ".pdf", "a" * 196 + ".pdf"),
])
def test_filenames_are_cleaned_before_anything_is_stored(client, settings, name, expected):
    pdf = pdf_bytes(f"INVOICE {len(name)}")
    # Written by hand: HTTP clients percent-encode such names, an attacker's need not.
    body = (b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="' + name.encode("utf-8")
            + b'"\r\nContent-Type: application/pdf\r\n\r\n' + pdf + b"\r\n--b0undary--\r\n")
    r = client.post("/v1/invoices", content=body, headers={"content-type": "multipart/form-data; boundary=b0undary"})
    assert r.status_code == 202, r.text
    doc = client.get(r.json()["location"]).json()["document"]
    assert doc["filename"] == expected
    files = stored_files(settings)
    assert len(files) == 1 and files[0].resolve().is_relative_to(settings.documents_dir.resolve())
    assert files[0].read_bytes() == pdf


def test_idempotency_key_reused_with_another_file_is_422(client):
    h = {"Idempotency-Key": "upload-7"}
    first = client.post("/v1/invoices", files={"file": ("a.pdf", pdf_bytes("INVOICE A"), "application/pdf")}, headers=h)
    assert first.status_code == 202
    same = client.post("/v1/invoices", files={"file": ("a.pdf", pdf_bytes("INVOICE A"), "application/pdf")}, headers=h)
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    other = client.post("/v1/invoices", files={"file": ("b.pdf", pdf_bytes("INVOICE B"), "application/pdf")}, headers=h)
    assert other.status_code == 422 and "different document" in other.json()["detail"]


def test_encrypted_pdf_is_reported_as_encrypted(client, settings):
    from ingestion import documents

    r = client.post("/v1/invoices", files={"file": ("locked.pdf", pdf_bytes(password="s3cret"), "application/pdf")})
    assert r.status_code == 202
    result = documents.run_ingest(r.json()["id"], settings=settings)
    assert result.proceed is False
    inv = client.get(r.json()["location"]).json()
    assert inv["status"] == "failed" and "encrypted_pdf" in inv["error"]
    assert inv["steps"][0]["reasons"][0]["code"] == "ENCRYPTED_PDF"
