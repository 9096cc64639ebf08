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


@asynccontextmanager
async def lifespan(_: FastAPI):
    init_db(get_settings())
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
