"""The Streamlit UI driven with AppTest against a real API process on Postgres and Redis
(no worker: submitted invoices stay `received`, training jobs stay `queued`)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "ui" / "app.py"
TOKEN = "clerk-token"
INVOICE_TEXT = "INVOICE INV-4711\nNordwind Bürobedarf GmbH\nDate: 2026-03-02\nTotal: 238.00 EUR\n"


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30, **kw)

    def get(self, path: str) -> dict:
        resp = httpx.get(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        resp.raise_for_status()
        return resp.json()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api(pg_url, redis_url, tmp_path, monkeypatch):
    """`uvicorn api.main:app` on a free port (its lifespan migrates the fresh database);
    the UI in this process is pointed at it, with the same bearer token."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICECHAIN_")}
    env.update(DATABASE_URL=pg_url, REDIS_URL=redis_url, INVOICECHAIN_DATA_DIR=str(tmp_path / "data"),
               INVOICECHAIN_API_TOKEN=TOKEN, HF_HUB_OFFLINE="1")
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = ApiServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the API exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the API did not become ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

        from invoicechain import config

        monkeypatch.setenv("INVOICECHAIN_API_URL", server.url)
        monkeypatch.setenv("INVOICECHAIN_API_TOKEN", TOKEN)
        config.get_settings.cache_clear()
        yield server
    finally:
        server.stop()
        from invoicechain import config

        config.get_settings.cache_clear()


def app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=30).run()


def go(at: AppTest, page: str) -> AppTest:
    at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def one_page_pdf(lines: list[str]) -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    page = canvas.Canvas(buf, invariant=1)
    for n, line in enumerate(lines):
        page.drawString(72, 760 - 16 * n, line)
    page.showPage()
    page.save()
    return buf.getvalue()


def submit_text(api: ApiServer, text: str = INVOICE_TEXT) -> str:
    resp = api.post("/v1/invoices", json={"text": text, "filename": "mail.txt"})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def stop_for_review(pg_url: str, invoice_id: str) -> None:
    """Put an invoice where a worker leaves it when the model and the rules disagree on the PO
    match: extracted (one value not found in the text), the match step disputed, needs_review."""
    from invoicechain.config import Settings
    from invoicechain.db.session import session_scope
    from invoicechain.db.tables import Invoice, StepRun

    with session_scope(Settings(database_url=pg_url)) as session:
        inv = session.get(Invoice, invoice_id)
        inv.status, inv.current_step = "needs_review", "match_po"
        inv.fields = {"invoice_id": "INV-4711", "vendor_name": "Nordwind Bürobedarf GmbH", "po_number": "PO-88",
                      "total_amount": "238.00", "currency": "EUR"}
        inv.confidence = {"invoice_id": 0.97, "vendor_name": 0.98, "po_number": 0.55, "total_amount": 0.8, "currency": 0.99}
        inv.grounding = {"vendor_name": {"grounded": True}, "po_number": {"grounded": False}}
        session.add(inv)
        session.add(StepRun(
            invoice_id=invoice_id, step="extract", status="done", decision="OK", mode="model",
            adapter_version="extract-v3", duration_ms=1234.0, model_ms=1100.0,
            reasons=[{"code": "UNGROUNDED_FIELD", "message": "The value of po_number was not found in the document text."}],
        ))
        session.add(StepRun(invoice_id=invoice_id, step="validate_invoice", status="done", decision="VALID", mode="rules",
                            duration_ms=12.0, reasons=[]))
        session.add(StepRun(
            invoice_id=invoice_id, step="match_po", status="done", decision="NO_MATCH", mode="guarded", agree=False,
            duration_ms=42.0, model_output={"decision": "MATCHED", "reasons": ["PO_MATCHED"]},
            rules_output={"decision": "NO_MATCH", "reasons": ["PO_NOT_FOUND"]},
            reasons=[{"code": "MODEL_RULES_DISAGREE", "message": "The adapter proposed MATCHED; the rules found no PO-88."}],
        ))


