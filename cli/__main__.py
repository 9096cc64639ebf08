"""`python -m cli ...` is the `invoicechain` command."""

from cli.main import app

app()
