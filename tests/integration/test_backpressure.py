"""Backpressure on real Redis: over the queue limit, uploads answer 429 with Retry-After and the
pollers take nothing; below it, everything flows again."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from ingestion import backpressure
from ingestion.dropfolder import DropFolder
from ingestion.mailbox import MailboxConfig, poll_mailbox
from tests.integration.imap_server import Dovecot
from tests.integration.mail_factory import mail, small_pdf


@pytest.fixture
def api(settings, redis_url, monkeypatch, auth_headers):
    from invoicechain import config
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("INVOICECHAIN_EXTRACT_QUEUE_LIMIT", "5")
    monkeypatch.setenv("INVOICECHAIN_BACKPRESSURE_RETRY_AFTER_S", "7")
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    monkeypatch.setattr(backpressure, "CACHE_S", 0.0)
    from api.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False, headers=auth_headers) as c:
        yield c, config.get_settings()
    config.get_settings.cache_clear()


def _flood(redis_url: str, n: int, queue: str = "extract") -> None:
    r = redis.Redis.from_url(redis_url)
    r.delete(queue)
    if n:
        r.lpush(queue, *[b'{"waiting": true}'] * n)


def test_upload_answers_429_with_retry_after_over_the_limit(api, redis_url):
    client, settings = api
    _flood(redis_url, 6)
    r = client.post("/v1/invoices", files={"file": ("a.pdf", small_pdf("bp-A"), "application/pdf")})
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert "over the limit of 5" in r.json()["detail"]
    _flood(redis_url, 2)
    r = client.post("/v1/invoices", files={"file": ("a.pdf", small_pdf("bp-A"), "application/pdf")})
    assert r.status_code == 202, r.text


def test_pollers_pause_over_the_limit(api, redis_url, tmp_path):
    _, settings = api
    _flood(redis_url, 6)
    folder = DropFolder(tmp_path / "drop", settings=settings)
    (tmp_path / "drop" / "x.pdf").write_bytes(small_pdf("bp-X"))
    settings_stable = settings.watch_stable_s
    folder.clock = lambda: 0.0
    folder.scan()
    folder.clock = lambda: settings_stable + 1
    report = folder.scan()
    assert report.paused and report.taken == [] and (tmp_path / "drop" / "x.pdf").exists()

    with Dovecot() as imap:
        imap.append(bytes(mail("bp", [("y.pdf", small_pdf("bp-Y"))], message_id="<bp@acme>")))
        cfg = MailboxConfig.from_dict(imap.mailbox_settings())
        paused = poll_mailbox(cfg, settings=settings)
        assert paused.paused and paused.mails == 0 and imap.count("INBOX") == 1
        _flood(redis_url, 0)
        flowing = poll_mailbox(cfg, settings=settings)
        assert not flowing.paused and flowing.invoices == 1
    assert folder.scan().done == 1


def test_one_document_from_upload_mail_and_folder_is_one_invoice(api, redis_url, tmp_path):
    """Dedup by content hash across every entry path, e-invoice XML included."""
    client, settings = api
    _flood(redis_url, 0)
    xml = (Path(__file__).resolve().parents[1] / "data" / "einvoice" / "EN16931_Einfach.ubl.xml").read_bytes()
    first = client.post("/v1/invoices", files={"file": ("rechnung.xml", xml, "application/xml")})
    assert first.status_code == 202, first.text
    invoice_id = first.json()["id"]
    with Dovecot() as imap:
        imap.append(bytes(mail("XML again", [("r.xml", xml)], message_id="<same@acme>")))
        report = poll_mailbox(MailboxConfig.from_dict(imap.mailbox_settings()), settings=settings)
    assert (report.invoices, report.duplicates) == (0, 1)
    ticks = iter([0.0, 1e9])
    folder = DropFolder(tmp_path / "drop", settings=settings, clock=lambda: next(ticks))
    (tmp_path / "drop" / "r.xml").write_bytes(xml)
    folder.stable()  # first sight at t=0; the scan below sees it unchanged much later
    taken = folder.scan().taken
    assert [(t.invoice_id, t.created) for t in taken] == [(invoice_id, False)]
    again = client.post("/v1/invoices", files={"file": ("copy.xml", xml, "application/xml")})
    assert again.status_code == 200 and again.json()["id"] == invoice_id and again.json()["duplicate"]
