"""Celery app, one task per pipeline step, chain builder."""
