"""Invoice intake: mailboxes, drop folders, structured e-invoices, deduplication and backpressure.

A services layer: it may import the `invoicechain` core, never the API, CLI, workers or UI.
"""
