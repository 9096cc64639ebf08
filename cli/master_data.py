"""`invoicechain master-data import|export`, `invoicechain rerun` and `invoicechain vendors`:
the company's master data in and out, waiting invoices run again, vendors created from
invoices and their bank details confirmed by a second person."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from invoicechain.config import get_settings
from invoicechain.decisions import InvoiceStatus, Reason

app = typer.Typer(no_args_is_help=True)
vendors_app = typer.Typer(no_args_is_help=True)


def _enqueue(invoice_id: str, step: str) -> None:
    from workers.chain import enqueue_invoice

    enqueue_invoice(invoice_id, step)


def _report_reruns(queued, failed) -> None:
    for r in queued:
        typer.echo(f"rerun\t{r.invoice_id}\tfrom {r.step}\t(was {r.status}: {', '.join(r.reasons)})")
    for r, problem in failed:
        typer.echo(f"not rerun\t{r.invoice_id}\t{problem}", err=True)


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="CSV files (vendors.csv, purchase_orders.csv, purchase_order_lines.csv, goods_receipts.csv, posted_invoices.csv), a folder of them, or master_data.json.")],
    rerun: Annotated[bool, typer.Option(help="Re-run the invoices waiting for master data afterwards.")] = True,
) -> None:
    """Load master data: all or nothing, upserts by natural key, a line-by-line error report."""
    from invoicechain.ap.rerun import rerun_waiting
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.master_data import MasterDataError, import_master_data, read_master_data_files

    settings = get_settings()
    try:
        data = read_master_data_files(paths)
        init_db(settings)
        with session_scope(settings) as session:
            counts = import_master_data(session, data)
    except MasterDataError as exc:
        for err in exc.errors:
            typer.echo(str(err), err=True)
        typer.echo(f"{len(exc.errors)} error(s); nothing was loaded.", err=True)
        raise typer.Exit(1) from None
    given = data.counts()
    for entity, n in given.items():
        if n:
            typer.echo(f"{entity}\t{n} read\t{counts[entity]} written")
    if rerun and settings.rerun_after_import:
        _report_reruns(*rerun_waiting(settings, _enqueue, actor="master-data import", why="master data imported"))


@app.command("export")
def export(folder: Annotated[Path, typer.Argument(help="Folder to write one CSV per entity into.")]) -> None:
    """Write the loaded master data back to CSV (the same headers the import reads)."""
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.master_data import export_master_data

    init_db()
    with session_scope() as session:
        counts = export_master_data(session, folder)
    for entity, n in counts.items():
        typer.echo(f"{folder / (entity + '.csv')}\t{n} rows")


def rerun(
    status: Annotated[list[str], typer.Option("--status", help="Status of the invoices to re-run (repeatable).")] = [InvoiceStatus.INVALID, InvoiceStatus.NEEDS_REVIEW],
    reason: Annotated[list[str], typer.Option("--reason", help="Reason code that stopped them (repeatable), e.g. UNKNOWN_VENDOR.")] = [Reason.UNKNOWN_VENDOR],
    invoice: Annotated[list[str], typer.Option("--invoice", help="Only these invoice ids (repeatable).")] = [],
) -> None:
    """Run waiting invoices again from the step that stopped them (after new master data)."""
    from invoicechain.ap.rerun import rerun_waiting
    from invoicechain.db.session import init_db

    settings = get_settings()
    init_db(settings)
    try:
        queued, failed = rerun_waiting(settings, _enqueue, statuses=status, reasons=reason,
                                       invoice_ids=invoice or None, actor="cli", why="rerun requested")
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _report_reruns(queued, failed)
    if not queued and not failed:
        typer.echo("no waiting invoice matches")
    raise typer.Exit(1 if failed else 0)


@vendors_app.command("create-from-invoice")
def create_from_invoice(
    invoice_id: str,
    actor: Annotated[str, typer.Option(help="Who creates the vendor (recorded; a different person confirms the bank details).")],
    vendor_id: Annotated[str | None, typer.Option(help="The vendor number in your ERP; default a new NEW-... id.")] = None,
) -> None:
    """Create the vendor an invoice names (its bank details held until a second person confirms)."""
    from invoicechain.ap.rerun import rerun_waiting
    from invoicechain.ap.vendor_onboarding import OnboardingError, create_vendor_from_invoice
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.db.tables import Invoice

    settings = get_settings()
    init_db(settings)
    try:
        with session_scope(settings) as session:
            inv = session.get(Invoice, invoice_id)
            if inv is None:
                raise OnboardingError(f"Invoice {invoice_id} does not exist.")
            vendor = create_vendor_from_invoice(session, inv, actor, {"id": vendor_id} if vendor_id else None)
            typer.echo(f"vendor\t{vendor.id}\t{vendor.name}\t{vendor.status}")
    except OnboardingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _report_reruns(*rerun_waiting(settings, _enqueue, reasons=[Reason.UNKNOWN_VENDOR], invoice_ids=[invoice_id],
                                  actor=actor, why="vendor created from this invoice"))


@vendors_app.command("confirm-bank")
def confirm_bank(
    vendor_id: str,
    actor: Annotated[str, typer.Option(help="Who confirms: not the person who created the vendor.")],
) -> None:
    """Confirm a new vendor's bank details; its held invoices go on to payment."""
    from invoicechain.ap.rerun import rerun_waiting
    from invoicechain.ap.vendor_onboarding import OnboardingError, confirm_vendor_bank, held_invoices
    from invoicechain.db.session import init_db, session_scope

    settings = get_settings()
    init_db(settings)
    try:
        with session_scope(settings) as session:
            vendor = confirm_vendor_bank(session, vendor_id, actor)
            held = held_invoices(session, vendor)
            typer.echo(f"vendor\t{vendor.id}\t{vendor.status}\tconfirmed by {actor}")
    except (OnboardingError, LookupError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if held:
        _report_reruns(*rerun_waiting(settings, _enqueue, statuses=[InvoiceStatus.PAYMENT_HELD], reasons=[Reason.BANK_ACCOUNT_UNVERIFIED],
                                      invoice_ids=held, actor=actor, why="vendor bank details confirmed"))


def register(main: typer.Typer) -> None:
    """Mount `master-data`, `vendors` and `rerun` on the main command."""
    main.add_typer(app, name="master-data", help="Vendors, purchase orders, goods receipts: import from CSV or JSON, export to CSV.")
    main.add_typer(vendors_app, name="vendors", help="Vendors created from invoices; their bank details confirmed by a second person.")
    main.command("rerun")(rerun)
