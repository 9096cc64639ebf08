"""The extraction pipeline: document text to grounded, reconciled invoice fields.

Pure Python over the core (`invoicechain`): no torch, no database, no Celery, no API. The
model runtime (`models`) compiles the grammars built here and decodes under them.
"""
