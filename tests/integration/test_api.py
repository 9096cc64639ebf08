"""The HTTP API against real Postgres and Redis: submission rules, reads, errors that are never 500."""

from __future__ import annotations

import io

import pytest
import redis
from fastapi.testclient import TestClient


def make_pdf(lines: list[str]) -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, invariant=1)
    y = 760
    for line in lines:
        c.drawString(72, y, line)
        y -= 16
    c.showPage()
    c.save()
    return buf.getvalue()


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


def queued(redis_url: str, queue: str = "ingest") -> int:
    return redis.Redis.from_url(redis_url).llen(queue)


def test_pdf_submission_is_stored_and_enqueued(client, redis_url, settings):
    pdf = make_pdf(["INVOICE INV-1001", "ACME Supplies Ltd", "Total: 120.00 EUR"])
    r = client.post("/v1/invoices", files={"file": ("inv.pdf", pdf, "application/pdf")})
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/invoices/{body['id']}" == body["location"]
    assert body["duplicate"] is False
    assert queued(redis_url) == 1  # the chain's first task waits on the ingest queue

    got = client.get(body["location"]).json()
    assert got["status"] == "received"
    assert got["document"]["filename"] == "inv.pdf"
    assert got["document"]["size"] == len(pdf)
    import hashlib

    assert got["document"]["sha256"] == hashlib.sha256(pdf).hexdigest()
    stored = list((settings.documents_dir).rglob("*.pdf"))
    assert len(stored) == 1 and stored[0].read_bytes() == pdf


def test_duplicate_upload_returns_existing_invoice(client, redis_url):
    pdf = make_pdf(["INVOICE INV-2002", "Total: 99.00 USD"])
    first = client.post("/v1/invoices", files={"file": ("a.pdf", pdf, "application/pdf")}).json()
    again = client.post("/v1/invoices", files={"file": ("renamed.pdf", pdf, "application/pdf")})
    assert again.status_code == 200
    assert again.json()["id"] == first["id"] and again.json()["duplicate"] is True
    listing = client.get("/v1/invoices").json()
    assert listing["total"] == 1


def test_idempotency_key_returns_same_invoice(client):
    h = {"Idempotency-Key": "mail-42"}
    a = client.post("/v1/invoices", json={"text": "Invoice 1 total 5.00"}, headers=h).json()
    b = client.post("/v1/invoices", json={"text": "Invoice 1 total 5.00"}, headers=h)
    assert b.status_code == 200 and b.json()["id"] == a["id"]
    # The same key with a different document is refused (IETF Idempotency-Key draft).
    c = client.post("/v1/invoices", json={"text": "Invoice 1 total 5.00 (changed)"}, headers=h)
    assert c.status_code == 422 and "different document" in c.json()["detail"]


def test_text_submission(client, redis_url):
    r = client.post("/v1/invoices", json={"text": "INVOICE 7\nTotal 10.00 EUR"})
    assert r.status_code == 202
    assert client.get(r.json()["location"]).json()["document"]["content_type"] == "text/plain"


def test_too_large_is_413(client, monkeypatch):
    from invoicechain import config

    monkeypatch.setenv("INVOICECHAIN_MAX_UPLOAD_BYTES", "2000")
    config.get_settings.cache_clear()
    big = make_pdf(["x" * 80] * 40) + b"%" * 5000
    r = client.post("/v1/invoices", files={"file": ("big.pdf", big, "application/pdf")})
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]


def test_not_a_pdf_is_415(client):
    r = client.post("/v1/invoices", files={"file": ("x.pdf", b"PK\x03\x04 this is a zip", "application/pdf")})
    assert r.status_code == 415
    r = client.post("/v1/invoices", content=b"<xml/>", headers={"content-type": "application/xml"})
    assert r.status_code == 415


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"txt": "no text key"}},
        {"json": {"text": ""}},
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"files": {"other": ("a.pdf", b"%PDF-1.4", "application/pdf")}},
        {"files": {"file": ("empty.pdf", b"", "application/pdf")}},
    ],
)
def test_bad_requests_get_clear_4xx(client, kwargs):
    r = client.post("/v1/invoices", **kwargs)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["detail"]


def test_reads_and_filters(client):
    ids = [client.post("/v1/invoices", json={"text": f"Invoice {i}"}).json()["id"] for i in range(3)]
    page = client.get("/v1/invoices", params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    assert client.get("/v1/invoices", params={"status": "received"}).json()["total"] == 3
    assert client.get("/v1/invoices", params={"status": "paid_twice"}).status_code == 422
    assert client.get("/v1/invoices/nope").status_code == 404
    assert client.get(f"/v1/invoices/{ids[0]}").json()["steps"] == []


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_reports_broker_down(client, monkeypatch):
    from invoicechain import config
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["broker"].startswith("error")
    # A submission while the broker is down keeps the document and says so, never a 500.
    sub = client.post("/v1/invoices", json={"text": "Invoice stored while the queue is down"})
    assert sub.status_code == 503 and "stored" in sub.json()["detail"]
    assert client.get("/v1/invoices").json()["total"] == 1


def test_refused_training_upload_leaves_no_file(client, settings):
    bad = b'{"instruction": "x", "input": "y"}\n{not json\n'
    r = client.post("/v1/training-jobs", files={"file": ("data.jsonl", bad, "application/jsonl")},
                    data={"adapter": "extract"})
    assert r.status_code == 422, r.text
    assert {p["line"] for p in r.json()["detail"]["problems"]} == {1, 2}
    good = b'{"instruction": "x", "input": "y", "output": "z"}\n'
    r = client.post("/v1/training-jobs", files={"file": ("data.jsonl", good, "application/jsonl")},
                    data={"adapter": "extract", "params": '{"no_such_param": 1}'})
    assert r.status_code == 422 and "no_such_param" in r.text, r.text
    folder = settings.data_dir / "training-data"
    assert not folder.exists() or not list(folder.iterdir())
    assert client.get("/v1/training-jobs").json() == []
