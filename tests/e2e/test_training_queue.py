"""A real LoRA adapter on the default base (SmolLM2-135M), trained through the queue: the
job is submitted to the uvicorn API as an uploaded JSONL, a Celery worker process consumes
the `training` queue on Redis, reports PROGRESS states, and registers and promotes the
adapter in the Postgres registry."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlmodel import Session, create_engine, select

from invoicechain.db.tables import AdapterVersion, PromotionDecision
from models.prompts import extract_record
from cli.processes import free_port, spawn, stop, tail, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Redis database of this test alone (the pipeline test and unit tests use the fixture's).
QUEUE_REDIS_DB = 14
TERMINAL = {"done", "failed", "cancelled"}
PARAMS = {
    "max_steps": 4, "batch_size": 2, "eval_every": 2, "lora_r": 4, "lora_alpha": 8,
    "max_seq_len": 256, "learning_rate": 1e-3, "warmup_ratio": 0.0, "early_stopping_patience": None,
    "attention_examples": 1, "eval_max_records": 1,
}


def training_records(n: int = 8) -> list[dict]:
    """Short extraction records (about 200 tokens each with the full answer schema)."""
    out = []
    for i in range(n):
        total = f"{12.5 + 7 * i:.2f}"
        vendor = f"Vendor {chr(65 + i)} GmbH"
        text = f"Invoice INV-{i:04d}\nDate 2024-03-{i + 1:02d}\n{vendor}\nTotal {total} EUR"
        out.append(extract_record(text, {
            "invoice_id": f"INV-{i:04d}", "invoice_date": f"2024-03-{i + 1:02d}", "vendor_name": vendor,
            "currency": "EUR", "total_amount": total,
        }))
    return out


@pytest.fixture
def queue_redis_url(redis_url):
    """The test Redis server on a database of its own, flushed before and after."""
    import redis

    parts = urlsplit(redis_url)
    url = urlunsplit(parts._replace(path=f"/{QUEUE_REDIS_DB}"))
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def training_stack(tmp_path, pg_url, queue_redis_url, base_model_dir):
    """The API and one training worker (concurrency 1) on Redis and Postgres, with a model store of their own."""
    from celery import Celery

    from invoicechain import config
    from invoicechain.db.session import init_db
    from workers.celery_app import make_celery

    store = tmp_path / "models"
    env = dict(
        os.environ,
        DATABASE_URL=pg_url,
        REDIS_URL=queue_redis_url,
        INVOICECHAIN_DATA_DIR=str(tmp_path / "data"),
        INVOICECHAIN_MODEL_STORE=str(store),
        INVOICECHAIN_BASE_MODEL=str(base_model_dir),
        INVOICECHAIN_MAX_NEW_TOKENS="192",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        INVOICECHAIN_API_KEY=ADMIN_KEY,
    )
    settings = config.Settings(database_url=pg_url, redis_url=queue_redis_url, data_dir=tmp_path / "data",
                               model_store=store, base_model=str(base_model_dir))
    init_db(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    procs = {}
    engine = create_engine(settings.resolved_database_url)
    celery: Celery = make_celery(settings)
    try:
        procs["api"] = spawn("api", ["api", "--port", str(port)], env, logs)
        procs["training"] = spawn("training", ["worker", "--queues", "training", "--concurrency", "1"], env, logs)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, procs["api"], logs)
        yield {"url": base, "engine": engine, "celery": celery, "procs": procs, "logs": logs, "store": store}
    finally:
        stop(procs.values())
        celery.close()
        engine.dispose()


#: The stack's admin key (INVOICECHAIN_API_KEY of the API process).
ADMIN_KEY = "e2e-training-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def test_training_job_runs_on_the_queue_and_promotes_a_real_adapter(training_stack):
    base, engine, logs = training_stack["url"], training_stack["engine"], training_stack["logs"]
    worker = training_stack["procs"]["training"]
    adapter = f"e2e-{uuid.uuid4().hex[:10]}"
    data = "".join(json.dumps(r) + "\n" for r in training_records())

    r = httpx.post(f"{base}/v1/training-jobs", headers=AUTH, timeout=30,
                   files={"file": ("train.jsonl", data.encode(), "application/x-ndjson")},
                   data={"adapter": adapter, "params": json.dumps(PARAMS)})
    assert r.status_code == 202, r.text
    job = r.json()
    job_id, task_id = job["id"], job["celery_task_id"]
    assert job["adapter"] == adapter and job["data_source"] == "upload" and job["status"] == "queued"
    assert task_id == f"train-{job_id}"
    assert r.headers["location"] == f"/v1/training-jobs/{job_id}"

    # Poll the API (the job row) and the task's state in the result backend side by side.
    task = training_stack["celery"].AsyncResult(task_id)
    statuses: list[str] = []
    api_progress: list[dict] = []
    task_progress: list[dict] = []
    deadline = time.time() + 780
    while time.time() < deadline:
        body = httpx.get(f"{base}/v1/training-jobs/{job_id}", headers=AUTH, timeout=10).json()
        if not statuses or statuses[-1] != body["status"]:
            statuses.append(body["status"])
        if body["status"] == "running" and body["progress"]:
            api_progress.append(body["progress"])
        if task.state == "PROGRESS":
            task_progress.append(task.info)
        if body["status"] in TERMINAL:
            break
        assert worker.poll() is None, "training worker exited:\n" + tail(logs, "training")
        time.sleep(0.25)
    else:
        raise TimeoutError(f"training job {job_id} still {body['status']}:\n" + tail(logs, "training"))

    assert body["status"] == "done", (body, tail(logs, "training"))
    assert "running" in statuses and statuses[-1] == "done", statuses
    assert body["error"] is None and body["started_at"] and body["finished_at"]

    # The worker's PROGRESS states: every optimizer step with its loss, and the eval loss.
    trained = [p for p in task_progress if p.get("phase") == "training" and p.get("step", 0) >= 1]
    assert trained, (task_progress, tail(logs, "training"))
    assert all(p["total_steps"] == PARAMS["max_steps"] for p in trained)
    assert all(isinstance(p["loss"], float) and p["loss"] > 0 for p in trained)
    assert all(isinstance(p["eval_loss"], float) for p in trained)  # the step-0 evaluation onwards
    steps = [p["step"] for p in task_progress if "step" in p]
    assert steps == sorted(steps)
    # The API shows the same progress while the job runs.
    shown = [p for p in api_progress if p.get("phase") == "training" and p.get("step", 0) >= 1]
    assert shown, api_progress
    assert all(isinstance(p["loss"], float) and isinstance(p["eval_loss"], float) for p in shown)

    # The task ended successfully in the result backend, on the training worker.
    result = task.get(timeout=60)
    assert task.state == "SUCCESS"
    assert result["status"] == "done" and result["adapter_version"] == 1 and result["promoted"] is True
    assert task.worker and task.worker.startswith("training@")
    assert task.queue == "training"

    metrics = body["metrics"]
    assert metrics["steps"] == PARAMS["max_steps"] and metrics["stopped"] == "completed"
    assert isinstance(metrics["train_loss_last"], float) and isinstance(metrics["eval_loss"], float)
    assert 0.0 <= metrics["field_exact_match"] <= 1.0
    assert metrics["promotion"]["promoted"] is True and metrics["promotion"]["reason"] == "no active version"
    assert body["adapter_version"] == 1 and body["promoted"] is True
    assert body["progress"]["phase"] == "done" and body["progress"]["step"] == PARAMS["max_steps"]

    # The registry holds the adapter as version 1, promoted to active, with the run's metrics.
    with Session(engine) as s:
        versions = s.exec(select(AdapterVersion).where(AdapterVersion.name == adapter)).all()
        decisions = s.exec(select(PromotionDecision).where(PromotionDecision.adapter == adapter)).all()
    assert len(versions) == 1
    version = versions[0]
    assert (version.version, version.status, version.training_job_id) == (1, "active", job_id)
    assert version.promoted_at is not None
    assert version.metrics["eval_loss"] == metrics["eval_loss"]
    assert version.metrics["field_exact_match"] == metrics["field_exact_match"]
    assert version.params["lora_r"] == PARAMS["lora_r"] and version.params["max_steps"] == PARAMS["max_steps"]
    assert [(d.candidate_version, d.promoted, d.forced) for d in decisions] == [(1, True, False)]

    # Its files are in the model store, with the metrics written next to the weights.
    path = Path(version.path)
    assert path == (training_stack["store"] / "adapters" / adapter / "v1").resolve()
    assert (path / "adapter_config.json").is_file()
    assert (path / "adapter_model.safetensors").stat().st_size > 0
    on_disk = json.loads((path / "metrics.json").read_text())
    assert on_disk["steps"] == PARAMS["max_steps"] and on_disk["field_exact_match"] == metrics["field_exact_match"]
    assert [e["step"] for e in on_disk["eval_history"]] == [0, 2, 4]
    assert [h["step"] for h in on_disk["history"]] == [1, 2, 3, 4]
    assert json.loads((path / "adapter_config.json").read_text())["r"] == PARAMS["lora_r"]
