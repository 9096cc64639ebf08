"""The `invoicechain` command as a user meets it: `submit`, `status` and `extract` run as
processes against a real API process on Postgres and Redis (no worker: invoices stay
`received` unless a test moves them), and against an address where no API listens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import func, select

from cli.processes import free_port, spawn, stop, wait_ready
from invoicechain.db.session import session_scope
from invoicechain.db.tables import Invoice

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_PDF = ROOT / "samples" / "inv-00000.pdf"
KEY = "cli-test-admin-key-0123456789abcdef"
TEXT = "INVOICE INV-4711\nNordwind Bürobedarf GmbH\nDate: 2026-03-02\nTotal: 238.00 EUR\n"
WORD = b"PK\x03\x04\x14\x00\x06\x00word/document.xml"  # how a .docx begins (a zip)


def cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOICECHAIN_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200", **extra)
    return env


@pytest.fixture
def api(settings, pg_url, redis_url, tmp_path):
    """`invoicechain api` on a free port; the environment a CLI user would have for it."""
    env = base_env(DATABASE_URL=pg_url, REDIS_URL=redis_url, INVOICECHAIN_DATA_DIR=str(tmp_path / "data"),
                   INVOICECHAIN_API_KEY=KEY)
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    proc = spawn("api", ["api", "--port", str(port)], env, logs)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, logs, timeout=90)
        yield {**env, "INVOICECHAIN_API_URL": f"http://127.0.0.1:{port}"}
    finally:
        stop([proc])


def invoice_count(settings) -> int:
    with session_scope(settings) as s:
        return s.exec(select(func.count()).select_from(Invoice)).one()


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-2000:]


def test_a_wrong_api_url_is_one_line_that_says_how_to_fix_it(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = base_env(INVOICECHAIN_API_URL=url, INVOICECHAIN_API_KEY=KEY)
    doc = tmp_path / "a.txt"
    doc.write_text(TEXT, encoding="utf-8")
    for args in (["submit", str(doc)], ["status", "0f0e0d0c-0000-0000-0000-000000000000"]):
        proc = cli(env, *args)
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        no_traceback(proc)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, proc.stderr
        assert f"cannot reach the API at {url}: is `invoicechain api` running? set INVOICECHAIN_API_URL" in lines[0]


def test_submit_takes_folders_and_globs_and_sends_each_document_once(api, settings, tmp_path):
    folder = tmp_path / "inbox"
    (folder / "march").mkdir(parents=True)
    (folder / "a.pdf").write_bytes(SAMPLE_PDF.read_bytes())
    (folder / "a.txt").write_text("the PDF's text twin", encoding="utf-8")  # one document with a.pdf
    (folder / "march" / "b.txt").write_text(TEXT, encoding="utf-8")
    (folder / "letter.docx").write_bytes(WORD)
    (folder / "master_data.json").write_text("{}", encoding="utf-8")

    proc = cli(api, "submit", str(folder))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    no_traceback(proc)
    sent = [line.split("\t")[0] for line in proc.stdout.splitlines() if "\t" in line]
    assert sorted(sent) == [str(folder / "a.pdf"), str(folder / "march" / "b.txt")]
    assert "left out 2 file(s) of other types (.docx, .json)" in proc.stderr
    assert invoice_count(settings) == 2

    # A glob names the same PDF again: the API knows it (a duplicate), nothing new.
    proc = cli(api, "submit", str(folder / "*.pdf"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\tduplicate" in proc.stdout
    assert invoice_count(settings) == 2


def test_submit_refuses_a_word_file_and_reports_a_binary_text_file_without_crashing(api, settings, tmp_path):
    word = tmp_path / "letter.docx"
    word.write_bytes(WORD)
    proc = cli(api, "submit", str(word))
    assert proc.returncode == 2
    no_traceback(proc)
    assert f"{word}: .docx documents are not accepted" in proc.stderr and "save Word" in proc.stderr
    missing = cli(api, "submit", str(tmp_path / "nowhere.pdf"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr

    binary = tmp_path / "scan.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    good = tmp_path / "good.txt"
    good.write_text(TEXT, encoding="utf-8")
    proc = cli(api, "submit", str(binary), str(good))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    no_traceback(proc)
    assert f"{binary}\terror\tscan.txt is binary, not text" in proc.stdout
    assert f"{good}\t" in proc.stdout and "\treceived" in proc.stdout
    assert invoice_count(settings) == 1  # the good one; nothing sent for the others


def test_status_is_a_readable_table_json_on_request_and_can_wait(api, settings, tmp_path):
    doc = tmp_path / "a.txt"
    doc.write_text(TEXT, encoding="utf-8")
    proc = cli(api, "submit", str(doc))
    invoice_id = proc.stdout.split("\t")[1]

    table = cli(api, "status", invoice_id)
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith(f"invoice {invoice_id}  status received")
    assert not table.stdout.lstrip().startswith("{") and len(table.stdout.splitlines()) < 40

    as_json = cli(api, "status", invoice_id, "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["id"] == invoice_id

    # No worker runs here: --wait gives up after its timeout with its own exit code.
    waited = cli(api, "status", invoice_id, "--wait", "--timeout", "1", "--interval", "0.2")
    assert waited.returncode == 4
    assert f"invoice {invoice_id} is still received after 1 s" in waited.stderr

    with session_scope(settings) as s:
        s.get(Invoice, invoice_id).status = "needs_review"
    waited = cli(api, "status", invoice_id, "--wait", "--timeout", "60")
    assert waited.returncode == 0 and "status needs_review" in waited.stdout

    with session_scope(settings) as s:
        inv = s.get(Invoice, invoice_id)
        inv.status, inv.error = "failed", "the document could not be read"
    failed = cli(api, "status", invoice_id, "--wait")
    assert failed.returncode == 1 and "error: the document could not be read" in failed.stdout

    unknown = cli(api, "status", "0f0e0d0c-0000-0000-0000-000000000000")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: 404")
    no_traceback(unknown)


def test_extract_refuses_word_files_before_loading_the_model(tmp_path):
    word = tmp_path / "letter.docx"
    word.write_bytes(WORD)
    out = tmp_path / "out.jsonl"
    proc = cli(base_env(), "extract", str(word), "--out", str(out))
    assert proc.returncode == 2
    no_traceback(proc)
    assert f"{word}: .docx documents are not supported" in proc.stderr and "save Word" in proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_extract_reads_a_pdf_and_its_text_twin_once_and_exits_non_zero_on_an_unreadable_file(tmp_path, base_model_dir):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(SAMPLE_PDF.read_bytes())
    (folder / "a.txt").write_text("the PDF's text twin", encoding="utf-8")
    (folder / "broken.txt").write_bytes(b"\x00\x01binary\x00")
    out = tmp_path / "out.jsonl"
    env = base_env(INVOICECHAIN_MODEL_STORE=str(base_model_dir.parent))
    proc = cli(env, "extract", str(folder), "--out", str(out), timeout=900)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    no_traceback(proc)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(line["source"] for line in lines) == [str(folder / "a.pdf"), str(folder / "broken.txt")]
    pdf = next(line for line in lines if line["source"].endswith("a.pdf"))
    assert pdf["fields"]["invoice_id"] and pdf["confidence"]
    assert "is binary, not text" in next(line for line in lines if line["source"].endswith("broken.txt"))["error"]
    # The progress bar (not a terminal here: one line per step) ends on 2/2.
    progress = [line for line in proc.stderr.splitlines() if line.startswith("extracting ")]
    assert progress[0] == "extracting 0/2" and progress[-1] == "extracting 2/2"
    assert f"error: {folder / 'broken.txt'}: broken.txt is binary" in proc.stderr
    assert "2 document(s)" in proc.stdout and "1 could not be read" in proc.stdout
