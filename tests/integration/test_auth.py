"""API keys and scopes on every route, against the real Postgres: 401 without a valid key,
403 with a key that lacks the route's scope, identity from the key, docs and metrics settings."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from invoicechain.auth import Scope

#: Routes that answer without a key: the liveness and readiness probes.
OPEN_ROUTES = {"/healthz", "/readyz"}
#: The review desk's static page and scripts: no data; every call they make carries a key.
STATIC_ROUTES = {"/desk", "/desk/{asset}"}
#: Served according to settings.docs_access / metrics_access (tested below).
SETTING_ROUTES = {"/metrics", "/openapi.json", "/docs", "/redoc"}


@pytest.fixture
def app(settings, redis_url, monkeypatch):
    from invoicechain import config
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    from api.main import create_app

    yield create_app()
    config.get_settings.cache_clear()


def make_key(settings, scopes, owner="someone", role=None) -> str:
    from invoicechain.auth import create_key
    from invoicechain.db.session import session_scope

    with session_scope(settings) as session:
        return create_key(session, owner, scopes, role=role)[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def api_routes(app):
    from api.deps import api_routes as listed

    return list(listed(app))


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "0123456789abcdef0123456789abcdef", path)


def test_every_route_but_the_probes_needs_a_scope(app):
    unscoped = {path for _, path, scopes in api_routes(app) if scopes is None}
    assert unscoped <= OPEN_ROUTES | STATIC_ROUTES | SETTING_ROUTES, unscoped
    assert len([1 for _, path, s in api_routes(app) if s]) >= 10


def test_each_route_refuses_missing_bad_and_revoked_keys_and_keys_without_its_scope(app, settings):
    from invoicechain.auth import revoke_key
    from invoicechain.db.session import session_scope

    revoked = make_key(settings, ["admin"], owner="gone")
    with session_scope(settings) as session:
        revoke_key(session, revoked.split("_")[1])
    checked = 0
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path, scopes in api_routes(app):
            if scopes is None:
                continue
            url = concrete(path)
            for headers in ({}, bearer("ick_000000000000_wrong"), bearer("not-a-key"), bearer(revoked),
                            {"X-API-Key": "ick_0_0"}):
                r = client.request(method, url, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                assert r.headers.get("www-authenticate") == "Bearer"
            others = [s for s in Scope if s not in scopes and s != Scope.ADMIN]
            lacking = make_key(settings, others, owner=f"lacks-{'-'.join(scopes)}")
            r = client.request(method, url, headers=bearer(lacking))
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert "scope" in r.json()["detail"]
            for scope in [*scopes, Scope.ADMIN]:
                holder = make_key(settings, [scope], owner=f"has-{scope}")
                r = client.request(method, url, headers={"X-API-Key": holder})
                assert r.status_code not in (401, 403), (method, path, scope, r.status_code, r.text)
                assert r.status_code < 500, (method, path, r.text)
            checked += 1
    assert checked >= 10


def test_a_key_revoked_while_in_use_is_refused(app, settings, monkeypatch):
    """A verified key is reused for `api_key_cache_s`; revoking it in this process drops it at once,
    and with the reuse off a revocation written by another process is refused on the next request."""
    from sqlalchemy import update

    from invoicechain import config
    from invoicechain.auth import revoke_key
    from invoicechain.db.session import session_scope
    from invoicechain.db.tables import ApiKey, utcnow

    key = make_key(settings, ["read"], owner="leaving")
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/invoices", headers=bearer(key)).status_code == 200
        assert client.get("/v1/invoices", headers=bearer(key)).status_code == 200  # from the cache
        with session_scope(settings) as session:
            revoke_key(session, key.split("_")[1])
        assert client.get("/v1/invoices", headers=bearer(key)).status_code == 401

    monkeypatch.setenv("INVOICECHAIN_API_KEY_CACHE_S", "0")
    config.get_settings.cache_clear()
    other = make_key(settings, ["read"], owner="elsewhere")
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/invoices", headers=bearer(other)).status_code == 200
        with session_scope(settings) as session:  # as `invoicechain keys revoke` in another process writes it
            session.execute(update(ApiKey).where(ApiKey.prefix == other.split("_")[1]).values(revoked_at=utcnow()))
        assert client.get("/v1/invoices", headers=bearer(other)).status_code == 401


def test_probes_answer_without_a_key(app):
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code in (200, 503)


@pytest.mark.parametrize("access", ["key", "public", "off"])
def test_docs_and_metrics_follow_settings(settings, redis_url, monkeypatch, access):
    from invoicechain import config
    from api.main import create_app

    monkeypatch.setenv("INVOICECHAIN_DOCS_ACCESS", access)
    monkeypatch.setenv("INVOICECHAIN_METRICS_ACCESS", access)
    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    reader = make_key(settings, ["read"])
    submitter = make_key(settings, ["submit"])
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        for path in ("/openapi.json", "/docs", "/redoc", "/metrics"):
            anonymous = client.get(path).status_code
            with_reader = client.get(path, headers=bearer(reader)).status_code
            with_submitter = client.get(path, headers=bearer(submitter)).status_code
            if access == "off":
                assert anonymous == with_reader == 404, path
            elif access == "public":
                assert anonymous == with_reader == 200, path
            else:
                assert (anonymous, with_submitter, with_reader) == (401, 403, 200), path
    config.get_settings.cache_clear()


def test_configured_key_is_an_admin_and_wrong_token_is_401(settings, redis_url, monkeypatch):
    from invoicechain import config
    from api.main import create_app

    monkeypatch.setenv("INVOICECHAIN_API_KEY", "a-long-configured-secret-key-0123456789")
    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        assert client.get("/v1/invoices", headers=bearer("a-long-configured-secret-key-0123456789")).status_code == 200
        assert client.get("/v1/invoices", headers=bearer("a-long-configured-secret-key-012345678X")).status_code == 401
        assert client.get("/v1/invoices").status_code == 401
    config.get_settings.cache_clear()


def test_keys_are_stored_hashed(settings):
    from sqlmodel import Session, select

    from invoicechain.db.session import get_engine
    from invoicechain.db.tables import ApiKey

    key = make_key(settings, ["read", "submit"])
    with Session(get_engine(settings)) as session:
        row = session.exec(select(ApiKey)).one()
    assert key not in (row.key_hash, row.prefix) and row.prefix in key
    assert row.scopes == ["submit", "read"]


def test_keys_cli_create_list_revoke(settings):
    from typer.testing import CliRunner

    from api.keys_cli import api_start_problem, app as keys_app

    runner = CliRunner()
    assert api_start_problem(settings) is not None  # no key anywhere: `invoicechain api` refuses
    made = runner.invoke(keys_app, ["create", "--owner", "Ada", "--scopes", "read,approve", "--role", "ap_clerk", "--json"])
    assert made.exit_code == 0, made.output
    import json

    created = json.loads(made.output)
    assert created["scopes"] == ["read", "approve"] and created["key"].startswith("ick_")
    assert api_start_problem(settings) is None
    listed = runner.invoke(keys_app, ["list"])
    assert created["prefix"] in listed.output and created["key"] not in listed.output
    bad = runner.invoke(keys_app, ["create", "--owner", "Eve", "--scopes", "root"])
    assert bad.exit_code == 2 and "Unknown scope" in bad.output
    gone = runner.invoke(keys_app, ["revoke", created["prefix"]])
    assert gone.exit_code == 0, gone.output
    assert created["prefix"] not in runner.invoke(keys_app, ["list"]).output
    assert created["prefix"] in runner.invoke(keys_app, ["list", "--all"]).output
    assert runner.invoke(keys_app, ["revoke", "nope"]).exit_code == 1


def test_api_command_refuses_to_start_without_any_key(settings, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app as cli_app

    monkeypatch.delenv("INVOICECHAIN_API_KEY", raising=False)
    monkeypatch.delenv("INVOICECHAIN_DEV_ALLOW_NO_KEY", raising=False)
    result = CliRunner().invoke(cli_app, ["api", "--port", "1"])
    assert result.exit_code == 2 and "No API key is configured" in result.output


def test_operations_doc_lists_every_route(app):
    """docs/operations.md's security table names every route the application serves."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = doc[doc.index("## Security"):]
    documented = set(re.findall(r"`(?:(?:GET|POST|PATCH|PUT|DELETE) )?(/[^`\s]*)`", section))
    missing = sorted({path for _, path, _ in api_routes(app)} - documented)
    assert not missing, f"add these routes and their scope to docs/operations.md: {missing}"
