"""Flower, a real worker and Redis: every step task shows under its name with the invoice id,
batched extraction included, and a task whose invoice failed shows FAILURE, not SUCCESS."""

from __future__ import annotations

import os
import sys
import subprocess
import time

import httpx
import pytest

from cli.processes import free_port, spawn, stop, tail

pytestmark = [pytest.mark.e2e]


def _flower(env: dict, port: int, logs) -> subprocess.Popen:
    with open(logs / "flower.log", "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app:app", "flower", f"--port={port}",
             "--address=127.0.0.1"],
            env={**env, "FLOWER_UNAUTHENTICATED_API": "true"}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait(predicate, timeout: float, what: str, logs):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            found = predicate()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout} s\n" + tail(logs, "flower") + tail(logs, "worker"))


def test_flower_names_every_task_with_its_invoice_and_failures_fail(tmp_path, settings, redis_url, monkeypatch):
    from ingestion import documents
    from invoicechain import config
    from invoicechain.db.session import session_scope
    from invoicechain.db.tables import Invoice
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": settings.database_url,
           "INVOICECHAIN_DATA_DIR": str(settings.data_dir), "INVOICECHAIN_EXTRACT_BATCH_WAIT_S": "0.2"}
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    procs = [_flower(env, port, logs),
             spawn("worker", ["worker", "--queues", "ingest,extract", "--concurrency", "1"], env, logs)]
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: httpx.get(f"{base}/api/workers", params={"refresh": "true"}, timeout=5).json(), 90,
              "the worker is online in Flower", logs)
        from workers.chain import enqueue_invoice
        from workers.tasks import extract

        broken = documents.submit_document(b"%PDF-1.4\n" + b"\x00garbage" * 50, "broken.pdf", "application/pdf",
                                          settings=config.get_settings()).invoice.id
        enqueue_invoice(broken)
        missing = "0" * 32
        extract.apply_async((missing,))

        def tasks():
            return httpx.get(f"{base}/api/tasks", timeout=5).json()

        def done():
            by_args = {}
            for t in tasks().values():
                by_args.setdefault(t.get("args") or "", []).append(t)
            ready = [t for ts in by_args.values() for t in ts if t.get("state") in ("FAILURE", "SUCCESS")]
            return ready if len(ready) >= 2 else None

        _wait(done, 120, "both tasks finished in Flower", logs)
        seen = list(tasks().values())
        ingest = [t for t in seen if t.get("name") == "invoicechain.ingest"]
        assert len(ingest) == 1 and broken in ingest[0]["args"], seen
        # The damaged PDF failed its invoice: the task is a failure too, with the reason.
        assert ingest[0]["state"] == "FAILURE" and "InvoiceFailed" in (ingest[0].get("exception") or ""), ingest
        with session_scope(config.get_settings()) as s:
            inv = s.get(Invoice, broken)
            assert inv.status == "failed" and "damaged" in inv.error  # the step's own sentence, kept
        # Batched extraction is visible under its name with the invoice id.
        ext = [t for t in seen if t.get("name") == "invoicechain.extract"]
        assert len(ext) == 1 and missing in ext[0]["args"], seen
        assert ext[0]["state"] == "FAILURE" and ext[0].get("started") and ext[0].get("received"), repr(ext)
    finally:
        stop(procs)
        config.get_settings.cache_clear()
