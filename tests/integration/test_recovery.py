"""Crash recovery against the real Postgres and Redis: the attempt cap and the dead-letter list,
admin retry over the API, the reaper, and one visibility timeout per queue."""

from __future__ import annotations

from datetime import timedelta

import redis
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from invoicechain.db.session import get_engine
from invoicechain.db.tables import DeadLetter, Invoice, StepAttempt, StepRun, utcnow


def submit(settings, text: str) -> str:
    from ingestion import documents

    return documents.submit_document(text.encode(), "t.txt", "text/plain", settings=settings).invoice.id


def test_attempt_cap_dead_letters_the_invoice_and_an_admin_retries_it(settings, redis_url, monkeypatch, auth_headers):
    from invoicechain import config, recovery

    monkeypatch.setenv("INVOICECHAIN_MAX_STEP_ATTEMPTS", "2")
    config.get_settings.cache_clear()
    s = config.get_settings()
    inv_id = submit(s, "INVOICE 1 total 10.00")
    assert [recovery.start_attempt(inv_id, "extract", s).exhausted for _ in range(3)] == [False, False, True]
    with Session(get_engine(s)) as session:
        inv = session.get(Invoice, inv_id)
        assert inv.status == "failed" and "worker_crashed" in inv.error
        letter = session.exec(select(DeadLetter)).one()
        assert (letter.invoice_id, letter.step, letter.reason, letter.attempts) == (inv_id, "extract", "worker_crashed", 2)
    # A fourth start adds no second letter.
    assert recovery.start_attempt(inv_id, "extract", s).exhausted
    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    from workers.celery_app import reconfigure

    reconfigure(config.get_settings())
    from api.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False, headers=auth_headers) as client:
        listed = client.get("/v1/dead-letters").json()
        assert [d["invoice_id"] for d in listed] == [inv_id]
        r = client.post(f"/v1/dead-letters/{listed[0]['id']}/retry")
        assert r.status_code == 200, r.text
        assert r.json()["retried_by"] == "test-admin"
        assert client.post(f"/v1/dead-letters/{listed[0]['id']}/retry").status_code == 409
        assert client.post("/v1/dead-letters/999999/retry").status_code == 404
        assert client.get("/v1/dead-letters").json() == []
    assert redis.Redis.from_url(redis_url).llen("extract") == 1  # sent again from the step that crashed
    with Session(get_engine(s)) as session:
        assert session.get(Invoice, inv_id).status == "processing"
        assert session.exec(select(StepAttempt)).all() == []
    config.get_settings.cache_clear()


def test_a_handled_end_clears_the_count(settings):
    from invoicechain import recovery

    inv_id = submit(settings, "INVOICE 2 total 10.00")
    for _ in range(5):  # ended each time: never counted as crashes
        assert not recovery.start_attempt(inv_id, "validate_invoice", settings).exhausted
        recovery.end_attempt(inv_id, "validate_invoice", settings)
    with Session(get_engine(settings)) as session:
        assert session.exec(select(StepAttempt)).all() == []


def test_reaper_sends_again_only_invoices_past_their_step_deadline(settings):
    from invoicechain import recovery

    old, fresh, received = (submit(settings, f"INVOICE {i} total 1.00") for i in (3, 4, 5))
    long_ago = utcnow() - timedelta(hours=2)
    with Session(get_engine(settings)) as session:
        for inv_id, started in ((old, long_ago), (fresh, utcnow())):
            inv = session.get(Invoice, inv_id)
            inv.status, inv.current_step, inv.updated_at = "processing", "match_po", started
            session.add(inv)
            session.add(StepRun(invoice_id=inv_id, step="match_po", status="running", started_at=started))
        inv = session.get(Invoice, received)
        inv.updated_at = long_ago
        session.add(inv)
        session.commit()
    sent: list[tuple[str, str]] = []
    stuck = recovery.reap(lambda i, step: sent.append((i, step)), settings)
    assert sorted(sent) == sorted([(old, "match_po"), (received, "ingest")])
    assert {s.invoice_id for s in stuck} == {old, received}
    assert recovery.reap(lambda i, step: sent.append((i, step)), settings) == []  # not again at once


def test_each_queue_has_its_own_visibility_timeout(settings, monkeypatch):
    from invoicechain import config
    from workers.celery_app import broker_settings

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/2")
    config.get_settings.cache_clear()
    s = config.get_settings()
    opts = {q: broker_settings(s, [q])["broker_transport_options"] for q in ("extract", "toolchain", "training")}
    assert opts["toolchain"]["visibility_timeout"] == s.task_time_limit_s + 60 < 15 * 60
    assert opts["extract"]["visibility_timeout"] == s.extract_time_limits(s.extract_batch_size)[1] + 60 < 60 * 60
    assert opts["training"]["visibility_timeout"] > s.training_time_limit_s
    assert len({o["unacked_key"] for o in opts.values()}) == 3  # a long timeout never delays another queue
    config.get_settings.cache_clear()
