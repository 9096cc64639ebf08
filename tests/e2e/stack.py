"""The live stack's helpers for the end-to-end tests: the API client with the stack's keys,
sample documents by their ground truth, and waiting for an invoice to settle. The `stack`
fixture that starts the processes is in `tests/e2e/conftest.py`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from sqlmodel import Session, select

from invoicechain.db.tables import StepRun
from invoicechain.decisions import TERMINAL_STATUSES, WAITING_STATUSES

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
#: The states an invoice rests in: finished, or waiting for a person.
WAIT_STATES = TERMINAL_STATUSES | WAITING_STATUSES

#: The stack's admin key (INVOICECHAIN_API_KEY of its processes) and one key per approver.
ADMIN_KEY = "e2e-admin-key-0123456789abcdef"
APPROVERS = {"e2e-intern": "intern", "e2e-manager": "ap_manager", "e2e-cfo": "cfo", "e2e-controller": "controller",
             "e2e-reviewer": "ap_clerk"}


class _Api:
    """httpx's module functions with the stack's admin key unless a request names its own."""

    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    keys: dict[str, str] = {}

    def __getattr__(self, method):
        def call(url, **kw):
            kw.setdefault("headers", self.headers)
            return getattr(httpx, method)(url, **kw)

        return call

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


api = _Api()


def sample(expected_status: str | None = None, fault: str | None = None, has_po: bool | None = None) -> Path:
    """A sample PDF whose ground truth matches the wish (the shortest answer first: CPU time)."""
    metas = [m for m in SAMPLES.glob("*.json") if m.name != "master_data.json"]
    metas.sort(key=lambda m: (len(json.loads(m.read_text())["fields"].get("line_items") or []), m.name))
    for meta in metas:
        if meta.name == "master_data.json":
            continue
        data = json.loads(meta.read_text())
        faults = data.get("faults") or []
        if fault is None and faults:
            continue
        if fault is not None and fault not in faults:
            continue
        if has_po is not None and bool(data["fields"].get("po_number")) != has_po:
            continue
        if expected_status == "payment_ready" and data["expected"].get("trigger_payment") != "SCHEDULED":
            continue
        return meta.with_suffix(".pdf")
    raise LookupError(f"no sample with fault={fault} has_po={has_po}")


def wait_for(base: str, invoice_id: str, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = api.get(f"{base}/v1/invoices/{invoice_id}", timeout=10).json()
        if body["status"] in WAIT_STATES:
            return body
        time.sleep(0.5)
    raise TimeoutError(f"invoice {invoice_id} still {body['status']} after {timeout} s")


def wait_for_change(base: str, invoice_id: str, since: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = api.get(f"{base}/v1/invoices/{invoice_id}", timeout=10).json()
        if body["updated_at"] != since and body["status"] in WAIT_STATES:
            return body
        time.sleep(0.5)
    raise TimeoutError(f"invoice {invoice_id} did not finish after the correction")


def submit_pdf(base: str, path: Path, name: str | None = None) -> httpx.Response:
    with path.open("rb") as fh:
        return api.post(f"{base}/v1/invoices", files={"file": (name or path.name, fh, "application/pdf")}, timeout=30)


def step_rows(engine, invoice_id: str) -> dict[str, StepRun]:
    with Session(engine) as s:
        return {r.step: r for r in s.exec(select(StepRun).where(StepRun.invoice_id == invoice_id)).all()}
