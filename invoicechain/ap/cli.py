"""Commands for payments and corrections (mounted as `invoicechain payments` and `invoicechain corrections`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

payments_app = typer.Typer(no_args_is_help=True, help="Payment batches: export as ISO 20022 pain.001 and CSV.")
corrections_app = typer.Typer(no_args_is_help=True, help="Reviewers' corrections as training data.")


class ExportFormat(str, Enum):
    xml = "xml"
    csv = "csv"
    both = "both"


class AdapterName(str, Enum):
    extract = "extract"
    toolchain = "toolchain"


@payments_app.command("export")
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


@corrections_app.command("export")
def export_corrections_command(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write.", dir_okay=False)],
    adapter: Annotated[AdapterName | None, typer.Option("--adapter", help="Only records for this adapter.")] = None,
) -> None:
    """Write reviewers' corrections as training JSONL (extract and toolchain records)."""
    from invoicechain.ap.corrections import export_corrections
    from invoicechain.config import get_settings
    from invoicechain.db.session import session_scope

    with session_scope(get_settings()) as session:
        counts = export_corrections(session, out, adapter.value if adapter else None)
    typer.echo(f"wrote {out}: {counts['extract']} extract record(s), {counts['toolchain']} toolchain record(s)")
