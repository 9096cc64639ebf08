"""Operations commands: `invoicechain reap`, `invoicechain dead-letters list|retry`, `invoicechain flower`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from invoicechain.config import get_settings

app = typer.Typer(no_args_is_help=True)
dead_letters_app = typer.Typer(help="Invoices whose step kept crashing its worker.", no_args_is_help=True)
app.add_typer(dead_letters_app, name="dead-letters")


@app.command()
def reap() -> None:
    """Send again every invoice stuck in a running step past its deadline (what the beat reaper does)."""
    from invoicechain import recovery
    from invoicechain.db.session import init_db
    from workers.chain import enqueue_invoice

    init_db()
    for item in recovery.reap(enqueue_invoice):
        typer.echo(f"{item.invoice_id}\t{item.step}\tstuck {item.since_s:.0f} s\tsent again")


@dead_letters_app.command("list")
def list_(all_: Annotated[bool, typer.Option("--all", help="Include retried ones.")] = False) -> None:
    """Dead letters: id, invoice, step, crashes, when, retried by."""
    from invoicechain import recovery
    from invoicechain.db.session import init_db, session_scope

    init_db()
    with session_scope() as session:
        for d in recovery.dead_letters(session, include_retried=all_, limit=1000):
            typer.echo(f"{d.id}\t{d.invoice_id}\t{d.step}\t{d.attempts}\t{d.created_at.isoformat(timespec='seconds')}\t{d.retried_by or '-'}")


@dead_letters_app.command("retry")
def retry(letter_id: int, actor: Annotated[str, typer.Option(help="Who retries it (recorded).")] = "cli") -> None:
    """Run a dead-lettered invoice again from the step that crashed."""
    from invoicechain import recovery
    from invoicechain.db.session import init_db, session_scope
    from workers.chain import enqueue_invoice

    init_db()
    try:
        with session_scope() as session:
            letter = recovery.retry_dead_letter(session, letter_id, actor)
            invoice_id, step = letter.invoice_id, letter.step
    except recovery.RetryRefused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    enqueue_invoice(invoice_id, step)
    typer.echo(f"{invoice_id}\tsent again from {step}")


@app.command()
def flower(port: Annotated[int, typer.Option(help="Port to listen on.")] = 5555,
           address: Annotated[str, typer.Option(help="Interface to bind.")] = "0.0.0.0") -> None:
    """Flower over the broker, behind basic auth from INVOICECHAIN_FLOWER_BASIC_AUTH (user:password)."""
    settings = get_settings()
    auth = settings.flower_basic_auth
    if not auth and not settings.dev_allow_no_key:
        typer.echo("error: set INVOICECHAIN_FLOWER_BASIC_AUTH=user:password (or INVOICECHAIN_DEV_ALLOW_NO_KEY=1).", err=True)
        raise typer.Exit(2)
    if auth and (":" not in auth or not auth.split(":", 1)[0] or len(auth.split(":", 1)[1]) < 8):
        typer.echo("error: INVOICECHAIN_FLOWER_BASIC_AUTH must be user:password with a password of 8 characters or more.", err=True)
        raise typer.Exit(2)
    argv = ["celery", "-A", "workers.celery_app", "flower", f"--port={port}", f"--address={address}"]
    if auth:
        argv.append(f"--basic-auth={auth}")
    os.execvp(argv[0], argv)
