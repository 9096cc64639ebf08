"""Liveness, readiness (database and broker reachable) and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import SettingsDep, current_identity
from invoicechain.auth import Scope
from invoicechain.db.session import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(settings: SettingsDep) -> JSONResponse:
    """Ready when the database answers and the broker accepts a connection."""
    checks: dict[str, str] = {}
    try:
        with get_engine(settings).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        from workers.celery_app import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


async def _metrics_access(settings: SettingsDep, authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
                    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None) -> None:
    """settings.metrics_access: `public` open, `key` a `read` key, `off` not served (404)."""
    if settings.metrics_access == "off":
        raise HTTPException(404, "Not Found")
    if settings.metrics_access == "key":
        identity = await current_identity(settings, authorization, x_api_key)
        if not identity.allows(Scope.READ):
            raise HTTPException(403, "This API key lacks the `read` scope.")


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(_metrics_access)])
def metrics() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
