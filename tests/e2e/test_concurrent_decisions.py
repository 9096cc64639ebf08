"""Decisions under concurrency against a real uvicorn API (two processes), Postgres and Redis:
20 simultaneous approvals of one invoice leave one approval row and resume the chain once."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from sqlmodel import Session, select

from cli.processes import free_port, spawn, stop, wait_ready
from invoicechain.db.session import get_engine
from invoicechain.db.tables import ApprovalAction, AuditEntry, Invoice

pytestmark = [pytest.mark.e2e]
ADMIN_KEY = "e2e-concurrency-admin-key-0123456789"


@pytest.fixture
def api(settings, session, redis_url, tmp_path):
    env = dict(os.environ, DATABASE_URL=settings.database_url, REDIS_URL=redis_url,
               INVOICECHAIN_DATA_DIR=str(settings.data_dir), INVOICECHAIN_API_KEY=ADMIN_KEY)
    port, logs = free_port(), tmp_path / "logs"
    logs.mkdir()
    proc = spawn("api", ["api", "--port", str(port), "--workers", "2"], env, logs)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, logs, timeout=90)
        yield base
    finally:
        stop([proc])


def pending_invoice(session, settings) -> str:
    from invoicechain.ap.steps import run_chain
    from tests.factories import TODAY, add_invoice, invoice_fields

    inv = add_invoice(session, invoice_fields(po_number="PO-2026-0160"))  # one approver needed
    run_chain(session, inv, settings, today=TODAY)
    session.commit()
    assert inv.status == "pending_approval"
    return inv.id


def keys(settings, owners: list[str]) -> dict[str, str]:
    from invoicechain.auth import create_key
    from invoicechain.db.session import session_scope

    with session_scope(settings) as s:
        return {o: create_key(s, o, ["approve", "read"], role="ap_clerk")[1] for o in owners}


def approve_all(base: str, invoice_id: str, headers: list[dict]) -> list[httpx.Response]:
    def one(h):
        return httpx.post(f"{base}/v1/invoices/{invoice_id}/approve", json={"reason": "ok"}, headers=h, timeout=60)

    with ThreadPoolExecutor(max_workers=len(headers)) as pool:
        return list(pool.map(one, headers))


def rows(settings, invoice_id: str):
    with Session(get_engine(settings)) as s:
        actions = s.exec(select(ApprovalAction).where(ApprovalAction.invoice_id == invoice_id)).all()
        audits = s.exec(select(AuditEntry).where(AuditEntry.invoice_id == invoice_id, AuditEntry.action == "approve")).all()
        return actions, audits, s.get(Invoice, invoice_id)


def test_twenty_identical_approvals_give_one_row_and_one_resume(api, settings, session, redis_url):
    invoice_id = pending_invoice(session, settings)
    key = keys(settings, ["kim"])["kim"]
    answers = approve_all(api, invoice_id, [{"Authorization": f"Bearer {key}"}] * 20)
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers if r.status_code != 200]
    actions, audits, inv = rows(settings, invoice_id)
    assert [(a.approver, a.role, a.decision) for a in actions] == [("kim", "ap_clerk", "APPROVED")]
    assert [a.actor for a in audits] == ["kim"]
    assert inv.status == "processing" and inv.current_step == "trigger_payment"
    assert redis.Redis.from_url(redis_url).llen("toolchain") == 1, redis.Redis.from_url(redis_url).keys()  # the payment step was sent once


def test_twenty_different_approvers_at_once_one_wins_the_rest_conflict(api, settings, session, redis_url):
    invoice_id = pending_invoice(session, settings)
    owners = [f"approver-{i}" for i in range(20)]
    made = keys(settings, owners)
    answers = approve_all(api, invoice_id, [{"Authorization": f"Bearer {made[o]}"} for o in owners])
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [409] * 19, [r.text for r in answers]
    actions, audits, _ = rows(settings, invoice_id)
    assert len(actions) == 1 and len(audits) == 1 and actions[0].approver == audits[0].actor
    assert redis.Redis.from_url(redis_url).llen("toolchain") == 1
