"""The review desk's routes and /metrics against real Postgres and Redis, on a real sample PDF."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlmodel import Session

ROOT = Path(__file__).resolve().parents[2]
PDF = ROOT / "samples" / "inv-00000.pdf"


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


def _invoice(settings, data: bytes, name: str, status: str, fields: dict, grounding: dict | None = None,
             steps: dict | None = None, age_s: float = 0) -> str:
    """A stored document and invoice in the state extraction and the rules would leave it."""
    from ingestion import documents
    from invoicechain.db.session import get_engine
    from invoicechain.db.tables import Document, Invoice, StepRun, utcnow
    from invoicechain.pdf import pdf_text

    sub = documents.submit_document(data, name, "application/pdf", settings=settings)
    with Session(get_engine(settings)) as s:
        inv = s.get(Invoice, sub.invoice.id)
        doc = s.get(Document, inv.document_id)
        read = pdf_text(data)  # what the ingest step stores
        doc.text, doc.page_count = read.text, read.page_count
        s.add(doc)
        inv.status, inv.fields, inv.grounding = status, fields, grounding or {}
        inv.confidence = {k: 0.5 for k in fields}
        inv.updated_at = utcnow() - timedelta(seconds=age_s)
        s.add(inv)
        for i, (step, (decision, codes, ms)) in enumerate((steps or {}).items()):
            s.add(StepRun(invoice_id=inv.id, step=step, status="done", decision=decision, duration_ms=ms,
                          reasons=[{"code": c, "message": c} for c in codes]))
        s.commit()
        return inv.id


@pytest.fixture
def invoices(client, settings):
    from invoicechain.pdf import pdf_text

    data = PDF.read_bytes()
    text = pdf_text(data).text
    start = text.index("INV0003382")
    a = _invoice(settings, data, "a.pdf", "needs_review",
                 {"vendor_name": "Garcia, Parker and Anderson Inc.", "invoice_id": "INV0003382", "invoice_date": "2026-08-01",
                  "total_amount": "6503.07", "currency": "CAD", "po_number": "PO26-021063"},
                 {"invoice_id": {"start": start, "end": start + 10}},
                 {"ingest": ("OK", [], 40.0), "extract": ("OK", ["UNGROUNDED_FIELD"], 1800.0),
                  "validate_invoice": ("VALID", ["MODEL_RULES_DISAGREE"], 120.0)}, age_s=600)
    b = _invoice(settings, data + b"\n% another copy\n", "b.pdf", "invalid",
                 {"vendor_name": "=HYPERLINK(\"x\")", "invoice_id": "B-2", "invoice_date": "2026-03-15",
                  "total_amount": "99.50", "currency": "EUR"},
                 None, {"ingest": ("OK", [], 30.0), "extract": ("OK", [], 900.0),
                        "validate_invoice": ("INVALID", ["UNKNOWN_VENDOR"], 80.0)})
    return {"review": a, "invalid": b}


def ids(resp) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {r["id"] for r in resp.json()["items"]}


def test_search_and_filters_find_the_right_invoices(client, invoices):
    a, b = invoices["review"], invoices["invalid"]
    assert ids(client.get("/v1/desk/invoices")) == {a, b}
    assert ids(client.get("/v1/desk/invoices", params={"vendor": "parker"})) == {a}
    assert ids(client.get("/v1/desk/invoices", params={"status": "invalid"})) == {b}
    assert ids(client.get("/v1/desk/invoices", params={"amount_min": 100})) == {a}
    assert ids(client.get("/v1/desk/invoices", params={"amount_max": 100, "amount_min": 99.5})) == {b}
    assert ids(client.get("/v1/desk/invoices", params={"date_from": "2026-07-01"})) == {a}
    assert ids(client.get("/v1/desk/invoices", params={"date_to": "2026-03-31"})) == {b}
    assert ids(client.get("/v1/desk/invoices", params={"reason": "unknown_vendor"})) == {b}
    assert ids(client.get("/v1/desk/invoices", params={"q": "inv0003382"})) == {a}
    row = {r["id"]: r for r in client.get("/v1/desk/invoices").json()["items"]}[a]
    assert row["reasons"] == ["UNGROUNDED_FIELD", "MODEL_RULES_DISAGREE"]
    bad = client.get("/v1/desk/invoices", params={"status": "lost"})
    assert bad.status_code == 422 and "Unknown status" in bad.json()["detail"]


def test_csv_export_holds_the_filtered_list_and_no_formulas(client, invoices):
    resp = client.get("/v1/desk/invoices.csv", params={"currency": "x", "amount_max": 1000})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [r["id"] for r in rows] == [invoices["invalid"]]
    assert rows[0]["reasons"] == "UNKNOWN_VENDOR" and rows[0]["total_amount"] == "99.50"
    assert rows[0]["vendor_name"].startswith("'=")  # a spreadsheet shows it as text


def test_detail_has_boxes_trail_actions_and_the_page_image(client, invoices):
    a = invoices["review"]
    body = client.get(f"/v1/desk/invoices/{a}").json()
    box = body["boxes"]["invoice_id"][0]
    assert box["page"] == 1 and 0 < box["x0"] < box["x1"] < 1 and 0 < box["top"] < box["bottom"] < 1
    assert body["is_pdf"] and body["page_count"] == 1
    assert list(body["fields"]) == ["invoice_id", "vendor_name", "invoice_date", "currency", "total_amount", "po_number"]
    assert body["actions"]["confirm"] and body["actions"]["reject"] and not body["actions"]["approve"]
    assert body["actions"]["overrides"] == {"validate_invoice": ["INVALID"]}
    png = client.get(f"/v1/desk/invoices/{a}/pages/1.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert client.get(f"/v1/desk/invoices/{a}/pages/2.png").status_code == 404
    assert client.get("/v1/desk/invoices/nope").status_code == 404


def test_confirm_records_the_reviewer_and_resumes_at_validation(client, invoices, redis_url):
    a = invoices["review"]
    r = client.post(f"/v1/desk/invoices/{a}/confirm", json={"reason": "checked against the PDF"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "processing" and set(body["confidence"].values()) == {1.0}
    assert [t["action"] for t in body["trail"]] == ["confirm_fields"]
    assert body["trail"][0]["actor"] == "test-admin" and body["trail"][0]["reason"] == "checked against the PDF"
    assert redis.Redis.from_url(redis_url).llen("toolchain") == 1  # validate_invoice is queued
    again = client.post(f"/v1/desk/invoices/{a}/confirm", json={})
    assert again.status_code == 409


def test_desk_needs_a_key_and_serves_its_page(client, invoices):
    bare = TestClient(client.app)
    assert bare.get("/v1/desk/invoices").status_code == 401
    assert bare.get(f"/v1/desk/invoices/{invoices['review']}/pages/1.png").status_code == 401
    page = bare.get("/desk")
    assert page.status_code == 200 and "Review desk" in page.text and "/desk/desk.js" in page.text
    assert bare.get("/desk/desk.js").status_code == 200 and bare.get("/desk/other.js").status_code == 404
    cfg = client.get("/v1/desk/config").json()
    assert cfg["max_upload_bytes"] == 20 * 1024 * 1024 and "needs_review" in cfg["statuses"]


def _metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            return float(m.group(2))
    raise AssertionError(f"no {name}{{{want}}} in metrics")


def test_metrics_tell_queue_depth_latency_outcomes_and_backlog(client, invoices, redis_url):
    r = redis.Redis.from_url(redis_url)
    for _ in range(3):
        r.lpush("extract", b"{}")
    text = client.get("/metrics").text
    assert _metric(text, "invoicechain_queue_depth", queue="extract") == 3
    assert _metric(text, "invoicechain_queue_depth", queue="ingest") == 0
    # two extract steps: 1.8 s and 0.9 s
    assert _metric(text, "invoicechain_step_duration_seconds_bucket", step="extract", le="1.0") == 1
    assert _metric(text, "invoicechain_step_duration_seconds_bucket", step="extract", le="2.5") == 2
    assert _metric(text, "invoicechain_step_duration_seconds_count", step="extract") == 2
    assert _metric(text, "invoicechain_step_duration_seconds_sum", step="extract") == pytest.approx(2.7)
    assert _metric(text, "invoicechain_step_outcomes", step="validate_invoice", decision="INVALID", reason="UNKNOWN_VENDOR") == 1
    assert _metric(text, "invoicechain_review_backlog", status="needs_review") == 1
    assert _metric(text, "invoicechain_review_backlog", status="pending_approval") == 0
    assert _metric(text, "invoicechain_review_oldest_age_seconds", status="needs_review") >= 599
    assert _metric(text, "invoicechain_invoices", status="invalid") == 1
