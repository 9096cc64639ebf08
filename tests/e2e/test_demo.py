"""`invoicechain demo` on the embedded default: no Redis, no Postgres, real Celery worker
processes on kombu's filesystem transport and SQLite, the real model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, create_engine, select

from invoicechain.db.tables import Invoice, StepRun

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SERVICE_VARS = ("REDIS_URL", "DATABASE_URL", "INVOICECHAIN_REDIS_URL", "INVOICECHAIN_DATABASE_URL")


def test_demo_runs_the_samples_through_the_chain_without_services(tmp_path, base_model_dir):
    samples = tmp_path / "samples"
    samples.mkdir()
    names = ["inv-00000.pdf", "inv-00001.pdf"]
    for name in [*names, "master_data.json"]:
        shutil.copy(ROOT / "samples" / name, samples / name)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(INVOICECHAIN_DATA_DIR=str(data), INVOICECHAIN_MODEL_STORE=str(base_model_dir.parent),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--samples", str(samples), "--timeout", "600"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "broker: embedded (filesystem broker, SQLite)" in out
    assert "2 invoices in" in out and all(name in out for name in names)

    # The embedded database holds both invoices, each extracted by the model and decided.
    db = data / "invoicechain.db"
    assert db.is_file()
    with Session(create_engine(f"sqlite:///{db}")) as s:
        invoices = s.exec(select(Invoice)).all()
        assert len(invoices) == 2
        for inv in invoices:
            steps = {r.step: r for r in s.exec(select(StepRun).where(StepRun.invoice_id == inv.id))}
            assert steps["extract"].status == "done" and steps["extract"].adapter_version
            assert steps["validate_invoice"].decision in ("VALID", "INVALID")
            assert inv.status != "processing" and inv.status in out
