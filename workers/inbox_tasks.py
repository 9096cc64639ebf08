"""Mailbox polling on beat: every `mail_poll_interval_s`, each configured mailbox is polled once
(ingestion.mailbox); new invoices are enqueued on their chain. Overlapping polls are safe: the
processed-message ledger gives each mail to one poller."""

from __future__ import annotations

import logging

from invoicechain.config import get_settings
from invoicechain.enums import Queue
from workers.celery_app import app

log = logging.getLogger(__name__)

POLL_TASK = "invoicechain.poll_mailboxes"


@app.task(name=POLL_TASK, ignore_result=True)
def poll_mailboxes() -> list[dict]:
    """One poll of every configured mailbox; returns each mailbox's report."""
    from dataclasses import asdict

    from ingestion.mailbox import poll_all
    from workers.chain import enqueue_invoice

    settings = get_settings()
    if not settings.mailboxes:
        return []
    reports = [asdict(r) for r in poll_all(enqueue=enqueue_invoice, settings=settings)]
    for r in reports:
        log.info("mailbox %s: %s", r["mailbox"], {k: v for k, v in r.items() if k not in ("mailbox", "reasons")})
    return reports


app.conf.task_routes = {**(app.conf.task_routes or {}), POLL_TASK: {"queue": Queue.INGEST}}
app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "poll-mailboxes": {"task": POLL_TASK, "schedule": float(get_settings().mail_poll_interval_s)},
}
