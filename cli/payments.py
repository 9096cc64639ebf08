"""`invoicechain payments ...`: payment batches as ISO 20022 pain.001 and CSV."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Payment batches: export as ISO 20022 pain.001 and CSV.")


class ExportFormat(str, Enum):
    xml = "xml"
    csv = "csv"
    both = "both"


@app.command("export")
def export_payments_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the files into.", file_okay=False)],
    batch: Annotated[int | None, typer.Option("--batch", help="Batch id; default every open batch with payments.")] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="xml (pain.001, EUR only), csv, or both.")] = ExportFormat.both,
) -> None:
    """Write payment batches as pain.001 XML and/or CSV and mark them exported."""
    from invoicechain.ap.export import ExportError, export_payments
    from invoicechain.config import get_settings
    from invoicechain.db.session import session_scope

    settings = get_settings()
    try:
        with session_scope(settings) as session:
            results = export_payments(session, out, settings, batch_id=batch, fmt=fmt.value)
    except ExportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not results:
        typer.echo("No open payment batch has payments.")
        return
    for r in results:
        typer.echo(f"batch {r.batch_id} ({r.currency}): {r.payments} payment(s), total {r.total}")
        for path in r.files:
            typer.echo(f"  wrote {path}")
        for note in r.notes:
            typer.echo(f"  note: {note}")
