"""A scanned PDF and a phone-photo JPEG of an invoice go through the whole chain with OCR text,
not `needs_ocr`: through `invoicechain demo`'s path (embedded broker, SQLite, worker processes)
and through the API on Redis and Postgres. The real model reads the OCR text."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, create_engine, select

from invoicechain.db.tables import Document, Invoice
from tests.e2e.stack import api, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ocr"
#: inv-00000 scanned (image-only PDF) and inv-00004 photographed (JPEG); both schedule a payment.
SCANS = {"inv-00000-scan.pdf": "application/pdf", "inv-00004-photo.jpg": "image/jpeg"}
DONE = {"payment_ready", "pending_approval"}
SERVICE_VARS = ("REDIS_URL", "DATABASE_URL", "INVOICECHAIN_REDIS_URL", "INVOICECHAIN_DATABASE_URL")


@pytest.fixture(autouse=True)
def patient_step_limits(monkeypatch):
    """OCR and the model share the CPU with whatever else runs: the step time limits (tested on
    their own elsewhere) are set well above what these two documents need, so the outcome does
    not depend on how busy the machine is. Set before the stack and the demo start."""
    monkeypatch.setenv("INVOICECHAIN_TASK_SOFT_TIME_LIMIT_S", "2400")
    monkeypatch.setenv("INVOICECHAIN_TASK_TIME_LIMIT_S", "2500")


def test_scan_and_photo_through_the_api(stack):
    base = stack["url"]
    ids = {}
    for name, kind in SCANS.items():
        r = api.post(f"{base}/v1/invoices", files={"file": (name, (DATA / name).read_bytes(), kind)}, timeout=30)
        assert r.status_code == 202, r.text
        ids[name] = r.json()["id"]
    for name, invoice_id in ids.items():
        body = wait_for(base, invoice_id, timeout=1200)
        assert body["status"] in DONE, (name, body["status"], body["error"], body["fields"])
        assert body["document"]["ocr"]["engine"] == "tesseract"
        assert body["document"]["ocr"]["confidence"] > 0.8
        assert body["document_type"] == "invoice" and body["language"] == "en" and body["paid"] is False
        ingest = next(s for s in body["steps"] if s["step"] == "ingest")
        assert ingest["decision"] == "OK"


def test_scan_and_photo_through_the_demo(tmp_path, base_model_dir):
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in SCANS:
        shutil.copy(DATA / name, samples / name)
    shutil.copy(ROOT / "samples" / "master_data.json", samples / "master_data.json")
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(INVOICECHAIN_DATA_DIR=str(data), INVOICECHAIN_MODEL_STORE=str(base_model_dir.parent),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "cli", "demo", "--samples", str(samples), "--timeout", "1200"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 invoices in" in proc.stdout
    with Session(create_engine(f"sqlite:///{data / 'invoicechain.db'}")) as s:
        invoices = s.exec(select(Invoice)).all()
        assert len(invoices) == 2
        for inv in invoices:
            doc = s.get(Document, inv.document_id)
            assert inv.status in DONE, (doc.filename, inv.status, inv.error, inv.fields)
            assert doc.ocr and doc.ocr["confidence"] > 0.8 and doc.text.strip()
            assert inv.fields["total_amount"]
