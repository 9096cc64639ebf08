"""Celery app, one task per pipeline step, chain builder.

The app is made on first import of the package (as paperless-ngx's project package does),
so the `shared_task`s of `workers.tasks` always bind to it, whichever module is imported first.
"""

from workers.celery_app import app as celery_app

__all__ = ("celery_app",)
