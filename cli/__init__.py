"""The `invoicechain` command line: the application entry point, one module per command group."""
