"""The FastAPI application: thin routes over invoicechain, every error a clear JSON answer."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import metrics, openapi
from api.hardening import RequestGuard
from api.routes import dead_letters
from api.routes import desk, health, invoices, master_data, review, training_jobs
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


def _warm_routes(app: FastAPI) -> None:
    """Build each included router's route table now: FastAPI builds it on the first request
    that reaches the router, and that request would pay for it."""
    stack = list(app.router.routes)
    while stack:
        route = stack.pop()
        for build in ("effective_candidates", "effective_low_priority_routes"):
            if hasattr(route, build):
                stack.extend(c for c in getattr(route, build)() if hasattr(c, "effective_candidates"))


@asynccontextmanager
async def lifespan(app: FastAPI):
    from starlette.concurrency import run_in_threadpool

    init_db(get_settings())
    await run_in_threadpool(_warm_broker)
    _warm_routes(app)
    yield


def _docs_routes(app: FastAPI, access: str) -> None:
    """/openapi.json, /docs and /redoc: open, behind a `read` key, or not served (settings.docs_access)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    from api.deps import ReadAccess

    if access == "off":
        return
    deps = [ReadAccess] if access == "key" else []

    @app.get("/openapi.json", include_in_schema=False, dependencies=deps)
    def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=deps)
    def swagger():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, dependencies=deps)
    def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")


def _allowed_methods(request: Request) -> list[str]:
    """The methods of the most specific route templates matching the path (`{entity}.csv` over `{entity}`)."""
    import re

    from starlette.routing import compile_path

    from api.deps import api_routes

    path = request.scope.get("path", "")
    matching = [(len(re.sub(r"\{[^}]*\}", "", template)), method) for method, template, _ in api_routes(request.app)
                if compile_path(template)[0].match(path)]
    best = max((literal for literal, _ in matching), default=0)
    methods = {method for literal, method in matching if literal == best}
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(title="Invoice Toolchain", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    for module in (health, invoices, review, training_jobs):
        app.include_router(module.router)
    app.include_router(desk.router)
    metrics.register()  # queue depth, step latency, outcomes, review backlog on /metrics
    app.include_router(master_data.router)
    app.include_router(dead_letters.router)
    _docs_routes(app, settings.docs_access)

    app.add_middleware(RequestGuard)
    openapi.install(app)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 405:  # every method the path serves, not only its first route's
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return await http_exception_handler(request, exc)

    @app.exception_handler(DataError)
    async def value_out_of_range(_: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot hold (a number beyond bigint, text it refuses): bad input.
        log.info("refused a value the database cannot store: %s", exc.orig)
        return JSONResponse({"detail": "A value in the request is out of range or not storable."}, status_code=422)

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
