"""Dependencies shared by the routes: settings, a database session, the caller's identity.

Every route but the probes (`/healthz`, `/readyz`) needs an API key with a scope:
`Authorization: Bearer <key>` (or `X-API-Key: <key>`). No key or an unknown or revoked
one: 401. A valid key without the route's scope: 403.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, status
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from invoicechain.auth import Identity, Scope, authenticate, bootstrap_identity, cached_identity
from invoicechain.config import Settings, get_settings
from invoicechain.db.session import get_engine


async def current_settings() -> Settings:
    """The settings (a coroutine: FastAPI runs plain functions in its thread pool, one hop per request)."""
    return get_settings()


def get_session(settings: Annotated[Settings, Depends(current_settings)]) -> Iterator[Session]:
    with Session(get_engine(settings), expire_on_commit=False) as session:
        yield session


def _presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def _look_up(key: str, settings: Settings) -> Identity | None:
    with Session(get_engine(settings)) as session:
        return authenticate(session, key, settings)


async def current_identity(
    settings: Annotated[Settings, Depends(current_settings)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Identity:
    """The caller named by its key; 401 without a valid one. A key verified within the last
    `api_key_cache_s` answers from memory; otherwise its row is read (in the thread pool)."""
    key = _presented_key(authorization, x_api_key)
    identity = None
    if key and len(key) <= 200:
        identity = bootstrap_identity(key, settings) or cached_identity(key, settings)
        if identity is None:
            identity = await run_in_threadpool(_look_up, key, settings)
    if identity is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "A valid API key is required (Authorization: Bearer <key>).",
                            headers={"WWW-Authenticate": "Bearer"})
    return identity


def require_scope(*scopes: Scope | str):
    """A dependency that lets through keys holding one of `scopes` (or `admin`); 403 otherwise.

    Use as `dependencies=[require_scope(Scope.REVIEW)]`, or as a parameter
    `identity: Annotated[Identity, require_scope(Scope.APPROVE)]` to get the caller.
    """
    wanted = tuple(Scope(s) for s in scopes)

    async def check(identity: Annotated[Identity, Depends(current_identity)]) -> Identity:
        if not any(identity.allows(s) for s in wanted):
            names = " or ".join(f"`{s}`" for s in wanted)
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"This API key lacks the {names} scope.")
        return identity

    check.__name__ = "require_" + "_or_".join(s.value for s in wanted)
    check.scopes = wanted  # read by the route-scope listing (docs/operations.md and its test)
    return Depends(check)


def route_scopes(route) -> tuple[Scope, ...] | None:
    """The scopes a route accepts (from its `require_scope` dependency); None: no key needed."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        found = getattr(dep.call, "scopes", None)
        if found:
            return found
        stack.extend(dep.dependencies)
    return None


SettingsDep = Annotated[Settings, Depends(current_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
#: Kept for routes written before scopes: submitting needs `submit`.
WriteAccess = require_scope(Scope.SUBMIT)
ReadAccess = require_scope(Scope.READ)


def api_routes(app):
    """Every (method, path, scopes) the app serves, through included routers."""
    from fastapi.routing import APIRoute

    def walk(routes):
        for route in routes:
            if isinstance(route, APIRoute):
                yield route.path, route
            elif hasattr(route, "effective_route_contexts"):  # an included router
                for ctx in route.effective_route_contexts():
                    yield ctx.path, ctx
            elif hasattr(route, "routes"):
                yield from walk(route.routes)

    for path, route in walk(app.routes):
        for method in sorted(set(route.methods or ()) - {"HEAD"}):
            yield method, path, route_scopes(route)
