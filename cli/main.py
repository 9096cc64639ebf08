"""The `invoicechain` command: the Typer app and the registration of every command group.

A new command group is a Typer app in its own module (in `cli/` or in the package it
drives, above the core) registered here with one line."""

from __future__ import annotations

import typer

from api import keys_cli
from workers import ops_cli
from cli import corrections, db, master_data, models, payments, run, synth, train
from cli import inbox

app = typer.Typer(
    help="Invoice Toolchain: extract invoice fields with a LoRA-tuned LM and run the accounts-payable chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Top-level commands: api, worker, submit, status, extract, process, demo, db-upgrade.
app.add_typer(run.app)
app.add_typer(db.app)
app.add_typer(inbox.app)  # watch, beat, mail-poll
app.command("train", help="Fine-tune a LoRA adapter on JSONL data.")(train.train)
app.command("synth", help="Generate a synthetic invoice corpus.")(synth.synth)
# Command groups.
app.add_typer(models.app, name="models", help="Base model and adapter registry.")
app.add_typer(payments.app, name="payments", help="Payment batches.")
app.add_typer(corrections.app, name="corrections", help="Reviewers' corrections as training data.")
app.add_typer(keys_cli.app, name="keys", help="API keys: create, list, revoke.")
app.add_typer(ops_cli.app)  # reap, dead-letters, flower
master_data.register(app)  # master-data, vendors, rerun


if __name__ == "__main__":
    app()