def test_invoice_list_and_detail_show_the_api_state(api):
    invoice_id = submit_text(api)
    at = app()
    assert not at.exception, at.exception
    assert "API ready" in texts(at.sidebar.markdown)

    go(at, "Invoices")
    table = at.dataframe[0].value
    assert list(table["id"]) == [invoice_id]
    assert list(table["status"]) == ["Received"]
    assert list(table["document"]) == ["mail.txt"]
    assert ":gray-badge[Received] **1**" in texts(at.markdown)  # the count per status

    at.toggle(key="invoices_auto_refresh").set_value(True).run()
    assert not at.exception and list(at.dataframe[0].value["id"]) == [invoice_id]
    at.selectbox(key="invoices_status").set_value("payment_ready").run()
    assert not at.dataframe and "No invoices here." in texts(at.info)

    at.selectbox(key="invoices_status").set_value("received").run()
    at.button(key="invoices_open").click().run()
    assert not at.exception, at.exception
    assert at.session_state["page"] == "Invoice detail"
    assert at.text_input(key="detail_invoice_id").value == invoice_id
    shown = texts(at.markdown)
    assert ":gray-badge[Received]" in shown
    assert shown.count(":gray-badge[not reached]") == 6  # no worker ran a step
    assert invoice_id in texts(at.caption) and "No fields yet" in texts(at.info)

    assert at.query_params["invoice"] == invoice_id

    # The address of that page opens the same invoice in a new session.
    linked = AppTest.from_file(str(APP), default_timeout=30)
    linked.query_params["invoice"] = invoice_id
    linked.run()
    assert linked.session_state["page"] == "Invoice detail"
    assert ":gray-badge[Received]" in texts(linked.markdown)

    at.text_input(key="detail_invoice_id").input("no-such-invoice").run()
    assert not at.exception
    assert "No invoice no-such-invoice. (HTTP 404)" in texts(at.error)


def test_inbox_submits_pdfs_and_text_and_reports_duplicates(api, monkeypatch):
    at = go(app(), "Inbox")
    pdf = one_page_pdf(["INVOICE INV-9001", "Hanse Logistik AG", "Total: 1200.00 EUR"])
    at.file_uploader(key="inbox_files").set_value([
        ("hanse.pdf", pdf, "application/pdf"),
        ("notes.pdf", b"these are not PDF bytes", "application/pdf"),
    ]).run()
    at.button(key="submit_pdfs").click().run()
    assert not at.exception, at.exception
    listing = api.get("/v1/invoices")
    assert listing["total"] == 1 and listing["items"][0]["document"]["filename"] == "hanse.pdf"
    assert f"**hanse.pdf** :green-badge[new] :gray-badge[Received]  \n`{listing['items'][0]['id']}`" in texts(at.markdown)
    refused = texts(at.error)  # the bad file is explained, the good one still went through
    assert refused.startswith("notes.pdf: The file is named or declared a PDF but is not one") and refused.endswith("(HTTP 415)")

    first = submit_text(api)
    at.text_area(key="inbox_text").input(INVOICE_TEXT).run()
    at.button(key="submit_text").click().run()
    assert f":orange-badge[already received] :gray-badge[Received]  \n`{first}`" in texts(at.markdown)

    at.text_area(key="inbox_text").input("INVOICE INV-4712\nOther Vendor Ltd\nTotal: 10.00 GBP").run()
    at.button(key="submit_text").click().run()
    listing = api.get("/v1/invoices")
    assert listing["total"] == 3
    newest = listing["items"][0]["id"]
    assert f":green-badge[new] :gray-badge[Received]  \n`{newest}`" in texts(at.markdown)

    at.button(key="inbox_open_0").click().run()
    assert at.session_state["page"] == "Invoice detail"
    assert at.text_input(key="detail_invoice_id").value == newest

    # Without the API's token a write is refused, and the clerk is told what to set.
    from invoicechain import config

    monkeypatch.delenv("INVOICECHAIN_API_TOKEN")
    config.get_settings.cache_clear()
    go(at, "Inbox").text_area(key="inbox_text").input("INVOICE INV-4713\nTotal: 1.00 EUR").run()
    at.button(key="submit_text").click().run()
    assert "The API refused the request: set INVOICECHAIN_API_TOKEN to its token." in texts(at.error)
    assert api.get("/v1/invoices")["total"] == 3


