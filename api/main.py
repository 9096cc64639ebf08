"""The FastAPI application: thin routes over invoicechain, every error a clear JSON answer."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from api.routes import health, invoices, review, training_jobs
from invoicechain import __version__
from invoicechain.config import get_settings
from invoicechain.db.session import init_db

log = logging.getLogger(__name__)


def _warm_broker() -> None:
    """Load the task modules and open the broker connection now, not on the first upload."""
    try:
        import workers.chain  # noqa: F401  (the Celery app and its tasks)
        from workers.celery_app import app as celery_app

        with celery_app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # uploads still store the document and answer 503 on enqueue
        log.warning("broker not reachable at start: %s", exc)


@asynccontextmanager
async def lifespan(_: FastAPI):
    from starlette.concurrency import run_in_threadpool

    init_db(get_settings())
    await run_in_threadpool(_warm_broker)
    yield


def create_app() -> FastAPI:
    app = FastAPI(title="Invoice Toolchain", version=__version__, lifespan=lifespan)
    for module in (health, invoices, review, training_jobs):
        app.include_router(module.router)

    @app.exception_handler(OperationalError)
    async def database_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return JSONResponse({"detail": "The database is unavailable; try again shortly."}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback; the client gets a clear answer instead of a bare 500 page.
        log.exception("unhandled error")
        return JSONResponse({"detail": f"Internal error: {type(exc).__name__}."}, status_code=500)

    return app


app = create_app()
