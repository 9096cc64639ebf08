"""The review desk in a real browser (Debian's chromium driven by Playwright) over the whole
system: a uvicorn API, Celery workers on Redis, Postgres and the default model.

A clerk uploads an invoice whose PO is unknown, reviews it beside the highlighted page,
corrects fields with the keyboard, approves it, and finds it in a payment batch. The
screenshots are kept under `.data/test-artifacts/review-desk/` (docs/img/ holds copies).
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, create_engine, select

from cli.processes import free_port, spawn, stop, wait_ready
from invoicechain.db.tables import Payment, PaymentBatch

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "inv-00011.pdf"  # unknown PO: a person approves it
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("INVOICECHAIN_TEST_ARTIFACTS", ROOT / ".data" / "test-artifacts")) / "review-desk"
API_KEY = "ick_deskdesk_e2e-review-desk-key-000000000000"
WAITING = ("needs_review", "pending_approval", "invalid", "payment_held", "payment_ready", "failed", "rejected", "needs_ocr")
#: Scalar fields the desk shows as one input each.
SCALARS = ("invoice_id", "vendor_name", "vendor_address", "client_name", "invoice_date", "due_date", "currency",
           "subtotal", "discount", "shipping", "tax", "total_amount", "po_number", "payment_terms")


@pytest.fixture
def stack(tmp_path, pg_url, redis_url, base_model_dir):
    from invoicechain import config
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.master_data import load_master_data, read_master_data

    env = dict(os.environ)
    env.update(
        DATABASE_URL=pg_url, REDIS_URL=redis_url, INVOICECHAIN_DATA_DIR=str(tmp_path / "data"),
        INVOICECHAIN_MODEL_STORE=str(base_model_dir.parent), INVOICECHAIN_EXTRACT_BATCH_WAIT_S="0.3",
        INVOICECHAIN_API_KEY=API_KEY, INVOICECHAIN_DESK_REFRESH_S="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
    )
    settings = config.Settings(database_url=pg_url, redis_url=redis_url, data_dir=tmp_path / "data")
    init_db(settings)
    with session_scope(settings) as session:
        load_master_data(session, read_master_data(ROOT / "samples" / "master_data.json"))
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {
        "api": spawn("api", ["api", "--port", str(port)], env, logs),
        "toolchain": spawn("toolchain", ["worker", "--queues", "ingest,toolchain", "--concurrency", "1"], env, logs),
        "extract": spawn("extract", ["worker", "--queues", "extract", "--concurrency", "1"], env, logs),
    }
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, procs["api"], logs, timeout=90)
        _wait_workers(logs, ("toolchain", "extract"))
    except RuntimeError:
        stop(procs.values())
        raise
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    yield {"url": base, "engine": engine, "logs": logs}
    stop(procs.values())
    engine.dispose()


def _wait_workers(logs: Path, names: tuple[str, ...], timeout: float = 180) -> None:
    """Until every worker says it is ready (consuming its queues)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(" ready." in (logs / f"{n}.log").read_text(errors="replace") for n in names):
            return
        time.sleep(0.5)
    raise RuntimeError("workers not ready: " + "".join((logs / f"{n}.log").read_text(errors="replace")[-1500:] for n in names))


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        yield page
        context.close()
        browser.close()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def logs_tail(stack) -> str:
    return "".join((stack["logs"] / f"{n}.log").read_text(errors="replace")[-2000:] for n in ("api", "toolchain", "extract"))