def test_review_queue_reject_and_training_jobs(api, pg_url):
    invoice_id = submit_text(api)
    stop_for_review(pg_url, invoice_id)

    at = go(app(), "Review queue")
    waiting = texts(at.markdown)
    assert "**1** invoice(s) waiting" in waiting
    assert "Match PO\\: model and rules disagree (MODEL\\_RULES\\_DISAGREE)" in waiting
    at.button(key=f"review_open_{invoice_id}").click().run()
    assert ":orange-badge[Needs review]" in texts(at.markdown)
    # An invoice under review can be corrected or rejected.
    assert {"Correct fields", "Override a decision"} <= {t.label for t in at.tabs}

    at.text_input(key="reject_who").input("dana")  # form values count when the form is submitted
    at.button(key="FormSubmitter:reject_form-Reject").click().run()
    assert "A rejection needs who rejects and why." in texts(at.error)
    assert api.get(f"/v1/invoices/{invoice_id}")["status"] == "needs_review"

    at.text_input(key="reject_who").input("dana")
    at.text_area(key="reject_why").input("Not our order.")
    at.button(key="FormSubmitter:reject_form-Reject").click().run()
    assert not at.exception, at.exception
    assert api.get(f"/v1/invoices/{invoice_id}")["status"] == "rejected"
    assert ":red-badge[Rejected]" in texts(at.markdown)
    assert [t.value for t in at.toast] == ["Invoice rejected."]

    go(at, "Training")
    assert "No training jobs yet." in texts(at.info)
    at.number_input(key="train_n").set_value(30)
    at.number_input(key="train_seed").set_value(7)
    at.number_input(key="train_max_steps").set_value(5)
    at.button(key="FormSubmitter:training_form-Start training").click().run()
    assert not at.exception, at.exception
    jobs = api.get("/v1/training-jobs")
    assert len(jobs) == 1 and jobs[0]["status"] == "queued"
    assert jobs[0]["data_source"] == "synthetic"
    assert jobs[0]["params"] == {"n": 30, "seed": 7, "max_steps": 5}
    assert f"Training job `{jobs[0]['id']}` queued." in texts(at.success)
    assert ":gray-badge[queued]" in texts(at.markdown)

    at.button(key=f"cancel_{jobs[0]['id']}").click().run()
    assert api.get(f"/v1/training-jobs/{jobs[0]['id']}")["status"] == "cancelled"
    assert ":orange-badge[cancelled]" in texts(at.markdown)

    # A job a training worker is running: progress of step/total, loss and eval loss.
    from invoicechain.config import Settings
    from invoicechain.db.session import session_scope
    from invoicechain.db.tables import TrainingJob

    with session_scope(Settings(database_url=pg_url)) as session:
        session.add(TrainingJob(id="running-job", adapter="toolchain", status="running", data_source="corrections",
                                params={}, progress={"phase": "training", "step": 30, "total_steps": 120,
                                                     "loss": 0.61234, "eval_loss": 0.7}))
    at.run()
    bar = next(p for p in at.get("progress") if "step 30 of 120" in p.proto.text)
    assert bar.proto.value == 25
    assert {("Loss", "0.6123"), ("Eval loss", "0.7000")} <= {(m.label, m.value) for m in at.metric}

    # Uploaded training data with a broken line is refused with the line named.
    at.radio(key="train_source").set_value("upload").run()
    at.file_uploader(key="train_file").set_value(("data.jsonl", b'{"messages": []}\n{not json\n', "application/jsonl"))
    at.button(key="FormSubmitter:training_form-Start training").click().run()
    refused = texts(at.error)
    assert "The training data has 2 problem(s)" in refused and refused.endswith("(HTTP 422)")
    assert refused.count("line 2: malformed JSON") == 1  # each problem once, on its own line
    assert len(api.get("/v1/training-jobs")) == 2  # nothing was queued


