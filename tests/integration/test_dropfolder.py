"""Drop folder on real Postgres: stable files are taken once, moved to done/ or failed/ with a
reason, duplicates across entry paths are one invoice; globs and folders expand once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlmodel import select

from ingestion.dropfolder import DropFolder, expand
from ingestion import documents
from invoicechain.db.session import session_scope
from invoicechain.db.tables import Invoice
from tests.integration.mail_factory import small_pdf

DATA = Path(__file__).resolve().parents[1] / "data" / "einvoice"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _invoices(settings):
    with session_scope(settings) as s:
        return s.exec(select(Invoice)).all()


def test_stable_files_are_taken_and_sorted_into_done_and_failed(settings, tmp_path):
    inbox = tmp_path / "scanner"
    inbox.mkdir()
    clock, enqueued = Clock(), []
    folder = DropFolder(inbox, settings=settings, enqueue=enqueued.append, clock=clock)
    (inbox / "a.pdf").write_bytes(small_pdf("A"))
    (inbox / "rechnung.xml").write_bytes((DATA / "XRECHNUNG_Einfach.ubl.xml").read_bytes())
    (inbox / "batch.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    (inbox / "half.pdf.part").write_bytes(b"%PDF-1.4 still copying")
    assert folder.scan().taken == []  # first sight: not yet stable
    (inbox / "growing.pdf").write_bytes(small_pdf("G")[:100])
    clock.t = settings.watch_stable_s + 0.1
    (inbox / "growing.pdf").write_bytes(small_pdf("G"))  # still being written: its clock restarts
    report = folder.scan()
    assert sorted(t.name for t in report.taken) == ["a.pdf", "batch.zip", "rechnung.xml"]
    assert (report.done, report.failed) == (2, 1)
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a.pdf", "rechnung.xml"]
    assert (inbox / "failed" / "batch.zip").exists()
    assert "zip archive" in (inbox / "failed" / "batch.zip.reason.txt").read_text()
    assert (inbox / "half.pdf.part").exists() and (inbox / "growing.pdf").exists()
    clock.t += settings.watch_stable_s + 0.1
    assert [t.name for t in folder.scan().taken] == ["growing.pdf"]
    invoices = _invoices(settings)
    assert len(invoices) == 3 and sorted(enqueued) == sorted(i.id for i in invoices)
    assert {i.source for i in invoices} == {"folder"}
    assert all(i.intake["channel"] == "folder" for i in invoices)

    # The same document again, from the folder and by upload: one invoice, no new enqueue.
    (inbox / "a-again.pdf").write_bytes(small_pdf("A"))
    clock.t += settings.watch_stable_s + 0.1
    folder.scan()
    clock.t += settings.watch_stable_s + 0.1
    again = folder.scan()
    assert again.done == 1 and not again.taken[0].created
    upload = documents.submit_document(small_pdf("A"), "upload.pdf", "application/pdf", settings=settings)
    assert not upload.created and upload.invoice.id == again.taken[0].invoice_id
    assert len(_invoices(settings)) == 3 and len(enqueued) == 3
    assert (inbox / "done" / "a-again.pdf").exists()


def test_watch_takes_files_dropped_while_it_runs(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "watch_stable_s", 0.3)
    inbox = tmp_path / "drop"
    inbox.mkdir()
    folder = DropFolder(inbox, settings=settings)
    done = threading.Event()
    taken: list[str] = []

    def on_report(report):
        taken.extend(t.name for t in report.taken)
        if len(taken) >= 2:
            done.set()

    watcher = threading.Thread(target=folder.watch, kwargs={"stop": done.is_set, "on_report": on_report}, daemon=True)
    watcher.start()
    time.sleep(0.2)
    (inbox / "one.pdf").write_bytes(small_pdf("one"))
    (inbox / "two.pdf").write_bytes(small_pdf("two"))
    assert done.wait(30)
    watcher.join(10)
    assert sorted(taken) == ["one.pdf", "two.pdf"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["one.pdf", "two.pdf"]


def test_expand_takes_files_folders_and_globs_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.pdf").write_bytes(b"%PDF")
    (tmp_path / "a" / "deep").mkdir()
    (tmp_path / "a" / "deep" / "y.pdf").write_bytes(b"%PDF")
    (tmp_path / "z.xml").write_bytes(b"<x/>")
    (tmp_path / ".hidden.pdf").write_bytes(b"%PDF")
    got = list(expand([tmp_path / "a", str(tmp_path / "*.xml"), tmp_path / "a" / "x.pdf", str(tmp_path / "**" / "*.pdf")]))
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a/deep/y.pdf", "a/x.pdf", "z.xml"]


def test_a_scanned_image_becomes_one_invoice(settings, tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(buf, "PNG")
    png = buf.getvalue()
    inbox = tmp_path / "scans"
    inbox.mkdir()
    clock = Clock()
    folder = DropFolder(inbox, settings=settings, clock=clock)
    (inbox / "scan.png").write_bytes(png)
    (inbox / "scan-again.png").write_bytes(png)
    folder.scan()
    clock.t = settings.watch_stable_s + 1
    taken = folder.scan().taken
    assert [t.created for t in taken] == [False, True] or [t.created for t in taken] == [True, False]
    assert len({t.invoice_id for t in taken}) == 1
    (invoice,) = _invoices(settings)
    with session_scope(settings) as s:
        from invoicechain.db.tables import Document

        assert s.get(Document, invoice.document_id).content_type == "application/pdf"
