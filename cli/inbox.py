"""Inbox commands: `watch` (a drop folder), `beat` (the periodic scheduler: mailbox polling and
the reaper), `mail-poll` (poll the configured mailboxes once now), and the bulk `submit` that
takes files, folders and globs with a progress bar."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from invoicechain.config import get_settings

app = typer.Typer()


def _enqueue(invoice_id: str) -> None:
    from workers.chain import enqueue_invoice

    enqueue_invoice(invoice_id)


@app.command()
def watch(
    folder: Annotated[Path, typer.Argument(file_okay=False, help="The drop folder; done/ and failed/ are made inside it.")],
    once: Annotated[bool, typer.Option(help="Take what is stable now and stop (no watching).")] = False,
) -> None:
    """Watch a drop folder: take each file once it is stable, move it to done/ or failed/ (with a reason file)."""
    from ingestion.dropfolder import DropFolder
    from invoicechain.db.session import init_db

    settings = get_settings()
    init_db(settings)
    folder.mkdir(parents=True, exist_ok=True)
    drop = DropFolder(folder, settings=settings, enqueue=_enqueue)

    def show(report) -> None:
        if report.paused:
            typer.echo("paused: the extraction queue is over its limit", err=True)
        for t in report.taken:
            typer.echo(f"{t.name}\t{t.invoice_id or 'failed'}\t{'duplicate' if t.invoice_id and not t.created else t.reason or 'new'}")

    if once:
        if settings.watch_stable_s > 0:
            drop.stable()
            time.sleep(settings.watch_stable_s)
        show(drop.scan())
        return
    typer.echo(f"watching {folder} (files stable for {settings.watch_stable_s} s are taken); Ctrl-C stops", err=True)
    try:
        drop.watch(on_report=show)
    except KeyboardInterrupt:
        pass


@app.command("mail-poll")
def mail_poll() -> None:
    """Poll every configured mailbox once now (what beat does every mail_poll_interval_s)."""
    from dataclasses import asdict

    from ingestion.mailbox import poll_all
    from invoicechain.db.session import init_db

    settings = get_settings()
    if not settings.mailboxes:
        typer.echo("no mailboxes configured (INVOICECHAIN_MAILBOXES)", err=True)
        raise typer.Exit(2)
    init_db(settings)
    for report in poll_all(enqueue=_enqueue, settings=settings):
        typer.echo(asdict(report))


@app.command()
def beat(
    schedule: Annotated[Path | None, typer.Option(help="Beat's schedule file (default: data_dir/celerybeat-schedule).")] = None,
) -> None:
    """Run Celery beat: mailbox polling every mail_poll_interval_s and the stuck-invoice reaper."""
    from workers.celery_app import app as celery_app

    settings = get_settings()
    path = schedule or settings.data_dir / "celerybeat-schedule"
    path.parent.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", "--loglevel=INFO", f"--schedule={path}"])


def submit_paths(paths: list[str]) -> int:
    """Send files, folders and globs to the API with a progress bar; waits out 429 (backpressure).
    Returns the exit code: 0 when every document was accepted, 1 when one was not, 2 when a path
    named is missing or of a type the API does not take (nothing is sent), 3 when the API cannot
    be reached."""
    from rich.console import Console
    from rich.progress import Progress

    from cli.client import EXIT_FAILED, EXIT_UNREACHABLE, ApiUnavailable, error_text, request
    from cli.documents import SUBMIT_TYPES, UnsupportedDocument, collect_submissions, read_document

    try:
        files, skipped = collect_submissions(paths)
    except UnsupportedDocument as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    if skipped:
        kinds = ", ".join(sorted({p.suffix.lower() or "(no suffix)" for p in skipped}))
        typer.echo(f"left out {len(skipped)} file(s) of other types ({kinds})", err=True)
    if not files:
        typer.echo("error: no documents to submit (PDF, e-invoice XML, PNG/JPEG/TIFF or .txt)", err=True)
        return EXIT_FAILED
    failed = 0
    with Progress(console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("submitting", total=len(files))
        for path in files:
            ctype = SUBMIT_TYPES[path.suffix.lower()]
            try:
                text = read_document(path) if ctype == "text/plain" else None
            except (ValueError, OSError) as exc:
                failed += 1
                typer.echo(f"{path}\terror\t{exc}")
                progress.advance(task)
                continue
            while True:
                try:
                    if text is not None:
                        resp = request("POST", "/v1/invoices", json={"text": text, "filename": path.name}, timeout=60)
                    else:
                        with path.open("rb") as fh:
                            resp = request("POST", "/v1/invoices", files={"file": (path.name, fh, ctype)}, timeout=60)
                except ApiUnavailable as exc:
                    progress.stop()
                    typer.echo(f"error: {exc}", err=True)
                    return EXIT_UNREACHABLE
                if resp.status_code != 429:
                    break
                wait = float(resp.headers.get("Retry-After", "5"))
                progress.console.print(f"backpressure: waiting {wait:.0f} s")
                time.sleep(wait)
            if resp.status_code in (200, 201, 202):
                body = resp.json()
                dup = "\tduplicate" if body.get("duplicate") else ""
                typer.echo(f"{path}\t{body['id']}\t{body['status']}{dup}")
            else:
                failed += 1
                typer.echo(f"{path}\terror\t{error_text(resp)}")
            progress.advance(task)
    return EXIT_FAILED if failed else 0
