"""The reaper on beat: invoices stuck in a running step past its deadline are sent again."""

from __future__ import annotations

import logging

from invoicechain import recovery
from invoicechain.config import get_settings
from invoicechain.enums import Queue
from workers.celery_app import app

log = logging.getLogger(__name__)

REAPER_TASK = "invoicechain.reap_stuck"


@app.task(name=REAPER_TASK, ignore_result=True)
def reap_stuck() -> int:
    """One sweep: every stuck invoice is enqueued again from its step; returns how many."""
    from workers.chain import enqueue_invoice

    return len(recovery.reap(enqueue_invoice, get_settings()))


app.conf.task_routes = {**(app.conf.task_routes or {}), REAPER_TASK: {"queue": Queue.TOOLCHAIN}}
app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "reap-stuck-invoices": {"task": REAPER_TASK, "schedule": float(get_settings().reaper_interval_s)},
}
