"""Schemathesis over the application's own OpenAPI document, against the real Postgres and
Redis: generated valid and invalid requests to every operation, sent with an admin key.

Checked on every answer: no server error; the status code, content type, headers and body
as documented; invalid requests refused with a 4xx; `Allow` naming exactly the documented
methods on a 405. Not checked: that every schema-valid request is accepted, since some
rules live beyond the schema (a document must be a readable PDF or non-empty text, a
training job needs a data source, an Idempotency-Key reused with another body is 422)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings as hypothesis_settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

#: Examples per operation and generation mode; enough to reach each parameter's edges.
MAX_EXAMPLES = 40


def _openapi() -> dict:
    from api.main import create_app

    return create_app().openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture
def app(settings, session, redis_url, monkeypatch):
    """The application on the test's database (master data loaded) and Redis."""
    from invoicechain import config
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    from api.main import create_app

    yield create_app()
    config.get_settings.cache_clear()


@schema.parametrize()
@hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case, app, auth_headers):
    case.operation.schema.app = app  # the checks that send a request again reach the same application
    case.call_and_validate(app=app, headers=auth_headers, excluded_checks=[positive_data_acceptance])