def test_upload_review_correct_approve_and_pay_in_the_browser(stack, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page, stack["url"]
    truth = json.loads(SAMPLE.with_suffix(".json").read_text())["fields"]

    # The key is asked for once and kept in the tab.
    page.goto(f"{base}/desk")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#key", API_KEY)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#desk")).to_be_visible()
    expect(page.locator("#upload-limit")).to_contain_text("20 MB")  # the API's own limit
    assert page.evaluate("sessionStorage.getItem('invoicechain.apiKey')") == API_KEY

    # Upload.
    page.set_input_files("#upload-file", str(SAMPLE))
    page.click("#upload")
    expect(page.locator("#message")).to_contain_text("Uploaded inv-00011.pdf")
    invoice_id = re.search(r"invoice ([0-9a-f]{32})", page.text_content("#message")).group(1)
    row = page.locator(f'#invoices tr[data-id="{invoice_id}"]')
    expect(row).to_be_visible()

    # Auto-refresh brings the row to the state the chain stopped in (extraction on CPU: minutes).
    page.wait_for_function(
        "([id, states]) => { const r = document.querySelector(`#invoices tr[data-id='${id}']`); return r && states.includes(r.dataset.status); }",
        arg=[invoice_id, list(WAITING)], timeout=900_000, polling=1000,
    )
    status = row.get_attribute("data-status")
    assert status in ("pending_approval", "invalid", "needs_review"), (status, logs_tail(stack))
    shot(page, "desk-list.png")

    # Review: the page beside the fields, values highlighted where they are printed.
    row.click()
    detail = page.locator("#detail")
    expect(detail).to_have_attribute("data-id", invoice_id)
    expect(page.locator("#page .hl").first).to_be_attached()
    assert page.locator("#page .hl").count() >= 5
    page.locator("#fld-invoice_id").focus()
    expect(page.locator('#page .hl.active[data-field="invoice_id"]')).to_have_count(1)
    shot(page, "desk-review.png")

    # Correct with the keyboard: what the model got wrong, and the due date the terms give
    # ("30 Tage netto"), which the document does not print.
    current = {name: page.input_value(f"#fld-{name}") for name in SCALARS}
    due = (date.fromisoformat(truth["invoice_date"]) + timedelta(days=30)).isoformat()
    wanted = {k: ("" if truth.get(k) is None else str(truth[k])) for k in SCALARS if current[k] != ("" if truth.get(k) is None else str(truth[k]))}
    wanted["due_date"] = due
    names = page.eval_on_selector_all("#fields input", "els => els.map(e => e.dataset.field)")
    page.locator("#fields input").first.focus()
    at = 0

    def go(name: str) -> None:
        nonlocal at
        step = names.index(name) - at
        for _ in range(abs(step)):
            page.keyboard.press("ArrowDown" if step > 0 else "ArrowUp")
        at = names.index(name)
        assert page.evaluate("document.activeElement.dataset.field") == name

    for name in sorted(wanted, key=names.index):
        go(name)
        page.keyboard.press("Control+A")
        page.keyboard.type(wanted[name]) if wanted[name] else page.keyboard.press("Delete")
    # Esc takes back a slip on the current field.
    slipped = next(n for n in SCALARS if n not in wanted)
    go(slipped)
    page.keyboard.type("oops")
    page.keyboard.press("Escape")
    assert page.input_value(f"#fld-{slipped}") == current[slipped]
    expect(page.locator("#fields input.changed")).to_have_count(len(wanted))
    shot(page, "desk-correcting.png")
    page.fill("#act-reason", "due date from the payment terms")
    page.locator("#fields input").first.focus()
    page.keyboard.press("Control+Enter")
    expect(page.locator("#message")).to_contain_text("Saved")

    # The chain runs again from validation and stops for the approver (unknown PO).
    expect(detail).to_have_attribute("data-status", "pending_approval", timeout=300_000)
    expect(page.locator("#approve")).to_be_visible()
    assert page.input_value("#fld-due_date") == due
    # Only the decisions that apply: never APPROVED past the approvers, nothing for steps not reached.
    steps = page.eval_on_selector_all("#ov-step option", "els => els.map(e => e.value)")
    assert "trigger_payment" not in steps
    page.select_option("#ov-step", "run_approval")
    assert page.eval_on_selector_all("#ov-decision option", "els => els.map(e => e.value)") == ["REJECTED"]

    # Approve: the payment step runs and the invoice lands in a payment batch.
    page.fill("#act-reason", "PO raised late; goods received")
    page.click("#approve")
    expect(detail).to_have_attribute("data-status", "payment_ready", timeout=300_000)
    expect(page.locator("#payment")).to_contain_text("Payment batch #")
    trail = page.text_content("#trail")
    assert "correct fields" in trail and "approve" in trail and "admin" in trail
    shot(page, "desk-approved.png")
    with Session(stack["engine"]) as s:
        pay = s.exec(select(Payment).where(Payment.invoice_id == invoice_id)).one()
        assert s.get(PaymentBatch, pay.batch_id) is not None and pay.amount == truth["total_amount"]
        assert f"#{pay.batch_id}" in page.text_content("#payment")

    # Filter and export the list.
    page.click("#close")
    page.fill("#f-vendor", truth["vendor_name"].split()[0])
    page.select_option("#f-status", "payment_ready")
    page.click("#filters button[type=submit]")
    expect(page.locator("#invoices tbody tr")).to_have_count(1)
    with page.expect_download() as dl:
        page.click("#export")
    csv_text = Path(dl.value.path()).read_text()
    assert invoice_id in csv_text and csv_text.count("\n") == 2
    page.select_option("#f-status", "rejected")
    page.click("#filters button[type=submit]")
    expect(page.locator("#invoices tbody tr")).to_have_count(0)
    expect(page.locator("#count")).to_contain_text("0 invoices")