def test_reviewer_overrides_a_decision(api, pg_url):
    invoice_id = submit_text(api)
    stop_for_review(pg_url, invoice_id)

    at = go(app(), "Invoice detail")
    at.text_input(key="detail_invoice_id").input(invoice_id).run()
    shown = texts(at.markdown)
    assert "### Nordwind Bürobedarf GmbH · INV-4711 · 238.00 EUR\n:orange-badge[Needs review] at Match PO" in shown
    # Confidence as colored badges; the value missing from the document's text is flagged.
    assert "| Vendor name | Nordwind Bürobedarf GmbH | :green-badge[98%] |  |" in shown
    assert "| Total amount | 238.00 | :orange-badge[80%] |  |" in shown
    assert "| PO number | PO-88 | :red-badge[55%] | :red-badge[not found in the document] |" in shown
    assert "PO number could not be found" in texts(at.warning)
    # Each step: decision, agreement, mode and timings, reason codes with their sentences.
    assert "**2. Extract fields** :green-badge[OK]  \nmode model · took 1.2 s · model 1.1 s · adapter extract-v3" in shown
    assert "**4. Match PO** :red-badge[NO\\_MATCH] :red-badge[model and rules disagree]  \nmode guarded · took 42 ms" in shown
    assert "- `MODEL_RULES_DISAGREE` The adapter proposed MATCHED; the rules found no PO-88." in shown
    assert [json.loads(j.value) for j in at.json] == [{"decision": "MATCHED", "reasons": ["PO_MATCHED"]},
                                         {"decision": "NO_MATCH", "reasons": ["PO_NOT_FOUND"]}]

    # Only the decisions that apply: steps reached, not their current decision, nothing later.
    offered = at.selectbox(key="override_choice").options
    assert offered == ["Validate → INVALID", "Match PO → MATCHED", "Match PO → PARTIAL", "Match PO → NO_PO"]
    at.selectbox(key="override_choice").set_value(("validate_invoice", "INVALID"))
    at.text_input(key="override_actor").input("dana")
    at.text_input(key="override_reason").input("Totals do not add up")
    at.button(key="FormSubmitter:override_form-Override").click().run()
    assert not at.exception, at.exception
    validate = next(s for s in api.get(f"/v1/invoices/{invoice_id}")["steps"] if s["step"] == "validate_invoice")
    assert validate["decision"] == "INVALID" and validate["mode"] == "human"
    shown = texts(at.markdown)
    assert ":red-badge[Invalid]" in shown and "**3. Validate** :red-badge[INVALID]" in shown
    assert "Reviewer admin set validate\\_invoice to INVALID" in shown  # the key's owner, not a typed name
    assert [t.value for t in at.toast] == ["Validate set to INVALID."]


def test_uploads_share_the_api_limit_and_approvals_are_shown(api, pg_url, monkeypatch):
    from invoicechain import config
    from invoicechain.db.session import session_scope
    from invoicechain.db.tables import ApprovalAction, Invoice

    # The uploaders refuse what the API refuses (Streamlit's own default is 200 MB).
    at = go(app(), "Inbox")
    assert at.get("file_uploader")[0].proto.max_upload_size_mb == 20
    monkeypatch.setenv("INVOICECHAIN_MAX_UPLOAD_BYTES", str(5 * 1024 * 1024))
    config.get_settings.cache_clear()
    assert go(app(), "Inbox").get("file_uploader")[0].proto.max_upload_size_mb == 5

    invoice_id = submit_text(api)
    with session_scope(config.Settings(database_url=pg_url)) as session:
        session.get(Invoice, invoice_id).status = "payment_ready"
        session.add(ApprovalAction(invoice_id=invoice_id, approver="maria", role="ap_manager", decision="APPROVED",
                                   reason="goods received"))
    at = go(app(), "Invoice detail")
    at.text_input(key="detail_invoice_id").input(invoice_id).run()
    assert not at.exception, at.exception
    trail = next(d.value for d in at.dataframe if "who" in d.value.columns)
    assert trail.to_dict("records")[0] | {"when": ""} == {"when": "", "who": "maria", "role": "ap_manager",
                                                          "decision": "APPROVED", "reason": "goods received"}
    # Nothing can be overridden on a paid invoice: no form offering every decision.
    assert "No decision can be overridden in this state." in texts(at.caption)


def test_changed_fields_are_the_edited_cells_only():
    import pandas as pd

    from ui.app import changed_fields

    current = {"vendor_name": "ACME", "tax": "19.00", "currency": None}
    edited = pd.DataFrame({"field": ["vendor_name", "tax", "currency"], "value": [" ACME ", None, "EUR"]})
    assert changed_fields(current, edited) == {"tax": None, "currency": "EUR"}


def test_app_explains_a_stopped_api_instead_of_failing(api):
    submit_text(api)
    at = go(app(), "Invoices")
    assert at.dataframe

    api.stop()
    for page in ("Invoices", "Invoice detail", "Training", "Inbox"):
        go(at, page)
        assert not at.exception, at.exception
        assert f"The Invoice Toolchain API at {api.url} cannot be reached" in texts(at.error)
        assert "API unreachable" in texts(at.sidebar.markdown)
        assert "is not reachable (ConnectError)" in texts(at.sidebar.caption)
