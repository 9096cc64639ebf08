"""`invoicechain keys create|list|revoke`: API keys, stored hashed; a new key is shown once.

Also the start check of `invoicechain api`: it refuses to serve when no key exists at all
(neither INVOICECHAIN_API_KEY nor a key in the database), unless
INVOICECHAIN_DEV_ALLOW_NO_KEY=1.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from invoicechain.config import Settings, get_settings

app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)


@app.command("create")
def create(
    owner: Annotated[str, typer.Option(help="Who the key belongs to; recorded on every decision made with it.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: submit, read, review, approve, train, admin.")] = "read",
    role: Annotated[str | None, typer.Option(help="Approver role (policy roles such as ap_clerk, controller).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new key as JSON.")] = False,
) -> None:
    """Create a key and print it (it is stored hashed and cannot be shown again)."""
    from invoicechain.auth import KeyError_, create_key
    from invoicechain.db.session import init_db, session_scope

    init_db()
    try:
        with session_scope() as session:
            row, key = create_key(session, owner, scopes, role=role)
            out = {"id": row.id, "prefix": row.prefix, "owner": row.owner, "role": row.role, "scopes": row.scopes, "key": key}
    except KeyError_ as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(out))
    else:
        typer.echo(f"{out['prefix']}\t{out['owner']}\t{','.join(out['scopes'])}\t{out['role'] or '-'}")
        typer.echo(key)


@app.command("list")
def list_(all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False) -> None:
    """Keys (prefix, owner, scopes, role, created, revoked): never the keys themselves."""
    from invoicechain.auth import list_keys
    from invoicechain.db.session import init_db, session_scope

    init_db()
    with session_scope() as session:
        for row in list_keys(session, include_revoked=all_):
            revoked = row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "-"
            typer.echo(f"{row.prefix}\t{row.owner}\t{','.join(row.scopes or [])}\t{row.role or '-'}\t"
                       f"{row.created_at.isoformat(timespec='seconds')}\t{revoked}")


@app.command("revoke")
def revoke(key: Annotated[str, typer.Argument(help="The key's prefix or id.")]) -> None:
    """Revoke a key: the next request made with it gets 401."""
    from invoicechain.auth import revoke_key
    from invoicechain.db.session import init_db, session_scope

    init_db()
    with session_scope() as session:
        row = revoke_key(session, key)
        if row is None:
            typer.echo(f"error: no key {key}", err=True)
            raise typer.Exit(1)
        typer.echo(f"revoked {row.prefix} ({row.owner})")


def api_start_problem(settings: Settings | None = None) -> str | None:
    """Why the API must not start (no key anywhere, no development flag), or None."""
    from sqlmodel import Session, select

    from invoicechain.db.session import get_engine
    from invoicechain.db.tables import ApiKey

    settings = settings or get_settings()
    if settings.api_token or settings.dev_allow_no_key:
        return None
    with Session(get_engine(settings)) as session:
        if session.exec(select(ApiKey.id).where(ApiKey.revoked_at.is_(None))).first():
            return None
    return ("No API key is configured: set INVOICECHAIN_API_KEY or create one with `invoicechain keys create`, "
            "or set INVOICECHAIN_DEV_ALLOW_NO_KEY=1 for local development.")
