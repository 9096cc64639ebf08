"""`invoicechain db-upgrade`: the database schema."""

from __future__ import annotations

import typer

app = typer.Typer()


@app.command("db-upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (also done at every start of the API and the workers)."""
    from invoicechain.db.session import init_db

    init_db()
    typer.echo("database at the newest schema")
