"""Services and runs: `api`, `worker`, `submit`, `status`, `extract`, `process`, `demo`.

Mounted at the top level of the `invoicechain` command (`cli.main`). Heavy imports happen
inside the commands, so the command line starts fast."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from invoicechain.config import get_settings
from invoicechain.decisions import ALL_STEPS, Decision, InvoiceStatus
from invoicechain.enums import Queue

app = typer.Typer()

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
STEP_COLUMNS = ALL_STEPS


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --- services --------------------------------------------------------------------------


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
) -> None:
    """Run the HTTP API (FastAPI under uvicorn); refuses to start while no API key exists."""
    import uvicorn

    from api.keys_cli import api_start_problem
    from invoicechain.db.session import init_db

    init_db()
    problem = api_start_problem()
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    # uvicorn takes httptools and uvloop when they are installed (loop and http "auto").
    uvicorn.run("api.main:app", host=host, port=port, workers=workers, log_level="info",
                access_log=get_settings().api_access_log)


def queue_names(queues: str) -> list[str]:
    """The queue names of a comma-separated `--queues` value."""
    return [q.strip() for q in queues.split(",") if q.strip()]


def worker_argv(queues: str, concurrency: int, pool: str | None = None, hostname: str | None = None) -> list[str]:
    settings = get_settings()
    names = queue_names(queues)
    argv = ["worker", "--loglevel=INFO", f"--queues={','.join(names)}", f"--concurrency={concurrency}", "-E"]
    if Queue.EXTRACT in names:
        # celery-batches holds messages unacknowledged until their batch has run: the prefetch
        # window holds the batch in the pool and the next one filling behind it.
        argv.append(f"--prefetch-multiplier={2 * max(1, settings.extract_batch_size)}")
    if pool:
        argv.append(f"--pool={pool}")
    argv.append(f"--hostname={hostname or ('-'.join(names) + '@%h')}")
    return argv


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues: ingest, extract, toolchain, training.")] = "ingest,extract,toolchain",
    concurrency: Annotated[int, typer.Option(help="Worker processes (1 for extract and training: one model each).")] = 1,
    pool: Annotated[str | None, typer.Option(help="Celery pool: prefork (default), solo, threads.")] = None,
) -> None:
    """Run a Celery worker on the given queues."""
    _offline()
    from invoicechain.db.session import init_db
    from workers.celery_app import app as celery_app

    init_db()
    # Loaded once here, before the pool forks, and shared by the pool processes (copy-on-write)
    # instead of loaded by each on its first task.
    if Queue.INGEST in queue_names(queues):
        from ingestion.documents import preload as preload_readers

        preload_readers()
    if Queue.TOOLCHAIN in queue_names(queues):
        import invoicechain.ap.steps  # noqa: F401  (the accounts-payable rules)
        from invoicechain.ap.embeddings import preload

        preload()
    from workers.celery_app import configure_worker

    configure_worker(queue_names(queues))  # this worker's visibility timeout and unacked hash
    import gc

    # What is loaded so far lives as long as the worker: the collector skips it from now on, and
    # the pool processes keep sharing its pages instead of copying them when the collector scans.
    gc.collect()
    gc.freeze()
    celery_app.worker_main(argv=worker_argv(queues, concurrency, pool))


# --- submitting and watching -------------------------------------------------------------


def _headers() -> dict:
    token = get_settings().api_token
    return {"Authorization": f"Bearer {token}"} if token else {}


@app.command()
def submit(
    paths: Annotated[list[str], typer.Argument(help="Files, folders (taken recursively) and glob patterns: PDF, e-invoice XML, .txt.")],
) -> None:
    """Send documents to the API with a progress bar; prints one line per document with its invoice id."""
    from cli.inbox import submit_paths

    raise typer.Exit(submit_paths(paths))


@app.command()
def status(
    invoice_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON answer instead of tables.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the chain stops (final, or waiting for a person).")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 300.0,
    interval: Annotated[float, typer.Option(help="Seconds between checks with --wait.")] = 2.0,
) -> None:
    """Show an invoice: status, a table of its fields and one of its steps. Exit code 1 when it failed."""
    from cli.client import EXIT_FAILED, EXIT_TIMEOUT, EXIT_UNREACHABLE, ApiUnavailable, error_text, fail, invoice_view, request, settled

    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = request("GET", f"/v1/invoices/{invoice_id}")
        except ApiUnavailable as exc:
            fail(str(exc), EXIT_UNREACHABLE)
        if resp.status_code != 200:
            fail(error_text(resp))
        body = resp.json()
        if not wait or settled(body["status"]):
            break
        if time.monotonic() >= deadline:
            typer.echo(f"error: invoice {invoice_id} is still {body['status']} after {timeout:g} s", err=True)
            raise typer.Exit(EXIT_TIMEOUT)
        time.sleep(interval)
    typer.echo(json.dumps(body, indent=2, ensure_ascii=False) if as_json else invoice_view(body).rstrip())
    raise typer.Exit(EXIT_FAILED if body["status"] == InvoiceStatus.FAILED else 0)


# --- in-process runs ---------------------------------------------------------------------


def _read_document(path: Path) -> str:
    from cli.documents import read_document

    return read_document(path)


def _expand(paths: list[Path]) -> list[Path]:
    """Each document once, supported types only (exits with a clear message otherwise)."""
    from cli.documents import UnsupportedDocument, collect_documents

    try:
        return collect_documents(paths)
    except UnsupportedDocument as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def extract(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="PDF or .txt files, or folders of them.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL output, one line per document.")],
    explain: Annotated[bool, typer.Option("--explain", help="Also say which rules fired on each document "
                                          "(document model, each field's grammar rule, reconciliation steps).")] = False,
) -> None:
    """Extraction only, in-process, no broker and no database."""
    _offline()
    from models.service import load_runtime

    settings = get_settings()
    docs = _expand(paths)  # before the model loads: a wrong file type fails at once
    texts, errors = {}, {}
    for p in docs:
        try:
            texts[p] = _read_document(p)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            errors[p] = str(exc)
    runtime = load_runtime(settings, use_registry=False) if texts else None  # nothing readable: no model
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = max(1, settings.extract_batch_size)
    keys = list(texts)
    from cli.documents import Progress

    with out.open("w", encoding="utf-8") as fh, Progress(len(docs)) as bar:
        for p, msg in errors.items():
            fh.write(json.dumps({"source": str(p), "fields": None, "confidence": None, "error": msg}) + "\n")
            bar.update(1)
        for i in range(0, len(keys), batch):
            chunk = keys[i : i + batch]
            for p, res in zip(chunk, runtime.extract([texts[k] for k in chunk])):
                line = {"source": str(p), "fields": res.fields, "confidence": res.confidence, "grounding": res.grounding}
                if res.reconciled:
                    line["reconciled"] = res.reconciled
                if explain:
                    from extraction.pipeline import explain as explain_document

                    line["explain"] = {**explain_document(texts[p]), "reconciliation": res.rules}
                    typer.echo(f"{p}: grammar rules {sorted(set(line['explain']['grammar'].values()))}; "
                               f"reconciliation {res.rules or 'none'}", err=True)
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            bar.update(len(chunk))
    for p, msg in errors.items():
        typer.echo(f"error: {p}: {msg}", err=True)
    typer.echo(f"{len(docs)} document(s) → {out}" + (f"; {len(errors)} could not be read" if errors else ""))
    raise typer.Exit(1 if errors else 0)


def process_documents(paths: list[Path], source: str = "cli") -> list[dict]:
    """The whole chain in-process with the task code: ingest, batched extract, the four steps."""
    from invoicechain import pipeline
    from ingestion import documents
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.db.tables import Invoice, StepRun
    from invoicechain.decisions import TOOLCHAIN_STEPS, Step
    from sqlmodel import select

    settings = get_settings()
    init_db(settings)
    invoice_of: dict[Path, str] = {}
    errors: dict[Path, str] = {}
    for p in paths:
        try:
            sub = documents.submit_document(p.read_bytes(), p.name, None, source=source, settings=settings)
            invoice_of[p] = sub.invoice.id
            documents.run_ingest(sub.invoice.id, settings)
        except documents.DocumentRejected as exc:
            errors[p] = str(exc)

    todo = documents.extraction_inputs(list(invoice_of.values()), settings)
    # Invoices whose ingest stopped them (needs OCR, damaged) are not extracted.
    with session_scope(settings) as session:
        todo = {k: v for k, v in todo.items() if session.get(Invoice, k).status == InvoiceStatus.PROCESSING}
        for k in list(todo):
            if session.exec(select(StepRun).where(StepRun.invoice_id == k, StepRun.step == Step.INGEST)).one().decision != Decision.OK:
                todo.pop(k)
    if todo:
        from models.service import load_runtime

        runtime = load_runtime(settings)
        keys, batch = list(todo), max(1, settings.extract_batch_size)
        for i in range(0, len(keys), batch):
            chunk = keys[i : i + batch]
            t0 = time.perf_counter()
            results = runtime.extract([todo[k] for k in chunk])
            model_s = time.perf_counter() - t0
            for invoice_id, res in zip(chunk, results):
                step_t0 = pipeline.batched_step_start(model_s, 0.0, len(chunk))
                documents.save_extraction(invoice_id, res, t0=step_t0, model_ms=1000 * model_s, settings=settings)
    else:
        runtime = None

    from workers.tasks import toolchain_proposer  # same mode handling as the workers

    for invoice_id in invoice_of.values():
        with session_scope(settings) as session:
            ok = session.get(Invoice, invoice_id).status == InvoiceStatus.PROCESSING
        for step in TOOLCHAIN_STEPS:
            if not ok:
                break
            ok = pipeline.run_toolchain_step(invoice_id, step, settings, proposer=toolchain_proposer(step)).proceed

    rows = []
    with session_scope(settings) as session:
        for p in paths:
            if p in errors:
                rows.append({"source": str(p), "invoice": None, "status": "rejected", "error": errors[p], "fields": None, "steps": {}})
                continue
            inv = session.get(Invoice, invoice_of[p])
            runs = session.exec(select(StepRun).where(StepRun.invoice_id == inv.id)).all()
            steps = {r.step: {"decision": r.decision, "reasons": r.reasons} for r in runs}
            rows.append({"source": str(p), "invoice": inv.id, "status": inv.status, "error": inv.error,
                         "fields": inv.fields, "steps": {s: steps[s] for s in STEP_COLUMNS if s in steps}})
    return rows


@app.command()
def process(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="PDF or .txt files, or folders of them.")],
    out: Annotated[Path, typer.Option("--out", help="JSONL output, one line per document.")],
) -> None:
    """The whole chain in-process (same task code, no broker); one JSONL line per document."""
    _offline()
    docs = _expand(paths)
    rows = process_documents(docs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    typer.echo(f"{len(rows)} document(s) → {out}")


# --- the demo ----------------------------------------------------------------------------


@app.command()
def demo(
    samples: Annotated[Path, typer.Option(help="Folder of invoices to run.")] = SAMPLES,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every invoice.")] = 900,
) -> None:
    """Every sample invoice through the whole chain on real Celery workers; prints a table.

    Without REDIS_URL and DATABASE_URL it runs on the embedded default (kombu's filesystem
    transport and SQLite under the data dir); with them, on Redis and Postgres.

    Long because starting the workers, submitting, waiting and printing share one `finally` that stops the workers whatever happens.
    """
    _offline()
    from rich.console import Console
    from rich.table import Table
    from sqlmodel import select

    from ingestion import documents
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.db.tables import Invoice, StepRun
    from invoicechain.decisions import TERMINAL_STATUSES, WAITING_STATUSES
    from invoicechain.master_data import load_master_data, read_master_data
    from models.service import ensure_models

    console = Console()
    settings = get_settings()
    mode = "embedded (filesystem broker, SQLite)" if settings.embedded else "Redis"
    console.print(f"[bold]Invoice Toolchain demo[/] · broker: {mode} · database: {settings.resolved_database_url.split('@')[-1]}")
    init_db(settings)
    ensure_models(settings)
    master = samples / "master_data.json"
    if master.exists():
        with session_scope(settings) as session:
            load_master_data(session, read_master_data(master))
    docs = sorted(p for p in samples.iterdir() if p.suffix.lower() in (".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff"))
    if not docs:
        console.print(f"[red]No PDF in {samples}.[/]")
        raise typer.Exit(1)

    env = dict(os.environ)
    # Stopped with SIGTERM, the demo still stops its workers (the `finally` below runs).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from cli.processes import spawn, stop

    procs = [
        spawn(Queue.EXTRACT, ["worker", "--queues", Queue.EXTRACT, "--concurrency", "1"], env),
        spawn(Queue.TOOLCHAIN, ["worker", "--queues", f"{Queue.INGEST},{Queue.TOOLCHAIN}", "--concurrency", "2"], env),
    ]
    from workers.chain import enqueue_invoice

    t_start = time.perf_counter()
    invoice_of = {}
    try:
        for p in docs:
            sub = documents.submit_document(p.read_bytes(), p.name, "application/pdf", source="demo", settings=settings)
            invoice_of[p] = sub.invoice.id
            if sub.created or sub.invoice.status == InvoiceStatus.RECEIVED:
                enqueue_invoice(sub.invoice.id)
        done_states = {str(s) for s in TERMINAL_STATUSES | WAITING_STATUSES}
        with console.status("waiting for the workers ...") as spinner:
            while True:
                with session_scope(settings) as session:
                    states = [session.get(Invoice, i).status for i in invoice_of.values()]
                finished = sum(s in done_states for s in states)
                spinner.update(f"{finished}/{len(states)} invoices finished")
                if finished == len(states):
                    break
                if any(p.poll() is not None for p in procs):
                    console.print("[red]A worker exited; see its log above.[/]")
                    raise typer.Exit(1)
                if time.perf_counter() - t_start > timeout:
                    console.print("[red]Timed out waiting for the workers.[/]")
                    raise typer.Exit(1)
                time.sleep(0.5)
    finally:
        stop(procs)

    table = Table(title=f"{len(docs)} invoices in {time.perf_counter() - t_start:.1f} s")
    for col in ("document", "invoice id", "vendor", "total", *STEP_COLUMNS[2:], "status"):
        table.add_column(col, overflow="fold")
    with session_scope(settings) as session:
        for p, invoice_id in invoice_of.items():
            inv = session.get(Invoice, invoice_id)
            f = inv.fields or {}
            runs = {r.step: r for r in session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id)).all()}
            cells = []
            for s in STEP_COLUMNS[2:]:
                r = runs.get(s)
                codes = ",".join(x.get("code", "") for x in (r.reasons or []) if isinstance(x, dict))[:40] if r else ""
                cells.append(f"{r.decision}\n[dim]{codes}[/]" if r else "·")
            total = f"{f.get('total_amount') or '?'} {f.get('currency') or ''}".strip()
            table.add_row(p.name, f.get("invoice_id") or "?", (f.get("vendor_name") or "?")[:30], total, *cells, inv.status)
    console.print(table)
