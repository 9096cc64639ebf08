"""`invoicechain corrections ...`: reviewers' corrections as training data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from invoicechain.enums import AdapterName

app = typer.Typer(no_args_is_help=True, help="Reviewers' corrections as training data.")


@app.command("export")
def export_corrections_command(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write.", dir_okay=False)],
    adapter: Annotated[AdapterName | None, typer.Option("--adapter", help="Only records for this adapter.")] = None,
) -> None:
    """Write reviewers' corrections as training JSONL (extract and toolchain records)."""
    from training.corrections import export_corrections
    from invoicechain.config import get_settings
    from invoicechain.db.session import session_scope

    with session_scope(get_settings()) as session:
        counts = export_corrections(session, out, adapter.value if adapter else None)
    typer.echo(f"wrote {out}: {counts[AdapterName.EXTRACT]} extract record(s), {counts[AdapterName.TOOLCHAIN]} toolchain record(s)")


@app.command("vendors")
def vendor_memories_command(
    out: Annotated[Path | None, typer.Option(
        "--out", help="JSON file to write (default: the memory file the extract workers read).", dir_okay=False)] = None,
    min_invoices: Annotated[int, typer.Option(help="Fewest corrected invoices a vendor needs.", min=1)] = 10,
) -> None:
    """Learn a per-vendor memory (where each field is printed) from every vendor's corrected invoices."""
    import json

    from invoicechain.config import get_settings
    from invoicechain.db.session import session_scope
    from training.corrections import vendor_memories

    settings = get_settings()
    out = out or settings.resolved_vendor_memory_file
    with session_scope(settings) as session:
        memories = vendor_memories(session, min_invoices)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(memories, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out)  # the extract workers never read a half-written file
    for vendor, memory in memories.items():
        typer.echo(f"{vendor}: {memory['invoices']} corrected invoice(s), fields {', '.join(sorted(memory['cues']))}")
    typer.echo(f"wrote {out}: {len(memories)} vendor(s)")
