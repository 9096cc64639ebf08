"""The live stack for the end-to-end tests: the API and two Celery workers (ingest/toolchain,
extract) as separate processes on the real Redis and Postgres, with the sample master data."""

from __future__ import annotations

import os

import pytest
from sqlmodel import create_engine

from cli.processes import free_port, spawn, stop, wait_ready
from tests.e2e.stack import ADMIN_KEY, APPROVERS, SAMPLES, api


@pytest.fixture
def stack(tmp_path, pg_url, redis_url, base_model_dir):
    """API + two workers (ingest/toolchain, extract) as separate processes on Redis and Postgres."""
    from invoicechain import config
    from invoicechain.db.session import init_db, session_scope
    from invoicechain.master_data import load_master_data, read_master_data

    env = dict(os.environ)
    env.update(
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        INVOICECHAIN_DATA_DIR=str(tmp_path / "data"),
        INVOICECHAIN_MODEL_STORE=str(base_model_dir.parent),
        INVOICECHAIN_EXTRACT_BATCH_WAIT_S="0.3",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        INVOICECHAIN_API_KEY=ADMIN_KEY,
    )
    settings = config.Settings(database_url=pg_url, redis_url=redis_url, data_dir=tmp_path / "data")
    init_db(settings)
    from invoicechain.auth import create_key

    with session_scope(settings) as session:
        load_master_data(session, read_master_data(SAMPLES / "master_data.json"))
        api.keys = {who: create_key(session, who, ["read", "review", "approve"], role=role)[1] for who, role in APPROVERS.items()}

    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {
        "api": spawn("api", ["api", "--port", str(port)], env, logs),
        "toolchain": spawn("toolchain", ["worker", "--queues", "ingest,toolchain", "--concurrency", "2"], env, logs),
        "extract": spawn("extract", ["worker", "--queues", "extract", "--concurrency", "1"], env, logs),
    }
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, procs["api"], logs, timeout=60)
    except RuntimeError:
        stop(procs.values())
        raise
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    yield {"url": base, "engine": engine, "procs": procs, "logs": logs, "env": env}
    stop(procs.values())
    engine.dispose()
