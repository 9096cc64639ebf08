"""The beat task polls the configured mailboxes and puts each new invoice's chain on the
broker (real dovecot, real Redis, real Postgres)."""

from __future__ import annotations

import json

import redis

from tests.integration.imap_server import Dovecot
from tests.integration.mail_factory import mail, small_pdf


def test_beat_polls_mailboxes_and_enqueues_each_new_invoice_once(settings, redis_url, monkeypatch):
    from invoicechain import config
    from workers.celery_app import app, make_celery, reconfigure
    from workers.inbox_tasks import POLL_TASK, poll_mailboxes

    assert app.conf.beat_schedule["poll-mailboxes"]["task"] == POLL_TASK
    assert app.conf.task_routes[POLL_TASK] == {"queue": "ingest"}
    with Dovecot() as imap:
        monkeypatch.setenv("REDIS_URL", redis_url)
        monkeypatch.setenv("INVOICECHAIN_MAILBOXES", json.dumps([imap.mailbox_settings(done_folder="Processed")]))
        config.get_settings.cache_clear()
        reconfigure(config.get_settings())
        imap.append_many([
            bytes(mail("one", [("1.pdf", small_pdf("beat-1")), ("2.pdf", small_pdf("beat-2"))], message_id="<b1@acme>")),
            bytes(mail("dup", [("1.pdf", small_pdf("beat-1"))], message_id="<b2@acme>")),
        ])
        # A client app of another broker made in the same process captures none of the tasks.
        make_celery(config.Settings(redis_url=redis_url.rsplit("/", 1)[0] + "/14"))
        (report,) = poll_mailboxes()
        assert (report["invoices"], report["duplicates"], report["taken"]) == (2, 1, 2)
        assert redis.Redis.from_url(redis_url).llen("ingest") == 2  # one chain per new invoice
        assert poll_mailboxes()[0]["mails"] == 0
        assert imap.count("Processed") == 2
    config.get_settings.cache_clear()
