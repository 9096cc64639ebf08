"""`invoicechain synth`: generate a synthetic invoice corpus (also `python -m cli.synth`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def synth(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of documents.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same files.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the corpus (created if missing).")],
    fault_rate: Annotated[
        float, typer.Option("--fault-rate", min=0.0, max=1.0, help="Share of documents with an injected fault.")
    ] = 0.3,
    load_master_data: Annotated[
        bool, typer.Option("--load-master-data", help="Also load the master data into the configured database.")
    ] = False,
    layouts: Annotated[
        list[str] | None, typer.Option("--layout", help="Only these layouts (repeat the option for several).")
    ] = None,
) -> None:
    """Generate invoices as PDFs with their text, exact ground truth, faults and master data."""
    from training.synth.corpus import generate_corpus

    summary = generate_corpus(n, seed, out, fault_rate=fault_rate, layouts=layouts or None)
    typer.echo(summary.markdown())
    if summary.toolchain_jsonl:
        typer.echo(f"toolchain records: {summary.toolchain_jsonl}")
    if load_master_data:
        from invoicechain.config import get_settings
        from invoicechain.db.session import init_db, session_scope
        from invoicechain.master_data import load_master_data as load, read_master_data

        settings = get_settings()
        init_db(settings)
        with session_scope(settings) as session:
            counts = load(session, read_master_data(summary.master_data))
        typer.echo("master data rows written: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    typer.run(synth)
