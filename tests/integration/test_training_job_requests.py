"""Training job requests that make no sense are refused with 422 and a message before any job
row exists or anything reaches the training queue (real Postgres and Redis behind the API)."""

from __future__ import annotations

import json

import pytest
import redis
from fastapi.testclient import TestClient

from tests.factories import invoice_records


@pytest.fixture
def client(settings, redis_url, monkeypatch, auth_headers):
    from invoicechain import config
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    from api.main import create_app

    with TestClient(create_app(), raise_server_exceptions=False, headers=auth_headers) as c:
        yield c
    config.get_settings.cache_clear()


def _jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _nothing_started(client, redis_url) -> None:
    assert client.get("/v1/training-jobs").json() == []
    assert redis.Redis.from_url(redis_url).llen("training") == 0


def test_nonsense_requests_are_refused_with_a_message(client, settings, redis_url):
    from invoicechain.config import get_settings

    cases = [
        ({"content": b"", "headers": {"content-type": "application/json"}}, "body is empty"),
        ({"content": b"   ", "headers": {"content-type": "application/json"}}, "body is empty"),
        ({"json": {}}, "body is empty"),
        ({"json": {"adapter": "extract"}}, "data_source"),
        ({"json": {"data_source": "dataset", "dataset": "no-such-data"}}, "no dataset named 'no-such-data'"),
        ({"json": {"data_source": "dataset"}}, "needs `dataset`"),
        ({"json": {"data_source": "dataset", "dataset": "../../etc/passwd"}}, "not a valid name"),
        ({"json": {"data_source": "synthetic", "params": {"max_steps": 10_000_000}}}, "max_steps 10000000 is over"),
        ({"json": {"data_source": "synthetic", "params": {"epochs": 1000}}}, "epochs 1000 is over"),
        ({"json": {"data_source": "synthetic", "params": {"learning_rate": 5}}}, "learning_rate 5 is over"),
        ({"json": {"data_source": "synthetic", "params": {"max_steps": 0}}}, "max_steps"),
        ({"json": {"data_source": "synthetic", "params": {"n": 3}}}, "n must be a whole number"),
        ({"json": {"data_source": "synthetic", "params": {"seed": 2026}}}, "evaluation set"),
        ({"json": {"data_source": "synthetic", "params": {"eval_documents": "all"}}}, "eval_documents"),
        ({"json": {"data_source": "synthetic", "params": {"lora_rank": 8}}}, "lora_rank"),
        ({"json": {"data_source": "synthetic", "params": "fast"}}, "params"),
    ]
    for kwargs, message in cases:
        r = client.post("/v1/training-jobs", **kwargs)
        assert r.status_code == 422, (kwargs, r.status_code, r.text)
        assert message in r.text, (kwargs, r.text)

    # Uploads: a broken line, no rows, too few rows.
    bad_line = _jsonl(invoice_records(9))[:-1] + b"\n{not json\n"
    r = client.post("/v1/training-jobs", files={"file": ("d.jsonl", bad_line, "application/jsonl")})
    assert r.status_code == 422 and r.json()["detail"]["problems"][0]["line"] == 10, r.text
    for data, message in ((b"", "empty"), (b"\n\n", "empty"),
                          (_jsonl(invoice_records(3)), f"at least {get_settings().training_min_rows}")):
        r = client.post("/v1/training-jobs", files={"file": ("d.jsonl", data, "application/jsonl")})
        assert r.status_code == 422 and message in r.text, r.text
    # A stored dataset with a broken line is refused the same way.
    folder = get_settings().data_dir / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.jsonl").write_bytes(bad_line)
    r = client.post("/v1/training-jobs", json={"data_source": "dataset", "dataset": "broken"})
    assert r.status_code == 422 and r.json()["detail"]["problems"][0]["line"] == 10, r.text
    _nothing_started(client, redis_url)
    uploads = get_settings().data_dir / "training-data"
    assert not uploads.exists() or not list(uploads.iterdir())


def test_a_sound_request_on_a_stored_dataset_is_queued(client, redis_url):
    from invoicechain.config import get_settings

    folder = get_settings().data_dir / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vendor-a.jsonl").write_bytes(_jsonl(invoice_records(10)))
    r = client.post("/v1/training-jobs", json={"data_source": "dataset", "dataset": "vendor-a",
                                               "params": {"max_steps": 2, "eval_documents": 4}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["data_source"] == "dataset"
    assert redis.Redis.from_url(redis_url).llen("training") == 1
