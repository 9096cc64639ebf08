"""A deliberately bad adapter (2 steps on 10 documents) trained through the API on the real
base model is not promoted over the shipped `extract` adapter, and extraction is unchanged:
the same document gives the same fields before and after the job (real Postgres and Redis
behind the API; the job runs the training queue's code on the real SmolLM2-135M base)."""

from __future__ import annotations

import json

import pytest
import redis
from fastapi.testclient import TestClient

from invoicechain.db.session import session_scope
from models import registry
from tests.factories import invoice_records

#: Real-model decoding of a handful of documents plus two training steps: generous on a busy CPU.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

DOCUMENT = ("Invoice INV-2024-0031\nDate 2024-05-14\nDue 2024-06-13\nNordlicht Papier GmbH\n"
            "Office paper 10 x 4.50 = 45.00\nPO PO-77120\nTotal 53.55 EUR")
#: 2 optimizer steps from a fresh LoRA at a high (allowed) learning rate: nothing useful is learnt.
BAD_PARAMS = {
    "max_steps": 2, "batch_size": 2, "grad_accum": 1, "learning_rate": 0.01, "lora_r": 4, "lora_alpha": 8,
    "warmup_ratio": 0.0, "eval_every": 0, "early_stopping_patience": None, "max_seq_len": 512,
    "attention_examples": 1, "eval_max_records": 1, "eval_documents": 1,
}


@pytest.fixture
def stack(tmp_path, pg_url, redis_url, base_model_dir, monkeypatch, settings):
    """Settings with a model store of this test's own on the real base, and the API on them."""
    from invoicechain import config
    from invoicechain.auth import issue_test_admin_key
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("INVOICECHAIN_MODEL_STORE", str(tmp_path / "models"))
    monkeypatch.setenv("INVOICECHAIN_BASE_MODEL", str(base_model_dir))
    monkeypatch.setenv("INVOICECHAIN_DEVICE", "cpu")
    monkeypatch.setenv("INVOICECHAIN_MAX_NEW_TOKENS", "256")
    config.get_settings.cache_clear()
    s = config.get_settings()
    reconfigure(s)
    from api.main import create_app

    headers = {"Authorization": f"Bearer {issue_test_admin_key(s)}"}
    with TestClient(create_app(), raise_server_exceptions=False, headers=headers) as client:
        yield s, client
    config.get_settings.cache_clear()


def test_a_bad_adapter_is_not_promoted_and_extraction_is_unchanged(stack, redis_url):
    from models.service import load_runtime
    from training import evalset
    from training.jobs import run_training_job

    settings, client = stack
    # The shipped adapter is version 1, active, scored on the evaluation set's first documents.
    rt = load_runtime(settings)
    with session_scope(settings) as s:
        shipped = registry.active_version(s, "extract")
        assert shipped is not None and shipped.version == 1 and shipped.params["source"] == "shipped"
    block = evalset.score_adapter(settings.base_model, shipped.path, limit=BAD_PARAMS["eval_documents"],
                                  runtime=rt)
    with session_scope(settings) as s:
        registry.set_eval_scores(s, "extract", 1, block)
    before = rt.extract([DOCUMENT])[0]
    assert before.adapter_version == "extract:1"

    # The job goes through the API onto the training queue.
    data = "".join(json.dumps(r) + "\n" for r in invoice_records(10, seed=5))
    r = client.post("/v1/training-jobs", files={"file": ("bad.jsonl", data.encode(), "application/x-ndjson")},
                    data={"adapter": "extract", "params": json.dumps(BAD_PARAMS)})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert redis.Redis.from_url(redis_url).llen("training") == 1
    # What the training worker runs for the queued message.
    run_training_job(job_id, settings)

    job = client.get(f"/v1/training-jobs/{job_id}").json()
    assert job["status"] == "done", job["error"]
    assert job["adapter_version"] == 2 and job["promoted"] is False
    promotion = job["metrics"]["promotion"]
    assert promotion["promoted"] is False
    comparison = promotion["comparison"]
    assert comparison["passes"] is False and comparison["documents"] == BAD_PARAMS["eval_documents"]
    assert comparison["set"]["sha256"] == evalset.info()["sha256"]
    assert comparison["candidate"] < comparison["active"] + settings.promotion_margin
    assert promotion["reason"] == comparison["reason"] and "margin" in comparison["reason"]

    with session_scope(settings) as s:
        assert registry.active_version(s, "extract").version == 1
        assert registry.get_version(s, "extract", 2).status == "candidate"
        [decision] = registry.decisions(s, "extract")
        assert not decision.promoted and not decision.forced and decision.actor == f"training job {job_id}"

    # Extraction is unchanged: a worker polling the registry keeps version 1 and reads the same.
    rt.adapter_poll_s = 0
    rt.refresh_adapters(lambda: session_scope(settings), force=True)
    assert rt.adapters["extract"] == "1"
    after = rt.extract([DOCUMENT])[0]
    assert after.adapter_version == "extract:1"
    assert after.fields == before.fields
